//! Standard mounts, the sandbox's files, CRI host-path and image mounts.

use std::path::{Path, PathBuf};

use basalt_cri_oci::{Container, ErrorKind, Options, Sandbox};
use basalt_proto::cri::{
    IdMapping, ImageSpec, LinuxSandboxSecurityContext, Mount, MountPropagation,
};

use crate::fixture::{assert_err, config, mount, options, sc, Env};

fn host_mount(host: &Path, container: &str) -> Mount {
    Mount {
        container_path: container.into(),
        host_path: host.to_str().unwrap().into(),
        ..Default::default()
    }
}

fn dests(spec: &oci_spec::runtime::Spec) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn standard_mounts_like_containerd() {
    let env = Env::new();
    let spec = env.spec(&config());
    assert_eq!(
        dests(&spec),
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/shm"
        ]
    );
    let sys = mount(&spec, "/sys").unwrap();
    assert_eq!(sys.typ().as_deref(), Some("sysfs"));
    assert!(options(sys).contains(&"ro"));
    assert!(options(mount(&spec, "/sys/fs/cgroup").unwrap()).contains(&"ro"));
    let shm = mount(&spec, "/dev/shm").unwrap();
    assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
    assert!(options(mount(&spec, "/dev/pts").unwrap()).contains(&"newinstance"));
}

#[test]
fn privileged_gets_writable_sysfs_and_cgroups() {
    let mut env = Env::new();
    env.pod.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        privileged: true,
        ..Default::default()
    });
    let mut c = config();
    sc(&mut c).privileged = true;
    let spec = env.spec(&c);
    assert!(options(mount(&spec, "/sys").unwrap()).contains(&"rw"));
    assert!(options(mount(&spec, "/sys/fs/cgroup").unwrap()).contains(&"rw"));
}

#[test]
fn sandbox_files_are_bound_and_follow_readonly_rootfs() {
    let env = Env::new();
    let (hostname, hosts, resolv, shm) = (
        env.path("hostname"),
        env.path("hosts"),
        env.path("resolv.conf"),
        env.path("shm"),
    );
    let mut sb = Sandbox::new("sb-1", &env.pod);
    sb.hostname_file = Some(&hostname);
    sb.hosts_file = Some(&hosts);
    sb.resolv_conf = Some(&resolv);
    sb.shm = Some(&shm);
    let mut c = config();
    let spec = env
        .run_with(&Container::new("ctr-1", &c), &sb)
        .unwrap()
        .spec;
    for (dest, src) in [
        ("/etc/hostname", &hostname),
        ("/etc/hosts", &hosts),
        ("/etc/resolv.conf", &resolv),
        ("/dev/shm", &shm),
    ] {
        let m = mount(&spec, dest).unwrap();
        assert_eq!(m.source().as_ref(), Some(src), "{dest}");
        assert_eq!(options(m), ["rbind", "rprivate", "rw"], "{dest}");
    }
    sc(&mut c).readonly_rootfs = true;
    let spec = env
        .run_with(&Container::new("ctr-1", &c), &sb)
        .unwrap()
        .spec;
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert!(options(mount(&spec, "/etc/hosts").unwrap()).contains(&"ro"));
    // /dev/shm stays writable: it is shared memory, not part of the rootfs.
    assert!(options(mount(&spec, "/dev/shm").unwrap()).contains(&"rw"));
}

#[test]
fn cri_mount_replaces_the_sandbox_file_at_the_same_path() {
    let env = Env::new();
    let (hosts, kubelet_hosts) = (env.path("hosts"), env.path("kubelet-hosts"));
    std::fs::write(&kubelet_hosts, "").unwrap();
    let mut sb = Sandbox::new("sb-1", &env.pod);
    sb.hosts_file = Some(&hosts);
    let mut c = config();
    c.mounts = vec![host_mount(&kubelet_hosts, "/etc/hosts")];
    let spec = env
        .run_with(&Container::new("ctr-1", &c), &sb)
        .unwrap()
        .spec;
    let all: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/etc/hosts"))
        .collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].source().as_ref(), Some(&kubelet_hosts));
}

