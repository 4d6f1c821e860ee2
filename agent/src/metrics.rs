//! ListMetricDescriptors and ListPodSandboxMetrics: per-container metrics by name, for the kubelet's
//! CRI-based stats.

use basalt_proto::cri::{self, MetricType};
use tonic::Status;

use crate::agent::Agent;
use crate::store::now_ns;
use crate::{container_stats, usage};

pub async fn list_metric_descriptors(
    _agent: &Agent,
    _req: cri::ListMetricDescriptorsRequest,
) -> Result<cri::ListMetricDescriptorsResponse, Status> {
    Ok(cri::ListMetricDescriptorsResponse {
        descriptors: metric_descriptors(),
    })
}

pub async fn list_pod_sandbox_metrics(
    agent: &Agent,
    _req: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, Status> {
    Ok(cri::ListPodSandboxMetricsResponse {
        pod_metrics: pod_metrics(agent).await,
    })
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
            let mut metrics = Vec::new();
            if let Some(v) = st.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds) {
                metrics.push(cri::Metric {
                    name: "container_cpu_usage_seconds_total".into(),
                    timestamp: ts,
                    metric_type: MetricType::Counter as i32,
                    label_values: vec![name.clone()],
                    value: usage::u64v(v.value / 1_000_000_000),
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
