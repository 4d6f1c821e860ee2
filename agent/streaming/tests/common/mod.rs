//! A Backend that really runs processes on the host (pipes, or a pty for tty), plus a small client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use basalt_streaming::{AttachTarget, Backend, ExecTarget, PortStream, ProcessIo, TermSize};
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

pub const BUSYBOX: &str = "/bin/busybox";

pub fn sh(script: &str) -> Vec<String> {
    vec![BUSYBOX.into(), "sh".into(), "-c".into(), script.into()]
}

/// A long-running "container" process that attach connects to.
struct Container {
    stdin: mpsc::UnboundedSender<Bytes>,
    output: broadcast::Sender<Bytes>,
    pty: Option<Arc<OwnedFd>>,
    pid: u32,
}

#[derive(Default)]
pub struct HostBackend {
    containers: Mutex<HashMap<String, Container>>,
}

fn set_winsize(fd: &OwnedFd, size: TermSize) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct from a valid pointer on an open pty fd.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

struct Pty {
    master: OwnedFd,
    child: tokio::process::Child,
}

fn spawn_pty(argv: &[String]) -> std::io::Result<Pty> {
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::from(pty.slave.try_clone()?))
        .stdout(Stdio::from(pty.slave.try_clone()?))
        .stderr(Stdio::from(pty.slave.try_clone()?))
        .env("TERM", "xterm")
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(cmd);
    drop(pty.slave);
    Ok(Pty {
        master: pty.master,
        child,
    })
}

/// Copies a pty master to `out` on a thread until the slave side is gone (EIO).
fn pump_master(
    master: &OwnedFd,
    out: impl Fn(Bytes) -> bool + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let mut file = std::fs::File::from(master.try_clone().expect("dup pty master"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 || !out(Bytes::copy_from_slice(&buf[..n])) {
                break;
            }
        }
    })
}

/// Feeds stdin and resizes into a pty in arrival order: a resize sent before some input is applied before it.
async fn feed_pty(
    master: Arc<OwnedFd>,
    mut stdin: Option<mpsc::Receiver<Bytes>>,
    mut resize: mpsc::Receiver<TermSize>,
    sink: impl Fn(Bytes),
) {
    let mut resize_open = true;
    loop {
        tokio::select! {
            biased;
            s = resize.recv(), if resize_open => match s {
                Some(s) => set_winsize(&master, s),
                None => resize_open = false,
            },
            b = async { stdin.as_mut().unwrap().recv().await }, if stdin.is_some() => match b {
                Some(b) => sink(b),
                // End-of-file from the client: done feeding (a pty cannot be half-closed).
                None => break,
            },
            else => break,
        }
    }
}

