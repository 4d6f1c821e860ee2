//! ListImages and ImageStatus. An image's ID is its config digest (`sha256:…`), the same in PullImage,
//! ImageStatus, ListImages and ContainerStatus; every name pointing at that config is one of its tags.

use std::collections::BTreeMap;

use basalt_images::ImageRecord;
use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::{status, view};

impl Call for cri::ListImagesRequest {
    type Reply = cri::ListImagesResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let store = agent.images.clone();
        let filter = self
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let images = status::blocking(move || {
            if let Some(name) = filter {
                return Ok(lookup(&store, &name)?
                    .map(|(id, recs)| vec![cri_image(&id, &recs, &store)])
                    .unwrap_or_default());
            }
            Ok(by_id(&store)?
                .iter()
                .map(|(id, recs)| cri_image(id, recs, &store))
                .collect())
        })
        .await?;
        Ok(cri::ListImagesResponse { images })
    }
}

impl Call for cri::ImageStatusRequest {
    type Reply = cri::ImageStatusResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let name = image_name(self.image)?;
        let store = agent.images.clone();
        let verbose = self.verbose;
        status::blocking(move || {
            let Some((id, recs)) = lookup(&store, &name)? else {
                // Not an error: kubelet asks to learn whether it must pull.
                return Ok(cri::ImageStatusResponse::default());
            };
            let mut info = std::collections::HashMap::new();
            if verbose {
                let cfg = store.image_config(&recs[0]).map_err(status::from_image)?;
                info.insert(
                    "info".to_owned(),
                    serde_json::json!({"imageSpec": cfg, "records": recs}).to_string(),
                );
            }
            Ok(cri::ImageStatusResponse {
                image: Some(cri_image(&id, &recs, &store)),
                info,
            })
        })
        .await
    }
}

/// The image a request's spec names; naming none is InvalidArgument.
pub fn image_name(spec: Option<cri::ImageSpec>) -> Result<String, Status> {
    let name = spec.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(status::invalid("image.image", "", "must name an image"));
    }
    Ok(name)
}

/// Every record of one image ID, and the CRI view of them together.
pub fn cri_image(id: &str, recs: &[ImageRecord], store: &basalt_images::Store) -> cri::Image {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for r in recs {
        if !r.name.contains('@') {
            tags.push(r.name.clone());
        }
        let d = view::repo_digest(r);
        if !digests.contains(&d) {
            digests.push(d);
        }
    }
    tags.sort();
    digests.sort();
    let first = &recs[0];
    let user = store
        .image_config(first)
        .map(|c| c.config.user)
        .unwrap_or_default();
    let user_part = user.split(':').next().unwrap_or("");
    let (uid, username) = match user_part.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) if user_part.is_empty() => (Some(cri::Int64Value { value: 0 }), String::new()),
        Err(_) => (None, user_part.to_owned()),
    };
    cri::Image {
        id: id.to_owned(),
        repo_tags: tags,
        repo_digests: digests,
        size: first.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: id.to_owned(),
            ..Default::default()
        }),
        pinned: recs.iter().any(|r| r.pinned),
    }
}

fn by_id(store: &basalt_images::Store) -> Result<BTreeMap<String, Vec<ImageRecord>>, Status> {
    let mut map: BTreeMap<String, Vec<ImageRecord>> = BTreeMap::new();
    for r in store.images().map_err(status::from_image)? {
        map.entry(r.config.to_string()).or_default().push(r);
    }
    Ok(map)
}

/// The image a CRI image spec names, with all its records; `None` if the store has no such image.
pub fn lookup(
    store: &basalt_images::Store,
    name: &str,
) -> Result<Option<(String, Vec<ImageRecord>)>, Status> {
    match store.find_image(name) {
        Ok(rec) => {
            let id = rec.config.to_string();
            let recs = by_id(store)?.remove(&id).unwrap_or_else(|| vec![rec]);
            Ok(Some((id, recs)))
        }
        Err(basalt_images::Error::ImageNotFound { .. }) => Ok(None),
        Err(e @ basalt_images::Error::Reference { .. }) => {
            Err(Status::invalid_argument(e.to_string()))
        }
        Err(e) => Err(status::from_image(e)),
    }
}
