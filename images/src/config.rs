//! The runtime part of an image config (what the CRI ImageService reports and the runtime starts with), and
//! finding an image by any name the CRI uses: a reference in any short form, the image ID (config digest), or
//! the manifest or index digest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::ImageRecord;
use crate::reference::Reference;
use crate::store::Store;

/// `config` of an OCI image config; absent fields are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RuntimeConfig {
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub labels: BTreeMap<String, String>,
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    pub volumes: BTreeMap<String, serde_json::Value>,
    pub stop_signal: String,
}

/// The parts of an image config a node needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub config: RuntimeConfig,
}

impl Store {
    pub fn image_config(&self, image: &ImageRecord) -> Result<ImageConfig> {
        let bytes = self.read_blob(&image.config)?;
        // `null` for a list is common in Docker-built configs: treat it as empty.
        let mut v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
                digest: image.config.to_string(),
                reason: format!("image config: {e}"),
            })?;
        if let Some(c) = v.get_mut("config").and_then(|c| c.as_object_mut()) {
            c.retain(|_, val| !val.is_null());
        }
        serde_json::from_value(v).map_err(|e| Error::Manifest {
            digest: image.config.to_string(),
            reason: format!("image config: {e}"),
        })
    }

    /// The image `s` names: a reference (`busybox`, `docker.io/library/busybox:latest`, `…@sha256:…`), an image
    /// ID (the config digest, with or without `sha256:`), or a manifest or index digest.
    pub fn find_image(&self, s: &str) -> Result<ImageRecord> {
        let not_found = || Error::ImageNotFound { name: s.to_owned() };
        let as_digest = s
            .parse::<Digest>()
            .ok()
            .or_else(|| Digest::from_hex(s).ok());
        if let Some(d) = as_digest {
            let mut all = self.images()?;
            all.sort_by_key(|r| r.name.clone());
            return all
                .into_iter()
                .find(|r| {
                    r.config == d || r.manifest == d || r.digest == d || r.name == d.to_string()
                })
                .ok_or_else(not_found);
        }
        let r: Reference = s.parse()?;
        match self.image(&r.to_string()) {
            Ok(rec) => Ok(rec),
            Err(Error::ImageNotFound { .. }) => {
                // `name@digest` matches a record pulled by tag with that digest.
                if let Some(d) = &r.digest {
                    let name = r.name();
                    if let Some(rec) = self.images()?.into_iter().find(|i| {
                        (i.digest == *d || i.manifest == *d)
                            && i.name.starts_with(&format!("{name}:"))
                    }) {
                        return Ok(rec);
                    }
                }
                Err(Error::ImageNotFound {
                    name: r.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }
}
