//! One error type for the crate: every variant names the thing (path, reference, digest, host) it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("invalid digest {digest:?}: {reason}")]
    Digest { digest: String, reason: String },
    #[error("blob {expected} failed verification: content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} not in the content store")]
    BlobMissing { digest: String },
    #[error("image {name:?} not found")]
    ImageNotFound { name: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unsafe layer entry {entry:?}: {reason}; nothing written outside the target")]
    UnsafeEntry { entry: String, reason: String },
    #[error("layer {digest}: {reason}")]
    Layer { digest: String, reason: String },
    #[error("registry {host}: {reason}")]
    Registry { host: String, reason: String },
    /// Every endpoint answered that the registry has no such manifest (HTTP 404).
    #[error("image {name} not found in the registry: {reason}")]
    NotInRegistry { name: String, reason: String },
    #[error("registries config {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("manifest {digest}: {reason}")]
    Manifest { digest: String, reason: String },
    #[error("archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("container root {id:?}: {reason}")]
    Mount { id: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds the path an I/O error happened on.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            source,
        })
    }
}
