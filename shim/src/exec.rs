//! Processes in a running container (exec, exec-sync) and attaching to a container's own stdio. Exec and
//! attach turn their connection into a stream of [`Frame`]s.

use std::io;
use std::rc::Rc;
use std::time::Duration;

use basalt_runtime::exec::{ExecOptions, Outcome};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::monitor::{debug_assert_single_threaded, Fail, Shared, Waiter};
use crate::protocol::{ErrorKind, Frame, FrameReader, Response};
use crate::stdio::{read_opt, set_winsize, AsyncPipe, Pipes};

/// After a process exited, how long its output may still trickle in (a child it left behind may hold the
/// pipes open forever; the stream must end anyway).
const DRAIN: Duration = Duration::from_secs(2);

/// A process started by exec, and the monitor's ends of its stdio.
struct ExecProc {
    pid: i32,
    exit: oneshot::Receiver<i32>,
    stdin: Option<Rc<AsyncPipe>>,
    /// The pty master when it has a terminal.
    stdout: Option<Rc<AsyncPipe>>,
    stderr: Option<Rc<AsyncPipe>>,
    tty: Option<Rc<AsyncPipe>>,
}

impl ExecProc {
    fn kill(&self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
    }
}

fn start(m: &Shared, id: &str, cmd: Vec<String>, tty: bool, stdin: bool) -> Result<ExecProc, Fail> {
    if cmd.is_empty() {
        return Err(Fail::new(
            ErrorKind::InvalidArgument,
            format!("cmd: empty command for exec in container {id:?}"),
        ));
    }
    let mut m = m.borrow_mut();
    let c = m.running(id, "exec")?;
    let state = c.rt.state.clone();
    let bundle = basalt_runtime::spec::Bundle::load(&state.bundle)?;
    let mut process = bundle.spec.process().clone().ok_or_else(|| {
        Fail::new(
            ErrorKind::FailedPrecondition,
            format!("container {id:?}: its bundle has no process"),
        )
    })?;
    process.set_args(Some(cmd));
    process.set_terminal(Some(tty));
    process.set_console_size(None);
    let seccomp = basalt_runtime::init::Seccomp::compile(
        &bundle.spec,
        id,
        &m.runtime_root.join(".seccomp-cache"),
    )?;
    let pipes = if tty {
        None
    } else {
        Some(Pipes::new(stdin).map_err(|e| Fail::internal(format!("pipes: {e}")))?)
    };
    let opts = ExecOptions {
        console_socket: None,
        detach: true,
        stdio: pipes.as_ref().map(Pipes::child_fds),
    };
    debug_assert_single_threaded();
    let exec = basalt_runtime::exec::exec_with(&state, &process, seccomp.as_ref(), &opts)?;
    let Outcome::Detached(pid) = exec.outcome else {
        return Err(Fail::internal("exec did not detach"));
    };
    // Registered before anything awaits, so the reaper cannot miss an early exit.
    let (tx, exit) = oneshot::channel();
    m.waiters.insert(pid, Waiter::Exec(tx));
    tracing::info!(%id, pid, tty, "exec");
    let proc_ = match pipes {
        Some(p) => ExecProc {
            pid,
            exit,
            stdin: p.stdin.map(Rc::new),
            stdout: Some(Rc::new(p.stdout)),
            stderr: Some(Rc::new(p.stderr)),
            tty: None,
        },
        None => {
            let master = exec
                .console
                .ok_or_else(|| Fail::internal("exec with a terminal: no pty master"))?;
            let master =
                Rc::new(AsyncPipe::new(master).map_err(|e| Fail::internal(format!("pty: {e}")))?);
            ExecProc {
                pid,
                exit,
                stdin: stdin.then(|| master.clone()),
                stdout: Some(master.clone()),
                stderr: None,
                tty: Some(master),
            }
        }
    };
    Ok(proc_)
}

