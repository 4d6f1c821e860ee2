//! Pulling an image: resolve the reference (choosing the platform from an index), store manifest and config,
//! download the layers concurrently into the content store, unpack them into snapshots, record the image.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::index::{ImageRecord, LayerRecord};
use crate::manifest::{self, Parsed, Platform};
use crate::reference::Reference;
use crate::registry::Client;
use crate::snapshot::PendingSnapshot;
use crate::store::Store;

/// Layers downloaded at once (containerd's default too).
pub const MAX_CONCURRENT_DOWNLOADS: usize = 3;

/// Bytes done of one layer, for progress bars.
#[derive(Debug, Clone)]
pub struct Progress {
    pub layer: Digest,
    pub done: u64,
    pub total: u64,
}

/// Pulls `reference` for the host platform.
pub fn pull(
    store: &Store,
    client: &Client,
    reference: &Reference,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ImageRecord> {
    pull_platform(store, client, reference, &Platform::host(), progress)
}

pub fn pull_platform(
    store: &Store,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ImageRecord> {
    let _guard = store.gc_guard()?;
    let top = client.manifest(
        &reference.registry,
        &reference.repository,
        &reference.manifest_ref(),
    )?;
    let ep = top.endpoint.clone();
    store.put_blob(&top.digest, &top.bytes)?;
    let mut extra = Vec::new();
    let (manifest_digest, parsed) =
        match manifest::parse(&top.bytes, &top.content_type, &top.digest)? {
            Parsed::Index(entries) => {
                let chosen = manifest::select_platform(&entries, platform, &top.digest)?;
                let m = client.manifest_from(&ep, &chosen.digest.to_string())?;
                store.put_blob(&m.digest, &m.bytes)?;
                extra.push(top.digest.clone());
                let parsed = manifest::parse(&m.bytes, &m.content_type, &m.digest)?;
                (m.digest, parsed)
            }
            p => (top.digest.clone(), p),
        };
    let Parsed::Image { config, layers } = parsed else {
        return Err(Error::Manifest {
            digest: manifest_digest.to_string(),
            reason: "an index inside an index is not supported".into(),
        });
    };
    for l in &layers {
        manifest::check_layer(l)?;
    }
    store.ensure_blob(&config.digest, |w| {
        if w.resumed_from() > 0 {
            w.restart()?;
        }
        let b = client.small_blob(&ep, &config.digest)?;
        std::io::Write::write_all(w, &b).map_err(|e| Error::Io {
            path: "ingest".into(),
            source: e,
        })
    })?;
    let diff_ids = manifest::diff_ids(&store.read_blob(&config.digest)?, &config.digest)?;
    if diff_ids.len() != layers.len() {
        return Err(Error::Manifest {
            digest: manifest_digest.to_string(),
            reason: format!(
                "{} layers but {} diff_ids in config {}",
                layers.len(),
                diff_ids.len(),
                config.digest
            ),
        });
    }

    let record = ImageRecord {
        name: reference.to_string(),
        digest: top.digest.clone(),
        manifest: manifest_digest.clone(),
        config: config.digest.clone(),
        size: top.bytes.len() as u64 + config.size + layers.iter().map(|l| l.size).sum::<u64>(),
        layers: layers
            .iter()
            .map(|l| LayerRecord {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect(),
        diff_ids: diff_ids.clone(),
        pinned: false,
        extra_blobs: extra,
    };
    let chain = store.chain_of(&record)?;
    let next = AtomicUsize::new(0);
    type Unpacked = Vec<(usize, Option<PendingSnapshot>)>;
    let results: Vec<Result<Unpacked>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..MAX_CONCURRENT_DOWNLOADS.min(layers.len()))
            .map(|_| {
                s.spawn(|| -> Result<Unpacked> {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(l) = layers.get(i) else {
                            return Ok(done);
                        };
                        let report = |done, total| {
                            progress(&Progress {
                                layer: l.digest.clone(),
                                done,
                                total,
                            })
                        };
                        let r = store.ensure_blob(&l.digest, |w| {
                            client.fetch_blob(&ep, &l.digest, l.size, w, &report)
                        })?;
                        if r == crate::store::Ensured::Present {
                            report(l.size, l.size);
                        }
                        // Unpack at once, overlapping with the other downloads; published in order below.
                        done.push((i, store.unpack_snapshot(&record, &chain, i, false)?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("download worker panicked"))
            .collect()
    });
    let mut pending: Vec<Option<PendingSnapshot>> = (0..layers.len()).map(|_| None).collect();
    for r in results {
        for (i, p) in r? {
            pending[i] = p;
        }
    }
    for (i, p) in pending.into_iter().enumerate() {
        store.commit_snapshot(&record, &chain, i, p)?;
    }
    let record = match store.image(&record.name) {
        Ok(old) => ImageRecord {
            pinned: old.pinned,
            ..record
        },
        Err(_) => record,
    };
    store.put_image(&record)?;
    Ok(record)
}
