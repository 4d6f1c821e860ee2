//! What the agent and a pod monitor say to each other over `<pod-dir>/shim.sock`.
//!
//! One JSON [`Request`] per line, answered by one JSON [`Response`] line; a connection may carry any number
//! of requests in turn. `Exec` and `Attach` are answered with `Ok` (or an `Error`), after which the connection
//! carries [`Frame`]s in both directions until the monitor sends [`Frame::Exit`] and closes it: the connection
//! is then the process's terminal or pipes. A client that closes it (or dies) mid-exec ends the exec'd
//! process (SIGKILL); one that closes it mid-attach just detaches.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness and identity: answered with [`Response::Pong`].
    Ping,
    /// Creates a container from an OCI bundle the agent prepared; its stdio belongs to the monitor.
    Create(CreateRequest),
    Start {
        id: String,
    },
    /// Sends `signal` to the container's init (or, with `all`, to every process of its cgroup).
    Kill {
        id: String,
        signal: i32,
        all: bool,
    },
    /// `signal` (default SIGTERM), then SIGKILL after `timeout_secs`; answers once the container has exited.
    /// Stopping an exited container is not an error.
    Stop {
        id: String,
        timeout_secs: i64,
        signal: Option<i32>,
    },
    /// Removes an exited container's runtime state and cgroup (a live one is killed first).
    Delete {
        id: String,
    },
    Status {
        id: String,
    },
    List,
    /// Runs a command in the container and returns its output; past the timeout it is killed and the answer
    /// is an error of kind `deadline_exceeded`. Output beyond `max_output_bytes` per stream is dropped.
    ExecSync {
        id: String,
        cmd: Vec<String>,
        timeout_secs: i64,
        max_output_bytes: usize,
    },
    /// Starts a command in the container; the connection becomes its stdio (see [`Frame`]).
    Exec {
        id: String,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    },
    /// Joins the container's own stdio: output from now on, and stdin if the container has one open.
    Attach {
        id: String,
        stdin: bool,
    },
    /// Closes and reopens the log file at its path (after the agent rotated it).
    ReopenLog {
        id: String,
    },
    /// Applies OCI `linux.resources` (JSON) to the container's cgroup.
    Update {
        id: String,
        resources: serde_json::Value,
    },
    /// Kills every container, removes the pinned namespaces and exits. The answer comes before the exit.
    Shutdown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    /// Where the container's output goes, in the CRI log format; `None` discards it.
    pub log_path: Option<PathBuf>,
    pub tty: bool,
    /// Keep a stdin pipe open for attach.
    pub stdin: bool,
    /// Close the container's stdin when the first attach that used it ends.
    pub stdin_once: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Created,
    Running,
    Exited,
}

/// Times are nanoseconds since the Unix epoch, 0 when not reached yet (as the CRI reports them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub state: State,
    pub pid: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// The kernel's OOM killer killed a process of this container's cgroup.
    pub oom_killed: bool,
    /// The runtime's cgroup path of the container (for stats).
    pub cgroup_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Pong {
        sandbox_id: String,
        pid: i32,
    },
    Created {
        pid: i32,
    },
    Status(ContainerStatus),
    List {
        containers: Vec<ContainerStatus>,
    },
    ExecSync {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        exit_code: i32,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
}

/// Maps one to one onto gRPC status codes in the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    AlreadyExists,
    FailedPrecondition,
    DeadlineExceeded,
    Internal,
}

/// A frame of an exec or attach stream: `[channel: u8][length: u32 big-endian][payload]`.
/// Channels follow Kubernetes' remotecommand numbering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Agent → monitor. An empty payload closes the process's stdin.
    Stdin(Vec<u8>),
    /// Monitor → agent.
    Stdout(Vec<u8>),
    /// Monitor → agent (not used with a tty, where everything is stdout).
    Stderr(Vec<u8>),
    /// Monitor → agent, last frame of the stream: the process's exit code (or an error message).
    Exit(Result<i32, String>),
    /// Agent → monitor: new terminal size.
    Resize { width: u16, height: u16 },
}

pub const CHANNEL_STDIN: u8 = 0;
pub const CHANNEL_STDOUT: u8 = 1;
pub const CHANNEL_STDERR: u8 = 2;
pub const CHANNEL_EXIT: u8 = 3;
pub const CHANNEL_RESIZE: u8 = 4;

/// Frames larger than this are refused: no legitimate chunk of a terminal or pipe comes near it.
pub const MAX_FRAME: usize = 1 << 20;