/// Runs `cmd` and collects its output (at most `max` bytes per stream); past `timeout` (if positive) the
/// process is killed and the answer is `deadline_exceeded`.
pub(crate) async fn exec_sync(
    m: &Shared,
    id: &str,
    cmd: Vec<String>,
    timeout_secs: i64,
    max: usize,
) -> Result<Response, Fail> {
    let mut p = start(m, id, cmd, false, false)?;
    let collect = async {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut ob, mut eb) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
        let mut code = None;
        let mut deadline = None;
        while code.is_none() || p.stdout.is_some() || p.stderr.is_some() {
            tokio::select! {
                r = read_opt(p.stdout.as_ref(), &mut ob) => match r {
                    Ok(n) if n > 0 => keep(&mut out, &ob[..n], max),
                    _ => p.stdout = None,
                },
                r = read_opt(p.stderr.as_ref(), &mut eb) => match r {
                    Ok(n) if n > 0 => keep(&mut err, &eb[..n], max),
                    _ => p.stderr = None,
                },
                c = &mut p.exit, if code.is_none() => {
                    code = Some(c.unwrap_or(-1));
                    deadline = Some(Instant::now() + DRAIN);
                }
                _ = sleep_until(deadline) => break,
            }
        }
        (out, err, code.unwrap_or(-1))
    };
    let limit = u64::try_from(timeout_secs).unwrap_or(0);
    let result = if limit > 0 {
        tokio::time::timeout(Duration::from_secs(limit), collect).await
    } else {
        Ok(collect.await)
    };
    match result {
        Ok((stdout, stderr, exit_code)) => Ok(Response::ExecSync {
            stdout,
            stderr,
            exit_code,
        }),
        Err(_) => {
            p.kill();
            Err(Fail::new(
                ErrorKind::DeadlineExceeded,
                format!("exec in container {id:?} timed out after {limit}s"),
            ))
        }
    }
}

