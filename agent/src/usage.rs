//! What a container and a pod use, read straight from cgroupfs (v1 or v2), the writable layer and the pod's
//! network namespace (`/proc/<pid>/net/dev` of a process inside it).

use std::path::{Path, PathBuf};

use basalt_proto::cri;
use basalt_shim::protocol::{ContainerStatus, State as ShimState};

use crate::store::{now_ns, ContainerRecord};

/// The attributes (`cri::ContainerAttributes` or `cri::PodSandboxAttributes`) of a container's or a
/// sandbox's record: the two messages have the same fields.
macro_rules! attributes {
    ($message:ident, $rec:expr) => {
        basalt_proto::cri::$message {
            id: $rec.id.clone(),
            metadata: $rec.config.metadata.clone(),
            labels: $rec.config.labels.clone(),
            annotations: $rec.config.annotations.clone(),
        }
    };
}
pub(crate) use attributes;

pub fn u64v(value: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value })
}

fn read_u64(p: PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(p: PathBuf, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

struct CgroupSample {
    cpu_ns: Option<u64>,
    memory_usage: Option<u64>,
    working_set: Option<u64>,
    rss: Option<u64>,
    page_faults: Option<u64>,
    major_page_faults: Option<u64>,
}

fn sample(cgroup_path: &str) -> CgroupSample {
    let rel = cgroup_path.trim_start_matches('/');
    if basalt_cgroups::unified() {
        let dir = Path::new("/sys/fs/cgroup").join(rel);
        let usage = read_u64(dir.join("memory.current"));
        let inactive = stat_field(dir.join("memory.stat"), "inactive_file").unwrap_or(0);
        CgroupSample {
            cpu_ns: stat_field(dir.join("cpu.stat"), "usage_usec").map(|u| u * 1000),
            memory_usage: usage,
            working_set: usage.map(|u| u.saturating_sub(inactive)),
            rss: stat_field(dir.join("memory.stat"), "anon"),
            page_faults: stat_field(dir.join("memory.stat"), "pgfault"),
            major_page_faults: stat_field(dir.join("memory.stat"), "pgmajfault"),
        }
    } else {
        let mem = Path::new("/sys/fs/cgroup/memory").join(rel);
        let usage = read_u64(mem.join("memory.usage_in_bytes"));
        let inactive = stat_field(mem.join("memory.stat"), "total_inactive_file").unwrap_or(0);
        CgroupSample {
            cpu_ns: read_u64(
                Path::new("/sys/fs/cgroup/cpuacct")
                    .join(rel)
                    .join("cpuacct.usage"),
            ),
            memory_usage: usage,
            working_set: usage.map(|u| u.saturating_sub(inactive)),
            rss: stat_field(mem.join("memory.stat"), "total_rss"),
            page_faults: stat_field(mem.join("memory.stat"), "total_pgfault"),
            major_page_faults: stat_field(mem.join("memory.stat"), "total_pgmajfault"),
        }
    }
}

/// Bytes (allocated blocks) and inodes under `root`, without following links.
pub fn dir_usage(root: &Path) -> (u64, u64) {
    let (mut bytes, mut inodes) = (0, 0);
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            inodes += 1;
            bytes += std::os::unix::fs::MetadataExt::blocks(&m) * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// The container's usage: its cgroup while it runs, its writable layer always.
pub fn container(c: &ContainerRecord, live: Option<&ContainerStatus>) -> cri::ContainerStats {
    let ts = now_ns();
    let running = live.is_some_and(|l| l.state == ShimState::Running);
    let s = live
        .filter(|_| running)
        .map(|l| sample(&l.cgroup_path))
        .unwrap_or(CgroupSample {
            cpu_ns: None,
            memory_usage: None,
            working_set: None,
            rss: None,
            page_faults: None,
            major_page_faults: None,
        });
    let upper = c
        .rootfs
        .parent()
        .map(|p| p.join("upper"))
        .unwrap_or_default();
    let (bytes, inodes) = dir_usage(&upper);
    cri::ContainerStats {
        attributes: Some(attributes!(ContainerAttributes, c)),
        cpu: Some(cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: s.cpu_ns.and_then(u64v),
            usage_nano_cores: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: ts,
            working_set_bytes: s.working_set.and_then(u64v),
            available_bytes: None,
            usage_bytes: s.memory_usage.and_then(u64v),
            rss_bytes: s.rss.and_then(u64v),
            page_faults: s.page_faults.and_then(u64v),
            major_page_faults: s.major_page_faults.and_then(u64v),
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: upper.to_string_lossy().into_owned(),
            }),
            used_bytes: u64v(bytes),
            inodes_used: u64v(inodes),
        }),
        swap: None,
    }
}

/// The interfaces of the network namespace `pid` is in, but `lo`.
pub fn network(pid: i32, ts: i64) -> Option<cri::NetworkUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok()?;
    let mut interfaces = Vec::new();
    for line in text.lines().skip(2) {
        let (name, rest) = line.split_once(':')?;
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() < 11 {
            continue;
        }
        interfaces.push(cri::NetworkInterfaceUsage {
            name: name.to_owned(),
            rx_bytes: u64v(f[0]),
            rx_errors: u64v(f[2]),
            tx_bytes: u64v(f[8]),
            tx_errors: u64v(f[10]),
        });
    }
    let default_interface = interfaces.iter().find(|i| i.name == "eth0").cloned();
    Some(cri::NetworkUsage {
        timestamp: ts,
        default_interface,
        interfaces,
    })
}
