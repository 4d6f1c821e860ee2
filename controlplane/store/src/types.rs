use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::StoreError;

/// The store's global revision: every write advances it by one; it is the objects' `resourceVersion`.
pub type Revision = i64;

/// One key's value at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision that created the key (its current incarnation).
    pub create_revision: Revision,
    /// The revision of the last write to the key (of its deletion, for a deleted value).
    pub mod_revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Created or replaced: `kv` is the new value.
    Put,
    /// Deleted: `kv` is the last value, with the deletion's revision as `mod_revision`.
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The value before this change (none for a creation).
    pub prev: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }

    /// True for the first write of a key's incarnation.
    pub fn is_create(&self) -> bool {
        self.kind == EventKind::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// A range read: keys in `[start, end)`, at most `limit` of them, at `revision` (current when `None`).
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub start: String,
    pub end: String,
    pub limit: Option<usize>,
    pub revision: Option<Revision>,
}

impl ListRequest {
    /// Every key under `prefix`.
    pub fn prefix(prefix: &str) -> Self {
        ListRequest {
            start: prefix.to_string(),
            end: prefix_end(prefix),
            ..Default::default()
        }
    }
}

/// The answer to a [`ListRequest`].
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub kvs: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// How many keys of the range follow this page (0 when the page is the last).
    pub remaining: i64,
}

/// The end of the key range of everything under `prefix`: the prefix with its last byte incremented (as etcd
/// clients compute it). Keys are ASCII paths here.
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).expect("an ASCII prefix stays ASCII");
        }
    }
    // Only a prefix of DEL bytes gets here: the whole key space.
    "\u{7f}".repeat(prefix.len() + 1)
}

/// A batch as its producer hands it over: a watcher's own (etcd: a stream per watcher), or one committed
/// batch shared by every watcher of the in-process hub, of which each takes the events under its prefix
/// when it reads them. Shared, a batch queued for many watchers (or for one that lags) is held once.
pub(crate) enum Batch {
    Owned(Vec<Event>),
    Shared(Arc<Vec<Event>>),
}

/// A stream of events in revision order. An `Err` item ends it (compaction, a lagging reader, a lost backend):
/// the consumer restarts from the last revision it saw.
pub struct Watch {
    events: mpsc::Receiver<Result<Batch, StoreError>>,
    /// The keys this watch is for (what it takes from a shared batch).
    prefix: String,
    /// Set by the producer when it dropped this watcher for falling behind.
    lagged: Option<Arc<AtomicBool>>,
    last: Revision,
    ended: bool,
    /// Events the watcher missed, delivered before the live ones.
    backlog: Option<Vec<Event>>,
    /// Keeps the producer side (a task, a backend stream) alive as long as the watch.
    _guard: Option<Box<dyn Send + Sync>>,
}

impl Watch {
    pub(crate) fn new(
        events: mpsc::Receiver<Result<Batch, StoreError>>,
        prefix: &str,
        lagged: Option<Arc<AtomicBool>>,
        after: Revision,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Watch {
            events,
            prefix: prefix.to_string(),
            lagged,
            last: after,
            ended: false,
            backlog: None,
            _guard: guard,
        }
    }

    /// Delivers `events` (ascending, all before the live feed) first.
    pub(crate) fn with_backlog(mut self, events: Vec<Event>) -> Self {
        if !events.is_empty() {
            self.backlog = Some(events);
        }
        self
    }

    /// The next batch of events (ascending revisions), an error that ends the watch, or `None` once ended.
    pub async fn next(&mut self) -> Option<Result<Vec<Event>, StoreError>> {
        if self.ended {
            return None;
        }
        if let Some(batch) = self.backlog.take() {
            self.last = batch.last().map(Event::revision).unwrap_or(self.last);
            return Some(Ok(batch));
        }
        loop {
            let batch = match self.events.recv().await {
                Some(Ok(Batch::Owned(batch))) => batch,
                Some(Ok(Batch::Shared(shared))) => shared
                    .iter()
                    .filter(|e| e.kv.key.starts_with(&self.prefix))
                    .cloned()
                    .collect(),
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(e));
                }
                None => {
                    self.ended = true;
                    return Some(Err(self.closed()));
                }
            };
            // A shared batch may hold nothing under this prefix.
            if let Some(e) = batch.last() {
                self.last = e.revision();
                return Some(Ok(batch));
            }
        }
    }

    /// Why the producer closed the stream.
    fn closed(&self) -> StoreError {
        let lagged = self
            .lagged
            .as_ref()
            .is_some_and(|l| l.load(Ordering::Acquire));
        if lagged {
            StoreError::WatchLagged(self.last)
        } else {
            StoreError::Unavailable("the store closed the watch".into())
        }
    }

    /// The revision of the last event delivered (the watch's start before any).
    pub fn last_revision(&self) -> Revision {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/registry/pods/"), "/registry/pods0");
        assert_eq!(prefix_end("a"), "b");
        assert!("/registry/pods/default/x" < prefix_end("/registry/pods/").as_str());
        assert!("/registry/podsx" > prefix_end("/registry/pods/").as_str());
    }
}
