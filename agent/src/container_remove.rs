//! RemoveContainer: its runtime state (through its monitor), root filesystems, bundle and record. Removing
//! an unknown container succeeds.

use basalt_proto::cri::{self, ContainerEventType};
use basalt_shim::protocol::Request;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::ContainerRecord;
use crate::{monitor, status};

impl Call for cri::RemoveContainerRequest {
    type Reply = cri::RemoveContainerResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let Some(c) = agent.records.find_container(&self.container_id) else {
            return Ok(cri::RemoveContainerResponse {});
        };
        let lock = agent.records.lock_for(&c.sandbox_id);
        let _guard = lock.lock().await;
        remove(agent, &c).await?;
        Ok(cri::RemoveContainerResponse {})
    }
}

/// Removes the container's files, then its record. The caller holds the sandbox's lock.
pub async fn remove(agent: &Agent, c: &ContainerRecord) -> Result<(), Status> {
    remove_files(agent, c).await?;
    agent
        .records
        .remove_container(&c.id)
        .map_err(|e| status::internal("removing the container record", e))?;
    agent.events.container(
        &c.id,
        &c.sandbox_id,
        ContainerEventType::ContainerDeletedEvent,
    );
    Ok(())
}

/// The container's runtime state (via its monitor), root filesystem and bundle. Idempotent.
async fn remove_files(agent: &Agent, c: &ContainerRecord) -> Result<(), Status> {
    if let Some(s) = agent.records.sandbox(&c.sandbox_id) {
        if c.final_status.is_none() && s.shim_dir.join("shim.sock").exists() {
            match monitor::call(&s.shim_dir, Request::Delete { id: c.id.clone() }).await {
                Ok(_) => {}
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    let store = agent.images.clone();
    let roots: Vec<String> = std::iter::once(c.id.clone())
        .chain(c.image_roots.iter().cloned())
        .collect();
    tokio::task::spawn_blocking(move || roots.iter().try_for_each(|r| store.unmount_root(r)))
        .await
        .map_err(status::from_join)?
        .map_err(|e| status::internal("removing the root filesystem", e))?;
    match std::fs::remove_dir_all(&c.bundle) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(status::internal("removing the bundle", e)),
    }
}
