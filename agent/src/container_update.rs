//! UpdateContainerResources: new limits for a container's cgroup, through its monitor, kept in its record.

use basalt_proto::cri;
use basalt_shim::protocol::Request;
use serde_json::json;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::Survive;
use crate::{monitor, status};

impl Call for cri::UpdateContainerResourcesRequest {
    type Reply = cri::UpdateContainerResourcesResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let (mut c, s) = agent.container_with_sandbox(&self.container_id)?;
        let Some(linux) = self.linux else {
            return Ok(cri::UpdateContainerResourcesResponse {});
        };
        monitor::call(
            &s.shim_dir,
            Request::Update {
                id: c.id.clone(),
                resources: resources_json(&linux),
            },
        )
        .await?;
        let l = c.config.linux.get_or_insert_with(Default::default);
        l.resources = Some(linux);
        agent
            .records
            .put_container(&c, Survive::PowerLoss)
            .map_err(|e| status::internal("recording the container", e))?;
        Ok(cri::UpdateContainerResourcesResponse {})
    }
}

/// CRI resources as OCI `linux.resources` JSON.
pub fn resources_json(r: &cri::LinuxContainerResources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    let mut memory = serde_json::Map::new();
    if r.memory_limit_in_bytes > 0 {
        memory.insert("limit".into(), json!(r.memory_limit_in_bytes));
    }
    if r.memory_swap_limit_in_bytes > 0 {
        memory.insert("swap".into(), json!(r.memory_swap_limit_in_bytes));
    }
    let mut out = json!({"cpu": cpu, "memory": memory});
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = json!(r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect::<Vec<_>>());
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    out
}
