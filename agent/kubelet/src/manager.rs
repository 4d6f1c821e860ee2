//! The pod manager: one worker task per pod, started and stopped as the pod sources change.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

use crate::{cri, manifest, pleg, source, userns, worker, Metrics, Settings};

struct Entry {
    pod: Pod,
    status: Arc<Mutex<PodStatus>>,
    stop: watch::Sender<bool>,
    /// Poked by the PLEG: a container of this pod changed.
    wake: Arc<tokio::sync::Notify>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pod manager: one worker task per pod.
pub struct Kubelet {
    pub cri: cri::Cri,
    pub settings: Arc<Settings>,
    pub userns: Arc<userns::Allocator>,
    pods: Mutex<BTreeMap<String, Entry>>,
    pub metrics: Metrics,
    pub manifest_errors: Mutex<Vec<manifest::ManifestError>>,
    pleg_mode: Mutex<Option<pleg::Mode>>,
}

impl Kubelet {
    pub fn new(cri: cri::Cri, settings: Settings) -> Arc<Kubelet> {
        Arc::new(Kubelet {
            cri,
            userns: Arc::new(userns::Allocator::load(
                settings.user_namespaces,
                &settings.pods_root,
            )),
            settings: Arc::new(settings),
            pods: Mutex::new(BTreeMap::new()),
            metrics: Metrics::default(),
            manifest_errors: Mutex::new(Vec::new()),
            pleg_mode: Mutex::new(None),
        })
    }

    /// Follows the pod sources (and runs the PLEG) until the process ends.
    pub async fn run(self: Arc<Self>) {
        // The PLEG ends with this task (an aborted kubelet must not keep relisting a runtime).
        let _pleg = AbortOnDrop(tokio::spawn(pleg::run(self.clone())));
        let mut dir = source::watch_dir(
            self.settings.manifest_dir.clone(),
            self.settings.node_name.clone(),
            self.settings.file_check_frequency,
        );
        let mut url = self.settings.manifest_url.clone().map(|u| {
            source::watch_url(
                u,
                self.settings.node_name.clone(),
                self.settings.http_check_frequency,
            )
        });
        loop {
            let mut snap = dir.borrow_and_update().clone();
            if let (Some(u), Some(origin)) = (url.as_mut(), &self.settings.manifest_url) {
                snap.merge(u.borrow_and_update().clone(), Path::new(origin));
            }
            self.apply(snap);
            let url_changed = async {
                match url.as_mut() {
                    Some(u) => u.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = dir.changed() => if r.is_err() { return },
                r = url_changed => if r.is_err() { return },
            }
        }
    }

    /// Runs the pod's worker now (the PLEG saw one of its containers change).
    pub fn wake(&self, uid: &str) {
        if let Some(e) = self.pods.lock().unwrap().get(uid) {
            e.wake.notify_one();
        }
    }

    pub fn pleg_mode(&self) -> Option<pleg::Mode> {
        *self.pleg_mode.lock().unwrap()
    }

    fn apply(self: &Arc<Self>, snap: source::Snapshot) {
        for e in &snap.errors {
            tracing::error!(file = %e.file.display(), "skipping malformed manifest: {}", e.reason);
        }
        {
            let mut known = self.manifest_errors.lock().unwrap();
            let new = snap.errors.iter().filter(|e| !known.contains(e)).count();
            self.metrics
                .manifest_errors
                .fetch_add(new as u64, Ordering::Relaxed);
            *known = snap.errors.clone();
        }
        let mut pods = self.pods.lock().unwrap();
        pods.retain(|uid, e| {
            let keep = snap.pods.contains_key(uid);
            if !keep {
                tracing::info!(pod = ?e.pod.metadata.name, "manifest removed; stopping the pod");
                let _ = e.stop.send(true);
            }
            keep
        });
        for (uid, pod) in snap.pods {
            if pods.contains_key(&uid) {
                continue;
            }
            tracing::info!(pod = ?pod.metadata.name, uid = %uid, "new pod");
            let status = Arc::new(Mutex::new(PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }));
            let (stop, stop_rx) = watch::channel(false);
            let wake = Arc::new(tokio::sync::Notify::new());
            pods.insert(
                uid,
                Entry {
                    pod: pod.clone(),
                    status: status.clone(),
                    stop,
                    wake: wake.clone(),
                },
            );
            tokio::spawn(self.clone().pod_worker(pod, status, stop_rx, wake));
        }
    }

    async fn pod_worker(
        self: Arc<Self>,
        pod: Pod,
        status: Arc<Mutex<PodStatus>>,
        mut stop: watch::Receiver<bool>,
        wake: Arc<tokio::sync::Notify>,
    ) {
        let mut w = worker::Worker::new(
            self.cri.clone(),
            self.settings.clone(),
            self.userns.clone(),
            pod,
        );
        loop {
            if *stop.borrow() {
                w.terminate().await;
                return;
            }
            let removed = w.sync().await;
            self.metrics.pod_syncs.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .containers_gc
                .fetch_add(removed as u64, Ordering::Relaxed);
            *status.lock().unwrap() = w.status.clone();
            tokio::select! {
                _ = stop.changed() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(w.next_pass_in()) => {}
            }
        }
    }

    /// Every pod with its current status.
    pub fn pods(&self) -> Vec<Pod> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .map(|e| {
                let mut p = e.pod.clone();
                p.status = Some(e.status.lock().unwrap().clone());
                p
            })
            .collect()
    }
}

impl pleg::Pods for Kubelet {
    fn cri(&self) -> &cri::Cri {
        &self.cri
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    fn wake(&self, uid: &str) {
        Kubelet::wake(self, uid)
    }
    fn set_mode(&self, mode: pleg::Mode) {
        *self.pleg_mode.lock().unwrap() = Some(mode);
    }
}
