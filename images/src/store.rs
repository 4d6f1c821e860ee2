//! The content store: blobs addressed by sha256 under `blobs/sha256/<hex>`.
//!
//! A blob is written to `ingest/<hex>`, hashed as it is written, fsynced, and renamed into `blobs/` only when its
//! digest matches, so a blob with a wrong digest is never readable under its name. A per-digest lock makes
//! concurrent writers (threads or processes) of the same blob wait for the first one, which then finds it present.
//! An ingest file left by a killed writer is resumed by the next one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, IoContext, Result};
use crate::lock::FileLock;

/// The root of everything the image store keeps on disk.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// Whether `ensure_blob` had to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Present,
    Fetched,
}

/// Where a fetcher writes a blob; it may be appending to a partial download.
pub struct IngestWriter {
    inner: HashingWriter<std::io::BufWriter<File>>,
    path: PathBuf,
    resumed_from: u64,
}

impl IngestWriter {
    /// Bytes already present when the fetcher was called (ask the server for the rest).
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Drops what was resumed and starts from byte 0 (the server ignored the range request).
    pub fn restart(&mut self) -> Result<()> {
        self.inner.inner.flush().at(&self.path)?;
        let f = self.inner.inner.get_mut();
        f.set_len(0).at(&self.path)?;
        f.rewind().at(&self.path)?;
        self.inner.hasher = Sha256::new();
        self.inner.written = 0;
        self.resumed_from = 0;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.inner.written
    }
}

impl Write for IngestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let s = Store { root: root.into() };
        for d in [
            "blobs/sha256",
            "ingest",
            "locks",
            "images",
            "snapshots",
            "containers",
        ] {
            let p = s.root.join(d);
            fs::create_dir_all(&p).at(&p)?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub(crate) fn lock(&self, name: &str) -> Result<FileLock> {
        FileLock::exclusive(&self.root.join("locks").join(name))
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        File::open(self.blob_path(d)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BlobMissing {
                digest: d.to_string(),
            },
            _ => Error::Io {
                path: self.blob_path(d),
                source: e,
            },
        })
    }

    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut v)
            .at(self.blob_path(d))?;
        Ok(v)
    }

    pub fn blob_size(&self, d: &Digest) -> Result<u64> {
        Ok(fs::metadata(self.blob_path(d)).at(self.blob_path(d))?.len())
    }

    /// Every complete blob in the store.
    pub fn blobs(&self) -> Result<Vec<Digest>> {
        digests_in(&self.root.join("blobs/sha256"))
    }

    /// Stores `data` as the blob `expected`, verifying it.
    pub fn put_blob(&self, expected: &Digest, data: &[u8]) -> Result<Ensured> {
        self.ensure_blob(expected, |w| {
            if w.resumed_from() > 0 {
                w.restart()?;
            }
            w.write_all(data).at(self.root.join("ingest"))
        })
    }

    /// Makes blob `d` present: returns at once if it is, else takes the blob's lock (waiting for another writer),
    /// and if it is still missing calls `fetch` to write its content (appending to a partial file from a killed
    /// writer: see [`IngestWriter::resumed_from`]). The content is verified before it becomes readable.
    pub fn ensure_blob(
        &self,
        d: &Digest,
        mut fetch: impl FnMut(&mut IngestWriter) -> Result<()>,
    ) -> Result<Ensured> {
        if self.has_blob(d) {
            return Ok(Ensured::Present);
        }
        let _lock = self.lock(&format!("blob-{}", d.hex()))?;
        if self.has_blob(d) {
            return Ok(Ensured::Present);
        }
        let ingest = self.root.join("ingest").join(d.hex());
        for attempt in 0..2 {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&ingest)
                .at(&ingest)?;
            // Re-hash what a killed writer left, so the final digest covers the whole file.
            let mut hasher = Sha256::new();
            let resumed = std::io::copy(&mut file, &mut HasherWrite(&mut hasher)).at(&ingest)?;
            let mut w = IngestWriter {
                inner: HashingWriter {
                    inner: std::io::BufWriter::with_capacity(1 << 20, file),
                    hasher,
                    written: resumed,
                },
                path: ingest.clone(),
                resumed_from: resumed,
            };
            fetch(&mut w)?;
            let HashingWriter { inner, hasher, .. } = w.inner;
            let file = inner.into_inner().map_err(|e| e.into_error()).at(&ingest)?;
            file.sync_all().at(&ingest)?;
            drop(file);
            let actual = Digest::from_hasher(hasher);
            if &actual != d {
                fs::remove_file(&ingest).at(&ingest)?;
                // A corrupt leftover from a killed writer: start over once from nothing.
                if resumed > 0 && attempt == 0 {
                    continue;
                }
                return Err(Error::DigestMismatch {
                    expected: d.to_string(),
                    actual: actual.to_string(),
                });
            }
            let dest = self.blob_path(d);
            fs::rename(&ingest, &dest).at(&dest)?;
            sync_dir(&self.root.join("blobs/sha256"))?;
            return Ok(Ensured::Fetched);
        }
        unreachable!("second attempt always returns")
    }

    /// Stores content of unknown digest (a `docker save` layer): hashes it into a temp file, then moves it in.
    pub fn put_unknown(&self, mut r: impl Read) -> Result<(Digest, u64)> {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("ingest")
            .join(format!("tmp-{}-{n}", std::process::id()));
        let file = File::create(&tmp).at(&tmp)?;
        let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
        let res = std::io::copy(&mut r, &mut w).and_then(|_| w.flush());
        if let Err(e) = res {
            let _ = fs::remove_file(&tmp);
            return Err(e).at(&tmp);
        }
        let HashingWriter {
            inner,
            hasher,
            written,
        } = w;
        let d = Digest::from_hasher(hasher);
        let file = inner.into_inner().map_err(|e| e.into_error()).at(&tmp)?;
        file.sync_all().at(&tmp)?;
        let _lock = self.lock(&format!("blob-{}", d.hex()))?;
        if self.has_blob(&d) {
            fs::remove_file(&tmp).at(&tmp)?;
        } else {
            fs::rename(&tmp, self.blob_path(&d)).at(self.blob_path(&d))?;
            sync_dir(&self.root.join("blobs/sha256"))?;
        }
        Ok((d, written))
    }

    /// Removes a blob (garbage collection); missing is fine.
    pub(crate) fn remove_blob(&self, d: &Digest) -> Result<()> {
        let _lock = self.lock(&format!("blob-{}", d.hex()))?;
        match fs::remove_file(self.blob_path(d)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(self.blob_path(d)),
            _ => Ok(()),
        }
    }
}

