//! The single writer: group commit.
//!
//! Writes from every request queue here; the writer takes all that are waiting, applies them in one
//! transaction (each its own revision, each checked against what the ones before it wrote), commits once and
//! only then answers them all and publishes their events. One fsync then serves a whole batch, which is what
//! lets SQLite take thousands of creates a second on a disk that does a few hundred fsyncs.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use tokio::sync::oneshot;

use crate::hub::Hub;
use crate::types::{Event, EventKind, KeyValue, Revision};
use crate::StoreError;

/// The most writes one transaction takes; more wait for the next commit (bounds the latency one commit adds).
const MAX_BATCH: usize = 2048;
/// Rows one compaction step deletes, so that a large compaction does not hold writers up.
const COMPACT_STEP: i64 = 2000;

pub(crate) enum Op {
    Create {
        key: String,
        value: Vec<u8>,
    },
    Update {
        key: String,
        value: Vec<u8>,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

/// Where a write's outcome goes: the written (or deleted) value, or nothing for a compaction.
pub(crate) type Reply = oneshot::Sender<Result<Option<KeyValue>, StoreError>>;

pub(crate) struct Request {
    pub op: Op,
    pub reply: Reply,
}

pub(crate) struct Writer {
    conn: Connection,
    hub: Arc<Hub>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    /// A compaction under way: its target and who waits for it. It runs in small steps, each its own
    /// transaction, between write batches.
    compaction: Option<(Revision, Vec<Reply>)>,
}

impl Writer {
    pub fn new(
        conn: Connection,
        hub: Arc<Hub>,
        revision: Arc<AtomicI64>,
        compacted: Arc<AtomicI64>,
    ) -> Self {
        Writer {
            conn,
            hub,
            revision,
            compacted,
            compaction: None,
        }
    }

    /// Serves requests until every sender is gone.
    pub fn run(mut self, requests: std_mpsc::Receiver<Request>) {
        loop {
            let first = if self.compaction.is_some() {
                match requests.try_recv() {
                    Ok(r) => Some(r),
                    Err(std_mpsc::TryRecvError::Empty) => None,
                    Err(std_mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                match requests.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                }
            };
            let Some(first) = first else {
                self.compact_step();
                continue;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let (compactions, writes): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|r| matches!(r.op, Op::Compact { .. }));
            for c in compactions {
                let Op::Compact { revision } = c.op else {
                    unreachable!()
                };
                self.queue_compaction(revision, c.reply);
            }
            if !writes.is_empty() {
                self.commit(writes);
            }
        }
    }

    fn queue_compaction(&mut self, revision: Revision, reply: Reply) {
        let current = self.revision.load(Ordering::Acquire);
        let done = self.compacted.load(Ordering::Acquire);
        if revision > current {
            let _ = reply.send(Err(StoreError::FutureRevision {
                requested: revision,
                current,
            }));
            return;
        }
        if revision <= done {
            let _ = reply.send(Ok(None));
            return;
        }
        // The new horizon is committed before any history goes, so that a read sees either the old horizon
        // and the whole history, or the new one (and refuses older revisions) — never a half-compacted past.
        let set = self.conn.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [revision],
        );
        if let Err(e) = set {
            let _ = reply.send(Err(e.into()));
            return;
        }
        self.compacted.store(revision, Ordering::Release);
        match &mut self.compaction {
            Some((target, waiting)) => {
                *target = (*target).max(revision);
                waiting.push(reply);
            }
            None => self.compaction = Some((revision, vec![reply])),
        }
    }

    fn compact_step(&mut self) {
        let Some((target, _)) = &self.compaction else {
            return;
        };
        let target = *target;
        let step = (|| -> Result<bool, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let finished = compact_some(&tx, target)?;
            tx.commit()?;
            Ok(finished)
        })();
        match step {
            Ok(false) => {}
            Ok(true) => {
                for w in self.compaction.take().map(|(_, w)| w).unwrap_or_default() {
                    let _ = w.send(Ok(None));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store compaction failed");
                for w in self.compaction.take().map(|(_, w)| w).unwrap_or_default() {
                    let _ = w.send(Err(StoreError::Internal(format!("compaction: {e}"))));
                }
            }
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let start = self.revision.load(Ordering::Acquire);
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let outcome = (|| -> Result<Revision, StoreError> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut rev = start;
            for req in &batch {
                let r = apply(&tx, &req.op, rev + 1).map(|event| {
                    rev += 1;
                    let kv = event.kv.clone();
                    events.push(event);
                    Some(kv)
                });
                // A failed check (conflict, exists, not found) fails that write only; an SQL failure ends
                // the whole transaction.
                if let Err(StoreError::Internal(_) | StoreError::Unavailable(_)) = &r {
                    return Err(r.unwrap_err());
                }
                results.push(r);
            }
            if rev != start {
                tx.execute("UPDATE meta SET value = ?1 WHERE name = 'revision'", [rev])?;
            }
            tx.commit()?;
            Ok(rev)
        })();
        match outcome {
            Ok(rev) => {
                self.revision.store(rev, Ordering::Release);
                // Published before any reply, so a client that saw its write acknowledged and then watches
                // from that revision finds it in the ring or the database.
                self.hub.publish(events);
                for (req, r) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = batch.len(), "store commit failed");
                for req in batch {
                    let _ = req
                        .reply
                        .send(Err(StoreError::Unavailable(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

struct Row {
    rev: Revision,
    create_rev: Revision,
    value: Vec<u8>,
}

fn live(tx: &Transaction, key: &str) -> Result<Option<Row>, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT l.rev, l.create_rev, l.value FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1",
        )?
        .query_row([key], |r| {
            Ok(Row {
                rev: r.get(0)?,
                create_rev: r.get(1)?,
                value: r.get(2)?,
            })
        })
        .optional()?)
}

fn kv(key: &str, row: Row) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: row.value,
        create_revision: row.create_rev,
        mod_revision: row.rev,
    }
}

/// Applies one write at revision `rev` and returns its event.
fn apply(tx: &Transaction, op: &Op, rev: Revision) -> Result<Event, StoreError> {
    match op {
        Op::Create { key, value } => {
            if live(tx, key)?.is_some() {
                return Err(StoreError::AlreadyExists(key.clone()));
            }
            tx.prepare_cached("INSERT INTO log(rev, key, create_rev, prev_rev, deleted, value) VALUES (?1, ?2, ?1, NULL, 0, ?3)")?
                .execute(params![rev, key, value])?;
            tx.prepare_cached("INSERT INTO current(key, rev) VALUES (?1, ?2)")?
                .execute(params![key, rev])?;
            Ok(Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: rev,
                    mod_revision: rev,
                },
                prev: None,
            })
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let old = live(tx, key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            if old.rev != *expected {
                return Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current: Box::new(kv(key, old)),
                });
            }
            tx.prepare_cached("INSERT INTO log(rev, key, create_rev, prev_rev, deleted, value) VALUES (?1, ?2, ?3, ?4, 0, ?5)")?
                .execute(params![rev, key, old.create_rev, old.rev, value])?;
            tx.prepare_cached("UPDATE current SET rev = ?2 WHERE key = ?1")?
                .execute(params![key, rev])?;
            let create_revision = old.create_rev;
            Ok(Event {
                kind: EventKind::Put,
                kv: KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: rev,
                },
                prev: Some(kv(key, old)),
            })
        }
        Op::Delete { key, expected } => {
            let old = live(tx, key)?.ok_or_else(|| StoreError::NotFound(key.clone()))?;
            if let Some(expected) = expected {
                if old.rev != *expected {
                    return Err(StoreError::Conflict {
                        key: key.clone(),
                        expected: *expected,
                        current: Box::new(kv(key, old)),
                    });
                }
            }
            // The tombstone keeps the deleted value: a watch replayed from the log delivers it, as etcd's
            // DELETE events carry the previous value.
            tx.prepare_cached("INSERT INTO log(rev, key, create_rev, prev_rev, deleted, value) VALUES (?1, ?2, ?3, ?4, 1, ?5)")?
                .execute(params![rev, key, old.create_rev, old.rev, old.value])?;
            tx.prepare_cached("DELETE FROM current WHERE key = ?1")?
                .execute([key])?;
            let prev = kv(key, old);
            Ok(Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    mod_revision: rev,
                    ..prev.clone()
                },
                prev: Some(prev),
            })
        }
        Op::Compact { .. } => unreachable!("compaction is not a write"),
    }
}

/// Drops one step of history older than `revision`: rows superseded by a newer row at or before it, and
/// tombstones before it. True once nothing is left to drop.
fn compact_some(tx: &Transaction, revision: Revision) -> Result<bool, StoreError> {
    let n = tx
        .prepare_cached(
            "DELETE FROM log WHERE rev IN (
                SELECT l.rev FROM log l
                WHERE l.rev < ?1 AND (l.deleted = 1 OR EXISTS (
                    SELECT 1 FROM log n WHERE n.key = l.key AND n.rev > l.rev AND n.rev <= ?1))
                LIMIT ?2)",
        )?
        .execute(params![revision, COMPACT_STEP])?;
    Ok((n as i64) < COMPACT_STEP)
}
