//! Where things live inside the node image: the contract between the builder and PID 1.

/// Directories every image has, even when empty (mount points and writable places).
pub const EMPTY_DIRS: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/tmp",
    "/etc",
    "/root",
    "/mnt",
    "/var/lib/basalt",
];
pub const CONFIG: &str = "/etc/basalt/config.yaml";
pub const MANIFESTS_DIR: &str = "/etc/basalt/manifests";
/// Module files, flat, named `<module>.ko`.
pub const MODULES_DIR: &str = "/lib/modules/basalt";
/// One line per module in load order: `<name> <file> <stage>` (a stage loads at once, after the ones before
/// it), or `<name> -` when the kernel lacks it.
pub const MODULES_ORDER: &str = "/lib/modules/basalt/order";
/// Preloaded archives, kept outside the state directory so a state disk mounted over it cannot hide them.
pub const PRELOAD_DIR: &str = "/usr/share/basalt/images";
/// One line per image: `<normalised name> <archive file>`.
pub const PRELOAD_LIST: &str = "/usr/share/basalt/images.list";
pub const MKFS: &str = "/sbin/mke2fs";
pub const STATE_DIR: &str = "/var/lib/basalt";
/// The agent's air-gap import directory; PID 1 links every preloaded archive here.
pub const AIRGAP_DIR: &str = "/var/lib/basalt/images";
pub const RUN_DIR: &str = "/run/basalt";
pub const LOG: &str = "/run/basalt/init.log";
/// The agent's standard output and error.
pub const AGENT_LOG: &str = "/run/basalt/agent.log";
/// The CSI plugin's standard output and error (it runs when the config has a `csi:` section).
pub const CSI_LOG: &str = "/run/basalt/csi.log";
/// The node config PID 1 hands to the agent: the file without `init:`, with command-line overrides applied.
pub const EFFECTIVE_CONFIG: &str = "/run/basalt/config.yaml";
/// The agent's one-line-per-pod summary (`namespace/name phase ready/total restarts`) for the console.
pub const POD_SUMMARY: &str = "/run/basalt/pods.summary";