struct HasherWrite<'a>(&'a mut Sha256);

impl Write for HasherWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Makes a rename or unlink in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).at(dir)
}

/// Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the directory. A reader or
/// a restart after SIGKILL sees the old content or the new, never a torn file.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .expect("atomic writes target a file in a directory");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(
        ".tmp-{}-{}-{n}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let res = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e).at(path);
    }
    sync_dir(dir)
}

/// The entries of `dir` whose names are sha256 hex digests (blobs, snapshots); anything else is ignored.
pub(crate) fn digests_in(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        if let Some(d) = e
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        {
            out.push(d);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_before_publishing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = Digest::of(b"hello");
        assert_eq!(store.put_blob(&good, b"hello").unwrap(), Ensured::Fetched);
        assert_eq!(store.put_blob(&good, b"hello").unwrap(), Ensured::Present);
        assert_eq!(store.read_blob(&good).unwrap(), b"hello");

        let other = Digest::of(b"other");
        let e = store.put_blob(&other, b"tampered").unwrap_err();
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(!store.has_blob(&other));
        assert!(matches!(
            store.open_blob(&other),
            Err(Error::BlobMissing { .. })
        ));
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn resumes_a_partial_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"0123456789abcdef";
        let d = Digest::of(data);
        fs::write(dir.path().join("ingest").join(d.hex()), &data[..6]).unwrap();
        let mut seen = None;
        store
            .ensure_blob(&d, |w| {
                seen = Some(w.resumed_from());
                w.write_all(&data[w.resumed_from() as usize..]).at("test")
            })
            .unwrap();
        assert_eq!(seen, Some(6));
        assert_eq!(store.read_blob(&d).unwrap(), data);

        // A corrupt leftover is thrown away and the blob fetched again from byte 0.
        let d2 = Digest::of(b"second blob");
        fs::write(dir.path().join("ingest").join(d2.hex()), b"garbage").unwrap();
        let mut calls = Vec::new();
        store
            .ensure_blob(&d2, |w| {
                calls.push(w.resumed_from());
                let from = w.resumed_from() as usize;
                w.write_all(&b"second blob"[from.min(11)..]).at("test")
            })
            .unwrap();
        assert_eq!(calls, vec![7, 0]);
        assert_eq!(store.read_blob(&d2).unwrap(), b"second blob");
    }
}
