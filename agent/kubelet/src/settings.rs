use std::path::PathBuf;
use std::time::Duration;

use crate::{backoff, userns};

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub host_ip: String,
    pub manifest_dir: PathBuf,
    /// kubelet's `--manifest-url`: a Pod, several YAML documents or a List, fetched every
    /// `http_check_frequency`.
    pub manifest_url: Option<String>,
    pub http_check_frequency: Duration,
    /// Pod logs: `<log_root>/<ns>_<name>_<uid>/<container>/<n>.log`.
    pub log_root: PathBuf,
    /// Per-pod directories (volumes, termination messages): `<pods_root>/<uid>`.
    pub pods_root: PathBuf,
    /// Root of the QoS cgroup hierarchy, e.g. `/kubepods`.
    pub cgroup_root: String,
    /// Containers without a seccomp profile get RuntimeDefault (kubelet's `--seccomp-default`).
    pub seccomp_default: bool,
    pub backoff: backoff::Policy,
    /// How often each pod worker re-checks its pod without an event (probes have their own periods).
    pub sync_period: Duration,
    pub file_check_frequency: Duration,
    /// Exited containers kept per container name (kubelet's `--maximum-dead-containers-per-container`).
    pub max_dead_per_container: u32,
    /// Host ids for `hostUsers: false` pods, 65536 per pod (upstream: the `kubelet` user's subordinate ids).
    pub user_namespaces: userns::Range,
}
