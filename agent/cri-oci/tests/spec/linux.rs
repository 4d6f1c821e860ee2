//! Namespaces, resources, cgroups path and devices.

use std::collections::HashMap;
use std::path::Path;

use basalt_cri_oci::{Container, ErrorKind, Sandbox};
use basalt_proto::cri::{
    ContainerConfig, Device, HugepageLimit, IdMapping, LinuxContainerResources,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, UserNamespace,
};
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, LinuxResources, Spec};

use crate::fixture::{assert_err, config, process, sc, Env};

fn namespaces(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<String>)> {
    spec.linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .iter()
        .flatten()
        .map(|n| {
            (
                n.typ(),
                n.path().as_ref().map(|p| p.to_string_lossy().into_owned()),
            )
        })
        .collect()
}

fn with_ns(network: NamespaceMode, pid: NamespaceMode, ipc: NamespaceMode) -> ContainerConfig {
    let mut c = config();
    sc(&mut c).namespace_options = Some(NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: ipc as i32,
        ..Default::default()
    });
    c
}

#[test]
fn namespaces_join_the_sandbox_by_path() {
    use LinuxNamespaceType::*;
    let env = Env::new();
    let (net, ipc, uts, pid) = (
        Path::new("/run/basalt/ns/net"),
        Path::new("/run/basalt/ns/ipc"),
        Path::new("/run/basalt/ns/uts"),
        Path::new("/run/basalt/ns/pid"),
    );
    let mut sb = Sandbox::new("sb-1", &env.pod);
    (sb.net_ns, sb.ipc_ns, sb.uts_ns, sb.pid_ns) = (Some(net), Some(ipc), Some(uts), Some(pid));
    let s = |p: &Path| Some(p.to_str().unwrap().to_owned());
    let run = |c: &ContainerConfig| {
        env.run_with(&Container::new("ctr-1", c), &sb)
            .map(|g| g.spec)
    };

    let pod = with_ns(NamespaceMode::Pod, NamespaceMode::Pod, NamespaceMode::Pod);
    assert_eq!(
        namespaces(&run(&pod).unwrap()),
        [
            (Mount, None),
            (Network, s(net)),
            (Uts, s(uts)),
            (Ipc, s(ipc)),
            (Pid, s(pid))
        ]
    );
    let node = with_ns(
        NamespaceMode::Node,
        NamespaceMode::Node,
        NamespaceMode::Node,
    );
    assert_eq!(namespaces(&run(&node).unwrap()), [(Mount, None)]);
    let own_pid = with_ns(
        NamespaceMode::Pod,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
    assert_eq!(
        namespaces(&run(&own_pid).unwrap()),
        [
            (Mount, None),
            (Network, s(net)),
            (Uts, s(uts)),
            (Ipc, s(ipc)),
            (Pid, None)
        ]
    );
    // No namespace options on the container: the sandbox's apply (all POD by default).
    assert_eq!(namespaces(&run(&config()).unwrap()).len(), 5);
}

#[test]
fn target_pid_namespace_comes_from_the_caller() {
    let env = Env::new();
    let mut c = with_ns(
        NamespaceMode::Pod,
        NamespaceMode::Target,
        NamespaceMode::Pod,
    );
    sc(&mut c).namespace_options.as_mut().unwrap().target_id = "ctr-0".into();
    let sb = Sandbox::new("sb-1", &env.pod);
    let e = env.run_with(&Container::new("ctr-1", &c), &sb).unwrap_err();
    assert_err(
        &e,
        ErrorKind::NotFound,
        "linux.security_context.namespace_options.pid",
        "\"TARGET\"",
    );
    let target = Path::new("/proc/4242/ns/pid");
    let mut ctr = Container::new("ctr-1", &c);
    ctr.target_pid_ns = Some(target);
    let ns = namespaces(&env.run_with(&ctr, &sb).unwrap().spec);
    assert!(
        ns.contains(&(LinuxNamespaceType::Pid, Some("/proc/4242/ns/pid".into()))),
        "{ns:?}"
    );
    let bad = with_ns(
        NamespaceMode::Target,
        NamespaceMode::Pod,
        NamespaceMode::Pod,
    );
    assert_err(
        &env.err(&bad),
        ErrorKind::InvalidArgument,
        "namespace_options.network",
        "\"TARGET\"",
    );
}

#[test]
fn cgroup_namespace_on_v2_and_the_pods_user_namespace() {
    let mut env = Env::new();
    env.opts.cgroup_v2 = true;
    assert!(namespaces(&env.spec(&config())).contains(&(LinuxNamespaceType::Cgroup, None)));
    let mut c = config();
    sc(&mut c).namespace_options = Some(NamespaceOption {
        userns_options: Some(UserNamespace {
            mode: NamespaceMode::Pod as i32,
            uids: vec![IdMapping {
                host_id: 65536,
                container_id: 0,
                length: 65536,
            }],
            gids: vec![IdMapping {
                host_id: 65536,
                container_id: 0,
                length: 65536,
            }],
        }),
        ..Default::default()
    });
    // A sandbox made without a user namespace cannot hold a container in one.
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "namespace_options.userns_options.mode",
        "has no user namespace",
    );
    let host = env.path("vol");
    std::fs::create_dir_all(&host).unwrap();
    c.mounts = vec![basalt_proto::cri::Mount {
        container_path: "/vol".into(),
        host_path: host.to_string_lossy().into_owned(),
        ..Default::default()
    }];
    let userns = env.path("userns");
    let sb = Sandbox {
        user_ns: Some(&userns),
        ..Sandbox::new("sb-1", &env.pod)
    };
    let spec = env
        .run_with(&Container::new("ctr-1", &c), &sb)
        .unwrap()
        .spec;
    // Joined first, so that the namespaces the runtime creates belong to it.
    let ns = namespaces(&spec);
    assert_eq!(
        ns[0],
        (
            LinuxNamespaceType::User,
            Some(userns.to_string_lossy().into_owned())
        )
    );
    let linux = spec.linux().as_ref().unwrap();
    let map = linux.uid_mappings().as_ref().unwrap();
    assert_eq!(
        (map[0].container_id(), map[0].host_id(), map[0].size()),
        (0, 65536, 65536)
    );
    // A host directory is idmapped with the pod's mappings.
    let vol = spec
        .mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new("/vol"))
        .unwrap();
    assert_eq!(vol.uid_mappings().as_ref().unwrap(), map);
    assert_eq!(vol.gid_mappings().as_ref(), linux.gid_mappings().as_ref());
}

