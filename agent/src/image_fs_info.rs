//! ImageFsInfo: what the image store uses (images and containers' roots share its filesystem).

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::now_ns;
use crate::{status, usage};

impl Call for cri::ImageFsInfoRequest {
    type Reply = cri::ImageFsInfoResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let root = agent.images.root().to_owned();
        let fs = status::blocking(move || {
            let (bytes, inodes) = usage::dir_usage(&root);
            Ok(cri::FilesystemUsage {
                timestamp: now_ns(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: root.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            })
        })
        .await?;
        Ok(cri::ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        })
    }
}