/// Why bytes on a stream are not a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame: unknown channel {0}")]
    Channel(u8),
    #[error("frame: length {0} exceeds the maximum of {MAX_FRAME} bytes")]
    TooLong(usize),
    #[error("frame: {0}")]
    Malformed(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Frame {
    pub fn channel(&self) -> u8 {
        match self {
            Frame::Stdin(_) => CHANNEL_STDIN,
            Frame::Stdout(_) => CHANNEL_STDOUT,
            Frame::Stderr(_) => CHANNEL_STDERR,
            Frame::Exit(_) => CHANNEL_EXIT,
            Frame::Resize { .. } => CHANNEL_RESIZE,
        }
    }

    /// The payload of each channel: raw bytes for the data channels; for `Exit` a tag byte (0: exit code as
    /// i32 big-endian follows, 1: a UTF-8 error message follows); for `Resize` width then height, u16
    /// big-endian each.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Stdin(d) | Frame::Stdout(d) | Frame::Stderr(d) => d.clone(),
            Frame::Exit(Ok(code)) => {
                let mut p = vec![0];
                p.extend_from_slice(&code.to_be_bytes());
                p
            }
            Frame::Exit(Err(msg)) => {
                let mut p = vec![1];
                p.extend_from_slice(msg.as_bytes());
                p
            }
            Frame::Resize { width, height } => {
                let mut p = width.to_be_bytes().to_vec();
                p.extend_from_slice(&height.to_be_bytes());
                p
            }
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.channel());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Decodes one frame from the start of `buf`: the frame and how many bytes it took, or `None` when
    /// `buf` does not hold a whole frame yet.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let channel = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        Ok(Some((
            Self::from_parts(channel, &buf[5..5 + len])?,
            5 + len,
        )))
    }

    fn from_parts(channel: u8, p: &[u8]) -> Result<Frame, FrameError> {
        Ok(match channel {
            CHANNEL_STDIN => Frame::Stdin(p.to_vec()),
            CHANNEL_STDOUT => Frame::Stdout(p.to_vec()),
            CHANNEL_STDERR => Frame::Stderr(p.to_vec()),
            CHANNEL_EXIT => match p.split_first() {
                Some((0, code)) if code.len() == 4 => {
                    Frame::Exit(Ok(i32::from_be_bytes([code[0], code[1], code[2], code[3]])))
                }
                Some((1, msg)) => Frame::Exit(Err(String::from_utf8_lossy(msg).into_owned())),
                _ => return Err(FrameError::Malformed("exit payload")),
            },
            CHANNEL_RESIZE if p.len() == 4 => Frame::Resize {
                width: u16::from_be_bytes([p[0], p[1]]),
                height: u16::from_be_bytes([p[2], p[3]]),
            },
            CHANNEL_RESIZE => return Err(FrameError::Malformed("resize payload")),
            c => return Err(FrameError::Channel(c)),
        })
    }

    /// Reads the next frame; `None` at a clean end of stream (between frames).
    pub async fn read<R: tokio::io::AsyncRead + Unpin>(
        r: &mut R,
    ) -> Result<Option<Frame>, FrameError> {
        use tokio::io::AsyncReadExt;
        let mut head = [0u8; 5];
        match r.read_exact(&mut head[..1]).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        r.read_exact(&mut head[1..]).await?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        Self::from_parts(head[0], &payload).map(Some)
    }

    pub async fn write<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        w: &mut W,
    ) -> Result<(), FrameError> {
        use tokio::io::AsyncWriteExt;
        w.write_all(&self.encode()).await?;
        w.flush().await?;
        Ok(())
    }
}

/// Frames from a byte stream, cancel-safe (so it can sit in a `select!`): bytes are only consumed once a whole
/// frame is there.
pub struct FrameReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: Vec::new(),
        }
    }

    /// The next frame, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, FrameError> {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some((f, n)) = Frame::decode(&self.buf)? {
                self.buf.drain(..n);
                return Ok(Some(f));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Malformed("stream ended inside a frame"))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_split_anywhere() {
        let frames = vec![
            Frame::Stdin(b"ls\n".to_vec()),
            Frame::Stdin(Vec::new()),
            Frame::Stdout(vec![0, 255, 10]),
            Frame::Stderr(b"oops".to_vec()),
            Frame::Resize {
                width: 132,
                height: 43,
            },
            Frame::Exit(Ok(137)),
            Frame::Exit(Ok(-1)),
            Frame::Exit(Err("container \"c1\" is gone".into())),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        // Every prefix is either a whole number of frames or reported incomplete.
        for cut in 0..wire.len() {
            let mut got = Vec::new();
            let mut at = 0;
            while let Some((f, n)) = Frame::decode(&wire[at..cut]).unwrap() {
                got.push(f);
                at += n;
            }
            assert_eq!(got[..], frames[..got.len()]);
        }
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((f, n)) = Frame::decode(&wire[at..]).unwrap() {
            got.push(f);
            at += n;
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn bad_frames_are_refused_with_the_reason() {
        let e = Frame::decode(&[9, 0, 0, 0, 0]).unwrap_err().to_string();
        assert!(e.contains("unknown channel 9"), "{e}");
        let e = Frame::decode(&[1, 0xff, 0, 0, 0]).unwrap_err().to_string();
        assert!(e.contains("exceeds the maximum"), "{e}");
        let e = Frame::decode(&[4, 0, 0, 0, 1, 7]).unwrap_err().to_string();
        assert!(e.contains("resize payload"), "{e}");
    }

    #[test]
    fn requests_keep_their_wire_names() {
        let j = serde_json::to_value(Request::Stop {
            id: "c1".into(),
            timeout_secs: 3,
            signal: None,
        })
        .unwrap();
        assert_eq!(j["op"], "stop");
        let r: Response = serde_json::from_str(r#"{"reply":"created","pid":7}"#).unwrap();
        assert!(matches!(r, Response::Created { pid: 7 }));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn frames_read_from_a_stream() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let sent = Frame::Stdout(vec![7; 300]);
        let s2 = sent.clone();
        let w = async move {
            s2.write(&mut a).await.unwrap();
            drop(a);
        };
        let r = async {
            let f = Frame::read(&mut b).await.unwrap();
            let end = Frame::read(&mut b).await.unwrap();
            (f, end)
        };
        let ((), (f, end)) = tokio::join!(w, r);
        assert_eq!(f, Some(sent));
        assert_eq!(end, None);
    }
}
