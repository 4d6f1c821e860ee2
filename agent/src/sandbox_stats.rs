//! PodSandboxStats and ListPodSandboxStats: the sum of the pod's containers, and its network.

use basalt_proto::cri;
use basalt_shim::protocol::State as ShimState;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::{now_ns, SandboxRecord};
use crate::{usage, view};

impl Call for cri::PodSandboxStatsRequest {
    type Reply = cri::PodSandboxStatsResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let s = agent.sandbox(&self.pod_sandbox_id)?;
        let stats = stats(agent, &s).await;
        Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
    }
}

impl Call for cri::ListPodSandboxStatsRequest {
    type Reply = cri::ListPodSandboxStatsResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        // The sandboxes ListPodSandbox would select (this filter has no state), oldest first.
        let f = self.filter.unwrap_or_default();
        let mut stats = Vec::new();
        for s in agent.records.all_sandboxes() {
            if s.id.starts_with(&f.id) && view::labels_match(&s.config.labels, &f.label_selector) {
                stats.push(self::stats(agent, &s).await);
            }
        }
        Ok(cri::ListPodSandboxStatsResponse { stats })
    }
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
        usage_core_nano_seconds: sum(|c| Some(c.cpu?.usage_core_nano_seconds?.value)),
        usage_nano_cores: None,
    };
    let memory = cri::MemoryUsage {
        timestamp: ts,
        working_set_bytes: sum(|c| Some(c.memory?.working_set_bytes?.value)),
        usage_bytes: sum(|c| Some(c.memory?.usage_bytes?.value)),
        ..Default::default()
    };
    let network = pid.and_then(|p| usage::network(p, ts));
    cri::PodSandboxStats {
        attributes: Some(usage::attributes!(PodSandboxAttributes, s)),
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
