//! The pod sources. The manifest directory: a full rescan on every inotify event in the directory and every
//! `resync` period (kubelet's file-check frequency), so a missed event only delays a change. The manifest
//! URL: fetched every `period` (kubelet's http-check frequency); a Pod, several YAML documents, or a List /
//! PodList of pods. A failed fetch keeps the pods it last declared (a web server restarting must not stop
//! them) and is reported like a malformed manifest.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use serde::Deserialize;

use crate::manifest::{self, ManifestError};

/// The pods a directory declares (by UID), and the files that failed.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pods: BTreeMap<String, Pod>,
    pub errors: Vec<ManifestError>,
}

impl Snapshot {
    /// Adds another source's pods; a pod name both declare stays the first source's, as upstream.
    pub fn merge(&mut self, other: Snapshot, origin: &Path) {
        for (uid, p) in other.pods {
            let dup = self.pods.values().any(|q| {
                q.metadata.name == p.metadata.name && q.metadata.namespace == p.metadata.namespace
            });
            if dup {
                self.errors.push(ManifestError {
                    file: origin.to_owned(),
                    reason: format!(
                        "pod {:?} is already declared by another source",
                        p.metadata.name.clone().unwrap_or_default()
                    ),
                });
                continue;
            }
            self.pods.insert(uid, p);
        }
        self.errors.extend(other.errors);
    }
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

/// The pods a manifest URL's document declares. Each pod of a List is hashed on its own, so changing one
/// item leaves the others' UIDs (and containers) alone.
pub fn parse_url_document(url: &str, text: &str, node: &str) -> Snapshot {
    let mut snap = Snapshot::default();
    let source = Path::new(url);
    let err = |reason: String| ManifestError {
        file: source.to_owned(),
        reason,
    };
    let mut docs: Vec<serde_yaml::Value> = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        match serde_yaml::Value::deserialize(doc) {
            Ok(serde_yaml::Value::Null) => {}
            Ok(v)
                if matches!(
                    v.get("kind").and_then(|k| k.as_str()),
                    Some("List" | "PodList")
                ) =>
            {
                match v.get("items").and_then(|i| i.as_sequence()) {
                    Some(items) => docs.extend(items.iter().cloned()),
                    None => snap
                        .errors
                        .push(err(format!("document {}: a List needs items", i + 1))),
                }
            }
            Ok(v) => docs.push(v),
            Err(e) => snap.errors.push(err(format!("document {}: {e}", i + 1))),
        }
    }
    for (i, d) in docs.into_iter().enumerate() {
        let text = match serde_json::to_string(&d) {
            Ok(t) => t,
            Err(e) => {
                snap.errors.push(err(format!("item {}: {e}", i + 1)));
                continue;
            }
        };
        match manifest::parse(source, &text, node) {
            Ok(pods) => {
                for mut p in pods {
                    if let Some(a) = p.metadata.annotations.as_mut() {
                        a.insert(manifest::CONFIG_SOURCE.into(), "http".into());
                    }
                    let dup = snap.pods.values().any(|q| {
                        q.metadata.name == p.metadata.name
                            && q.metadata.namespace == p.metadata.namespace
                    });
                    if dup {
                        snap.errors.push(err(format!(
                            "item {}: pod {:?} is declared twice",
                            i + 1,
                            p.metadata.name.clone().unwrap_or_default()
                        )));
                        continue;
                    }
                    snap.pods
                        .insert(p.metadata.uid.clone().unwrap_or_default(), p);
                }
            }
            Err(e) => snap.errors.push(ManifestError {
                file: e.file,
                reason: format!("item {}: {}", i + 1, e.reason),
            }),
        }
    }
    snap
}

