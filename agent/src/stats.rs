//! Container and pod statistics read straight from cgroupfs (v1 or v2), the writable layer and the pod's
//! network namespace (`/proc/<pid>/net/dev` of a process inside it).

use std::path::{Path, PathBuf};

use basalt_proto::cri::{self, MetricType};
use basalt_shim::protocol::{ContainerStatus, State as ShimState};

use crate::agent::Agent;
use crate::store::{now_ns, ContainerRecord, SandboxRecord};

fn u64v(value: u64) -> Option<cri::UInt64Value> {
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

impl Agent {
    pub async fn container_stats(&self, c: &ContainerRecord) -> cri::ContainerStats {
        let live = self.live_status(c).await;
        stats_of(c, live.as_ref())
    }

    pub async fn sandbox_stats(&self, s: &SandboxRecord) -> cri::PodSandboxStats {
        let ts = now_ns();
        let mut containers = Vec::new();
        let mut pid = None;
        for c in self.records.containers_of(&s.id) {
            let live = self.live_status(&c).await;
            if let Some(l) = live.as_ref().filter(|l| l.state == ShimState::Running) {
                pid.get_or_insert(l.pid);
            }
            containers.push(stats_of(&c, live.as_ref()));
        }
        let sum = |f: fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
            let v: Vec<u64> = containers.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| cri::UInt64Value {
                value: v.iter().sum(),
            })
        };
        let cpu = cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: sum(|c| {
                c.cpu
                    .as_ref()?
                    .usage_core_nano_seconds
                    .as_ref()
                    .map(|v| v.value)
            }),
            usage_nano_cores: None,
        };
        let memory = cri::MemoryUsage {
            timestamp: ts,
            working_set_bytes: sum(|c| {
                c.memory
                    .as_ref()?
                    .working_set_bytes
                    .as_ref()
                    .map(|v| v.value)
            }),
            usage_bytes: sum(|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
            ..Default::default()
        };
        let network = pid.and_then(|p| network_usage(p, ts));
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                cpu: Some(cpu),
                memory: Some(memory),
                network,
                process: Some(cri::ProcessUsage {
                    timestamp: ts,
                    process_count: None,
                }),
                containers,
            }),
            windows: None,
        }
    }

    pub async fn pod_metrics(&self) -> Vec<cri::PodSandboxMetrics> {
        let sandboxes = self.records.all_sandboxes();
        let mut out = Vec::new();
        for s in sandboxes {
            let mut container_metrics = Vec::new();
            for c in self.records.containers_of(&s.id) {
                let st = self.container_stats(&c).await;
                let ts = now_ns();
                let name = c
                    .config
                    .metadata
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let mut metrics = Vec::new();
                if let Some(v) = st.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds) {
                    metrics.push(cri::Metric {
                        name: "container_cpu_usage_seconds_total".into(),
                        timestamp: ts,
                        metric_type: MetricType::Counter as i32,
                        label_values: vec![name.clone()],
                        value: u64v(v.value / 1_000_000_000),
                    });
                }
                if let Some(v) = st.memory.as_ref().and_then(|m| m.working_set_bytes) {
                    metrics.push(cri::Metric {
                        name: "container_memory_working_set_bytes".into(),
                        timestamp: ts,
                        metric_type: MetricType::Gauge as i32,
                        label_values: vec![name.clone()],
                        value: Some(v),
                    });
                }
                container_metrics.push(cri::ContainerMetrics {
                    container_id: c.id.clone(),
                    metrics,
                });
            }
            out.push(cri::PodSandboxMetrics {
                pod_sandbox_id: s.id.clone(),
                metrics: Vec::new(),
                container_metrics,
            });
        }
        out
    }
}

pub fn metric_descriptors() -> Vec<cri::MetricDescriptor> {
    vec![
        cri::MetricDescriptor {
            name: "container_cpu_usage_seconds_total".into(),
            help: "Cumulative cpu time consumed in seconds.".into(),
            label_keys: vec!["container".into()],
        },
        cri::MetricDescriptor {
            name: "container_memory_working_set_bytes".into(),
            help: "Current working set in bytes.".into(),
            label_keys: vec!["container".into()],
        },
    ]
}

fn stats_of(c: &ContainerRecord, live: Option<&ContainerStatus>) -> cri::ContainerStats {
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
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        }),
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

fn network_usage(pid: i32, ts: i64) -> Option<cri::NetworkUsage> {
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
