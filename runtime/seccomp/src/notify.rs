//! Handing a seccomp user-notification fd to the agent at `listenerPath`, as runc does: one `sendmsg` on a
//! unix stream socket carrying the container process state (runtime-spec `ContainerProcessState`) as data and
//! the fd as `SCM_RIGHTS`.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::Serialize;

use crate::error::{Error, Result};

/// The name of the one fd we pass, as listed in `fds`.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

/// runtime-spec's `ContainerProcessState`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerProcessState<'a> {
    pub oci_version: &'a str,
    pub fds: Vec<&'a str>,
    pub pid: i32,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub metadata: &'a str,
    /// The container's state (`State` as `basalt runtime state` prints it).
    pub state: &'a serde_json::Value,
}

/// Connects to `listener_path` and sends `state` with `fd` attached.
pub fn send_listener_fd(
    listener_path: &Path,
    fd: BorrowedFd<'_>,
    pid: i32,
    metadata: &str,
    state: &serde_json::Value,
) -> Result<()> {
    let msg = ContainerProcessState {
        oci_version: "1.0.2",
        fds: vec![SECCOMP_FD_NAME],
        pid,
        metadata,
        state,
    };
    let body = serde_json::to_vec(&msg).expect("serializing a JSON value cannot fail");
    let conn = UnixStream::connect(listener_path).map_err(|source| Error::File {
        op: "connecting to seccomp listener",
        path: listener_path.to_owned(),
        source,
    })?;
    let fds = [fd.as_raw_fd()];
    let sent = sendmsg::<()>(
        conn.as_raw_fd(),
        &[IoSlice::new(&body)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| Error::File {
        op: "sending the seccomp fd to",
        path: listener_path.to_owned(),
        source: e.into(),
    })?;
    if sent != body.len() {
        return Err(Error::File {
            op: "sending the seccomp fd to",
            path: listener_path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::WriteZero, "short write of the state"),
        });
    }
    Ok(())
}
