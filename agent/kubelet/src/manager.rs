//! The pod manager: one worker task per pod, started and stopped as the pod sources change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{mpsc, watch};

use crate::{cri, housekeeping, manifest, pleg, source, userns, worker, Metrics, Settings};

/// How often pods no source wants are looked for (upstream's housekeeping period).
const HOUSEKEEPING: Duration = Duration::from_secs(2);

struct Entry {
    pod: Pod,
    status: Arc<Mutex<PodStatus>>,
    stop: watch::Sender<bool>,
    /// Poked by the PLEG: a container of this pod changed.
    wake: Arc<tokio::sync::Notify>,
    /// The pod's worker task, ended with the kubelet.
    worker: tokio::task::AbortHandle,
}

/// Ends every pod worker when the kubelet's run ends (aborted, as an agent stops): a stopped kubelet
/// must not go on acting on pods.
struct StopWorkers(Arc<Kubelet>);

impl Drop for StopWorkers {
    fn drop(&mut self) {
        if let Ok(pods) = self.0.pods.lock() {
            for e in pods.values() {
                e.worker.abort();
            }
        }
    }
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
    /// Told of each pod whose worker has stopped it (API mode deletes it from the apiserver then).
    terminated: Mutex<Option<mpsc::UnboundedSender<Pod>>>,
    /// The apiserver (API mode): what API volumes are made from.
    api: Mutex<Option<Arc<dyn crate::volumes::ApiSource>>>,
    /// Pods being torn down (manifest removed, or found orphaned): housekeeping leaves them to that.
    terminating: Mutex<BTreeSet<String>>,
    /// Every source has delivered its pods once: only then is a pod no source names unwanted.
    sources_seen: AtomicBool,
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
            terminated: Mutex::new(None),
            api: Mutex::new(None),
            terminating: Mutex::new(BTreeSet::new()),
            sources_seen: AtomicBool::new(false),
        })
    }

    /// Follows the pod sources (and runs the PLEG) until the process ends.
    pub async fn run(self: Arc<Self>) {
        self.run_with(None).await
    }

    /// Pods started from now on make their configMap, secret and projected volumes from `api`.
    pub fn set_api(&self, api: Arc<dyn crate::volumes::ApiSource>) {
        *self.api.lock().unwrap() = Some(api);
    }

    /// Each pod whose worker has stopped it, from now on.
    pub fn terminations(&self) -> mpsc::UnboundedReceiver<Pod> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.terminated.lock().unwrap() = Some(tx);
        rx
    }

    /// As [`Kubelet::run`], with the pods bound to this node in the cluster as one more source (after
    /// the static ones: a name both declare stays the static pod's).
    pub async fn run_with(self: Arc<Self>, mut api: Option<watch::Receiver<source::Snapshot>>) {
        // The PLEG ends with this task (an aborted kubelet must not keep relisting a runtime).
        let _pleg = AbortOnDrop(tokio::spawn(pleg::run(self.clone())));
        let _housekeeping = AbortOnDrop(tokio::spawn(self.clone().housekeeping()));
        let _workers = StopWorkers(self.clone());
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
        // The directory's first snapshot is a full scan; the URL's first is empty until a fetch worked, the
        // API's until its first complete list.
        let mut url_fetched = false;
        let mut api_synced = false;
        loop {
            let mut snap = dir.borrow_and_update().clone();
            let mut seen = true;
            if let (Some(u), Some(origin)) = (url.as_mut(), &self.settings.manifest_url) {
                let fetched = u.borrow_and_update().clone();
                seen = url_fetched && fetched.errors.is_empty();
                snap.merge(fetched, Path::new(origin));
            }
            if let Some(a) = api.as_mut() {
                snap.merge(a.borrow_and_update().clone(), Path::new("the apiserver"));
                seen = seen && api_synced;
            }
            self.apply(snap);
            if seen {
                self.sources_seen.store(true, Ordering::Relaxed);
            }
            let url_changed = async {
                match url.as_mut() {
                    Some(u) => u.changed().await,
                    None => std::future::pending().await,
                }
            };
            let api_changed = async {
                match api.as_mut() {
                    Some(a) => a.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = dir.changed() => if r.is_err() { return },
                r = url_changed => {
                    if r.is_err() { return }
                    url_fetched = true;
                }
                r = api_changed => {
                    if r.is_err() { return }
                    api_synced = true;
                }
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
        let mut terminating = self.terminating.lock().unwrap();
        pods.retain(|uid, e| {
            let keep = snap.pods.contains_key(uid);
            if !keep {
                tracing::info!(pod = ?e.pod.metadata.name, "manifest removed; stopping the pod");
                terminating.insert(uid.clone());
                let _ = e.stop.send(true);
            }
            keep
        });
        drop(terminating);
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
            let worker = tokio::spawn(self.clone().pod_worker(
                pod.clone(),
                status.clone(),
                stop_rx,
                wake.clone(),
            ));
            pods.insert(
                uid,
                Entry {
                    pod,
                    status,
                    stop,
                    wake,
                    worker: worker.abort_handle(),
                },
            );
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
        w.api = self.api.lock().unwrap().clone();
        loop {
            if *stop.borrow() {
                w.terminate().await;
                let uid = w.pod.metadata.uid.clone().unwrap_or_default();
                self.terminating.lock().unwrap().remove(&uid);
                self.report_terminated(&w.pod);
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

    /// Tears down, now and every [`HOUSEKEEPING`], the pods the runtime or the pods directory still has but
    /// no source wants, once every source has been seen.
    async fn housekeeping(self: Arc<Self>) {
        loop {
            if self.sources_seen.load(Ordering::Relaxed) {
                self.clean_orphans().await;
            }
            tokio::time::sleep(HOUSEKEEPING).await;
        }
    }

    async fn clean_orphans(self: &Arc<Self>) {
        let sandboxes = match self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(basalt_proto::cri::ListPodSandboxRequest::default())
            .await
        {
            Ok(r) => r.into_inner().items,
            Err(e) => {
                tracing::debug!("housekeeping: ListPodSandbox: {e}");
                return;
            }
        };
        let root = &self.settings.pods_root;
        let busy = |uid: &str| {
            self.pods.lock().unwrap().contains_key(uid)
                || self.terminating.lock().unwrap().contains(uid)
        };
        for (uid, pod) in housekeeping::orphans(&sandboxes, root, &busy) {
            {
                // Checked again under both locks: a manifest may have brought the pod back meanwhile.
                let pods = self.pods.lock().unwrap();
                let mut terminating = self.terminating.lock().unwrap();
                if pods.contains_key(&uid) || !terminating.insert(uid.clone()) {
                    continue;
                }
            }
            tracing::info!(%uid, pod = ?pod.metadata.name, "no source wants this pod; tearing it down");
            let me = self.clone();
            tokio::spawn(async move {
                let mut w = worker::Worker::new(
                    me.cri.clone(),
                    me.settings.clone(),
                    me.userns.clone(),
                    pod,
                );
                w.terminate().await;
                me.terminating.lock().unwrap().remove(&uid);
                // A pod deleted while the kubelet was down is an orphan now: once it is stopped, its
                // deletion in the API is finished as for any other (its saved manifest names it).
                me.report_terminated(&w.pod);
            });
        }
    }

    fn report_terminated(&self, pod: &Pod) {
        if let Some(tx) = self.terminated.lock().unwrap().as_ref() {
            let _ = tx.send(pod.clone());
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
