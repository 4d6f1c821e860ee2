use crate::types::{KeyValue, Revision};

/// Why a store operation failed. The apiserver maps each to its HTTP status (409, 404, 410, 503, 500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("key {0:?} not found")]
    NotFound(String),
    /// The key changed since the caller read it; `current` is what it holds now.
    #[error("key {key:?} is at revision {}, not {expected}", current.mod_revision)]
    Conflict {
        key: String,
        expected: Revision,
        current: Box<KeyValue>,
    },
    #[error("revision {requested} has been compacted; the oldest held is {compacted}")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is newer than the store's current revision {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The backend cannot be reached or has no quorum; the request may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A watcher fell too far behind the writers and was dropped; it must restart from its last revision.
    #[error("watch fell behind and was closed at revision {0}")]
    WatchLagged(Revision),
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(format!("sqlite: {e}")),
        }
    }
}
