//! The CRI client: any runtime endpoint (our own, containerd, CRI-O) over its unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use basalt_proto::{cri, ImageServiceClient, RuntimeServiceClient};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

impl Cri {
    /// Connects lazily: a runtime that starts after us (or restarts) is picked up on the next call.
    pub fn connect(socket: &Path) -> Result<Cri, tonic::transport::Error> {
        let path: PathBuf = socket.to_owned();
        let channel = Endpoint::try_from("http://[::]:50051")?
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
        })
    }

    /// Every sandbox the runtime has for the pod `uid` (found by the pod-UID label the kubelet sets).
    pub async fn pod_sandboxes(
        &self,
        uid: &str,
    ) -> Result<Vec<basalt_proto::cri::PodSandbox>, tonic::Status> {
        let mut label_selector = std::collections::HashMap::new();
        label_selector.insert(crate::podconfig::POD_UID.to_owned(), uid.to_owned());
        Ok(self
            .runtime
            .clone()
            .list_pod_sandbox(basalt_proto::cri::ListPodSandboxRequest {
                filter: Some(basalt_proto::cri::PodSandboxFilter {
                    label_selector,
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items)
    }
}

impl Cri {
    /// Stops and removes the sandbox `id`, best effort: what fails is retried on the pod's next pass.
    pub async fn stop_and_remove_sandbox(&self, id: &str) {
        let mut rt = self.runtime.clone();
        let pod_sandbox_id = id.to_owned();
        let stop = cri::StopPodSandboxRequest { pod_sandbox_id };
        let _ = rt.stop_pod_sandbox(stop).await;
        let pod_sandbox_id = id.to_owned();
        let _ = rt
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id })
            .await;
    }

    /// Whether the runtime has `image` (a failed ImageStatus counts as no).
    pub async fn has_image(&self, image: &str) -> bool {
        let mut images = self.images.clone();
        let status = cri::ImageStatusRequest {
            image: Some(spec(image)),
            verbose: false,
        };
        let answer = images.image_status(status).await;
        answer.is_ok_and(|r| r.into_inner().image.is_some())
    }

    /// PullImage of `image`, without credentials.
    pub async fn pull(&self, image: &str) -> Result<(), tonic::Status> {
        let pull = cri::PullImageRequest {
            image: Some(spec(image)),
            ..Default::default()
        };
        let mut images = self.images.clone();
        images.pull_image(pull).await.map(drop)
    }
}

fn spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

/// The newest ready sandbox of a list: the one a pod's containers run in.
pub fn newest_ready(
    list: &[basalt_proto::cri::PodSandbox],
) -> Option<&basalt_proto::cri::PodSandbox> {
    list.iter()
        .filter(|s| s.state == basalt_proto::cri::PodSandboxState::SandboxReady as i32)
        .max_by_key(|s| s.created_at)
}
