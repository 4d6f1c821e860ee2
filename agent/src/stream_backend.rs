//! The streaming server's backend: it finds a container's monitor and pumps exec/attach frames to and from
//! it, and dials a port inside a pod's network namespace for port-forward.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use basalt_shim::protocol::{Frame, Request};
use basalt_streaming::{AttachTarget, ExecTarget, PortStream, ProcessIo};

use crate::monitor;
use crate::store::Records;

/// The streaming server's view of the runtime: finds a container's monitor and talks frames to it.
pub struct Backend {
    records: Arc<Records>,
}

impl Backend {
    pub fn new(records: Arc<Records>) -> Backend {
        Backend { records }
    }

    fn shim_dir_of_container(&self, id: &str) -> Result<PathBuf, String> {
        let c = self
            .records
            .container(id)
            .ok_or_else(|| format!("container {id:?} not found"))?;
        let s = self
            .records
            .sandbox(&c.sandbox_id)
            .ok_or_else(|| format!("pod sandbox {:?} not found", c.sandbox_id))?;
        Ok(s.shim_dir)
    }

    /// Opens a process stream at the monitor and pumps frames both ways until the process ends. Dropping
    /// this future closes the stream, which ends an exec'd process (the monitor kills it) or detaches.
    async fn pump(&self, dir: PathBuf, req: Request, io: ProcessIo) -> Result<i32, String> {
        let sock = monitor::socket(&dir);
        let client = basalt_shim::client::Client::connect(&sock)
            .await
            .map_err(|e| format!("pod monitor {}: {e}", sock.display()))?;
        let (mut rd, mut wr) = client.stream(req).await.map_err(|e| match e {
            basalt_shim::client::ClientError::Remote { message, .. } => message,
            e => e.to_string(),
        })?;
        let ProcessIo {
            stdin,
            stdout,
            stderr,
            mut resize,
            ..
        } = io;
        // Client → monitor: stdin and resizes, until the process ends (this task is then aborted). Either
        // input may end first (a transport without a resize stream drops it at once): the other goes on. The
        // write half stays open to the end, since the monitor takes its closing as the client detaching.
        let input = tokio::spawn(async move {
            let mut stdin = stdin;
            let mut resize_open = true;
            loop {
                let frame = tokio::select! {
                    data = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => {
                        match data {
                            Some(d) => Frame::Stdin(d.to_vec()),
                            None => { stdin = None; Frame::Stdin(Vec::new()) }
                        }
                    }
                    size = resize.recv(), if resize_open => match size {
                        Some(s) => Frame::Resize { width: s.width, height: s.height },
                        None => { resize_open = false; continue }
                    },
                    else => std::future::pending().await,
                };
                if wr.send(&frame).await.is_err() {
                    return;
                }
            }
        });
        let _abort = AbortOnDrop(input);
        loop {
            match rd.next().await {
                Ok(Some(Frame::Stdout(d))) => {
                    if let Some(tx) = &stdout {
                        let _ = tx.send(d.into()).await;
                    }
                }
                Ok(Some(Frame::Stderr(d))) => {
                    if let Some(tx) = &stderr {
                        let _ = tx.send(d.into()).await;
                    }
                }
                Ok(Some(Frame::Exit(r))) => return r,
                Ok(Some(_)) => {}
                Ok(None) => return Err("the pod monitor closed the stream".to_owned()),
                Err(e) => return Err(format!("pod monitor stream: {e}")),
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tonic::async_trait]
impl basalt_streaming::Backend for Backend {
    async fn exec(&self, target: ExecTarget, io: ProcessIo) -> Result<i32, String> {
        let dir = self.shim_dir_of_container(&target.container_id)?;
        let req = Request::Exec {
            id: target.container_id,
            cmd: target.cmd,
            tty: target.tty,
            stdin: target.stdin,
        };
        self.pump(dir, req, io).await
    }

    async fn attach(&self, target: AttachTarget, io: ProcessIo) -> Result<(), String> {
        let dir = self.shim_dir_of_container(&target.container_id)?;
        let req = Request::Attach {
            id: target.container_id,
            stdin: target.stdin,
        };
        self.pump(dir, req, io).await.map(|_| ())
    }

    async fn port_forward(&self, sandbox_id: &str, port: u16) -> io::Result<PortStream> {
        let sandbox = self.records.sandbox(sandbox_id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("pod sandbox {sandbox_id:?} not found"),
            )
        })?;
        // A hostNetwork pod has no network namespace of its own: its ports are the node's, dialled from
        // here as containerd and CRI-O do. Any other pod without one has been stopped.
        let host_network = crate::view::namespace_options(&sandbox.config).network
            == basalt_proto::cri::NamespaceMode::Node as i32;
        if host_network {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            return Ok(Box::new(stream));
        }
        let Some(netns) = sandbox.namespaces.get("net").cloned() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("pod sandbox {sandbox_id:?} has no network namespace (stopped?)"),
            ));
        };
        // A socket keeps the namespace it was created in: connect from a throw-away thread that entered the
        // pod's netns, so no runtime thread ever changes namespace.
        let std_stream = tokio::task::spawn_blocking(move || {
            std::thread::spawn(move || -> io::Result<std::net::TcpStream> {
                let f = std::fs::File::open(&netns)?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(io::Error::from)?;
                std::net::TcpStream::connect(("127.0.0.1", port))
            })
            .join()
            .map_err(|_| io::Error::other("port-forward thread panicked"))?
        })
        .await
        .map_err(io::Error::other)??;
        std_stream.set_nonblocking(true)?;
        Ok(Box::new(tokio::net::TcpStream::from_std(std_stream)?))
    }
}
