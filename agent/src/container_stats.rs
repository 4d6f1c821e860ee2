//! ContainerStats and ListContainerStats.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::ContainerRecord;
use crate::usage;

impl Call for cri::ContainerStatsRequest {
    type Reply = cri::ContainerStatsResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let c = agent.container(&self.container_id)?;
        Ok(cri::ContainerStatsResponse {
            stats: Some(stats(agent, &c).await),
        })
    }
}

/// What the container uses now (its cgroup while it runs, its writable layer always).
pub async fn stats(agent: &Agent, c: &ContainerRecord) -> cri::ContainerStats {
    let live = agent.live_status(c).await;
    usage::container(c, live.as_ref())
}

impl Call for cri::ListContainerStatsRequest {
    type Reply = cri::ListContainerStatsResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let f = self.filter.unwrap_or_default();
        let filter = cri::ContainerFilter {
            id: f.id,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
            state: None,
        };
        let listed = cri::ListContainersRequest {
            filter: Some(filter),
        };
        let mut stats = Vec::new();
        for c in listed.call(agent).await?.containers {
            if let Some(rec) = agent.records.container(&c.id) {
                stats.push(self::stats(agent, &rec).await);
            }
        }
        Ok(cri::ListContainerStatsResponse { stats })
    }
}
