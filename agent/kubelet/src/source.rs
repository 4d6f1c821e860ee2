//! The manifest-directory pod source: a full rescan on every inotify event in the directory and every
//! `resync` period (kubelet's file-check frequency), so a missed event only delays a change.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::manifest::{self, ManifestError};

/// The pods a directory declares (by UID), and the files that failed.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: BTreeMap<String, Pod>,
    pub errors: Vec<ManifestError>,
}

pub fn scan(dir: &Path, node: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return snap;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| manifest::is_manifest_file(p))
        .collect();
    files.sort();
    for f in files {
        let text = match std::fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) => {
                snap.errors.push(ManifestError {
                    file: f.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        match manifest::parse(&f, &text, node) {
            Ok(pods) => {
                for p in pods {
                    let uid = p.metadata.uid.clone().unwrap_or_default();
                    let name = p.metadata.name.clone();
                    // Two files declaring the same pod name: the first (in name order) wins, as upstream.
                    if snap.pods.values().any(|q| {
                        q.metadata.name == name && q.metadata.namespace == p.metadata.namespace
                    }) {
                        snap.errors.push(ManifestError {
                            file: f.clone(),
                            reason: format!(
                                "pod {:?} is already declared by another manifest",
                                name.unwrap_or_default()
                            ),
                        });
                        continue;
                    }
                    snap.pods.insert(uid, p);
                }
            }
            Err(e) => snap.errors.push(e),
        }
    }
    snap
}

/// tokio's AsyncFd wants AsRawFd, which nix's Inotify only offers through AsFd.
struct Notify(Inotify);

impl AsRawFd for Notify {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watches `dir` and publishes a new snapshot whenever it changes.
pub fn watch_dir(dir: PathBuf, node: String, resync: Duration) -> watch::Receiver<Snapshot> {
    let (tx, rx) = watch::channel(scan(&dir, &node));
    tokio::spawn(async move {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        let mut watching = false;
        // SAFETY: `Notify` owns the inotify descriptor, so it stays open exactly as long as the AsyncFd.
        let afd = inotify.and_then(|i| unsafe { AsyncFd::register(Notify(i)) }.ok());
        loop {
            if !watching {
                if let Some(a) = &afd {
                    let flags = AddWatchFlags::IN_CREATE
                        | AddWatchFlags::IN_DELETE
                        | AddWatchFlags::IN_CLOSE_WRITE
                        | AddWatchFlags::IN_MOVED_TO
                        | AddWatchFlags::IN_MOVED_FROM
                        | AddWatchFlags::IN_MODIFY
                        | AddWatchFlags::IN_DELETE_SELF;
                    watching = a.get_ref().0.add_watch(&dir, flags).is_ok();
                }
            }
            let event = async {
                match &afd {
                    Some(a) if watching => {
                        if let Ok(mut guard) = a.readable().await {
                            let r = guard.get_inner().0.read_events();
                            guard.clear_ready();
                            if let Ok(evs) = r {
                                return evs.iter().any(|e| {
                                    e.mask.contains(AddWatchFlags::IN_DELETE_SELF)
                                        || e.mask.contains(AddWatchFlags::IN_IGNORED)
                                });
                            }
                        }
                        false
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                gone = event => {
                    if gone {
                        watching = false;
                    }
                }
                _ = tokio::time::sleep(resync) => {}
            }
            let snap = scan(&dir, &node);
            let changed = {
                let cur = tx.borrow();
                cur.pods.keys().ne(snap.pods.keys()) || cur.errors != snap.errors
            };
            if changed && tx.send(snap).is_err() {
                return;
            }
        }
    });
    rx
}
