//! Reads. Each runs in one read transaction, so what it returns is one committed snapshot, and the revision
//! it reports is that snapshot's.

use rusqlite::{params, Connection, OptionalExtension};

use super::schema;
use crate::types::{Event, EventKind, KeyValue, ListPage, ListRequest, Revision};
use crate::StoreError;

pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT l.value, l.create_rev, l.rev FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1",
        )?
        .query_row([key], |r| {
            Ok(KeyValue {
                key: key.to_string(),
                value: r.get(0)?,
                create_revision: r.get(1)?,
                mod_revision: r.get(2)?,
            })
        })
        .optional()?)
}

pub(crate) fn list(conn: &Connection, req: &ListRequest) -> Result<ListPage, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let current = schema::meta(&tx, "revision")?;
    let compacted = schema::meta(&tx, "compacted")?;
    let revision = match req.revision {
        None => current,
        Some(r) if r > current => {
            return Err(StoreError::FutureRevision {
                requested: r,
                current,
            })
        }
        Some(r) if r < compacted => {
            return Err(StoreError::Compacted {
                requested: r,
                compacted,
            })
        }
        Some(r) => r,
    };
    // One more than asked tells whether anything follows without a count in the common case.
    let limit = req.limit.map(|l| l as i64 + 1).unwrap_or(-1);
    let row = |r: &rusqlite::Row| -> rusqlite::Result<KeyValue> {
        Ok(KeyValue {
            key: r.get(0)?,
            value: r.get(1)?,
            create_revision: r.get(2)?,
            mod_revision: r.get(3)?,
        })
    };
    let mut kvs: Vec<KeyValue> = if revision == current {
        tx.prepare_cached(
            "SELECT c.key, l.value, l.create_rev, l.rev FROM current c JOIN log l ON l.rev = c.rev
             WHERE c.key >= ?1 AND c.key < ?2 ORDER BY c.key LIMIT ?3",
        )?
        .query_map(params![req.start, req.end, limit], row)?
        .collect::<Result<_, _>>()?
    } else {
        tx.prepare_cached(
            "SELECT l.key, l.value, l.create_rev, l.rev FROM
               (SELECT key, max(rev) AS r FROM log WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) m
             JOIN log l ON l.rev = m.r WHERE l.deleted = 0 ORDER BY m.key LIMIT ?4",
        )?
        .query_map(params![req.start, req.end, revision, limit], row)?
        .collect::<Result<_, _>>()?
    };
    let mut remaining = 0;
    if let Some(l) = req.limit {
        if kvs.len() > l {
            kvs.truncate(l);
            let after = &kvs.last().expect("a full page").key;
            remaining = if revision == current {
                tx.prepare_cached("SELECT count(*) FROM current WHERE key > ?1 AND key < ?2")?
                    .query_row(params![after, req.end], |r| r.get(0))?
            } else {
                tx.prepare_cached(
                    "SELECT count(*) FROM
                       (SELECT key, max(rev) AS r FROM log WHERE key > ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) m
                     JOIN log l ON l.rev = m.r WHERE l.deleted = 0",
                )?
                .query_row(params![after, req.end, revision], |r| r.get(0))?
            };
        }
    }
    tx.finish()?;
    Ok(ListPage {
        kvs,
        revision,
        remaining,
    })
}

/// Events under `prefix` with revisions in `(after, upto]`, from the log.
pub(crate) fn history(
    conn: &Connection,
    prefix: &str,
    after: Revision,
    upto: Revision,
) -> Result<Vec<Event>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let compacted = schema::meta(&tx, "compacted")?;
    if after + 1 < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let end = crate::types::prefix_end(prefix);
    let events = tx
        .prepare_cached(
            "SELECT l.rev, l.key, l.create_rev, l.deleted, l.value, p.rev, p.create_rev, p.value
             FROM log l LEFT JOIN log p ON p.rev = l.prev_rev
             WHERE l.rev > ?1 AND l.rev <= ?2 AND l.key >= ?3 AND l.key < ?4 ORDER BY l.rev",
        )?
        .query_map(params![after, upto, prefix, end], |r| {
            let key: String = r.get(1)?;
            let deleted: bool = r.get(3)?;
            let prev = match r.get::<_, Option<Revision>>(5)? {
                Some(rev) => Some(KeyValue {
                    key: key.clone(),
                    value: r.get(7)?,
                    create_revision: r.get(6)?,
                    mod_revision: rev,
                }),
                None => None,
            };
            Ok(Event {
                kind: if deleted {
                    EventKind::Delete
                } else {
                    EventKind::Put
                },
                kv: KeyValue {
                    key,
                    value: r.get(4)?,
                    create_revision: r.get(2)?,
                    mod_revision: r.get(0)?,
                },
                prev,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    tx.finish()?;
    Ok(events)
}
