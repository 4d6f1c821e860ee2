//! PodSandboxStats and ListPodSandboxStats: the sum of the pod's containers, and its network.

use basalt_proto::cri;
use basalt_shim::protocol::State as ShimState;
use tonic::Status;

use crate::agent::Agent;
use crate::store::{now_ns, SandboxRecord};
use crate::{sandbox_status, status, usage};

pub async fn pod_sandbox_stats(
    agent: &Agent,
    req: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, Status> {
    let id = req.pod_sandbox_id;
    let s = agent
        .records
        .find_sandbox(&id)
        .ok_or_else(|| status::not_found("pod sandbox", &id))?;
    Ok(cri::PodSandboxStatsResponse {
        stats: Some(stats(agent, &s).await),
    })
}

pub async fn list_pod_sandbox_stats(
    agent: &Agent,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let filter = cri::PodSandboxFilter {
        id: f.id,
        label_selector: f.label_selector,
        state: None,
    };
    let mut stats = Vec::new();
    for s in sandbox_status::list(agent, Some(filter)).await {
        if let Some(rec) = agent.records.sandbox(&s.id) {
            stats.push(self::stats(agent, &rec).await);
        }
    }
    Ok(cri::ListPodSandboxStatsResponse { stats })
}

pub async fn stats(agent: &Agent, s: &SandboxRecord) -> cri::PodSandboxStats {
    let ts = now_ns();
    let mut containers = Vec::new();
    let mut pid = None;
    for c in agent.records.containers_of(&s.id) {
        let live = agent.live_status(&c).await;
        if let Some(l) = live.as_ref().filter(|l| l.state == ShimState::Running) {
            pid.get_or_insert(l.pid);
        }
        containers.push(usage::container(&c, live.as_ref()));
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
    let network = pid.and_then(|p| usage::network(p, ts));
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
