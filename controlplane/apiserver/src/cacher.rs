//! The watch cache: one store watch per resource, whose events are decoded once and handed to every HTTP
//! watcher of that resource (upstream's cacher). A watcher that starts at a revision the recent-event ring
//! still covers is served from it and then live; an older one gets a store watch of its own.
//!
//! A watcher that falls more than [`QUEUE`] events behind is dropped: its stream ends and the client watches
//! again from its last revision, as upstream does with slow watchers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use basalt_store::{EventKind, Revision, Store};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// Events a slow watcher may have queued before it is dropped.
pub const QUEUE: usize = 1000;
/// Recent events kept for watchers that start a little in the past.
const RING: usize = 1024;

/// One change, decoded once for every watcher.
pub struct Cached {
    pub kind: EventKind,
    pub revision: Revision,
    pub key: String,
    pub is_create: bool,
    pub object: Arc<Value>,
    pub prev: Option<Arc<Value>>,
    json: OnceLock<Bytes>,
}

impl Cached {
    /// A store event, decoded (for watchers served by a store watch of their own).
    pub fn from_event(e: &basalt_store::Event) -> Option<Arc<Cached>> {
        let object = crate::objects::decode(&e.kv).ok()?;
        let prev = e
            .prev
            .as_ref()
            .and_then(|p| crate::objects::decode(p).ok())
            .map(Arc::new);
        Some(Arc::new(Cached {
            kind: e.kind,
            revision: e.revision(),
            key: e.kv.key.clone(),
            is_create: e.is_create(),
            object: Arc::new(object),
            prev,
            json: OnceLock::new(),
        }))
    }

    /// The object's JSON, serialized once.
    pub fn json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
    }
}

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Arc<Cached>>,
}

struct Inner {
    ring: VecDeque<Arc<Cached>>,
    /// Every event up to this revision has been handed out.
    last: Revision,
    subscribers: Vec<Subscriber>,
}

pub struct Cacher {
    inner: Mutex<Inner>,
}

/// A watcher's feed: what it missed (from the ring), then live events.
pub struct Feed {
    pub backlog: Vec<Arc<Cached>>,
    pub rx: mpsc::Receiver<Arc<Cached>>,
    /// The newest revision handed out when the feed started (for bookmarks).
    pub last: Revision,
}

impl Cacher {
    fn start(store: Arc<dyn Store>, prefix: String, from: Revision) -> Arc<Cacher> {
        let c = Arc::new(Cacher {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                last: from,
                subscribers: Vec::new(),
            }),
        });
        let me = c.clone();
        tokio::spawn(async move { me.run(store, prefix).await });
        c
    }

    async fn run(self: Arc<Self>, store: Arc<dyn Store>, prefix: String) {
        loop {
            let from = self.inner.lock().expect("cacher lock").last;
            let mut w = match store.watch(&prefix, from).await {
                Ok(w) => w,
                Err(e) => {
                    self.reset(&store, &e).await;
                    continue;
                }
            };
            loop {
                match w.next().await {
                    Some(Ok(batch)) => {
                        let events: Vec<Arc<Cached>> =
                            batch.iter().filter_map(Cached::from_event).collect();
                        self.publish(events);
                    }
                    Some(Err(e)) => {
                        self.reset(&store, &e).await;
                        break;
                    }
                    None => break,
                }
            }
        }
    }

    /// After a broken store watch: watchers that might have missed something are dropped (they re-watch);
    /// a compacted position starts over from the present.
    async fn reset(&self, store: &Arc<dyn Store>, e: &basalt_store::StoreError) {
        tracing::debug!(error = %e, "watch cache restarts its store watch");
        tokio::time::sleep(Duration::from_millis(100)).await;
        {
            let mut inner = self.inner.lock().expect("cacher lock");
            inner.subscribers.clear();
            inner.ring.clear();
        }
        if matches!(e, basalt_store::StoreError::Compacted { .. }) {
            if let Ok(now) = store.current_revision().await {
                self.inner.lock().expect("cacher lock").last = now;
            }
        }
    }

    fn publish(&self, events: Vec<Arc<Cached>>) {
        let mut inner = self.inner.lock().expect("cacher lock");
        for e in events {
            inner.last = e.revision;
            inner.subscribers.retain(|s| {
                if !e.key.starts_with(&s.prefix) {
                    return !s.tx.is_closed();
                }
                s.tx.try_send(e.clone()).is_ok()
            });
            if inner.ring.len() == RING {
                inner.ring.pop_front();
            }
            inner.ring.push_back(e);
        }
    }

    /// A feed of events under `prefix` after `after`, if the ring still covers it.
    fn subscribe(&self, prefix: &str, after: Revision) -> Option<Feed> {
        let mut inner = self.inner.lock().expect("cacher lock");
        let covered =
            after >= inner.last || inner.ring.front().is_some_and(|o| o.revision <= after + 1);
        if !covered {
            return None;
        }
        let backlog = inner
            .ring
            .iter()
            .filter(|e| e.revision > after && e.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE);
        inner.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            tx,
        });
        Some(Feed {
            backlog,
            rx,
            last: inner.last,
        })
    }
}

/// The watch caches, one per resource, started on first use.
#[derive(Default)]
pub struct Cachers {
    map: Mutex<HashMap<String, Arc<Cacher>>>,
}

impl Cachers {
    /// A feed for a watcher of `resource_prefix` (narrowed to `prefix`) from `after`, or None when the
    /// watcher must read history from the store itself.
    pub async fn feed(
        &self,
        store: &Arc<dyn Store>,
        resource_prefix: &str,
        prefix: &str,
        after: Revision,
    ) -> Option<Feed> {
        let existing = self
            .map
            .lock()
            .expect("cachers lock")
            .get(resource_prefix)
            .cloned();
        let cacher = match existing {
            Some(c) => c,
            None => {
                let now = store.current_revision().await.ok()?;
                let mut map = self.map.lock().expect("cachers lock");
                map.entry(resource_prefix.to_string())
                    .or_insert_with(|| {
                        Cacher::start(store.clone(), resource_prefix.to_string(), now)
                    })
                    .clone()
            }
        };
        cacher.subscribe(prefix, after)
    }
}
