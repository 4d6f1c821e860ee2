//! RemoveImage: every name of the image goes; removing an image that is not there succeeds.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::{image_status, status};

impl Call for cri::RemoveImageRequest {
    type Reply = cri::RemoveImageResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let name = image_status::image_name(self.image)?;
        let store = agent.images.clone();
        status::blocking(move || {
            // Removing an image that is not there is success (kubelet's image GC may race).
            if let Some((_, recs)) = image_status::lookup(&store, &name)? {
                for r in recs {
                    store.remove_image(&r.name).map_err(status::from_image)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(cri::RemoveImageResponse {})
    }
}
