//! In-memory copies of small, hot collections (RBAC objects, namespaces, priority classes…), kept current
//! by a list and a watch, for the authorizer and admission to read without a store round trip.
//!
//! Writes through this server wait for the informer of their resource to see them before they answer
//! ([`Informer::wait_for`]), so that a client that creates a RoleBinding is authorized by it on its next
//! request, as it would be in practice with kube-apiserver.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use basalt_store::{EventKind, ListRequest, Revision, Store};
use serde_json::Value;
use tokio::sync::watch;

pub struct Informer {
    pub prefix: String,
    items: RwLock<BTreeMap<String, Arc<Value>>>,
    /// The revision everything up to is in; `None` before the first list.
    seen: watch::Sender<Option<Revision>>,
}

impl Informer {
    pub fn start(store: Arc<dyn Store>, prefix: String) -> Arc<Informer> {
        let (seen, _) = watch::channel(None);
        let informer = Arc::new(Informer {
            prefix,
            items: RwLock::new(BTreeMap::new()),
            seen,
        });
        let me = informer.clone();
        tokio::spawn(async move { me.run(store).await });
        informer
    }

    async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            if let Err(e) = self.sync(store.as_ref()).await {
                tracing::debug!(prefix = %self.prefix, error = %e, "informer restarts");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    async fn sync(&self, store: &dyn Store) -> Result<(), basalt_store::StoreError> {
        let page = store.list(ListRequest::prefix(&self.prefix)).await?;
        let mut fresh = BTreeMap::new();
        for kv in &page.kvs {
            if let Ok(v) = crate::objects::decode(kv) {
                fresh.insert(kv.key.clone(), Arc::new(v));
            }
        }
        *self.items.write().expect("informer lock") = fresh;
        self.seen.send_replace(Some(page.revision));
        let mut w = store.watch(&self.prefix, page.revision).await?;
        while let Some(batch) = w.next().await {
            let batch = batch?;
            let mut last = None;
            {
                let mut items = self.items.write().expect("informer lock");
                for e in batch {
                    last = Some(e.revision());
                    match e.kind {
                        EventKind::Put => {
                            if let Ok(v) = crate::objects::decode(&e.kv) {
                                items.insert(e.kv.key.clone(), Arc::new(v));
                            }
                        }
                        EventKind::Delete => {
                            items.remove(&e.kv.key);
                        }
                    }
                }
            }
            if let Some(r) = last {
                self.seen.send_replace(Some(r));
            }
        }
        Err(basalt_store::StoreError::Unavailable("watch ended".into()))
    }

    pub fn items(&self) -> Vec<Arc<Value>> {
        self.items
            .read()
            .expect("informer lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.items.read().expect("informer lock").get(key).cloned()
    }

    pub fn revision(&self) -> Revision {
        self.seen.borrow().unwrap_or(0)
    }

    /// Waits (a little) until everything up to `revision` is in.
    pub async fn wait_for(&self, revision: Revision) {
        let mut rx = self.seen.subscribe();
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            rx.wait_for(|r| r.is_some_and(|r| r >= revision)),
        )
        .await;
    }

    /// Waits until the first list is in.
    pub async fn ready(&self) {
        let mut rx = self.seen.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }
}
