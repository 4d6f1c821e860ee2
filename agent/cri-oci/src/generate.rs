//! [`container_spec`]: the parts of the spec from the other modules, put together.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use basalt_proto::cri::{LinuxContainerSecurityContext, NamespaceMode};
use oci_spec::runtime::{Linux, Process, Root, Spec, User};

use crate::error::{Error, Result};
use crate::request::{Container, Generated, Image, Options, Sandbox};
use crate::{devices, mounts, namespaces, process, resources, security, user};

/// The OCI spec for `container` in `sandbox` from `image`.
pub fn container_spec(
    container: &Container,
    sandbox: &Sandbox,
    image: &Image,
    opts: &Options,
) -> Result<Generated> {
    let cfg = container.config;
    let name = cfg.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or("");
    if name.is_empty() {
        return Err(Error::invalid("metadata.name", name, "must be set"));
    }
    if let Some(d) = cfg.cdi_devices.first() {
        return Err(Error::unimplemented(
            format!("CDI_devices[0] {:?}", d.name),
            "CDI devices are not supported yet",
        ));
    }
    let none = LinuxContainerSecurityContext::default();
    let sc = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .unwrap_or(&none);
    let sandbox_sc = sandbox
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let privileged = sc.privileged;
    if privileged && !sandbox_sc.is_some_and(|s| s.privileged) {
        return Err(Error::invalid(
            "linux.security_context.privileged",
            true,
            format!("sandbox {} was not created privileged", sandbox.id),
        ));
    }
    let mut ns_opts = sc
        .namespace_options
        .clone()
        .or_else(|| sandbox_sc.and_then(|s| s.namespace_options.clone()))
        .unwrap_or_default();
    // Every container of a pod is in the pod's user namespace, whether or not its own options repeat it.
    if ns_opts.userns_options.is_none() {
        ns_opts.userns_options = sandbox_sc
            .and_then(|s| s.namespace_options.as_ref())
            .and_then(|n| n.userns_options.clone());
    }

    let user = user::resolve(sc, &image.config.config.user, image.rootfs)?;
    if container.run_as_non_root && user.uid == 0 {
        let md = sandbox.config.metadata.clone().unwrap_or_default();
        return Err(Error::precondition(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{}_{}({})\", container: {name})",
            md.name, md.namespace, md.uid
        )));
    }

    let hostname = if !sandbox.config.hostname.is_empty() {
        sandbox.config.hostname.clone()
    } else {
        std::fs::read_to_string(&opts.host_hostname_file)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let rc = &image.config.config;
    // Kubelets before 1.30 still send the string forms.
    #[allow(deprecated)]
    let (apparmor_str, seccomp_str) = (
        sc.apparmor_profile.as_str(),
        sc.seccomp_profile_path.as_str(),
    );
    let (resources, oom) = resources::resources(
        cfg.linux.as_ref().and_then(|l| l.resources.as_ref()),
        opts.cgroup_v2,
    )?;
    let mut process = Process::default();
    process.set_terminal(Some(cfg.tty));
    process.set_console_size(None);
    process.set_args(Some(process::args(cfg, rc)?));
    process.set_env(Some(process::env(cfg, rc, &hostname)?));
    process.set_cwd(process::cwd(cfg, rc)?);
    let mut u = User::default();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    u.set_additional_gids(Some(user.supplemental_groups.clone()));
    process.set_user(u);
    process.set_capabilities(Some(security::capabilities(
        sc.capabilities.as_ref(),
        privileged,
        opts.cap_last_cap,
        opts.host_capabilities,
    )?));
    // The rlimits of the runtime's parent are inherited, as with containerd 2.
    process.set_rlimits(None);
    process.set_no_new_privileges(Some(sc.no_new_privs && !privileged));
    process.set_apparmor_profile(security::apparmor(
        sc.apparmor.as_ref(),
        apparmor_str,
        privileged,
        opts.apparmor_default_profile.as_deref(),
    )?);
    process.set_oom_score_adj(oom);
    process.set_selinux_label(None);

    let seccomp = security::seccomp(
        sc.seccomp.as_ref(),
        seccomp_str,
        privileged,
        opts.seccomp_default,
        &opts.seccomp_profile_root,
    )?;
    let (masked, readonly) =
        security::masked_and_readonly(&sc.masked_paths, &sc.readonly_paths, privileged);
    let namespaces =
        namespaces::namespaces(sandbox, &ns_opts, container.target_pid_ns, opts.cgroup_v2)?;

    let pod_idmap = ns_opts
        .userns_options
        .as_ref()
        .filter(|u| u.mode() == NamespaceMode::Pod)
        .map(|u| mounts::PodIdMap {
            uids: u.uids.clone(),
            gids: u.gids.clone(),
        });
    let cri = mounts::cri_mounts(
        &cfg.mounts,
        &container.image_mounts,
        opts.create_missing_host_paths,
        pod_idmap.as_ref(),
    )?;
    let host_ipc = ns_opts.ipc() == NamespaceMode::Node;
    let mut all_mounts: Vec<_> = mounts::standard(privileged)
        .into_iter()
        .chain(mounts::sandbox_files(sandbox, sc.readonly_rootfs, host_ipc))
        .filter(|m| !mounts::overridden(m, &cri.mounts))
        .collect();
    all_mounts.extend(cri.mounts);

    let (devs, dev_rules) = devices::devices(&cfg.devices, privileged, &opts.host_dev)?;
    let mut resources = resources;
    resources.set_devices(Some(dev_rules));

    let parent = sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or(&opts.cgroup_parent_default);
    let cgroups_path = resources::cgroups_path(parent, container.id, opts.systemd_cgroup)?;

    let log_path = log_path(&sandbox.config.log_directory, &cfg.log_path)?;

    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces));
    if let Some(m) = &pod_idmap {
        linux.set_uid_mappings(Some(m.uids.iter().map(mounts::oci_id_map).collect()));
        linux.set_gid_mappings(Some(m.gids.iter().map(mounts::oci_id_map).collect()));
    }
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    linux.set_devices(Some(devs));
    linux.set_seccomp(seccomp);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_rootfs_propagation(cri.rootfs_propagation);
    // Per-sandbox: applied when the sandbox's network namespace is made, never per container.
    linux.set_sysctl(None);

    let mut root = Root::default();
    root.set_path(image.rootfs.to_owned());
    root.set_readonly(Some(sc.readonly_rootfs));

    let mut spec = Spec::default();
    spec.set_version("1.0.2-dev".into());
    spec.set_root(Some(root));
    spec.set_process(Some(process));
    // Containers share the sandbox's UTS namespace, whose name was set when the sandbox was made.
    spec.set_hostname(None);
    spec.set_mounts(Some(all_mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(Some(annotations(container, sandbox, name)));

    Ok(Generated {
        spec,
        user,
        log_path,
        missing_host_paths: cri.missing_host_paths,
    })
}

/// containerd's annotations, which tools like crictl inspect and NRI plugins read.
fn annotations(container: &Container, sandbox: &Sandbox, name: &str) -> HashMap<String, String> {
    let md = sandbox.config.metadata.clone().unwrap_or_default();
    let image = container
        .config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    [
        ("io.kubernetes.cri.container-type", "container".to_owned()),
        ("io.kubernetes.cri.container-name", name.to_owned()),
        ("io.kubernetes.cri.sandbox-id", sandbox.id.to_owned()),
        ("io.kubernetes.cri.sandbox-name", md.name),
        ("io.kubernetes.cri.sandbox-namespace", md.namespace),
        ("io.kubernetes.cri.sandbox-uid", md.uid),
        ("io.kubernetes.cri.image-name", image),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn log_path(dir: &str, path: &str) -> Result<Option<PathBuf>> {
    if dir.is_empty() || path.is_empty() {
        return Ok(None);
    }
    let p = Path::new(path);
    if p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            "log_path",
            path,
            "must be relative to the sandbox's log_directory, without '..'",
        ));
    }
    Ok(Some(Path::new(dir).join(p)))
}
