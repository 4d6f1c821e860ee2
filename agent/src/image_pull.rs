//! PullImage, with the request's credentials for the registry they name (or the image's), on top of the
//! node's registry configuration.

use basalt_images::Reference;
use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::status;

impl Call for cri::PullImageRequest {
    type Reply = cri::PullImageResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let name = self.image.map(|i| i.image).unwrap_or_default();
        let reference: Reference = name
            .parse()
            .map_err(|e| status::invalid("image.image", &name, &format!("{e}")))?;
        let mut hosts = agent.hosts.clone();
        if let Some(auth) = self.auth {
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
        let store = agent.images.clone();
        let rec = status::blocking(move || {
            let client = basalt_images::Client::new(hosts);
            basalt_images::pull(&store, &client, &reference, &|_| {}).map_err(|e| match e {
                basalt_images::Error::Registry { .. } => {
                    Status::unknown(format!("pulling {name}: {e}"))
                }
                e => status::from_image(e),
            })
        })
        .await?;
        Ok(cri::PullImageResponse {
            image_ref: rec.config.to_string(),
        })
    }
}
