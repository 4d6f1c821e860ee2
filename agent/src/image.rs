//! ImageService on the image store. An image's ID is its config digest (`sha256:…`), the same in PullImage,
//! ImageStatus, ListImages and ContainerStatus; every name pointing at that config is one of its tags.

use std::collections::BTreeMap;
use std::sync::Arc;

use basalt_images::{ImageRecord, Reference};
use basalt_proto::cri::{self, image_service_server::ImageService};
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::status;

pub struct Images(pub Arc<Agent>);

/// Every record of one image ID, and the CRI view of them together.
fn cri_image(id: &str, recs: &[ImageRecord], store: &basalt_images::Store) -> cri::Image {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for r in recs {
        if !r.name.contains('@') {
            tags.push(r.name.clone());
        }
        let d = crate::container::repo_digest(r);
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
fn lookup(
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

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(status::from_join)?
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        req: Request<cri::ListImagesRequest>,
    ) -> Result<Response<cri::ListImagesResponse>, Status> {
        let store = self.0.images.clone();
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|i| i.image)
            .filter(|i| !i.is_empty());
        let images = blocking(move || {
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
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        req: Request<cri::ImageStatusRequest>,
    ) -> Result<Response<cri::ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let name = req.image.map(|i| i.image).unwrap_or_default();
        if name.is_empty() {
            return Err(status::invalid("image.image", "", "must name an image"));
        }
        let store = self.0.images.clone();
        let verbose = req.verbose;
        let resp = blocking(move || {
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
        .await?;
        Ok(Response::new(resp))
    }

    async fn pull_image(
        &self,
        req: Request<cri::PullImageRequest>,
    ) -> Result<Response<cri::PullImageResponse>, Status> {
        let req = req.into_inner();
        let name = req.image.map(|i| i.image).unwrap_or_default();
        let reference: Reference = name
            .parse()
            .map_err(|e| status::invalid("image.image", &name, &format!("{e}")))?;
        let mut hosts = self.0.hosts.clone();
        if let Some(auth) = req.auth {
            let host = if auth.server_address.is_empty() {
                reference.registry.clone()
            } else {
                auth.server_address
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned()
            };
            let entry = hosts.config.configs.entry(host).or_default();
            entry.auth = Some(basalt_images::hosts::Auth {
                username: (!auth.username.is_empty()).then_some(auth.username),
                password: (!auth.password.is_empty()).then_some(auth.password),
                auth: (!auth.auth.is_empty()).then_some(auth.auth),
            });
        }
        let store = self.0.images.clone();
        let rec = blocking(move || {
            let client = basalt_images::Client::new(hosts);
            basalt_images::pull(&store, &client, &reference, &|_| {}).map_err(|e| match e {
                basalt_images::Error::Registry { .. } => {
                    Status::unknown(format!("pulling {name}: {e}"))
                }
                e => status::from_image(e),
            })
        })
        .await?;
        Ok(Response::new(cri::PullImageResponse {
            image_ref: rec.config.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        req: Request<cri::RemoveImageRequest>,
    ) -> Result<Response<cri::RemoveImageResponse>, Status> {
        let name = req.into_inner().image.map(|i| i.image).unwrap_or_default();
        if name.is_empty() {
            return Err(status::invalid("image.image", "", "must name an image"));
        }
        let store = self.0.images.clone();
        blocking(move || {
            // Removing an image that is not there is success (kubelet's image GC may race).
            if let Some((_, recs)) = lookup(&store, &name)? {
                for r in recs {
                    store.remove_image(&r.name).map_err(status::from_image)?;
                }
            }
            Ok(())
        })
        .await?;
        Ok(Response::new(cri::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<cri::ImageFsInfoRequest>,
    ) -> Result<Response<cri::ImageFsInfoResponse>, Status> {
        let root = self.0.images.root().to_owned();
        let usage = blocking(move || {
            let (bytes, inodes) = crate::stats::dir_usage(&root);
            Ok(cri::FilesystemUsage {
                timestamp: crate::store::now_ns(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: root.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            })
        })
        .await?;
        Ok(Response::new(cri::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}
