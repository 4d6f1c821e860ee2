//! What the kubelet suites share: the settings of a kubelet under test, inside a harness.

use std::path::Path;
use std::time::Duration;

use basalt_cri_tests::Harness;

/// The kubelet's node name in harness `h`.
pub fn node_name(h: &Harness) -> String {
    format!("n{}", h.token)
}

/// The QoS cgroup root of the kubelet in harness `h` (under the harness's private cgroup parent).
pub fn cgroup_root(h: &Harness) -> String {
    format!("/basalt-critests/{}/kubepods", h.token)
}

/// A kubelet's settings with everything under `dir`: quick syncs, the default back-off, the harness's
/// node name and cgroup root.
pub fn settings(h: &Harness, dir: &Path) -> basalt_kubelet::Settings {
    basalt_kubelet::Settings {
        node_name: node_name(h),
        host_ip: "127.0.0.1".into(),
        manifest_dir: dir.join("manifests"),
        manifest_url: None,
        http_check_frequency: Duration::from_secs(20),
        log_root: dir.join("logs"),
        pods_root: dir.join("pods"),
        cgroup_root: cgroup_root(h),
        seccomp_default: true,
        backoff: Default::default(),
        sync_period: Duration::from_millis(500),
        file_check_frequency: Duration::from_secs(20),
        max_dead_per_container: 1,
        user_namespaces: Default::default(),
    }
}
