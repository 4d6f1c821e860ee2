//! A server-side SPDY/3.1 connection: client-initiated streams in, frames out.
//!
//! Flow control is not enforced in either direction, like Go's spdystream that kubectl and the API server
//! use: WINDOW_UPDATE and SETTINGS are read and ignored.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::frame::{Frame, FrameReader, FrameWriter, Headers};

/// One stream the client opened.
pub(crate) struct Stream {
    pub(crate) id: u32,
    pub(crate) headers: Headers,
    /// Client data; ends at the client's FIN, a RST_STREAM or the end of the connection.
    pub(crate) incoming: mpsc::Receiver<Bytes>,
}

impl Stream {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Sends frames on the connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct Out(mpsc::Sender<Frame>);

impl Out {
    /// Errors mean the connection is gone, which callers learn elsewhere; so they are dropped here.
    pub(crate) async fn data(&self, stream_id: u32, data: Bytes) {
        let _ = self
            .0
            .send(Frame::Data {
                stream_id,
                fin: false,
                data,
            })
            .await;
    }

    pub(crate) async fn fin(&self, stream_id: u32) {
        let _ = self
            .0
            .send(Frame::Data {
                stream_id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
    }

    pub(crate) async fn reset(&self, stream_id: u32, status: u32) {
        let _ = self.0.send(Frame::RstStream { stream_id, status }).await;
    }

    /// Ends the connection after everything queued before it.
    pub(crate) async fn go_away(&self) {
        let _ = self
            .0
            .send(Frame::GoAway {
                last_stream_id: 0,
                status: 0,
            })
            .await;
    }
}

pub(crate) struct Conn {
    pub(crate) streams: mpsc::Receiver<Stream>,
    pub(crate) out: Out,
    /// Resolves when the client's side of the connection has ended.
    pub(crate) closed: oneshot::Receiver<()>,
    /// Resolves when everything queued on `out` has been written (or the connection broke).
    pub(crate) flushed: tokio::task::JoinHandle<()>,
}

pub(crate) fn start(upgraded: Upgraded) -> Conn {
    let (rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    let (streams_tx, streams_rx) = mpsc::channel::<Stream>(16);
    let (closed_tx, closed_rx) = oneshot::channel();

    let flushed = tokio::spawn(async move {
        let mut w = FrameWriter::new();
        let mut buf = BytesMut::with_capacity(16 * 1024);
        while let Some(frame) = out_rx.recv().await {
            let last = matches!(frame, Frame::GoAway { .. });
            w.encode(&frame, &mut buf);
            // Batch whatever else is already queued into one write.
            while !last && buf.len() < 64 * 1024 {
                match out_rx.try_recv() {
                    Ok(f) => {
                        let l = matches!(f, Frame::GoAway { .. });
                        w.encode(&f, &mut buf);
                        if l {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            buf.clear();
            if last {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let out = Out(out_tx.clone());
    tokio::spawn(async move {
        let mut reader = FrameReader::new(rd);
        let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        loop {
            let frame = match reader.next().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy connection ended");
                    break;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    fin,
                    headers,
                } => {
                    let (tx, rx) = mpsc::channel(64);
                    if !fin {
                        open.insert(stream_id, tx);
                    }
                    let _ = out_tx
                        .send(Frame::SynReply {
                            stream_id,
                            fin: false,
                        })
                        .await;
                    let _ = streams_tx
                        .send(Stream {
                            id: stream_id,
                            headers,
                            incoming: rx,
                        })
                        .await;
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    if let Some(tx) = open.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            open.remove(&stream_id);
                        }
                    }
                    if fin {
                        open.remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Ping(id) => {
                    let _ = out_tx.send(Frame::Ping(id)).await;
                }
                Frame::GoAway { .. } => break,
                Frame::SynReply { .. } | Frame::Ignored => {}
            }
        }
        drop(open);
        drop(streams_tx);
        let _ = closed_tx.send(());
    });

    Conn {
        streams: streams_rx,
        out,
        closed: closed_rx,
        flushed,
    }
}