fn with_resources(r: LinuxContainerResources) -> ContainerConfig {
    let mut c = config();
    c.linux.get_or_insert_with(Default::default).resources = Some(r);
    c
}

fn resources(env: &Env, c: &ContainerConfig) -> LinuxResources {
    env.spec(c)
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .clone()
        .unwrap()
}

#[test]
fn resources_become_cgroup_settings() {
    let env = Env::new();
    let c = with_resources(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        oom_score_adj: 999,
        cpuset_cpus: "0-1,3".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        ..Default::default()
    });
    let spec = env.spec(&c);
    let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
    let cpu = r.cpu().clone().unwrap();
    assert_eq!(
        (cpu.period(), cpu.quota(), cpu.shares()),
        (Some(100_000), Some(50_000), Some(512))
    );
    assert_eq!(
        (cpu.cpus().as_deref(), cpu.mems().as_deref()),
        (Some("0-1,3"), Some("0"))
    );
    let mem = r.memory().unwrap();
    // No swap limit asked: memory+swap = memory, so the container does not swap (containerd's choice).
    assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
    let h = &r.hugepage_limits().clone().unwrap()[0];
    assert_eq!((h.page_size().as_str(), h.limit()), ("2MB", 4 << 20));
    assert_eq!(process(&spec).oom_score_adj(), Some(999));

    let c = with_resources(LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        memory_swap_limit_in_bytes: 128 << 20,
        ..Default::default()
    });
    assert_eq!(
        resources(&env, &c).memory().unwrap().swap(),
        Some(128 << 20)
    );
    // Nothing asked, nothing set.
    let r = resources(&env, &with_resources(LinuxContainerResources::default()));
    assert!(r.cpu().is_none() && r.memory().is_none() && r.unified().is_none());
}

#[test]
fn unified_needs_cgroup_v2() {
    let mut env = Env::new();
    let c = with_resources(LinuxContainerResources {
        unified: HashMap::from([("memory.high".to_owned(), "1000000".to_owned())]),
        ..Default::default()
    });
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "linux.resources.unified",
        "memory.high",
    );
    env.opts.cgroup_v2 = true;
    assert_eq!(
        resources(&env, &c).unified().clone().unwrap()["memory.high"],
        "1000000"
    );
}

#[test]
fn bad_resources_name_the_field() {
    let env = Env::new();
    let cases = [
        (
            LinuxContainerResources {
                cpu_shares: -2,
                ..Default::default()
            },
            "linux.resources.cpu_shares",
            "-2",
        ),
        (
            LinuxContainerResources {
                oom_score_adj: 1001,
                ..Default::default()
            },
            "linux.resources.oom_score_adj",
            "1001",
        ),
        (
            LinuxContainerResources {
                cpuset_cpus: "0-a".into(),
                ..Default::default()
            },
            "linux.resources.cpuset_cpus",
            "\"0-a\"",
        ),
        (
            LinuxContainerResources {
                memory_limit_in_bytes: 100 << 20,
                memory_swap_limit_in_bytes: 50 << 20,
                ..Default::default()
            },
            "linux.resources.memory_swap_limit_in_bytes",
            "52428800",
        ),
        (
            LinuxContainerResources {
                hugepage_limits: vec![HugepageLimit {
                    page_size: "2XB".into(),
                    limit: 1,
                }],
                ..Default::default()
            },
            "linux.resources.hugepage_limits[0].page_size",
            "\"2XB\"",
        ),
    ];
    for (r, field, value) in cases {
        assert_err(
            &env.err(&with_resources(r)),
            ErrorKind::InvalidArgument,
            field,
            value,
        );
    }
}

