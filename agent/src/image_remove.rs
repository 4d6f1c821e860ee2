//! RemoveImage: every name of the image goes; removing an image that is not there succeeds.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::{image_status, status};

pub async fn remove_image(
    agent: &Agent,
    req: cri::RemoveImageRequest,
) -> Result<cri::RemoveImageResponse, Status> {
    let name = req.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(status::invalid("image.image", "", "must name an image"));
    }
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
