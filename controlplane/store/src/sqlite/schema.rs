//! The database layout and the connection settings that make a commit durable.
//!
//! `log` is the history: one row per revision (a value, or a tombstone for a deletion), as etcd's MVCC keeps
//! it, so reads at a past revision and watches from one are queries. `current` points every live key at its
//! latest row, so the reads that dominate (get, list now) touch no history. `meta` holds the current and the
//! compacted revision.
//!
//! Durability: WAL journal with `synchronous=FULL`, so COMMIT returns only after the WAL is fsynced; a process
//! killed (or a machine losing power) after that keeps the transaction. The writer acknowledges nothing before
//! COMMIT returns.

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev        INTEGER PRIMARY KEY,
    key        TEXT    NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev   INTEGER,
    deleted    INTEGER NOT NULL DEFAULT 0,
    value      BLOB
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS current (
    key TEXT PRIMARY KEY,
    rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// Opens the database, creating it (and syncing its directory, so the file itself survives a power loss) on
/// first use.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let fresh = !path.exists();
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA busy_timeout = 10000;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -8192;",
    )?;
    conn.execute_batch(DDL)?;
    if fresh {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::Internal(format!("sync {}: {e}", dir.display())))?;
        }
    }
    Ok(conn)
}

/// A connection for reads: WAL readers see the last committed snapshot and never block the writer.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.execute_batch("PRAGMA busy_timeout = 10000; PRAGMA cache_size = -4096;")?;
    Ok(conn)
}

pub(crate) fn meta(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
            r.get(0)
        })?,
    )
}
