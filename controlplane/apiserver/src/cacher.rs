//! The watch cache: one store watch per resource, whose events are decoded once and handed to every HTTP
//! watcher of that resource (upstream's cacher). A watcher that starts at a revision the recent-event ring
//! still covers is served from it and then live; an older one gets a store watch of its own.
//!
//! A watcher that falls more than [`QUEUE`] events behind is dropped: its stream ends and the client watches
//! again from its last revision, as upstream does with slow watchers.
//!
//! The ring must cover the time between a client's list and its watch: an informer that lists 10,000 pods
//! while 1,500 writes a second go on starts its watch thousands of events back. Missing the ring sends it
//! to a store watch of its own (a copy of every event, decoded again, dropped when it lags), which under
//! such load cost more than the writes themselves. So the ring holds the store's raw events (bytes, not
//! decoded objects, which are several times larger) for [`FRESH`] and up to [`RING`] of them, as upstream's watch
//! cache keeps 75 s of events; a watcher starting in it decodes only its own backlog.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use basalt_store::{EventKind, Revision, Store};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// Events a slow watcher may have queued before it is dropped.
pub const QUEUE: usize = 1000;
/// Recent events kept for watchers that start a little in the past: at most this many…
const RING: usize = 8192;
/// …and none older than this (upstream's eventFreshDuration), so a burst does not pin memory…
const FRESH: Duration = Duration::from_secs(75);
/// …but at least this many, whatever their age (upstream's lower bound): a quiet resource keeps its
/// recent history for the watcher that resumes after a pause.
const RING_FLOOR: usize = 1024;

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
    ring: VecDeque<(Instant, Arc<basalt_store::Event>)>,
    /// The ring holds every event of the resource after this revision (the newest one it let go, or
    /// where it started). Revisions count every resource's writes, so the ring's oldest event alone
    /// cannot tell whether a watcher missed nothing.
    floor: Revision,
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
                floor: from,
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
                    Some(Ok(batch)) => self.publish(batch),
                    // Fallen behind the store's writers: the store still has the history, so the cache
                    // picks up from its last revision and its own watchers notice nothing.
                    Some(Err(basalt_store::StoreError::WatchLagged(_))) => break,
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
            inner.floor = inner.last;
        }
        if matches!(e, basalt_store::StoreError::Compacted { .. }) {
            if let Ok(now) = store.current_revision().await {
                let mut inner = self.inner.lock().expect("cacher lock");
                inner.last = now;
                inner.floor = now;
            }
        }
    }

    fn publish(&self, batch: Vec<basalt_store::Event>) {
        // Decoded once, outside the lock, for every live watcher.
        let events: Vec<Arc<Cached>> = batch.iter().filter_map(Cached::from_event).collect();
        let now = Instant::now();
        let mut inner = self.inner.lock().expect("cacher lock");
        for e in events {
            inner.subscribers.retain(|s| {
                if !e.key.starts_with(&s.prefix) {
                    return !s.tx.is_closed();
                }
                s.tx.try_send(e.clone()).is_ok()
            });
        }
        for e in batch {
            inner.last = e.revision();
            inner.ring.push_back((now, Arc::new(e)));
        }
        while inner.ring.len() > RING
            || (inner.ring.len() > RING_FLOOR
                && inner
                    .ring
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > FRESH))
        {
            if let Some((_, e)) = inner.ring.pop_front() {
                inner.floor = e.revision();
            }
        }
    }

    /// A feed of events under `prefix` after `after`, if the ring still covers it.
    fn subscribe(&self, prefix: &str, after: Revision) -> Option<Feed> {
        let mut inner = self.inner.lock().expect("cacher lock");
        if after < inner.floor {
            return None;
        }
        let missed: Vec<Arc<basalt_store::Event>> = inner
            .ring
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(QUEUE);
        inner.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            tx,
        });
        let last = inner.last;
        drop(inner);
        // Live events queue meanwhile; the backlog is this watcher's alone to decode.
        let backlog = missed
            .iter()
            .filter_map(|e| Cached::from_event(e))
            .collect();
        Some(Feed { backlog, rx, last })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
        }))
        .unwrap()
    }

    /// An informer lists, then watches from the list's revision while thousands of writes go on: the
    /// ring still covers it (the old ring of 1,024 did not), and only its own namespace's events come.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watch_thousands_of_events_back_is_served_from_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(basalt_store::SqliteStore::open(&dir.path().join("db")).unwrap());
        let cachers = Cachers::default();
        let start = store.current_revision().await.unwrap();
        // The cache starts with the first watcher.
        assert!(cachers
            .feed(&store, "/registry/pods/", "/registry/pods/", start)
            .await
            .is_some());
        let listed = store.current_revision().await.unwrap();
        for i in 0..3000 {
            let ns = if i % 3 == 0 { "other" } else { "default" };
            store
                .create(&format!("/registry/pods/{ns}/p{i}"), pod(&format!("p{i}")))
                .await
                .unwrap();
        }
        let now = store.current_revision().await.unwrap();
        let mut feed = None;
        // The cache follows the store asynchronously: wait until it has handed out the last write.
        for _ in 0..500 {
            let f = cachers
                .feed(&store, "/registry/pods/", "/registry/pods/default/", listed)
                .await
                .expect("the ring covers a watch 3,000 events back");
            if f.last >= now {
                feed = Some(f);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let feed = feed.expect("the cache caught up with the store");
        assert_eq!(feed.backlog.len(), 2000);
        assert!(feed
            .backlog
            .iter()
            .all(|e| e.key.starts_with("/registry/pods/default/") && e.is_create));
        assert!(feed
            .backlog
            .windows(2)
            .all(|w| w[0].revision < w[1].revision));
        // Past the ring's reach, a watcher reads history from the store itself.
        for i in 0..RING {
            store
                .create(&format!("/registry/pods/default/q{i}"), pod("q"))
                .await
                .unwrap();
        }
        let now = store.current_revision().await.unwrap();
        for _ in 0..500 {
            let last = cachers
                .feed(&store, "/registry/pods/", "/registry/pods/", now)
                .await
                .map(|f| f.last);
            if last >= Some(now) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(cachers
            .feed(&store, "/registry/pods/", "/registry/pods/", listed)
            .await
            .is_none());
    }
}
