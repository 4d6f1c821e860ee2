//! ContainerStats and ListContainerStats.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::store::ContainerRecord;
use crate::{container_status, status, usage};

pub async fn container_stats(
    agent: &Agent,
    req: cri::ContainerStatsRequest,
) -> Result<cri::ContainerStatsResponse, Status> {
    let id = req.container_id;
    let c = agent
        .records
        .find_container(&id)
        .ok_or_else(|| status::not_found("container", &id))?;
    Ok(cri::ContainerStatsResponse {
        stats: Some(stats(agent, &c).await),
    })
}

pub async fn list_container_stats(
    agent: &Agent,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, Status> {
    let f = req.filter.unwrap_or_default();
    let filter = cri::ContainerFilter {
        id: f.id,
        pod_sandbox_id: f.pod_sandbox_id,
        label_selector: f.label_selector,
        state: None,
    };
    let mut stats = Vec::new();
    for c in container_status::list(agent, Some(filter)).await {
        if let Some(rec) = agent.records.container(&c.id) {
            stats.push(self::stats(agent, &rec).await);
        }
    }
    Ok(cri::ListContainerStatsResponse { stats })
}

pub async fn stats(agent: &Agent, c: &ContainerRecord) -> cri::ContainerStats {
    let live = agent.live_status(c).await;
    usage::container(c, live.as_ref())
}