#[test]
fn host_ipc_binds_the_host_shm() {
    let mut env = Env::new();
    env.pod.linux.as_mut().unwrap().security_context = Some(LinuxSandboxSecurityContext {
        namespace_options: Some(basalt_proto::cri::NamespaceOption {
            ipc: basalt_proto::cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = env.spec(&config());
    assert_eq!(
        mount(&spec, "/dev/shm").unwrap().source().as_deref(),
        Some(Path::new("/dev/shm"))
    );
}

#[test]
fn host_path_mounts_with_readonly_and_propagation() {
    let env = Env::new();
    let data = env.path("data");
    std::fs::create_dir(&data).unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let mut c = config();
    let m = |dest: &str, ro: bool, p: MountPropagation| Mount {
        readonly: ro,
        propagation: p as i32,
        ..host_mount(&link, dest)
    };
    c.mounts = vec![
        m("/a", false, MountPropagation::PropagationPrivate),
        m("/b/", true, MountPropagation::PropagationHostToContainer),
    ];
    let spec = env.spec(&c);
    let a = mount(&spec, "/a").unwrap();
    // The symlink is followed: its destination is mounted.
    assert_eq!(a.source().as_deref(), Some(data.as_path()));
    assert_eq!(a.typ().as_deref(), Some("bind"));
    assert_eq!(options(a), ["rbind", "rprivate", "rw"]);
    assert_eq!(
        options(mount(&spec, "/b").unwrap()),
        ["rbind", "rslave", "ro"]
    );
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(linux.rootfs_propagation().as_deref(), Some("rslave"));

    c.mounts
        .push(m("/c", false, MountPropagation::PropagationBidirectional));
    let spec = env.spec(&c);
    assert_eq!(
        options(mount(&spec, "/c").unwrap()),
        ["rbind", "rshared", "rw"]
    );
    assert_eq!(
        spec.linux()
            .as_ref()
            .unwrap()
            .rootfs_propagation()
            .as_deref(),
        Some("rshared")
    );
}

#[test]
fn recursive_read_only_needs_readonly_and_private_propagation() {
    let env = Env::new();
    let mut c = config();
    c.mounts = vec![Mount {
        readonly: true,
        recursive_read_only: true,
        ..host_mount(env.dir.path(), "/data")
    }];
    assert_eq!(
        options(mount(&env.spec(&c), "/data").unwrap()),
        ["rbind", "rprivate", "ro", "rro"]
    );
    c.mounts[0].readonly = false;
    let e = env.err(&c);
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "mounts[0].recursive_read_only",
        "true",
    );
    assert!(e.message.contains("mounts[0].readonly"), "{}", e.message);
    c.mounts[0].readonly = true;
    c.mounts[0].propagation = MountPropagation::PropagationHostToContainer as i32;
    let e = env.err(&c);
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "mounts[0].recursive_read_only",
        "true",
    );
    assert!(
        e.message.contains("PROPAGATION_HOST_TO_CONTAINER"),
        "{}",
        e.message
    );
}

#[test]
fn missing_host_path_is_created_by_the_caller_like_containerd() {
    let env = Env::new();
    let missing = env.path("not/yet");
    let mut c = config();
    c.mounts = vec![host_mount(&missing, "/data")];
    let g = env.run(&c).unwrap();
    assert_eq!(g.missing_host_paths, vec![missing.clone()]);
    // Generating the spec did not create it; the caller does, once the request is known to be valid.
    assert!(!missing.exists());
    g.create_missing_host_paths().unwrap();
    assert!(missing.is_dir());
}

#[test]
fn missing_host_path_is_an_error_when_not_creating() {
    let mut env = Env::new();
    env.opts = Options {
        create_missing_host_paths: false,
        ..env.opts.clone()
    };
    let mut c = config();
    c.mounts = vec![host_mount(Path::new("/nope"), "/data")];
    let e = env.err(&c);
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert_eq!(
        e.message,
        "mounts[0].host_path \"/nope\": no such file or directory"
    );
}

#[test]
fn a_failing_request_leaves_no_directory_behind() {
    let env = Env::new();
    let missing = env.path("never");
    let mut c = config();
    c.mounts = vec![
        host_mount(&missing, "/data"),
        host_mount(env.dir.path(), "relative"),
    ];
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "mounts[1].container_path",
        "\"relative\"",
    );
    assert!(!missing.exists());
}

#[test]
fn bad_mounts_name_the_field() {
    let env = Env::new();
    let dir = env.dir.path();
    let cases: Vec<(Mount, &str, &str)> = vec![
        (host_mount(dir, ""), "mounts[0].container_path", "\"\""),
        (
            host_mount(Path::new("rel/dir"), "/x"),
            "mounts[0].host_path",
            "\"rel/dir\"",
        ),
        (
            Mount {
                propagation: 9,
                ..host_mount(dir, "/x")
            },
            "mounts[0].propagation",
            "9",
        ),
        (
            Mount {
                image: Some(ImageSpec {
                    image: "img".into(),
                    ..Default::default()
                }),
                ..host_mount(dir, "/x")
            },
            "mounts[0].host_path",
            "must be empty when mounts[0].image is set",
        ),
        (
            Mount {
                uid_mappings: vec![IdMapping {
                    host_id: 1000,
                    container_id: 0,
                    length: 1,
                }],
                ..host_mount(dir, "/x")
            },
            "mounts[0].uidMappings",
            "need a pod user namespace",
        ),
    ];
    for (m, field, value) in cases {
        let mut c = config();
        c.mounts = vec![m];
        let e = env.err(&c);
        assert!(
            e.message.contains(field) && e.message.contains(value),
            "{:?} should name {field} and {value}",
            e.message
        );
    }
    let mut c = config();
    c.mounts = vec![host_mount(dir, "/x"), host_mount(dir, "/x/")];
    assert_err(
        &env.err(&c),
        ErrorKind::InvalidArgument,
        "mounts[1].container_path",
        "\"/x/\"",
    );
}

#[test]
fn image_volumes_come_from_the_resolved_map_read_only() {
    let env = Env::new();
    let mut c = config();
    c.mounts = vec![Mount {
        container_path: "/models".into(),
        image: Some(ImageSpec {
            image: "sha256:abc".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    let sb = Sandbox::new("sb-1", &env.pod);
    // An image volume is read-only: one asked writable is refused, as upstream's kubelet validates.
    let e = env.run_with(&Container::new("ctr-1", &c), &sb).unwrap_err();
    assert_err(
        &e,
        ErrorKind::InvalidArgument,
        "mounts[0].readonly",
        "false",
    );
    c.mounts[0].readonly = true;
    let e = env.run_with(&Container::new("ctr-1", &c), &sb).unwrap_err();
    assert_err(
        &e,
        ErrorKind::NotFound,
        "mounts[0].image.image",
        "\"sha256:abc\"",
    );
    let mut ctr = Container::new("ctr-1", &c);
    ctr.image_mounts.insert(
        "sha256:abc".into(),
        PathBuf::from("/var/lib/basalt/vol/abc"),
    );
    let spec = env.run_with(&ctr, &sb).unwrap().spec;
    let m = mount(&spec, "/models").unwrap();
    assert_eq!(
        m.source().as_deref(),
        Some(Path::new("/var/lib/basalt/vol/abc"))
    );
    assert_eq!(options(m), ["rbind", "rprivate", "ro"]);
}

#[test]
fn parents_are_mounted_before_children_and_cri_dev_replaces_the_dev_tree() {
    let env = Env::new();
    let dir = env.dir.path();
    let mut c = config();
    c.mounts = vec![
        host_mount(dir, "/a/b/c"),
        host_mount(dir, "/a"),
        host_mount(dir, "/a/b"),
    ];
    let d = dests(&env.spec(&c));
    let pos = |p: &str| d.iter().position(|x| x == p).unwrap();
    assert!(
        pos("/a") < pos("/a/b") && pos("/a/b") < pos("/a/b/c"),
        "{d:?}"
    );
    c.mounts = vec![host_mount(Path::new("/dev"), "/dev")];
    let d = dests(&env.spec(&c));
    assert_eq!(
        d.iter().filter(|p| p.starts_with("/dev")).count(),
        1,
        "{d:?}"
    );
}
