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
            // Removing an image that is not there is success (kubelet's image GC may race), and so is
            // losing the race to a concurrent RemoveImage of the same image between lookup and removal.
            if let Some((_, recs)) = image_status::lookup(&store, &name)? {
                for r in recs {
                    match store.remove_image(&r.name) {
                        Ok(()) | Err(basalt_images::Error::ImageNotFound { .. }) => {}
                        Err(e) => return Err(status::from_image(e)),
                    }
                }
            }
            Ok(())
        })
        .await?;
        Ok(cri::RemoveImageResponse {})
    }
}
