//! RemovePodSandbox: stops the sandbox if need be, then removes its containers, its directory and its
//! record. Removing an unknown sandbox succeeds.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::{container_remove, sandbox_stop, status};

impl Call for cri::RemovePodSandboxRequest {
    type Reply = cri::RemovePodSandboxResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let Some(rec) = agent.records.find_sandbox(&self.pod_sandbox_id) else {
            return Ok(cri::RemovePodSandboxResponse {});
        };
        sandbox_stop::stop(agent, &rec.id).await?;
        let lock = agent.records.lock_for(&rec.id);
        let guard = lock.lock().await;
        for c in agent.records.containers_of(&rec.id) {
            container_remove::remove(agent, &c).await?;
        }
        match std::fs::remove_dir_all(&rec.pod_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(status::internal("removing the pod dir", e)),
        }
        agent
            .records
            .remove_sandbox(&rec.id)
            .map_err(|e| status::internal("removing the sandbox record", e))?;
        drop(guard);
        Ok(cri::RemovePodSandboxResponse {})
    }
}
