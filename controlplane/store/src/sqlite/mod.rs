//! The embedded backend: one SQLite database file, the default for a control plane on one machine.

mod read;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::hub::Hub;
use crate::types::{KeyValue, ListPage, ListRequest, Revision, Watch};
use crate::{Store, StoreError};
use writer::{Op, Request, Writer};

/// Recent events kept in memory for watchers that start a little in the past.
const RING: usize = 8192;
/// Idle read connections kept open.
const READERS: usize = 8;

/// The SQLite store. Cheap to clone behind an `Arc`; dropping the last handle stops the writer thread.
pub struct SqliteStore {
    path: PathBuf,
    writes: Mutex<std_mpsc::Sender<Request>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    hub: Arc<Hub>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path` and starts its writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = schema::open_writer(path)?;
        let revision = Arc::new(AtomicI64::new(schema::meta(&conn, "revision")?));
        let compacted = Arc::new(AtomicI64::new(schema::meta(&conn, "compacted")?));
        let hub = Arc::new(Hub::new(RING, revision.load(Ordering::Acquire)));
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer::new(conn, hub.clone(), revision.clone(), compacted.clone());
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Internal(format!("start the store writer: {e}")))?;
        tracing::info!(path = %path.display(), revision = revision.load(Ordering::Acquire), "sqlite store open");
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writes: Mutex::new(tx),
            readers: Arc::new(Mutex::new(Vec::new())),
            hub,
            revision,
            compacted,
        })
    }

    async fn write(&self, op: Op) -> Result<Option<KeyValue>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .lock()
            .expect("writer queue lock")
            .send(Request { op, reply })
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store writer has stopped".into()))?
    }

    /// Runs a read on a pooled connection off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("reader pool lock").pop();
            let conn = match conn {
                Some(c) => c,
                None => schema::open_reader(&path)?,
            };
            let out = f(&conn);
            let mut pool = readers.lock().expect("reader pool lock");
            if pool.len() < READERS {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.read(move |c| read::get(c, &key)).await
    }

    async fn list(&self, request: ListRequest) -> Result<ListPage, StoreError> {
        self.read(move |c| read::list(c, &request)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let kv = self
            .write(Op::Create {
                key: key.to_string(),
                value,
            })
            .await?;
        Ok(kv.expect("a create returns its value"))
    }

    async fn update(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: Revision,
    ) -> Result<KeyValue, StoreError> {
        let kv = self
            .write(Op::Update {
                key: key.to_string(),
                value,
                expected,
            })
            .await?;
        Ok(kv.expect("an update returns its value"))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let kv = self
            .write(Op::Delete {
                key: key.to_string(),
                expected,
            })
            .await?;
        Ok(kv.expect("a delete returns the deleted value"))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        let compacted = self.compacted.load(Ordering::Acquire);
        if after + 1 < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let current = self.revision.load(Ordering::Acquire);
        if after > current {
            return Err(StoreError::FutureRevision {
                requested: after,
                current,
            });
        }
        let reg = self.hub.register(prefix, after);
        let watch = Watch::new(reg.rx, prefix, Some(reg.lagged), after, None);
        let backlog = match reg.backlog {
            Some(events) => events,
            None => {
                let prefix = prefix.to_string();
                let upto = reg.published;
                self.read(move |c| read::history(c, &prefix, after, upto))
                    .await?
            }
        };
        Ok(watch.with_backlog(backlog))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.revision.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(Op::Compact { revision }).await.map(|_| ())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.compacted.load(Ordering::Acquire))
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}