#[async_trait]
impl Backend for HostBackend {
    async fn exec(&self, target: ExecTarget, io: ProcessIo) -> Result<i32, String> {
        if target.container_id != "ctr" {
            return Err(format!("container {:?} not found", target.container_id));
        }
        if io.tty {
            let Pty { master, mut child } = spawn_pty(&target.cmd).map_err(|e| e.to_string())?;
            let master = Arc::new(master);
            let reader = io
                .stdout
                .clone()
                .map(|tx| pump_master(&master, move |b| tx.blocking_send(b).is_ok()));
            let writer_fd = std::fs::File::from(master.try_clone().map_err(|e| e.to_string())?);
            let writer = Mutex::new(writer_fd);
            let feeder = feed_pty(master.clone(), io.stdin, io.resize, move |b| {
                let _ = writer.lock().unwrap().write_all(&b);
            });
            let status = tokio::select! {
                s = child.wait() => s.map_err(|e| e.to_string())?,
                () = async { feeder.await; std::future::pending::<()>().await } => unreachable!(),
            };
            if let Some(r) = reader {
                tokio::task::spawn_blocking(move || r.join())
                    .await
                    .unwrap()
                    .unwrap();
            }
            return Ok(status.code().unwrap_or(128));
        }
        let mut child = tokio::process::Command::new(&target.cmd[0])
            .args(&target.cmd[1..])
            .stdin(if io.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(if io.stdout.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(if io.stderr.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn {:?}: {e}", target.cmd))?;
        let copy_in = {
            let stdin = child.stdin.take();
            let rx = io.stdin;
            async move {
                if let (Some(mut w), Some(mut rx)) = (stdin, rx) {
                    while let Some(b) = rx.recv().await {
                        if w.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                }
            }
        };
        let out = copy_out(child.stdout.take(), io.stdout);
        let err = copy_out(child.stderr.take(), io.stderr);
        let (status, (), ()) = tokio::join!(
            async {
                // stdin is only fed while the process lives.
                tokio::select! { s = child.wait() => s, () = async { copy_in.await; std::future::pending().await } => unreachable!() }
            },
            out,
            err
        );
        Ok(status.map_err(|e| e.to_string())?.code().unwrap_or(128))
    }

    async fn attach(&self, target: AttachTarget, io: ProcessIo) -> Result<(), String> {
        let (stdin_tx, mut output, pty) = {
            let map = self.containers.lock().unwrap();
            let c = map
                .get(&target.container_id)
                .ok_or_else(|| format!("container {:?} not found", target.container_id))?;
            (c.stdin.clone(), c.output.subscribe(), c.pty.clone())
        };
        let has_stdin = io.stdin.is_some();
        let stdout = io.stdout;
        let forward_out = async move {
            loop {
                match output.recv().await {
                    Ok(b) => {
                        if let Some(tx) = &stdout {
                            let _ = tx.send(b).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        let feeder = feed_pty_or_pipe(pty, io.stdin, io.resize, stdin_tx);
        tokio::select! {
            // Detach when the client closes stdin, or when the process's output ends.
            () = feeder, if has_stdin => {}
            () = forward_out => {}
        }
        Ok(())
    }

    async fn port_forward(&self, sandbox_id: &str, port: u16) -> std::io::Result<PortStream> {
        assert_eq!(sandbox_id, "sb");
        let s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        Ok(Box::new(s))
    }
}

async fn feed_pty_or_pipe(
    pty: Option<Arc<OwnedFd>>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    resize: mpsc::Receiver<TermSize>,
    to_process: mpsc::UnboundedSender<Bytes>,
) {
    match pty {
        Some(master) => {
            feed_pty(master, stdin, resize, move |b| {
                let _ = to_process.send(b);
            })
            .await
        }
        None => {
            if let Some(mut rx) = stdin {
                while let Some(b) = rx.recv().await {
                    let _ = to_process.send(b);
                }
            }
        }
    }
}

async fn copy_out(
    src: Option<impl tokio::io::AsyncRead + Unpin>,
    dst: Option<mpsc::Sender<Bytes>>,
) {
    let (Some(mut src), Some(dst)) = (src, dst) else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = src.read(&mut buf).await {
        if n == 0 || dst.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
            break;
        }
    }
}

impl HostBackend {
    /// Starts a long-running process that `attach` can connect to.
    pub fn start_container(&self, id: &str, argv: &[String], tty: bool) -> u32 {
        let (stdin_tx, mut stdin_rx) = mpsc::unbounded_channel::<Bytes>();
        let (out_tx, _) = broadcast::channel::<Bytes>(256);
        let (pid, pty) = if tty {
            let Pty { master, child } = spawn_pty(argv).expect("spawn tty container");
            let pid = child.id().unwrap();
            let out = out_tx.clone();
            pump_master(&master, move |b| {
                let _ = out.send(b);
                true
            });
            let mut w = std::fs::File::from(master.try_clone().unwrap());
            std::thread::spawn(move || {
                while let Some(b) = stdin_rx.blocking_recv() {
                    if w.write_all(&b).is_err() {
                        break;
                    }
                }
            });
            reap(child);
            (pid, Some(Arc::new(master)))
        } else {
            let mut child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn container");
            let pid = child.id().unwrap();
            let mut w = child.stdin.take().unwrap();
            tokio::spawn(async move {
                while let Some(b) = stdin_rx.recv().await {
                    if w.write_all(&b).await.is_err() {
                        break;
                    }
                }
            });
            let mut r = child.stdout.take().unwrap();
            let out = out_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = r.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let _ = out.send(Bytes::copy_from_slice(&buf[..n]));
                }
            });
            reap(child);
            (pid, None)
        };
        self.containers.lock().unwrap().insert(
            id.to_string(),
            Container {
                stdin: stdin_tx,
                output: out_tx,
                pty,
                pid,
            },
        );
        pid
    }

    /// Kills a container started by `start_container` and forgets it.
    pub fn stop_container(&self, id: &str) {
        let c = self
            .containers
            .lock()
            .unwrap()
            .remove(id)
            .expect("container exists");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        wait_gone(c.pid);
    }
}

fn reap(mut child: tokio::process::Child) {
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

pub fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_with_arg(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes()) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

pub mod client {
    //! A minimal Kubernetes channel-protocol WebSocket client, like client-go's.
    use std::collections::HashMap;
    use std::time::Duration;

    use base64::Engine;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::{self, Message};
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    pub const STEP: Duration = Duration::from_secs(20);

    pub struct Client {
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        pub protocol: Option<String>,
        base64: bool,
    }

    /// Everything received before the server closed, per channel.
    #[derive(Debug, Default)]
    pub struct Received(pub HashMap<u8, Vec<u8>>);

    impl Received {
        pub fn text(&self, ch: u8) -> String {
            String::from_utf8_lossy(self.0.get(&ch).map(Vec::as_slice).unwrap_or(b"")).into_owned()
        }
        pub fn status(&self) -> serde_json::Value {
            serde_json::from_slice(self.0.get(&3).expect("no status on the error channel"))
                .expect("status is JSON")
        }
    }

    pub async fn connect(url: &str, protocols: &[&str]) -> Result<Client, tungstenite::Error> {
        let url = url.replacen("http://", "ws://", 1);
        let mut req = url.into_client_request()?;
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                protocols.join(", ").parse().unwrap(),
            );
        }
        let (ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("connect timed out")?;
        let protocol = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_string());
        let base64 = protocol.as_deref().is_some_and(|p| p.contains("base64"));
        Ok(Client {
            ws,
            protocol,
            base64,
        })
    }

    /// HTTP status of a refused handshake.
    pub async fn refused_status(url: &str, protocols: &[&str]) -> u16 {
        match connect(url, protocols).await {
            Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("handshake unexpectedly succeeded"),
        }
    }

    impl Client {
        pub async fn send(&mut self, ch: u8, data: &[u8]) {
            let msg = if self.base64 {
                Message::text(format!(
                    "{ch}{}",
                    base64::engine::general_purpose::STANDARD.encode(data)
                ))
            } else {
                let mut v = vec![ch];
                v.extend_from_slice(data);
                Message::binary(v)
            };
            self.ws.send(msg).await.expect("send");
        }

        pub async fn resize(&mut self, width: u16, height: u16) {
            let json = format!(r#"{{"Width":{width},"Height":{height}}}"#);
            self.send(4, json.as_bytes()).await;
        }

        /// v5: tell the server no more stdin will come.
        pub async fn close_stdin(&mut self) {
            self.ws
                .send(Message::binary(vec![255u8, 0]))
                .await
                .expect("send close");
        }

        /// Next data message, or `None` once the server closed.
        pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
            loop {
                let msg = tokio::time::timeout(STEP, self.ws.next())
                    .await
                    .expect("recv timed out")?;
                match msg.ok()? {
                    Message::Binary(b) if !b.is_empty() => return Some((b[0], b[1..].to_vec())),
                    Message::Text(t) if !t.is_empty() => {
                        let ch = t.as_bytes()[0] - b'0';
                        let data = base64::engine::general_purpose::STANDARD
                            .decode(&t.as_str()[1..])
                            .unwrap();
                        return Some((ch, data));
                    }
                    Message::Close(_) => return None,
                    _ => continue,
                }
            }
        }

        /// Reads until channel `ch` has carried `needle`, returning everything read on it.
        pub async fn read_until(&mut self, ch: u8, needle: &str) -> String {
            let mut got = Vec::new();
            while !String::from_utf8_lossy(&got).contains(needle) {
                match self.recv().await {
                    Some((c, d)) if c == ch => got.extend(d),
                    Some(_) => {}
                    None => panic!(
                        "closed before {needle:?} on channel {ch}; got {:?}",
                        String::from_utf8_lossy(&got)
                    ),
                }
            }
            String::from_utf8_lossy(&got).into_owned()
        }

        pub async fn collect(mut self) -> Received {
            let mut r = Received::default();
            while let Some((ch, d)) = self.recv().await {
                r.0.entry(ch).or_default().extend(d);
            }
            r
        }

        pub async fn close(mut self) {
            let _ = self.ws.close(None).await;
        }
    }
}
