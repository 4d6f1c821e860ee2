//! What the streaming server needs from the container runtime, and the typed requests it hands over.

use std::io;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Terminal size as sent by kubectl on the resize channel (`{"Width":w,"Height":h}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// An `exec` request, as accepted by [`crate::Server::get_exec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecTarget {
    pub container_id: String,
    /// argv of the process to run inside the container; never empty.
    pub cmd: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    /// Always false when `tty` is set: a terminal merges stderr into stdout.
    pub stderr: bool,
}

/// An `attach` request, as accepted by [`crate::Server::get_attach`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachTarget {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    /// Always false when `tty` is set.
    pub stderr: bool,
}

/// The client's side of a process's stdio, handed to the [`Backend`].
///
/// Each stream is `Some` exactly when the client asked for it. The contract:
/// - `stdin` yields what the client typed; the channel closing is end-of-file (v5 close-stdin or the client
///   going away).
/// - The backend writes output to `stdout`/`stderr`; the server forwards it until every sender is dropped, so
///   the backend must drop them (normally by returning) once the process's output is exhausted. `stderr` is
///   always `None` with a tty.
/// - `resize` yields terminal sizes in the order the client sent them; it is only meaningful with `tty`.
#[derive(Debug)]
pub struct ProcessIo {
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: mpsc::Receiver<TermSize>,
    pub tty: bool,
}

/// A connection to a port inside a pod sandbox's network namespace.
pub type PortStream = Box<dyn PortStreamIo>;

/// Object-safe alias for a bidirectional byte stream.
pub trait PortStreamIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PortStreamIo for T {}

/// The container runtime behind the streaming server.
///
/// Futures are dropped when the client disconnects before they finish: dropping an `exec` future must kill the
/// process it started; dropping an `attach` future only detaches.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs `target.cmd` in the container and returns its exit code once it has exited and its output has
    /// been written to `io`. `Err` is a message for the client (e.g. "container not found").
    async fn exec(&self, target: ExecTarget, io: ProcessIo) -> Result<i32, String>;

    /// Connects `io` to the container's main process until the client closes stdin or the process exits.
    async fn attach(&self, target: AttachTarget, io: ProcessIo) -> Result<(), String>;

    /// Opens a TCP connection to `port` on the loopback of the sandbox's network namespace.
    async fn port_forward(&self, sandbox_id: &str, port: u16) -> io::Result<PortStream>;
}
