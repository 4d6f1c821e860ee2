//! What [`crate::container_spec`] takes (the sandbox, the container, its image, node options) and gives back.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use basalt_proto::cri::{ContainerConfig, PodSandboxConfig};
use oci_spec::runtime::Spec;

use crate::user::EffectiveUser;

/// The pod sandbox a container is created in.
#[derive(Debug, Clone, Copy)]
pub struct Sandbox<'a> {
    pub id: &'a str,
    pub config: &'a PodSandboxConfig,
    /// Pinned namespace files of the sandbox; None means the sandbox uses the host's namespace.
    pub net_ns: Option<&'a Path>,
    pub ipc_ns: Option<&'a Path>,
    pub uts_ns: Option<&'a Path>,
    pub pid_ns: Option<&'a Path>,
    /// The pod's user namespace (userns_options mode POD), which the others were created in.
    pub user_ns: Option<&'a Path>,
    /// Files bind-mounted at /etc/hostname, /etc/resolv.conf and /etc/hosts (unless the CRI mounts those
    /// paths itself, as the kubelet does for /etc/hosts).
    pub hostname_file: Option<&'a Path>,
    pub resolv_conf: Option<&'a Path>,
    pub hosts_file: Option<&'a Path>,
    /// The sandbox's /dev/shm; None gives each container a private tmpfs.
    pub shm: Option<&'a Path>,
}

impl<'a> Sandbox<'a> {
    /// A sandbox in the host's namespaces with no files of its own.
    pub fn new(id: &'a str, config: &'a PodSandboxConfig) -> Self {
        Sandbox {
            id,
            config,
            net_ns: None,
            ipc_ns: None,
            uts_ns: None,
            pid_ns: None,
            user_ns: None,
            hostname_file: None,
            resolv_conf: None,
            hosts_file: None,
            shm: None,
        }
    }
}

/// The container's image: its config and its root filesystem (the directory the container's `root.path` is
/// set to, and where /etc/passwd and /etc/group are read from).
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    pub config: &'a basalt_images::ImageConfig,
    pub rootfs: &'a Path,
}

/// The container being created, with what the agent looked up for it.
#[derive(Debug, Clone)]
pub struct Container<'a> {
    pub id: &'a str,
    pub config: &'a ContainerConfig,
    /// The PID namespace of `namespace_options.target_id` when the pid mode is TARGET.
    pub target_pid_ns: Option<&'a Path>,
    /// Root filesystems of image volumes (`Mount.image`), by `ImageSpec.image`.
    pub image_mounts: HashMap<String, PathBuf>,
    /// The pod's `runAsNonRoot` (the kubelet enforces it too, but cannot resolve user names in the image).
    pub run_as_non_root: bool,
}

impl<'a> Container<'a> {
    pub fn new(id: &'a str, config: &'a ContainerConfig) -> Self {
        Container {
            id,
            config,
            target_pid_ns: None,
            image_mounts: HashMap::new(),
            run_as_non_root: false,
        }
    }
}

/// Node-wide settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parent cgroup when the sandbox has no `linux.cgroup_parent`.
    pub cgroup_parent_default: String,
    /// `slice:basalt:id` cgroups paths for the runtime's systemd driver.
    pub systemd_cgroup: bool,
    /// Allows `linux.resources.unified` and gives each container a cgroup namespace.
    pub cgroup_v2: bool,
    /// Base of a relative Localhost seccomp profile (the kubelet sends absolute paths).
    pub seccomp_profile_root: PathBuf,
    /// Whether a container without any seccomp request gets RuntimeDefault (kubelet `--seccomp-default`,
    /// containerd `unset_seccomp_profile`); otherwise it runs unconfined, as the CRI says.
    pub seccomp_default: bool,
    /// The AppArmor profile for RuntimeDefault; None when the node has no AppArmor.
    pub apparmor_default_profile: Option<String>,
    /// containerd creates a missing `host_path` as a directory (so does CRI-O); false makes it an error, as the
    /// CRI's text asks.
    pub create_missing_host_paths: bool,
    /// Device tree a privileged container gets.
    pub host_dev: PathBuf,
    /// Where the node's hostname is read when the sandbox config has none (host network pods).
    pub host_hostname_file: PathBuf,
    /// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`) bounding "ALL"; None: all we
    /// know.
    pub cap_last_cap: Option<u32>,
    /// The capabilities the agent itself may hand on (its bounding set, bit n = `CAP_*` n), which also bound
    /// "ALL": a node that runs without some capability (a nested or confined node) cannot give it to a
    /// container, and asking for it makes `capset` fail. None: no limit.
    pub host_capabilities: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cgroup_parent_default: "/basalt".into(),
            systemd_cgroup: false,
            cgroup_v2: false,
            seccomp_profile_root: "/var/lib/kubelet/seccomp".into(),
            seccomp_default: false,
            apparmor_default_profile: None,
            create_missing_host_paths: true,
            host_dev: "/dev".into(),
            host_hostname_file: "/proc/sys/kernel/hostname".into(),
            cap_last_cap: std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            host_capabilities: own_bounding_set(),
        }
    }
}

/// `CapBnd` of /proc/self/status.
fn own_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The spec and what the agent reports or prepares besides it.
#[derive(Debug, Clone)]
pub struct Generated {
    pub spec: Spec,
    /// For `ContainerStatus.user`.
    pub user: EffectiveUser,
    /// `log_directory/log_path` of the sandbox and container, when both are set.
    pub log_path: Option<PathBuf>,
    /// `mounts[].host_path` directories that do not exist: create them (0755) before creating the container.
    pub missing_host_paths: Vec<PathBuf>,
}

impl Generated {
    /// Creates [`Generated::missing_host_paths`] as containerd does (mkdir -p, mode 0755).
    pub fn create_missing_host_paths(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for p in &self.missing_host_paths {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(p)?;
        }
        Ok(())
    }
}
