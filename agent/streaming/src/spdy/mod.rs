//! Exec, attach and port-forward over SPDY/3.1, the protocol kubectl and the API server use by default.
//!
//! The client opens one SPDY stream per channel and names it in a `streamtype` header (`error`, `stdin`,
//! `stdout`, `stderr`, `resize`; for port-forward `data`/`error` pairs tied by `requestid` and `port`). The
//! protocol version comes from `X-Stream-Protocol-Version`.

mod conn;
mod frame;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use tokio::sync::mpsc;

use crate::backend::{Backend, TermSize};
use crate::port_forward;
use crate::process::{self, Event, ProcessTarget};
use crate::session::Session;
use crate::wsproto::{WsProtocol, STDERR, STDOUT};
use conn::{Out, Stream};

pub(crate) const UPGRADE: &str = "SPDY/3.1";
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
const PORT_FORWARD: &str = "portforward.k8s.io";
/// How long the client has to open all the streams of an exec/attach (kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The SPDY names of the exec protocol versions; same semantics as the WebSocket ones.
const PROCESS_PROTOCOLS: &[WsProtocol] = &[
    WsProtocol::V4,
    WsProtocol::V3,
    WsProtocol::V2,
    WsProtocol::V1,
];

fn refuse(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(msg)));
    *resp.status_mut() = status;
    resp
}

pub(crate) fn upgrade(
    req: &mut Request<Incoming>,
    backend: Arc<dyn Backend>,
    session: Session,
) -> Response<Full<Bytes>> {
    let offered: Vec<String> = req
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let chosen: Result<(&'static str, WsProtocol), ()> = match &session {
        Session::Process(_) if offered.is_empty() => Ok(("", WsProtocol::V1)),
        Session::Process(_) => offered
            .iter()
            .find_map(|o| PROCESS_PROTOCOLS.iter().find(|p| p.name() == o))
            .map(|p| (p.name(), *p))
            .ok_or(()),
        Session::PortForward(_)
            if offered.is_empty() || offered.iter().any(|o| o == PORT_FORWARD) =>
        {
            Ok((PORT_FORWARD, WsProtocol::V4))
        }
        Session::PortForward(_) => Err(()),
    };
    let Ok((name, proto)) = chosen else {
        let supported: Vec<&str> = match session {
            Session::Process(_) => PROCESS_PROTOCOLS.iter().map(|p| p.name()).collect(),
            Session::PortForward(_) => vec![PORT_FORWARD],
        };
        return refuse(
            StatusCode::FORBIDDEN,
            format!("unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
        );
    };
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "spdy upgrade failed");
                return;
            }
        };
        match session {
            Session::Process(target) => serve_process(upgraded, proto, backend, target).await,
            Session::PortForward(id) => serve_port_forward(upgraded, backend, id).await,
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE));
    if !name.is_empty() {
        h.insert(PROTOCOL_HEADER, HeaderValue::from_static(name));
    }
    resp
}

#[derive(Default)]
struct ProcessStreams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

