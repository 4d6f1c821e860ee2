//! In-process fan-out of committed events, for the backends that commit in this process (SQLite).
//!
//! The writer publishes each committed batch here, in revision order, before it acknowledges the writes. A
//! watcher registers under the same lock that publication takes, so it sees every event after the point it
//! registered at and none twice. Recent events stay in a ring so that a watcher starting a little in the past
//! (the usual case: a client that just listed) needs no database read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::types::{Event, Revision};
use crate::StoreError;

/// Batches a watcher may have queued before it counts as lagging and is dropped (it then restarts from its
/// last revision, as after any broken watch). Bounds the memory one slow reader can hold.
pub(crate) const WATCH_QUEUE: usize = 1024;

pub(crate) struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    recent: VecDeque<Event>,
    capacity: usize,
    /// The revision of the last event published; every event up to it is in `recent` or in the database.
    published: Revision,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Result<Vec<Event>, StoreError>>,
    lagged: Arc<AtomicBool>,
}

/// What a new watcher gets from the hub: its live feed, and whether the ring held all it missed.
pub(crate) struct Registration {
    pub rx: mpsc::Receiver<Result<Vec<Event>, StoreError>>,
    pub lagged: Arc<AtomicBool>,
    /// Events after the requested revision up to `published`, when the ring held them all.
    pub backlog: Option<Vec<Event>>,
    /// The last published revision at registration: live events start after it.
    pub published: Revision,
}

impl Hub {
    pub fn new(capacity: usize, published: Revision) -> Self {
        Hub {
            inner: Mutex::new(Inner {
                recent: VecDeque::with_capacity(capacity.min(4096)),
                capacity,
                published,
                subscribers: Vec::new(),
            }),
        }
    }

    /// Hands a committed batch (ascending revisions) to the ring and to every watcher whose prefix matches.
    pub fn publish(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.inner.lock().expect("hub lock");
        inner.published = events
            .last()
            .map(Event::revision)
            .unwrap_or(inner.published);
        inner.subscribers.retain(|s| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.kv.key.starts_with(&s.prefix))
                .cloned()
                .collect();
            if mine.is_empty() {
                return !s.tx.is_closed();
            }
            match s.tx.try_send(Ok(mine)) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.lagged.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        for e in events {
            if inner.recent.len() == inner.capacity {
                inner.recent.pop_front();
            }
            inner.recent.push_back(e);
        }
    }

    /// Registers a watcher for `prefix` that wants every event after `after`.
    pub fn register(&self, prefix: &str, after: Revision) -> Registration {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut inner = self.inner.lock().expect("hub lock");
        let oldest = inner.recent.front().map(Event::revision);
        // The ring covers `after` when it holds every revision after it: its oldest event is at most one past
        // it, or nothing was published after it at all.
        let covered = after >= inner.published || oldest.is_some_and(|o| o <= after + 1);
        let backlog = covered.then(|| {
            inner
                .recent
                .iter()
                .filter(|e| e.revision() > after && e.kv.key.starts_with(prefix))
                .cloned()
                .collect()
        });
        inner.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            tx,
            lagged: lagged.clone(),
        });
        Registration {
            rx,
            lagged,
            backlog,
            published: inner.published,
        }
    }
}