/// Why the manifest URL gave no document.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// No answer, or a body that could not be read (or was over 16 MiB).
    #[error("{0}")]
    Http(#[from] ureq::Error),
    #[error("HTTP {0}")]
    Status(u16),
    #[error("empty document")]
    Empty,
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// One GET of the manifest URL (blocking: run it off the async threads).
fn fetch(url: &str) -> Result<String, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call()?;
    let code = resp.status().as_u16();
    if code != 200 {
        return Err(FetchError::Status(code));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(16 << 20)
        .read_to_string()?;
    if body.trim().is_empty() {
        return Err(FetchError::Empty);
    }
    Ok(body)
}

/// `url` without user information and query, which may carry credentials.
fn redacted(url: &str) -> String {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// Polls `url` every `period` and publishes a new snapshot whenever what it declares changes.
pub fn watch_url(url: String, node: String, period: Duration) -> watch::Receiver<Snapshot> {
    let (tx, rx) = watch::channel(Snapshot::default());
    // Errors and logs name the source; credentials in the URL must not reach them.
    let shown = redacted(&url);
    if url.starts_with("http://") {
        tracing::warn!(url = %shown, "the pod manifest URL is plain HTTP: anyone on the path can change the pods this node runs");
    }
    tokio::spawn(async move {
        let mut last_good: BTreeMap<String, Pod> = BTreeMap::new();
        loop {
            if tx.is_closed() {
                return;
            }
            let u = url.clone();
            let fetched = tokio::task::spawn_blocking(move || fetch(&u))
                .await
                .unwrap_or_else(|e| Err(e.into()));
            let snap = match fetched {
                Ok(text) => {
                    let s = parse_url_document(&shown, &text, &node);
                    if s.errors.is_empty() {
                        last_good = s.pods.clone();
                        s
                    } else {
                        // A maintenance page or a truncated document must not stop the pods it failed to
                        // declare: keep the last good set and report, as upstream keeps its previous state.
                        Snapshot {
                            pods: last_good.clone(),
                            errors: s.errors,
                        }
                    }
                }
                Err(e) => Snapshot {
                    pods: last_good.clone(),
                    errors: vec![ManifestError {
                        file: PathBuf::from(&shown),
                        reason: format!("fetching: {e}"),
                    }],
                },
            };
            let changed = {
                let cur = tx.borrow();
                cur.pods.keys().ne(snap.pods.keys()) || cur.errors != snap.errors
            };
            if changed && tx.send(snap).is_err() {
                return;
            }
            tokio::time::sleep(period).await;
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials_before_they_are_shown() {
        assert_eq!(
            redacted("https://u:secret@pods.example:8443/node/pods.yaml?token=abc#x"),
            "https://pods.example:8443/node/pods.yaml"
        );
        assert_eq!(
            redacted("http://10.0.0.1/pods.yaml"),
            "http://10.0.0.1/pods.yaml"
        );
        assert_eq!(redacted("http://h@o"), "http://o");
    }

    const A: &str = r#"{"kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}"#;
    const B: &str = r#"{"kind": "Pod", "metadata": {"name": "b"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}"#;

    #[test]
    fn url_documents_list_items_keep_their_uids_when_others_change() {
        let url = "http://127.0.0.1:1/pods";
        let both = parse_url_document(
            url,
            &format!(r#"{{"kind": "List", "items": [{A}, {B}]}}"#),
            "n",
        );
        assert!(both.errors.is_empty(), "{:?}", both.errors);
        let names: Vec<_> = both
            .pods
            .values()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"a-n".to_owned()) && names.contains(&"b-n".to_owned()));
        // The same pod alone, as a plain YAML document: same UID, so its containers are left alone.
        let one = parse_url_document(url, &format!("{A}\n"), "n");
        let uid = one.pods.keys().next().unwrap();
        assert!(both.pods.contains_key(uid));
        assert_eq!(
            one.pods[uid].metadata.annotations.as_ref().unwrap()[manifest::CONFIG_SOURCE],
            "http"
        );
        let empty = parse_url_document(url, "kind: List\nitems: []\n", "n");
        assert!(empty.pods.is_empty() && empty.errors.is_empty());
        let bad = parse_url_document(
            url,
            r#"{"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}}]}"#,
            "n",
        );
        assert!(bad.pods.is_empty());
        assert!(
            bad.errors.iter().any(|e| e.to_string().contains(url)
                && e.to_string().contains("spec.containers[0].image")),
            "{:?}",
            bad.errors
        );
    }
}
