//! ExecSync (through the monitor), and Exec, Attach and PortForward, which hand out one-time URLs of the
//! streaming server; its backend (`stream_backend`) then connects the client to the container or the pod.

use basalt_proto::cri;
use basalt_shim::protocol::{Request, Response};
use basalt_streaming::{AttachTarget, ExecTarget};
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::{monitor, status};

/// Output ExecSync keeps per stream; kubelet itself caps probe output far below this.
const EXEC_SYNC_MAX_OUTPUT: usize = 16 << 20;

impl Call for cri::ExecSyncRequest {
    type Reply = cri::ExecSyncResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        if self.cmd.is_empty() {
            return Err(status::invalid("cmd", "[]", "must name a program to run"));
        }
        let (c, s) = agent.container_with_sandbox(&self.container_id)?;
        match monitor::call(
            &s.shim_dir,
            Request::ExecSync {
                id: c.id.clone(),
                cmd: self.cmd,
                timeout_secs: self.timeout.max(0),
                max_output_bytes: EXEC_SYNC_MAX_OUTPUT,
            },
        )
        .await?
        {
            Response::ExecSync {
                stdout,
                stderr,
                exit_code,
            } => Ok(cri::ExecSyncResponse {
                stdout,
                stderr,
                exit_code,
            }),
            r => Err(monitor::unexpected(r)),
        }
    }
}

impl Call for cri::ExecRequest {
    type Reply = cri::ExecResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        if self.cmd.is_empty() {
            return Err(status::invalid("cmd", "[]", "must name a program to run"));
        }
        check_streams(self.stdin, self.stdout, self.stderr)?;
        if self.tty && self.stderr {
            return Err(Status::invalid_argument(
                "tty and stderr cannot both be set",
            ));
        }
        let target = ExecTarget {
            container_id: running_container(agent, &self.container_id)?,
            cmd: self.cmd,
            tty: self.tty,
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr,
        };
        let url = agent.streaming.get_exec(target).map_err(streaming_status)?;
        Ok(cri::ExecResponse { url })
    }
}

impl Call for cri::AttachRequest {
    type Reply = cri::AttachResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        check_streams(self.stdin, self.stdout, self.stderr)?;
        let target = AttachTarget {
            container_id: running_container(agent, &self.container_id)?,
            tty: self.tty,
            stdin: self.stdin,
            stdout: self.stdout,
            stderr: self.stderr && !self.tty,
        };
        let url = agent
            .streaming
            .get_attach(target)
            .map_err(streaming_status)?;
        Ok(cri::AttachResponse { url })
    }
}

impl Call for cri::PortForwardRequest {
    type Reply = cri::PortForwardResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let s = agent.sandbox(&self.pod_sandbox_id)?;
        for p in &self.port {
            if !(1..=65535).contains(p) {
                return Err(status::invalid("port", p, "must be 1-65535"));
            }
        }
        let url = agent
            .streaming
            .get_port_forward(&s.id)
            .map_err(streaming_status)?;
        Ok(cri::PortForwardResponse { url })
    }
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool) -> Result<(), Status> {
    if stdin || stdout || stderr {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "one of stdin, stdout and stderr must be set",
        ))
    }
}

/// The full ID of a container that has not stopped with its sandbox.
fn running_container(agent: &Agent, id: &str) -> Result<String, Status> {
    let c = agent.container(id)?;
    if c.final_status.is_some() {
        return Err(Status::failed_precondition(format!(
            "container {} is not running",
            c.id
        )));
    }
    Ok(c.id)
}

fn streaming_status(e: basalt_streaming::Error) -> Status {
    match e {
        basalt_streaming::Error::Invalid { .. } => Status::invalid_argument(e.to_string()),
        basalt_streaming::Error::TooManyRequests { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}
