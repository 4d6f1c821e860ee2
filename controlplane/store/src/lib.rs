//! The revisioned key-value store the apiserver sits on.
//!
//! One trait, [`Store`], with the semantics the Kubernetes API needs from etcd v3: a single global revision that
//! every write advances (it is the objects' `resourceVersion`), compare-and-swap writes on a key's modification
//! revision, consistent reads at the current or a past revision, ordered watches from any revision still held,
//! and compaction of old history. Two backends:
//!
//! - [`SqliteStore`], the default: one database file, as k3s's kine keeps the API in SQLite, with group commit
//!   so that many concurrent writers share one fsync.
//! - [`EtcdStore`]: an etcd v3 cluster, for control planes on more than one machine.
//!
//! Both pass the same behavioural suite (`tests/conformance.rs`).

mod error;
mod etcd;
mod hub;
mod sqlite;
mod types;

pub use error::StoreError;
pub use etcd::{EtcdConfig, EtcdStore};
pub use sqlite::SqliteStore;
pub use types::{prefix_end, Event, EventKind, KeyValue, ListPage, ListRequest, Revision, Watch};

use async_trait::async_trait;

/// The operations the apiserver needs; every backend implements exactly these.
///
/// Writes are acknowledged only once durable: a returned revision survives SIGKILL and power loss of the
/// process that returned it (each backend states how).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current value, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys in `[start, end)` in key order, read as one consistent snapshot at the requested revision (the
    /// current one when `revision` is `None`).
    async fn list(&self, request: ListRequest) -> Result<ListPage, StoreError>;

    /// Creates `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces `key`'s value if its modification revision is still `expected`; otherwise
    /// [`StoreError::Conflict`] with the current value, or [`StoreError::NotFound`].
    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError>;

    /// Deletes `key` (only at modification revision `expected`, when given). Returns the deleted value, whose
    /// `mod_revision` is the revision of the deletion.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// Events for keys under `prefix` with revisions after `after`, in revision order, then live ones.
    /// [`StoreError::Compacted`] if that history is gone: from this call, or (etcd confirms a watch before it
    /// checks the horizon) as the watch's first item.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError>;

    /// The revision of the most recent write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Forgets history before `revision`: reads and watches at older revisions then fail with
    /// [`StoreError::Compacted`]. The latest value of every key is kept.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The oldest revision still readable.
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    /// A short name for logs and metrics (`sqlite`, `etcd`).
    fn backend(&self) -> &'static str;
}
