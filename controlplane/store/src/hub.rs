//! In-process fan-out of committed events, for the backends that commit in this process (SQLite).
//!
//! The writer publishes each committed batch here, in revision order, before it acknowledges the writes. A
//! watcher registers under the same lock that publication takes, so it sees every event after the point it
//! registered at and none twice. Recent events stay in a ring so that a watcher starting a little in the past
//! (the usual case: a client that just listed) needs no database read.
//!
//! A committed batch is shared, not copied, between the ring and every watcher it concerns: each watcher
//! takes its prefix's events when it reads. Copied per watcher, the batches queued for the watch cache,
//! the garbage collector and the other store watchers under a burst of writes held gigabytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::types::{Batch, Event, Revision};
use crate::StoreError;

/// Batches a watcher may have queued before it counts as lagging and is dropped (it then restarts from its
/// last revision, as after any broken watch). Bounds the memory one slow reader can hold.
pub(crate) const WATCH_QUEUE: usize = 1024;

pub(crate) struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Recent batches, oldest first, holding `held` events in all.
    recent: VecDeque<Arc<Vec<Event>>>,
    held: usize,
    capacity: usize,
    /// The revision of the last event published; every event up to it is in `recent` or in the database.
    published: Revision,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Result<Batch, StoreError>>,
    lagged: Arc<AtomicBool>,
}

/// What a new watcher gets from the hub: its live feed, and whether the ring held all it missed.
pub(crate) struct Registration {
    pub rx: mpsc::Receiver<Result<Batch, StoreError>>,
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
                recent: VecDeque::new(),
                held: 0,
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
        let batch = Arc::new(events);
        inner.subscribers.retain(|s| {
            if !batch.iter().any(|e| e.kv.key.starts_with(&s.prefix)) {
                return !s.tx.is_closed();
            }
            match s.tx.try_send(Ok(Batch::Shared(batch.clone()))) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(prefix = %s.prefix, "a store watcher fell behind and was closed");
                    s.lagged.store(true, Ordering::Release);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        inner.held += batch.len();
        inner.recent.push_back(batch);
        // Whole batches leave; the ring keeps at least `capacity` events.
        while inner
            .recent
            .front()
            .is_some_and(|b| inner.held - b.len() >= inner.capacity)
        {
            let old = inner.recent.pop_front().expect("front");
            inner.held -= old.len();
        }
    }

    /// Registers a watcher for `prefix` that wants every event after `after`.
    pub fn register(&self, prefix: &str, after: Revision) -> Registration {
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let lagged = Arc::new(AtomicBool::new(false));
        let mut inner = self.inner.lock().expect("hub lock");
        let oldest = inner
            .recent
            .front()
            .and_then(|b| b.first())
            .map(Event::revision);
        // The ring covers `after` when it holds every revision after it: its oldest event is at most one past
        // it, or nothing was published after it at all.
        let covered = after >= inner.published || oldest.is_some_and(|o| o <= after + 1);
        let backlog = covered.then(|| {
            inner
                .recent
                .iter()
                .flat_map(|b| b.iter())
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
