//! Exec, Attach and PortForward: the RPCs hand out one-time URLs of the streaming server, and the streaming
//! server's backend (here) connects a client to the pod monitor's process stream or to a port inside the pod.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use basalt_proto::cri;
use basalt_shim::protocol::{Frame, Request};
use basalt_streaming::{AttachTarget, ExecTarget, PortStream, ProcessIo};
use tonic::Status;

use crate::agent::Agent;
use crate::status;
use crate::store::Records;

impl Agent {
    fn running_container(&self, id: &str) -> Result<String, Status> {
        let c = self
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

    pub async fn exec_url(&self, req: cri::ExecRequest) -> Result<String, Status> {
        if req.cmd.is_empty() {
            return Err(status::invalid("cmd", "[]", "must name a program to run"));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout and stderr must be set",
            ));
        }
        if req.tty && req.stderr {
            return Err(Status::invalid_argument(
                "tty and stderr cannot both be set",
            ));
        }
        let id = self.running_container(&req.container_id)?;
        self.streaming
            .get_exec(ExecTarget {
                container_id: id,
                cmd: req.cmd,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
            })
            .map_err(streaming_status)
    }

    pub async fn attach_url(&self, req: cri::AttachRequest) -> Result<String, Status> {
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout and stderr must be set",
            ));
        }
        let id = self.running_container(&req.container_id)?;
        self.streaming
            .get_attach(AttachTarget {
                container_id: id,
                tty: req.tty,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr && !req.tty,
            })
            .map_err(streaming_status)
    }

    pub async fn port_forward_url(&self, req: cri::PortForwardRequest) -> Result<String, Status> {
        let s = self
            .records
            .find_sandbox(&req.pod_sandbox_id)
            .ok_or_else(|| status::not_found("pod sandbox", &req.pod_sandbox_id))?;
        for p in &req.port {
            if !(1..=65535).contains(p) {
                return Err(status::invalid("port", p, "must be 1-65535"));
            }
        }
        self.streaming
            .get_port_forward(&s.id)
            .map_err(streaming_status)
    }

    /// Writes a bridge + host-local network for the pod CIDR the kubelet hands us, unless the operator
    /// configured a network already.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<(), Status> {
        *self.pod_cidr.lock().unwrap() = Some(cidr.to_owned());
        let dir = &self.args.cni_conf_dir;
        if basalt_cni::caller::load_dir(dir).is_ok_and(|n| !n.is_empty()) {
            return Ok(());
        }
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "basalt",
            "plugins": [{
                "type": "bridge",
                "bridge": "basalt0",
                "isGateway": true,
                "ipMasq": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}
            }, {"type": "portmap", "capabilities": {"portMappings": true}}]
        });
        std::fs::create_dir_all(dir)
            .map_err(|e| status::internal("creating the CNI config dir", e))?;
        std::fs::write(
            dir.join("10-basalt.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .map_err(|e| status::internal("writing the CNI config", e))
    }
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

/// The streaming server's view of the runtime: finds a container's monitor and talks frames to it.
pub struct Backend {
    records: Arc<Records>,
}

impl Backend {
    pub fn new(records: Arc<Records>, _shims: PathBuf) -> Backend {
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
        let sock = crate::monitor::socket(&dir);
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
        // Client → monitor: stdin and resizes, until the process ends (this task is then aborted).
        let input = tokio::spawn(async move {
            let mut stdin = stdin;
            loop {
                let frame = tokio::select! {
                    data = async { match stdin.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                        match data {
                            Some(d) => Frame::Stdin(d.to_vec()),
                            None => { stdin = None; Frame::Stdin(Vec::new()) }
                        }
                    }
                    size = resize.recv() => match size {
                        Some(s) => Frame::Resize { width: s.width, height: s.height },
                        None => std::future::pending().await,
                    },
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
        let netns = self
            .records
            .sandbox(sandbox_id)
            .and_then(|s| s.namespaces.get("net").cloned())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("pod sandbox {sandbox_id:?} has no network namespace"),
                )
            })?;
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
