//! ListMetricDescriptors and ListPodSandboxMetrics: the metrics of the kubelet's `/metrics/cadvisor`, by
//! cAdvisor's names, help and labels (the kubelet's CRI stats provider turns them into that endpoint), for
//! each container and for each pod's network.

use basalt_proto::cri;
use tonic::Status;

use std::path::Path;

use basalt_shim::protocol::State as ShimState;

use crate::agent::Agent;
use crate::cadvisor::{self, device_of, interfaces, processes, CONTAINER, POD};
use crate::service::Call;
use crate::store::now_ns;
use crate::usage;

impl Call for cri::ListMetricDescriptorsRequest {
    type Reply = cri::ListMetricDescriptorsResponse;

    async fn call(self, _agent: &Agent) -> Result<Self::Reply, Status> {
        Ok(cri::ListMetricDescriptorsResponse {
            descriptors: cadvisor::descriptors(),
        })
    }
}

impl Call for cri::ListPodSandboxMetricsRequest {
    type Reply = cri::ListPodSandboxMetricsResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        Ok(cri::ListPodSandboxMetricsResponse {
            pod_metrics: pod_metrics(agent).await,
        })
    }
}

/// Collects readings of one container or pod: the [`cadvisor::LABELS`] values and the metrics so far.
struct Readings<'a> {
    base: [String; 6],
    ts: i64,
    out: &'a mut Vec<cri::Metric>,
}

impl Readings<'_> {
    fn push(&mut self, name: &str, extra: &[&str], value: Option<u64>) {
        let Some(value) = value else { return };
        let f = CONTAINER
            .iter()
            .chain(POD)
            .find(|f| f.name == name)
            .expect("a family of ours");
        let mut label_values = self.base.to_vec();
        label_values.extend(extra.iter().map(|s| s.to_string()));
        self.out.push(cri::Metric {
            name: name.into(),
            timestamp: self.ts,
            metric_type: f.kind as i32,
            label_values,
            value: usage::u64v(value),
        });
    }
}

async fn pod_metrics(agent: &Agent) -> Vec<cri::PodSandboxMetrics> {
    let mut out = Vec::new();
    for s in agent.records.all_sandboxes() {
        let meta = s.config.metadata.clone().unwrap_or_default();
        let ts = now_ns();
        let mut container_metrics = Vec::new();
        let mut pid = None;
        for c in agent.records.containers_of(&s.id) {
            let live = agent.live_status(&c).await;
            let running = live.as_ref().filter(|l| l.state == ShimState::Running);
            if let Some(l) = running {
                pid.get_or_insert(l.pid);
            }
            let st = usage::container(&c, live.as_ref());
            let name = c.config.metadata.clone().unwrap_or_default().name;
            let mut metrics = Vec::new();
            let mut r = Readings {
                base: [
                    name,
                    c.id.clone(),
                    c.image.clone(),
                    c.id.clone(),
                    meta.namespace.clone(),
                    meta.name.clone(),
                ],
                ts,
                out: &mut metrics,
            };
            let cpu = st
                .cpu
                .and_then(|c| c.usage_core_nano_seconds)
                .map(|v| v.value);
            r.push(
                "container_cpu_usage_seconds_total",
                &["total"],
                cpu.map(|n| n / 1_000_000_000),
            );
            let mem = st.memory.unwrap_or_default();
            r.push(
                "container_memory_usage_bytes",
                &[],
                mem.usage_bytes.map(|v| v.value),
            );
            r.push(
                "container_memory_working_set_bytes",
                &[],
                mem.working_set_bytes.map(|v| v.value),
            );
            r.push("container_memory_rss", &[], mem.rss_bytes.map(|v| v.value));
            let faults = |v: Option<cri::UInt64Value>| v.map(|v| v.value);
            r.push(
                "container_memory_failures_total",
                &["pgfault", "container"],
                faults(mem.page_faults),
            );
            r.push(
                "container_memory_failures_total",
                &["pgmajfault", "container"],
                faults(mem.major_page_faults),
            );
            if let Some(fs) = st.writable_layer {
                let upper = fs.fs_id.map(|f| f.mountpoint).unwrap_or_default();
                let device = device_of(Path::new(&upper));
                r.push(
                    "container_fs_usage_bytes",
                    &[&device],
                    fs.used_bytes.map(|v| v.value),
                );
                if let Ok(v) = nix::sys::statvfs::statvfs(Path::new(&upper)) {
                    let frag = v.fragment_size();
                    r.push(
                        "container_fs_limit_bytes",
                        &[&device],
                        Some(v.blocks() * frag),
                    );
                    r.push("container_fs_inodes_free", &[&device], Some(v.files_free()));
                    r.push("container_fs_inodes_total", &[&device], Some(v.files()));
                }
            }
            if let Some(l) = running {
                r.push("container_processes", &[], Some(processes(&l.cgroup_path)));
                r.push(
                    "container_start_time_seconds",
                    &[],
                    Some(l.started_at.max(0) as u64 / 1_000_000_000),
                );
            }
            r.push(
                "container_last_seen",
                &[],
                Some(ts.max(0) as u64 / 1_000_000_000),
            );
            container_metrics.push(cri::ContainerMetrics {
                container_id: c.id.clone(),
                metrics,
            });
        }
        // The pod's own: its network, as cAdvisor shows it on the pod's (pause) container.
        let mut metrics = Vec::new();
        let mut r = Readings {
            base: [
                String::new(),
                s.id.clone(),
                String::new(),
                s.id.clone(),
                meta.namespace.clone(),
                meta.name.clone(),
            ],
            ts,
            out: &mut metrics,
        };
        for (iface, f) in pid.map(interfaces).unwrap_or_default() {
            let i: &[&str] = &[&iface];
            // /proc/net/dev: bytes, packets, errs, drop, received from column 0 on, sent from column 8 on.
            for (way, at) in [("receive", 0), ("transmit", 8)] {
                for (what, k) in [
                    ("bytes", 0),
                    ("packets", 1),
                    ("errors", 2),
                    ("packets_dropped", 3),
                ] {
                    let name = format!("container_network_{way}_{what}_total");
                    r.push(&name, i, Some(f[at + k]));
                }
            }
        }
        r.push(
            "container_last_seen",
            &[],
            Some(ts.max(0) as u64 / 1_000_000_000),
        );
        out.push(cri::PodSandboxMetrics {
            pod_sandbox_id: s.id.clone(),
            metrics,
            container_metrics,
        });
    }
    out
}
