//! ListMetricDescriptors and ListPodSandboxMetrics: per-container metrics by name, for the kubelet's
//! CRI-based stats.

use basalt_proto::cri::{self, MetricType};
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::now_ns;
use crate::{container_stats, usage};

impl Call for cri::ListMetricDescriptorsRequest {
    type Reply = cri::ListMetricDescriptorsResponse;

    async fn call(self, _agent: &Agent) -> Result<Self::Reply, Status> {
        Ok(cri::ListMetricDescriptorsResponse {
            descriptors: metric_descriptors(),
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

async fn pod_metrics(agent: &Agent) -> Vec<cri::PodSandboxMetrics> {
    let sandboxes = agent.records.all_sandboxes();
    let mut out = Vec::new();
    for s in sandboxes {
        let mut container_metrics = Vec::new();
        for c in agent.records.containers_of(&s.id) {
            let st = container_stats::stats(agent, &c).await;
            let ts = now_ns();
            let name = c
                .config
                .metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default();
            let readings = [
                (
                    "container_cpu_usage_seconds_total",
                    MetricType::Counter,
                    st.cpu
                        .and_then(|c| c.usage_core_nano_seconds)
                        .map(|v| v.value / 1_000_000_000),
                ),
                (
                    "container_memory_working_set_bytes",
                    MetricType::Gauge,
                    st.memory.and_then(|m| m.working_set_bytes).map(|v| v.value),
                ),
            ];
            let metrics = readings
                .into_iter()
                .filter_map(|(metric, kind, value)| {
                    Some(cri::Metric {
                        name: metric.into(),
                        timestamp: ts,
                        metric_type: kind as i32,
                        label_values: vec![name.clone()],
                        value: usage::u64v(value?),
                    })
                })
                .collect();
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

fn metric_descriptors() -> Vec<cri::MetricDescriptor> {
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
