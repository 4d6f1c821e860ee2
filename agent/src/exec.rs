//! ExecSync (through the monitor), and Exec, Attach and PortForward, which hand out one-time URLs of the
//! streaming server; its backend (`stream_backend`) then connects the client to the container or the pod.

use basalt_proto::cri;
use basalt_shim::protocol::{Request, Response};
use basalt_streaming::{AttachTarget, ExecTarget};
use tonic::Status;

use crate::agent::Agent;
use crate::{monitor, status};

/// Output ExecSync keeps per stream; kubelet itself caps probe output far below this.
const EXEC_SYNC_MAX_OUTPUT: usize = 16 << 20;

pub async fn exec_sync(
    agent: &Agent,
    req: cri::ExecSyncRequest,
) -> Result<cri::ExecSyncResponse, Status> {
    if req.cmd.is_empty() {
        return Err(status::invalid("cmd", "[]", "must name a program to run"));
    }
    let (c, s) = agent.container_with_sandbox(&req.container_id)?;
    match monitor::call(
        &s.shim_dir,
        Request::ExecSync {
            id: c.id.clone(),
            cmd: req.cmd,
            timeout_secs: req.timeout.max(0),
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

pub async fn exec(agent: &Agent, req: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
    if req.cmd.is_empty() {
        return Err(status::invalid("cmd", "[]", "must name a program to run"));
    }
    check_streams(req.stdin, req.stdout, req.stderr)?;
    if req.tty && req.stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be set",
        ));
    }
    let id = running_container(agent, &req.container_id)?;
    let url = agent
        .streaming
        .get_exec(ExecTarget {
            container_id: id,
            cmd: req.cmd,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
        })
        .map_err(streaming_status)?;
    Ok(cri::ExecResponse { url })
}

pub async fn attach(agent: &Agent, req: cri::AttachRequest) -> Result<cri::AttachResponse, Status> {
    check_streams(req.stdin, req.stdout, req.stderr)?;
    let id = running_container(agent, &req.container_id)?;
    let url = agent
        .streaming
        .get_attach(AttachTarget {
            container_id: id,
            tty: req.tty,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr && !req.tty,
        })
        .map_err(streaming_status)?;
    Ok(cri::AttachResponse { url })
}

pub async fn port_forward(
    agent: &Agent,
    req: cri::PortForwardRequest,
) -> Result<cri::PortForwardResponse, Status> {
    let s = agent
        .records
        .find_sandbox(&req.pod_sandbox_id)
        .ok_or_else(|| status::not_found("pod sandbox", &req.pod_sandbox_id))?;
    for p in &req.port {
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
    let c = agent
        .records
        .find_container(id)
        .ok_or_else(|| status::not_found("container", id))?;
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
