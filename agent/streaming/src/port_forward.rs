use std::future::Future;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backend::Backend;

/// The message a client reads on a port's error stream when forwarding fails.
pub(crate) fn failure(port: u16, sandbox_id: &str, e: &std::io::Error) -> String {
    format!("error forwarding port {port} to pod sandbox {sandbox_id}: {e}")
}

/// Copies one forwarded connection both ways, whichever protocol carries it: what the client sends goes to
/// the pod's `port` until the client closes its side; what the port sends goes to `send`, until the port
/// closes (remote EOF ends the forward even if the client keeps its side open) or `send` answers false
/// (the client is gone).
pub(crate) async fn pump<F, Fut>(
    backend: &dyn Backend,
    sandbox_id: &str,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    mut send: F,
) -> std::io::Result<()>
where
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = bool>,
{
    let conn = backend.port_forward(sandbox_id, port).await?;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let upstream = async {
        while let Some(b) = from_client.recv().await {
            wr.write_all(&b).await?;
        }
        wr.shutdown().await
    };
    let downstream = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 || !send(Bytes::copy_from_slice(&buf[..n])).await {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    tokio::select! {
        r = downstream => r,
        r = async { upstream.await?; std::future::pending::<std::io::Result<()>>().await } => r,
    }
}
