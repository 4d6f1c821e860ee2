//! The daemon's event loop: one thread, one tokio `current_thread` runtime. Accepts connections on
//! `shim.sock`, reaps children on SIGCHLD, and ends after `Shutdown` (or SIGTERM).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use crate::monitor::{self, Fail, Monitor, Shared};
use crate::protocol::{ErrorKind, FrameReader, Request, Response};

/// A request line longer than this is refused (and the connection closed).
const MAX_REQUEST: u64 = 4 << 20;

/// Serves until shut down. Never spawns a thread: no `spawn_blocking`, `tokio::fs` or `tokio::process`.
pub(crate) fn run(
    monitor: Monitor,
    listener: std::os::unix::net::UnixListener,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        // Registered before any container exists, so no exit is missed.
        let mut sigchld = signal(SignalKind::child())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        let shared: Shared = Rc::new(RefCell::new(monitor));
        let done = Rc::new(Notify::new());
        let reaper = shared.clone();
        tokio::task::spawn_local(async move {
            loop {
                reaper.borrow_mut().reap();
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        tracing::info!(sandbox = %shared.borrow().sandbox_id, "serving");
        loop {
            tokio::select! {
                c = listener.accept() => match c {
                    Ok((stream, _)) => {
                        tokio::task::spawn_local(connection(shared.clone(), stream, done.clone()));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = done.notified() => break,
                _ = sigterm.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    monitor::shutdown(&shared).await;
                    break;
                }
            }
        }
        tracing::info!("shut down");
        anyhow::Ok(())
    })
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("responses serialize");
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// One client: requests in turn until it closes, or until the connection becomes an exec/attach stream. A
/// client that breaks off only ends this task.
async fn connection(m: Shared, stream: UnixStream, done: Rc<Notify>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        match (&mut r)
            .take(MAX_REQUEST)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_REQUEST {
            let f = Fail::new(
                ErrorKind::InvalidArgument,
                format!("request: longer than {MAX_REQUEST} bytes"),
            );
            let _ = send(&mut w, &f.into_response()).await;
            return;
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let f = Fail::new(ErrorKind::InvalidArgument, format!("request: {e}"));
                if send(&mut w, &f.into_response()).await.is_err() {
                    return;
                }
                continue;
            }
        };
        tracing::debug!(?req, "request");
        match req {
            Request::Exec {
                id,
                cmd,
                tty,
                stdin,
            } => {
                crate::exec::exec_stream(&m, &id, cmd, tty, stdin, FrameReader::new(r), w).await;
                return;
            }
            Request::Attach { id, stdin } => {
                crate::exec::attach(&m, &id, stdin, FrameReader::new(r), w).await;
                return;
            }
            Request::Shutdown => {
                monitor::shutdown(&m).await;
                let _ = send(&mut w, &Response::Ok).await;
                done.notify_one();
                return;
            }
            req => {
                let resp = handle(&m, req).await.unwrap_or_else(Fail::into_response);
                if send(&mut w, &resp).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn handle(m: &Shared, req: Request) -> Result<Response, Fail> {
    Ok(match req {
        Request::Ping => {
            let sandbox_id = m.borrow().sandbox_id.clone();
            Response::Pong {
                sandbox_id,
                pid: std::process::id() as i32,
            }
        }
        Request::Create(c) => Response::Created {
            pid: m.borrow_mut().create(c)?,
        },
        Request::Start { id } => {
            m.borrow_mut().start(&id)?;
            Response::Ok
        }
        Request::Kill { id, signal, all } => {
            m.borrow().kill(&id, signal, all)?;
            Response::Ok
        }
        Request::Stop {
            id,
            timeout_secs,
            signal,
        } => {
            let timeout = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(0));
            monitor::stop(m, &id, timeout, signal).await?;
            Response::Ok
        }
        Request::Delete { id } => {
            monitor::delete(m, &id).await?;
            Response::Ok
        }
        Request::Status { id } => Response::Status(m.borrow().get(&id)?.status.clone()),
        Request::List => Response::List {
            containers: m
                .borrow()
                .containers
                .values()
                .map(|c| c.status.clone())
                .collect(),
        },
        Request::ExecSync {
            id,
            cmd,
            timeout_secs,
            max_output_bytes,
        } => crate::exec::exec_sync(m, &id, cmd, timeout_secs, max_output_bytes).await?,
        Request::ReopenLog { id } => {
            m.borrow().reopen_log(&id)?;
            Response::Ok
        }
        Request::Update { id, resources } => {
            m.borrow().update(&id, resources)?;
            Response::Ok
        }
        Request::Exec { .. } | Request::Attach { .. } | Request::Shutdown => {
            unreachable!("handled by the connection")
        }
    })
}
