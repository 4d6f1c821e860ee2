//! StartContainer: the monitor starts a created container of a ready sandbox.

use basalt_proto::cri::{self, ContainerEventType};
use basalt_shim::protocol::Request;
use tonic::Status;

use crate::agent::Agent;
use crate::monitor;
use crate::service::Call;
use crate::store::SandboxState;

impl Call for cri::StartContainerRequest {
    type Reply = cri::StartContainerResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let (c, s) = agent.container_with_sandbox(&self.container_id)?;
        if c.final_status.is_some() || s.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "container {} cannot start: its pod sandbox is stopped",
                c.id
            )));
        }
        monitor::call(&s.shim_dir, Request::Start { id: c.id.clone() }).await?;
        agent
            .events
            .container(&c.id, &s.id, ContainerEventType::ContainerStartedEvent);
        Ok(cri::StartContainerResponse {})
    }
}
