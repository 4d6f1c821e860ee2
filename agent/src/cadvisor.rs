//! cAdvisor as the kubelet's `/metrics/cadvisor` shows it: each metric family's name, type, help and
//! labels (what ListMetricDescriptors answers and [`crate::metrics`] fills in), and the host readings only
//! cAdvisor has (interface counters, processes in a cgroup, the device under a filesystem).

use std::path::Path;

use basalt_proto::cri::{self, MetricType};

/// The labels of every metric, as the kubelet's `/metrics/cadvisor` has them: which container (its name in
/// the pod, `""` for the pod's own), its ID, its image, the runtime's name for it, and the pod.
pub const LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One cAdvisor metric: its name, type, help, and the labels it has beyond [`LABELS`].
pub struct Family {
    pub name: &'static str,
    pub kind: MetricType,
    pub help: &'static str,
    pub extra: &'static [&'static str],
}

const fn family(
    name: &'static str,
    kind: MetricType,
    help: &'static str,
    extra: &'static [&'static str],
) -> Family {
    Family {
        name,
        kind,
        help,
        extra,
    }
}

use MetricType::{Counter, Gauge};

/// What a container reports (cAdvisor's names and help texts).
pub const CONTAINER: &[Family] = &[
    family(
        "container_cpu_usage_seconds_total",
        Counter,
        "Cumulative cpu time consumed in seconds.",
        &["cpu"],
    ),
    family(
        "container_memory_usage_bytes",
        Gauge,
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        &[],
    ),
    family(
        "container_memory_working_set_bytes",
        Gauge,
        "Current working set in bytes.",
        &[],
    ),
    family("container_memory_rss", Gauge, "Size of RSS in bytes.", &[]),
    family(
        "container_memory_failures_total",
        Counter,
        "Cumulative count of memory allocation failures.",
        &["failure_type", "scope"],
    ),
    family(
        "container_fs_usage_bytes",
        Gauge,
        "Number of bytes that are consumed by the container on this filesystem.",
        &["device"],
    ),
    family(
        "container_fs_limit_bytes",
        Gauge,
        "Number of bytes that can be consumed by the container on this filesystem.",
        &["device"],
    ),
    family(
        "container_fs_inodes_free",
        Gauge,
        "Number of available Inodes",
        &["device"],
    ),
    family(
        "container_fs_inodes_total",
        Gauge,
        "Number of Inodes",
        &["device"],
    ),
    family(
        "container_processes",
        Gauge,
        "Number of processes running inside the container.",
        &[],
    ),
    family(
        "container_start_time_seconds",
        Gauge,
        "Start time of the container since unix epoch in seconds.",
        &[],
    ),
    family(
        "container_last_seen",
        Gauge,
        "Last time a container was seen by the exporter",
        &[],
    ),
];

/// What a pod reports for itself: its network namespace's interfaces.
pub const POD: &[Family] = &[
    family(
        "container_network_receive_bytes_total",
        Counter,
        "Cumulative count of bytes received",
        &["interface"],
    ),
    family(
        "container_network_receive_packets_total",
        Counter,
        "Cumulative count of packets received",
        &["interface"],
    ),
    family(
        "container_network_receive_packets_dropped_total",
        Counter,
        "Cumulative count of packets dropped while receiving",
        &["interface"],
    ),
    family(
        "container_network_receive_errors_total",
        Counter,
        "Cumulative count of errors encountered while receiving",
        &["interface"],
    ),
    family(
        "container_network_transmit_bytes_total",
        Counter,
        "Cumulative count of bytes transmitted",
        &["interface"],
    ),
    family(
        "container_network_transmit_packets_total",
        Counter,
        "Cumulative count of packets transmitted",
        &["interface"],
    ),
    family(
        "container_network_transmit_packets_dropped_total",
        Counter,
        "Cumulative count of packets dropped while transmitting",
        &["interface"],
    ),
    family(
        "container_network_transmit_errors_total",
        Counter,
        "Cumulative count of errors encountered while transmitting",
        &["interface"],
    ),
    family(
        "container_last_seen",
        Gauge,
        "Last time a container was seen by the exporter",
        &[],
    ),
];

/// The counters of each interface but `lo` in the network namespace of `pid` (`/proc/<pid>/net/dev`).
pub fn interfaces(pid: i32) -> Vec<(String, Vec<u64>)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (name.trim() != "lo" && f.len() >= 12).then(|| (name.trim().to_owned(), f))
        })
        .collect()
}

/// Processes in the container's cgroup (v2 tree, or the v1 pids hierarchy).
pub fn processes(cgroup_path: &str) -> u64 {
    let rel = cgroup_path.trim_start_matches('/');
    let dir = if basalt_cgroups::unified() {
        Path::new("/sys/fs/cgroup").join(rel)
    } else {
        Path::new("/sys/fs/cgroup/pids").join(rel)
    };
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0)
}

/// The block device (`/dev/…`, or `major:minor`) the filesystem holding `path` is on, as cAdvisor's `device`.
pub fn device_of(path: &Path) -> String {
    let Ok(md) = std::fs::metadata(path) else {
        return String::new();
    };
    let dev = std::os::unix::fs::MetadataExt::dev(&md);
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            (f.get(2)? == &format!("{major}:{minor}").as_str())
                .then(|| f.get(sep + 2).map(|s| s.to_string()))?
        })
        .filter(|s| s.starts_with('/'))
        .unwrap_or_else(|| format!("{major}:{minor}"))
}

/// One descriptor per family name, with [`LABELS`] and the family's own.
pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    let mut seen = std::collections::BTreeSet::new();
    CONTAINER
        .iter()
        .chain(POD)
        .filter(|f| seen.insert(f.name))
        .map(|f| cri::MetricDescriptor {
            name: f.name.into(),
            help: f.help.into(),
            label_keys: LABELS
                .iter()
                .chain(f.extra)
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each family has one name and one label set: the kubelet builds a Prometheus descriptor per name.
    #[test]
    fn descriptors_are_cadvisors_names_with_its_labels() {
        let d = descriptors();
        let names: Vec<&str> = d.iter().map(|d| d.name.as_str()).collect();
        for want in [
            "container_cpu_usage_seconds_total",
            "container_memory_working_set_bytes",
            "container_fs_usage_bytes",
            "container_network_receive_bytes_total",
            "container_processes",
            "container_last_seen",
        ] {
            assert!(names.contains(&want), "{want} missing: {names:?}");
        }
        let cpu = d
            .iter()
            .find(|d| d.name == "container_cpu_usage_seconds_total")
            .unwrap();
        assert_eq!(
            cpu.label_keys,
            [
                "container",
                "id",
                "image",
                "name",
                "namespace",
                "pod",
                "cpu"
            ]
        );
        let last_seen: Vec<_> = CONTAINER
            .iter()
            .chain(POD)
            .filter(|f| f.name == "container_last_seen")
            .collect();
        assert!(
            last_seen.iter().all(|f| f.extra.is_empty()),
            "one label set per name"
        );
    }
}
