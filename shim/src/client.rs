//! The agent's side of the socket: requests and replies, and exec/attach streams.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::protocol::{ErrorKind, Frame, FrameError, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the pod monitor at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pod monitor connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("pod monitor protocol: {0}")]
    Protocol(String),
    /// The monitor answered with [`Response::Error`].
    #[error("{message}")]
    Remote { kind: ErrorKind, message: String },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// One connection to a pod monitor. Requests are answered in order; [`Client::stream`] turns the connection
/// into an exec/attach stream.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(sock: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = sock.as_ref();
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (r, w) = stream.into_split();
        Ok(Client {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Sends `req` and reads its answer; an [`Response::Error`] answer is returned as
    /// [`ClientError::Remote`]. Not for `Exec`/`Attach` (see [`Client::stream`]).
    pub async fn call(&mut self, req: Request) -> Result<Response, ClientError> {
        if matches!(req, Request::Exec { .. } | Request::Attach { .. }) {
            return Err(ClientError::Protocol(
                "exec and attach need Client::stream".into(),
            ));
        }
        self.send(&req).await?;
        self.recv().await
    }

    /// Sends an `Exec` or `Attach` request and, once the monitor accepted it, hands back the two directions
    /// of the frame stream. Dropping the writer (or both) ends the client's side.
    pub async fn stream(mut self, req: Request) -> Result<(FrameReader, FrameWriter), ClientError> {
        if !matches!(req, Request::Exec { .. } | Request::Attach { .. }) {
            return Err(ClientError::Protocol(
                "only exec and attach open a stream".into(),
            ));
        }
        self.send(&req).await?;
        match self.recv().await? {
            Response::Ok => Ok((
                FrameReader(crate::protocol::FrameReader::new(self.reader)),
                FrameWriter(self.writer),
            )),
            other => Err(ClientError::Protocol(format!(
                "unexpected answer to {req:?}: {other:?}"
            ))),
        }
    }

    async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn recv(&mut self) -> Result<Response, ClientError> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(ClientError::Protocol(
                "the monitor closed the connection without an answer".into(),
            ));
        }
        match serde_json::from_str(&line)
            .map_err(|e| ClientError::Protocol(format!("answer {line:?}: {e}")))?
        {
            Response::Error { kind, message } => Err(ClientError::Remote { kind, message }),
            r => Ok(r),
        }
    }
}

/// The monitor → agent half of an exec/attach stream.
pub struct FrameReader(crate::protocol::FrameReader<BufReader<OwnedReadHalf>>);

impl FrameReader {
    /// The next frame, `None` once the monitor closed the stream (after [`Frame::Exit`]). Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<Frame>, ClientError> {
        Ok(self.0.next().await?)
    }
}

/// The agent → monitor half of an exec/attach stream.
pub struct FrameWriter(OwnedWriteHalf);

impl FrameWriter {
    pub async fn send(&mut self, f: &Frame) -> Result<(), ClientError> {
        Ok(f.write(&mut self.0).await?)
    }
}