#[test]
fn cgroups_path_is_parent_slash_id_as_the_runtime_resolves_it() {
    let mut env = Env::new();
    let path = |env: &Env| {
        env.spec(&config())
            .linux()
            .as_ref()
            .unwrap()
            .cgroups_path()
            .clone()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let p = path(&env);
    assert_eq!(p, "/kubepods/besteffort/poduid-1/ctr-1");
    assert_eq!(
        basalt_runtime::cgroup::resolve_path(Some(&p), "ctr-1", false).unwrap(),
        p
    );
    env.pod.linux.as_mut().unwrap().cgroup_parent.clear();
    assert_eq!(path(&env), "/basalt/ctr-1");
    env.opts.systemd_cgroup = true;
    env.pod.linux.as_mut().unwrap().cgroup_parent = "kubepods-besteffort-poduid_1.slice".into();
    let p = path(&env);
    assert_eq!(p, "kubepods-besteffort-poduid_1.slice:basalt:ctr-1");
    assert_eq!(
        basalt_runtime::cgroup::resolve_path(Some(&p), "ctr-1", true).unwrap(),
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poduid_1.slice/basalt-ctr-1.scope"
    );
    env.pod.linux.as_mut().unwrap().cgroup_parent = "/kubepods".into();
    assert_err(
        &env.err(&config()),
        ErrorKind::InvalidArgument,
        "linux.cgroup_parent",
        "\"/kubepods\"",
    );
    env.opts.systemd_cgroup = false;
    env.pod.linux.as_mut().unwrap().cgroup_parent = "/kubepods/../../etc".into();
    assert_err(
        &env.err(&config()),
        ErrorKind::InvalidArgument,
        "linux.cgroup_parent",
        "\"/kubepods/../../etc\"",
    );
}

fn with_device(host: &str, container: &str, perms: &str) -> ContainerConfig {
    let mut c = config();
    c.devices = vec![Device {
        container_path: container.into(),
        host_path: host.into(),
        permissions: perms.into(),
    }];
    c
}

#[test]
fn devices_are_passed_through_with_cgroup_rules() {
    let env = Env::new();
    let spec = env.spec(&with_device("/dev/null", "/dev/mynull", "rw"));
    let linux = spec.linux().as_ref().unwrap();
    let d = &linux.devices().clone().unwrap()[0];
    assert_eq!(d.path(), Path::new("/dev/mynull"));
    assert_eq!((d.typ(), d.major(), d.minor()), (LinuxDeviceType::C, 1, 3));
    assert_eq!(d.file_mode().map(|m| m & 0o777), Some(0o666));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    // Deny everything first, then the defaults, then this device.
    assert!(!rules[0].allow() && rules[0].typ().is_none());
    // runc's defaults stay allowed: null, zero, full, random, urandom, tty, ptmx and the ptys.
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(2)),
        (136, None),
    ] {
        assert!(
            rules
                .iter()
                .any(|r| r.allow() && r.major() == Some(major) && r.minor() == minor),
            "{major}:{minor:?} not allowed"
        );
    }
    let last = rules.last().unwrap();
    assert!(last.allow());
    assert_eq!(
        (last.major(), last.minor(), last.access().as_deref()),
        (Some(1), Some(3), Some("rw"))
    );
}

#[test]
fn cdi_devices_are_refused_rather_than_ignored() {
    let env = Env::new();
    let mut c = config();
    c.cdi_devices = vec![basalt_proto::cri::CdiDevice {
        name: "vendor.com/gpu=gpu0".into(),
    }];
    assert_err(
        &env.err(&c),
        ErrorKind::Unimplemented,
        "CDI_devices[0]",
        "\"vendor.com/gpu=gpu0\"",
    );
}

#[test]
fn bad_devices_name_the_field() {
    let env = Env::new();
    let file = env.path("plain");
    std::fs::write(&file, "").unwrap();
    let file = file.to_str().unwrap();
    let cases = [
        (
            with_device("/dev/nope", "/dev/x", ""),
            "devices[0].host_path",
            "\"/dev/nope\"",
        ),
        (
            with_device(file, "/dev/x", ""),
            "devices[0].host_path",
            "not a device node",
        ),
        (
            with_device("/dev/null", "x", ""),
            "devices[0].container_path",
            "\"x\"",
        ),
        (
            with_device("/dev/null", "/dev/x", "rwx"),
            "devices[0].permissions",
            "\"rwx\"",
        ),
    ];
    for (c, field, value) in cases {
        assert_err(&env.err(&c), ErrorKind::InvalidArgument, field, value);
    }
}

#[test]
fn privileged_gets_the_hosts_devices_and_no_device_restrictions() {
    let mut env = Env::new();
    env.pod.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let mut c = config();
    sc(&mut c).privileged = true;
    let spec = env.spec(&c);
    let linux = spec.linux().as_ref().unwrap();
    let devs = linux.devices().clone().unwrap();
    assert!(devs.iter().any(|d| d.path() == Path::new("/dev/null")));
    assert!(!devs.iter().any(|d| d.path().starts_with("/dev/pts")));
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(
        rules[0].allow() && rules[0].typ().is_none() && rules[0].access().as_deref() == Some("rwm")
    );
}