async fn serve_process(
    upgraded: Upgraded,
    proto: WsProtocol,
    backend: Arc<dyn Backend>,
    target: ProcessTarget,
) {
    let mut conn = conn::start(upgraded);
    let want_resize = target.tty() && !matches!(proto, WsProtocol::V1 | WsProtocol::V2);
    let expected = 1
        + usize::from(target.stdin())
        + usize::from(target.stdout())
        + usize::from(target.stderr())
        + usize::from(want_resize);
    let mut s = ProcessStreams::default();
    let mut got = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while got < expected {
        let stream = tokio::select! {
            s = conn.streams.recv() => s,
            () = &mut deadline => None,
        };
        let Some(stream) = stream else {
            tracing::debug!(got, expected, "spdy client did not open all streams");
            conn.out.go_away().await;
            return;
        };
        let slot = match stream.header("streamtype") {
            "error" => &mut s.error,
            "stdin" if target.stdin() => &mut s.stdin,
            "stdout" if target.stdout() => &mut s.stdout,
            "stderr" if target.stderr() => &mut s.stderr,
            "resize" if want_resize => &mut s.resize,
            other => {
                tracing::debug!(streamtype = other, "refusing unexpected spdy stream");
                conn.out.reset(stream.id, frame::RST_REFUSED).await;
                continue;
            }
        };
        if slot.is_none() {
            got += 1;
        }
        *slot = Some(stream);
    }

    let (input, process_input) = process::input_channels(&target);
    let mut pumps = tokio::task::JoinSet::new();
    if let (Some(mut stdin), Some(tx)) = (s.stdin.take(), input.stdin) {
        pumps.spawn(async move {
            while let Some(b) = stdin.incoming.recv().await {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
        });
    }
    let resize_tx = input.resize;
    if let Some(resize) = s.resize.take() {
        pumps.spawn(pump_resize(resize.incoming, resize_tx));
    } else {
        drop(resize_tx);
    }

    let out = conn.out.clone();
    let stdout_id = s.stdout.as_ref().map(|s| s.id);
    let stderr_id = s.stderr.as_ref().map(|s| s.id);
    let error_id = s
        .error
        .as_ref()
        .map(|s| s.id)
        .expect("error stream is always expected");
    let (events_tx, mut events_rx) = mpsc::channel::<Event>(16);
    let closed = conn.closed;
    let runner = process::run(backend, target, process_input, events_tx, async {
        let _ = closed.await;
    });
    let writer = async {
        while let Some(event) = events_rx.recv().await {
            match event {
                Event::Output(ch, data) => {
                    let id = if ch == STDOUT {
                        stdout_id
                    } else if ch == STDERR {
                        stderr_id
                    } else {
                        None
                    };
                    if let Some(id) = id {
                        out.data(id, data).await;
                    }
                }
                Event::Done(outcome) => {
                    if proto.json_status() {
                        out.data(error_id, Bytes::from(outcome.status_json())).await;
                    } else if let Some(text) = outcome.error_text() {
                        out.data(error_id, Bytes::from(text)).await;
                    }
                }
            }
        }
        for id in [stdout_id, stderr_id, Some(error_id)].into_iter().flatten() {
            out.fin(id).await;
        }
        out.go_away().await;
    };
    tokio::join!(runner, writer);
    let _ = conn.flushed.await;
    pumps.abort_all();
}

/// The resize stream carries back-to-back JSON objects.
async fn pump_resize(mut incoming: mpsc::Receiver<Bytes>, tx: mpsc::Sender<TermSize>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(b) = incoming.recv().await {
        buf.extend_from_slice(&b);
        let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
        let mut consumed = 0;
        loop {
            match it.next() {
                Some(Ok(size)) => {
                    consumed = it.byte_offset();
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "malformed resize stream");
                    return;
                }
                None => {
                    consumed = buf.len();
                    break;
                }
            }
        }
        buf.drain(..consumed);
    }
}

async fn serve_port_forward(upgraded: Upgraded, backend: Arc<dyn Backend>, sandbox_id: String) {
    let mut conn = conn::start(upgraded);
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(stream) = conn.streams.recv().await {
        let request_id = stream.header("requestid").to_string();
        let kind = stream.header("streamtype").to_string();
        if request_id.is_empty() || !matches!(kind.as_str(), "data" | "error") {
            tracing::debug!(%request_id, %kind, "refusing spdy port-forward stream");
            conn.out.reset(stream.id, frame::RST_REFUSED).await;
            continue;
        }
        let pair = pending.entry(request_id.clone()).or_default();
        if kind == "data" {
            pair.0 = Some(stream);
        } else {
            pair.1 = Some(stream);
        }
        if pair.0.is_some() && pair.1.is_some() {
            let (Some(data), Some(error)) = pending.remove(&request_id).expect("just inserted")
            else {
                unreachable!("both halves checked above")
            };
            tasks.spawn(forward(
                backend.clone(),
                sandbox_id.clone(),
                data,
                error,
                conn.out.clone(),
            ));
        }
    }
    tasks.abort_all();
    conn.out.go_away().await;
    let _ = conn.flushed.await;
}

async fn forward(
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    data: Stream,
    error: Stream,
    out: Out,
) {
    let (data_id, error_id) = (data.id, error.id);
    let port = match data.header("port").parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            let msg = format!(
                "invalid port header {:?}: must be 1-65535",
                data.header("port")
            );
            out.data(error_id, Bytes::from(msg)).await;
            out.fin(data_id).await;
            out.fin(error_id).await;
            return;
        }
    };
    let to_client = &out;
    let send = |b| async move {
        to_client.data(data_id, b).await;
        true
    };
    if let Err(e) = port_forward::pump(&*backend, &sandbox_id, port, data.incoming, send).await {
        let msg = port_forward::failure(port, &sandbox_id, &e);
        tracing::debug!("{msg}");
        out.data(error_id, Bytes::from(msg)).await;
    }
    out.fin(data_id).await;
    out.fin(error_id).await;
}
