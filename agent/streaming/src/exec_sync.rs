//! ExecSync: run a command to completion and collect its output, for the unary CRI `ExecSync` RPC.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backend::{Backend, ExecTarget, ProcessIo};

/// What a finished `ExecSync` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecSyncOutput {
    pub exit_code: i32,
    /// At most `limit` bytes; anything beyond is read and discarded so the process never blocks on a full pipe.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// True when output was cut at `limit`.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecSyncError {
    #[error("command {cmd:?} in container {container_id} timed out after {timeout:?}")]
    Timeout {
        container_id: String,
        cmd: Vec<String>,
        timeout: Duration,
    },
    #[error("exec in container {container_id}: {message}")]
    Backend {
        container_id: String,
        message: String,
    },
}

/// Runs `cmd` in the container without stdin or tty. `timeout` of `None` waits forever; on timeout the
/// backend's exec future is dropped, which kills the process (see [`Backend`]).
pub async fn exec_sync(
    backend: &dyn Backend,
    container_id: &str,
    cmd: Vec<String>,
    timeout: Option<Duration>,
    limit: usize,
) -> Result<ExecSyncOutput, ExecSyncError> {
    let (stdout_tx, stdout_rx) = mpsc::channel(16);
    let (stderr_tx, stderr_rx) = mpsc::channel(16);
    let (_resize_tx, resize_rx) = mpsc::channel(1);
    let target = ExecTarget {
        container_id: container_id.to_string(),
        cmd: cmd.clone(),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let io = ProcessIo {
        stdin: None,
        stdout: Some(stdout_tx),
        stderr: Some(stderr_tx),
        resize: resize_rx,
        tty: false,
    };
    let run = async {
        let (code, out, err) = tokio::join!(
            backend.exec(target, io),
            collect(stdout_rx, limit),
            collect(stderr_rx, limit)
        );
        (code, out, err)
    };
    let (code, (stdout, cut_out), (stderr, cut_err)) = match timeout {
        Some(t) => tokio::time::timeout(t, run)
            .await
            .map_err(|_| ExecSyncError::Timeout {
                container_id: container_id.to_string(),
                cmd,
                timeout: t,
            })?,
        None => run.await,
    };
    let exit_code = code.map_err(|message| ExecSyncError::Backend {
        container_id: container_id.to_string(),
        message,
    })?;
    Ok(ExecSyncOutput {
        exit_code,
        stdout,
        stderr,
        truncated: cut_out || cut_err,
    })
}

async fn collect(mut rx: mpsc::Receiver<Bytes>, limit: usize) -> (Vec<u8>, bool) {
    let mut buf = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = rx.recv().await {
        let room = limit.saturating_sub(buf.len());
        if chunk.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    (buf, truncated)
}
