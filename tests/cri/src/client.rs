//! A CRI client over a unix socket: both services of `runtime.v1` on one tonic channel.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use basalt_proto::{ImageServiceClient, RuntimeServiceClient};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::Channel;

use crate::api;

/// The two CRI services of one endpoint. Cheap to clone (one shared HTTP/2 connection).
#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// The sandboxes of the pod with `uid` (the kubelet's `io.kubernetes.pod.uid` label).
    pub async fn sandboxes_of(&self, uid: &str) -> Vec<api::PodSandbox> {
        let label_selector = [("io.kubernetes.pod.uid".to_owned(), uid.to_owned())].into();
        self.runtime
            .clone()
            .list_pod_sandbox(api::ListPodSandboxRequest {
                filter: Some(api::PodSandboxFilter {
                    label_selector,
                    ..Default::default()
                }),
            })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
    }

    /// Connects to the CRI socket at `path`.
    pub async fn connect(path: &Path) -> Result<Cri> {
        let path: PathBuf = path.to_owned();
        // The URI is required by tonic but unused: the connector below dials the socket.
        let channel =
            tonic::transport::Endpoint::try_from("http://[::]:50051")?
                .connect_timeout(Duration::from_secs(5))
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// Connects and calls `Version` until it answers, or fails after `limit`.
    pub async fn wait_ready(path: &Path, limit: Duration) -> Result<Cri> {
        let deadline = Instant::now() + limit;
        loop {
            let err = match Cri::connect(path).await {
                Ok(mut c) => match c.runtime.version(api::VersionRequest::default()).await {
                    Ok(_) => return Ok(c),
                    Err(e) => anyhow::Error::from(e),
                },
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(err).context(format!(
                    "CRI endpoint {} not ready after {limit:?}",
                    path.display()
                ));
            }
            // The daemon has no readiness signal to wait on; re-probe its socket shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Fails unless `r` is a gRPC error; returns its status for the caller to inspect.
pub fn expect_err<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    what: &str,
) -> Result<tonic::Status> {
    match r {
        Ok(resp) => bail!("{what}: expected an error, got {:?}", resp.into_inner()),
        Err(s) => Ok(s),
    }
}
