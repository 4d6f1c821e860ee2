//! Garbage collection: blobs and snapshots no image record or container root refers to, and temp files that
//! killed writers left behind (only those whose lock nobody holds).

use std::collections::HashSet;
use std::fs;

use crate::digest::Digest;
use crate::error::{IoContext, Result};
use crate::lock::FileLock;
use crate::snapshot::chain_ids;
use crate::store::Store;

/// What a collection removed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub blobs: Vec<Digest>,
    pub snapshots: Vec<Digest>,
    pub bytes: u64,
}

impl Store {
    pub fn gc(&self) -> Result<GcReport> {
        // Whole-store lock: no pull or import records an image while we decide what is garbage.
        let _gc = self.gc_lock()?;
        let images = self.images()?;
        let mut keep_blobs: HashSet<Digest> = HashSet::new();
        let mut keep_snaps: HashSet<Digest> = HashSet::new();
        for i in &images {
            keep_blobs.extend(i.blobs().cloned());
            keep_snaps.extend(chain_ids(&i.diff_ids));
        }
        for r in self.container_roots()? {
            keep_snaps.extend(r.chain);
        }
        let mut report = GcReport::default();
        for b in self.blobs()? {
            if !keep_blobs.contains(&b) {
                report.bytes += self.blob_size(&b).unwrap_or(0);
                self.remove_blob(&b)?;
                report.blobs.push(b);
            }
        }
        for s in self.snapshots()? {
            if !keep_snaps.contains(&s) {
                let _l = self.lock(&format!("snapshot-{}", s.hex()))?;
                let dir = self.snapshot_dir(&s);
                fs::remove_dir_all(&dir).at(&dir)?;
                report.snapshots.push(s);
            }
        }
        // Leftovers of killed writers: unpack temp dirs and ingest files whose lock is free.
        let snaps = self.dir("snapshots");
        for e in fs::read_dir(&snaps).at(&snaps)? {
            let e = e.at(&snaps)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(".tmp-") {
                let hex = rest.split('-').next().unwrap_or("");
                if let Some(_l) =
                    FileLock::try_exclusive(&self.dir("locks").join(format!("snapshot-{hex}")))?
                {
                    fs::remove_dir_all(e.path()).at(e.path())?;
                }
            }
        }
        let ingest = self.dir("ingest");
        for e in fs::read_dir(&ingest).at(&ingest)? {
            let e = e.at(&ingest)?;
            let name = e.file_name().to_string_lossy().into_owned();
            let lock = match name.strip_prefix("tmp-") {
                Some(_) => None,
                None => Some(self.dir("locks").join(format!("blob-{name}"))),
            };
            let free = match lock {
                Some(l) => FileLock::try_exclusive(&l)?.is_some(),
                // Unknown-digest imports are in flight only within a live import; keep them.
                None => false,
            };
            if free {
                fs::remove_file(e.path()).at(e.path())?;
            }
        }
        // Index records half-written by a killed pull or import (none is in flight: they hold the guard).
        let images = self.dir("images");
        for e in fs::read_dir(&images).at(&images)? {
            let e = e.at(&images)?;
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_file(e.path()).at(e.path())?;
            }
        }
        Ok(report)
    }

    fn gc_lock(&self) -> Result<FileLock> {
        self.lock("gc")
    }

    /// Held (shared) by pulls and imports from their first blob to their image record, so a collection never
    /// takes blobs that are about to be referenced.
    pub(crate) fn gc_guard(&self) -> Result<FileLock> {
        FileLock::shared(&self.dir("locks").join("gc"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_leftovers_of_killed_writers_but_not_live_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dead = Digest::of(b"dead");
        let live = Digest::of(b"live");
        fs::write(store.dir("ingest").join(dead.hex()), b"partial").unwrap();
        fs::write(store.dir("ingest").join(live.hex()), b"partial").unwrap();
        let dead_snap = store
            .dir("snapshots")
            .join(format!(".tmp-{}-1", dead.hex()));
        fs::create_dir_all(dead_snap.join("fs")).unwrap();
        let torn = store.dir("images").join(".tmp-x.json-1-0");
        fs::write(&torn, b"{").unwrap();
        let _held = store.lock(&format!("blob-{}", live.hex())).unwrap();
        store.gc().unwrap();
        assert!(!torn.exists());
        assert!(!store.dir("ingest").join(dead.hex()).exists());
        assert!(!dead_snap.exists());
        assert!(
            store.dir("ingest").join(live.hex()).exists(),
            "a live download is kept"
        );
    }
}