fn keep(buf: &mut Vec<u8>, data: &[u8], max: usize) {
    let room = max.saturating_sub(buf.len());
    buf.extend_from_slice(&data[..data.len().min(room)]);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn reply<W: AsyncWrite + Unpin>(w: &mut W, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("responses serialize");
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// What the client sent on an exec or attach stream, applied to the process. Returns true when the client
/// closed its stdin.
async fn client_frame(
    f: Frame,
    stdin: &mut Option<Rc<AsyncPipe>>,
    tty: Option<&Rc<AsyncPipe>>,
) -> bool {
    match f {
        Frame::Stdin(d) if d.is_empty() => {
            if let (Some(s), Some(_)) = (stdin.take(), tty) {
                // A terminal has no stdin to close on its own: the end of input is its EOF character.
                let _ = s.write_all(&[4]).await;
            }
            return true;
        }
        Frame::Stdin(d) => {
            if let Some(s) = stdin {
                if let Err(e) = s.write_all(&d).await {
                    tracing::debug!(error = %e, "writing stdin");
                    *stdin = None;
                }
            }
        }
        Frame::Resize { width, height } => {
            if let Some(t) = tty {
                if let Err(e) = set_winsize(t.raw(), width, height) {
                    tracing::debug!(error = %e, "resizing the terminal");
                }
            }
        }
        other => tracing::debug!(channel = other.channel(), "ignored frame from the client"),
    }
    false
}

/// `Exec`: replies, then relays frames until the process exited and its output is drained. A client that
/// goes away takes the process with it (nobody could see or stop it any more).
pub(crate) async fn exec_stream<R, W>(
    m: &Shared,
    id: &str,
    cmd: Vec<String>,
    tty: bool,
    stdin: bool,
    mut reader: FrameReader<R>,
    mut w: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut p = match start(m, id, cmd, tty, stdin) {
        Ok(p) => p,
        Err(f) => {
            let _ = reply(&mut w, &f.into_response()).await;
            return;
        }
    };
    if reply(&mut w, &Response::Ok).await.is_err() {
        p.kill();
        return;
    }
    let (mut ob, mut eb) = (vec![0u8; 32 * 1024], vec![0u8; 32 * 1024]);
    let mut code = None;
    let mut deadline = None;
    let mut client_open = true;
    while code.is_none() || p.stdout.is_some() || p.stderr.is_some() {
        let sent = tokio::select! {
            f = reader.next(), if client_open => match f {
                Ok(Some(f)) => {
                    client_frame(f, &mut p.stdin, p.tty.as_ref()).await;
                    Ok(())
                }
                Ok(None) | Err(_) => {
                    client_open = false;
                    Err(())
                }
            },
            r = read_opt(p.stdout.as_ref(), &mut ob) => match r {
                Ok(n) if n > 0 => Frame::Stdout(ob[..n].to_vec()).write(&mut w).await.map_err(drop),
                _ => {
                    p.stdout = None;
                    Ok(())
                }
            },
            r = read_opt(p.stderr.as_ref(), &mut eb) => match r {
                Ok(n) if n > 0 => Frame::Stderr(eb[..n].to_vec()).write(&mut w).await.map_err(drop),
                _ => {
                    p.stderr = None;
                    Ok(())
                }
            },
            c = &mut p.exit, if code.is_none() => {
                code = Some(c.unwrap_or(-1));
                deadline = Some(Instant::now() + DRAIN);
                Ok(())
            }
            _ = sleep_until(deadline) => break,
        };
        if sent.is_err() {
            // The client is gone (or its socket broke): nobody can see or stop this process any more.
            tracing::info!(%id, pid = p.pid, "exec client went away: killing the process");
            if code.is_none() {
                p.kill();
            }
            return;
        }
    }
    let _ = Frame::Exit(Ok(code.unwrap_or(-1))).write(&mut w).await;
}

/// `Attach`: the container's output from now on, and its stdin if asked for and open.
pub(crate) async fn attach<R, W>(
    m: &Shared,
    id: &str,
    want_stdin: bool,
    mut reader: FrameReader<R>,
    mut w: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut rx) = mpsc::channel(256);
    let joined = (|| -> Result<_, Fail> {
        let m = m.borrow();
        let c = m.get(id)?;
        if *c.exited.borrow() {
            return Err(Fail::new(
                ErrorKind::FailedPrecondition,
                format!("container {id:?} has exited: attach needs it running"),
            ));
        }
        if want_stdin && c.stdin.is_none() {
            return Err(Fail::new(
                ErrorKind::InvalidArgument,
                format!("stdin: container {id:?} has no stdin open"),
            ));
        }
        let mut out = c.output.borrow_mut();
        out.subscribers.push(tx);
        Ok((
            c.exited.subscribe(),
            out.drained.subscribe(),
            if want_stdin { c.stdin.clone() } else { None },
            c.tty.clone(),
            c.stdin_once,
        ))
    })();
    let (mut exited, mut drained, mut stdin, tty, stdin_once) = match joined {
        Ok(j) => j,
        Err(f) => {
            let _ = reply(&mut w, &f.into_response()).await;
            return;
        }
    };
    if reply(&mut w, &Response::Ok).await.is_err() {
        return;
    }
    let used_stdin = stdin.is_some();
    let mut deadline = None;
    let mut gone = false;
    loop {
        tokio::select! {
            f = rx.recv() => match f {
                Some(f) => if f.write(&mut w).await.is_err() { gone = true; break },
                None => break,
            },
            f = reader.next() => match f {
                Ok(Some(f)) => {
                    if client_frame(f, &mut stdin, tty.as_ref()).await && used_stdin && stdin_once {
                        close_container_stdin(m, id);
                    }
                }
                Ok(None) | Err(_) => { gone = true; break }
            },
            _ = wait_true(&mut exited), if deadline.is_none() => {
                deadline = Some(Instant::now() + DRAIN);
            }
            _ = wait_true(&mut drained), if deadline.is_some() => {
                // Everything the container wrote is queued for us by now.
                while let Ok(f) = rx.try_recv() {
                    if f.write(&mut w).await.is_err() { gone = true; break }
                }
                break;
            }
            _ = sleep_until(deadline) => break,
        }
    }
    let code = m
        .borrow()
        .get(id)
        .ok()
        .filter(|c| c.status.state == crate::protocol::State::Exited)
        .map(|c| c.status.exit_code);
    if !gone {
        let frame = match code {
            Some(c) => Frame::Exit(Ok(c)),
            None => Frame::Exit(Err(format!("container {id:?} was removed"))),
        };
        let _ = frame.write(&mut w).await;
    }
    if used_stdin && stdin_once {
        // stdin_once: the container's stdin ends with the first attach that used it.
        if let (Some(s), Some(_)) = (stdin.take(), tty.as_ref()) {
            let _ = s.write_all(&[4]).await;
        }
        close_container_stdin(m, id);
    }
}

/// Drops the monitor's end of the container's stdin pipe (the container reads EOF once no attach holds it).
fn close_container_stdin(m: &Shared, id: &str) {
    if let Some(c) = m.borrow_mut().containers.get_mut(id) {
        if c.tty.is_none() {
            c.stdin = None;
        }
    }
}

/// Resolves once the value is true, or the sender is gone (the container was removed).
async fn wait_true(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}
