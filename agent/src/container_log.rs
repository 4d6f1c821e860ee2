//! ReopenContainerLog: the monitor reopens a running container's log file (after the kubelet rotated it).

use basalt_proto::cri;
use basalt_shim::protocol::{Request, State as ShimState};
use tonic::Status;

use crate::agent::Agent;
use crate::monitor;
use crate::service::Call;

impl Call for cri::ReopenContainerLogRequest {
    type Reply = cri::ReopenContainerLogResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let (c, s) = agent.container_with_sandbox(&self.container_id)?;
        let live = agent.live_status(&c).await;
        if live.map(|l| l.state) != Some(ShimState::Running) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        monitor::call(&s.shim_dir, Request::ReopenLog { id: c.id }).await?;
        Ok(cri::ReopenContainerLogResponse {})
    }
}
