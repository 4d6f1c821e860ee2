//! The metadata index: one JSON file per image name under `images/`, each replaced atomically, so the index
//! survives SIGKILL at any point (a name maps to its old record or its new one).

use std::fs;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::store::{write_atomic, Store};

/// A layer as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

/// What the store knows about one image name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    /// The image's digest as a registry reports it: the index when the name pointed at one, else the manifest.
    pub digest: Digest,
    /// The platform manifest actually used.
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<LayerRecord>,
    /// Uncompressed layer digests from the config, bottom first.
    pub diff_ids: Vec<Digest>,
    /// Manifest + config + compressed layers, in bytes.
    pub size: u64,
    /// Pinned images (air-gap imports) are never removed by `prune`.
    pub pinned: bool,
    /// Blobs the record holds on to beyond manifest, config and layers (an image index).
    #[serde(default)]
    pub extra_blobs: Vec<Digest>,
}

impl ImageRecord {
    /// Every blob this image needs kept.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.digest, &self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.digest))
            .chain(self.extra_blobs.iter())
    }
}

fn file_name(name: &str) -> String {
    format!("{}.json", Digest::of(name.as_bytes()).hex())
}

impl Store {
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        let path = self.dir("images").join(file_name(&rec.name));
        let json = serde_json::to_vec_pretty(rec).expect("records serialise");
        write_atomic(&path, &json)
    }

    /// The record for `name` (a normalised reference string).
    pub fn image(&self, name: &str) -> Result<ImageRecord> {
        let path = self.dir("images").join(file_name(name));
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Io {
                path,
                source: e.into(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ImageNotFound {
                name: name.to_owned(),
            }),
            Err(e) => Err(e).at(path),
        }
    }

    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.dir("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let e = e.at(&dir)?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            let b = match fs::read(e.path()) {
                Ok(b) => b,
                // Removed since the listing (a concurrent RemoveImage): not an image any more.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err).at(e.path()),
            };
            let rec: ImageRecord = serde_json::from_slice(&b).map_err(|err| Error::Io {
                path: e.path(),
                source: err.into(),
            })?;
            out.push(rec);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the name; its blobs and snapshots go at the next garbage collection.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        let path = self.dir("images").join(file_name(name));
        match fs::remove_file(&path) {
            Ok(()) => crate::store::sync_dir(&self.dir("images")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ImageNotFound {
                name: name.to_owned(),
            }),
            Err(e) => Err(e).at(path),
        }
    }
}
