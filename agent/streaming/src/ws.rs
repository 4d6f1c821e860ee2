//! Exec, attach and port-forward sessions over an upgraded WebSocket connection.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::backend::{Backend, TermSize};
use crate::port_forward;
use crate::process::{self, Event, ProcessTarget};
use crate::wsproto::{WsProtocol, CLOSE, ERROR, RESIZE, STDIN};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

async fn websocket(upgraded: Upgraded) -> Ws {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await
}

fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

pub(crate) async fn serve_process(
    upgraded: Upgraded,
    proto: WsProtocol,
    backend: Arc<dyn Backend>,
    target: ProcessTarget,
) {
    let ws = websocket(upgraded).await;
    let (mut sink, mut stream) = ws.split();
    let (input, process_input) = process::input_channels(&target);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();

    let reader = tokio::spawn(async move {
        let mut stdin = input.stdin;
        let resize = input.resize;
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
            let Some((channel, data)) = proto.decode(msg) else {
                continue;
            };
            match channel {
                STDIN if !data.is_empty() => {
                    if let Some(tx) = &stdin {
                        let _ = tx.send(data).await;
                    }
                }
                RESIZE => match serde_json::from_slice::<TermSize>(&data) {
                    Ok(size) => {
                        let _ = resize.send(size).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "ignoring malformed resize message"),
                },
                CLOSE if proto.supports_close() && data.first() == Some(&STDIN) => stdin = None,
                _ => {}
            }
        }
        let _ = gone_tx.send(());
    });

    let (events_tx, mut events_rx) = mpsc::channel::<Event>(16);
    let runner = process::run(backend, target, process_input, events_tx, async {
        let _ = gone_rx.await;
    });
    let writer = async {
        while let Some(event) = events_rx.recv().await {
            let msg = match event {
                Event::Output(ch, data) => proto.encode(ch, &data),
                Event::Done(outcome) => {
                    if proto.json_status() {
                        let _ = sink.send(proto.encode(ERROR, &outcome.status_json())).await;
                    } else if let Some(text) = outcome.error_text() {
                        let _ = sink.send(proto.encode(ERROR, text.as_bytes())).await;
                    }
                    break;
                }
            };
            if sink.send(msg).await.is_err() {
                // Keep consuming so the process is never blocked on a dead client.
                continue;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    };
    tokio::join!(runner, writer);
    reader.abort();
}

pub(crate) async fn serve_port_forward(
    upgraded: Upgraded,
    proto: WsProtocol,
    backend: Arc<dyn Backend>,
    sandbox_id: String,
    ports: Vec<u16>,
) {
    let ws = websocket(upgraded).await;
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);

    // Every channel first carries its port number, so clients can tell the pairs apart.
    for (i, port) in ports.iter().enumerate() {
        let le = Bytes::copy_from_slice(&port.to_le_bytes());
        let data_ch = (2 * i) as u8;
        let _ = sink.send(proto.encode(data_ch, &le)).await;
        let _ = sink.send(proto.encode(data_ch + 1, &le)).await;
    }

    let mut to_remote = Vec::with_capacity(ports.len());
    let mut tasks = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        to_remote.push(tx);
        let backend = backend.clone();
        let sandbox_id = sandbox_id.clone();
        let out = out_tx.clone();
        let data_ch = (2 * i) as u8;
        tasks.spawn(async move {
            let send = |b| {
                let out = &out;
                async move { out.send((data_ch, b)).await.is_ok() }
            };
            if let Err(e) = port_forward::pump(&*backend, &sandbox_id, port, rx, send).await {
                let msg = port_forward::failure(port, &sandbox_id, &e);
                tracing::debug!("{msg}");
                let _ = out.send((data_ch + 1, Bytes::from(msg))).await;
            }
        });
    }
    drop(out_tx);

    let reader = async move {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
            if let Some((ch, data)) = proto.decode(msg) {
                if ch % 2 == 0 && !data.is_empty() {
                    if let Some(tx) = to_remote.get(usize::from(ch / 2)) {
                        let _ = tx.send(data).await;
                    }
                }
            }
        }
    };
    let writer = async {
        while let Some((ch, data)) = out_rx.recv().await {
            if sink.send(proto.encode(ch, &data)).await.is_err() {
                break;
            }
        }
    };
    // The session lasts until the client leaves or every forwarded connection has ended both ways.
    tokio::select! {
        () = reader => {}
        () = async { tokio::join!(writer, async { while tasks.join_next().await.is_some() {} }); } => {}
    }
    tasks.abort_all();
    let _ = sink.send(normal_close()).await;
    let _ = sink.close().await;
}
