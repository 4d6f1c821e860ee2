//! The native kubelet: runs pods from a manifest directory (static pods, no apiserver) on any CRI runtime.
//!
//! It must never lose track of a pod because it restarted: everything it needs is in the runtime (labels and
//! annotations on sandboxes and containers) and in the manifests, so a restart adopts running pods.
//!
//! Pods come from a [`source`] (the manifest dir and an HTTP URL, parsed by [`manifest`]); the [`Kubelet`]
//! keeps one [`worker`] per pod, which drives the runtime through [`cri`] with configs from [`podconfig`],
//! [`volumes`] and [`resources`] (and a [`userns`] range for `hostUsers: false`), restarts with
//! [`backoff`], checks [`probes`] and runs [`hooks`]; the [`pleg`] wakes a worker when its containers
//! change. [`api`] serves the kubelet API, with [`stream_proxy`] for exec/attach/port-forward and [`node`]
//! for the eviction signals.

pub mod api;
pub mod backoff;
pub mod cri;
pub mod hooks;
pub mod manifest;
pub mod node;
pub mod pleg;
pub mod podconfig;
pub mod probes;
pub mod qos;
pub mod quantity;
pub mod resources;
pub mod source;
pub mod stream_proxy;
pub mod userns;
pub mod volumes;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

/// How the kubelet runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub host_ip: String,
    pub manifest_dir: PathBuf,
    /// kubelet's `--manifest-url`: a Pod, several YAML documents or a List, fetched every
    /// `http_check_frequency`.
    pub manifest_url: Option<String>,
    pub http_check_frequency: Duration,
    /// Pod logs: `<log_root>/<ns>_<name>_<uid>/<container>/<n>.log`.
    pub log_root: PathBuf,
    /// Per-pod directories (volumes, termination messages): `<pods_root>/<uid>`.
    pub pods_root: PathBuf,
    /// Root of the QoS cgroup hierarchy, e.g. `/kubepods`.
    pub cgroup_root: String,
    /// Containers without a seccomp profile get RuntimeDefault (kubelet's `--seccomp-default`).
    pub seccomp_default: bool,
    pub backoff: backoff::Policy,
    /// How often each pod worker re-checks its pod without an event (probes have their own periods).
    pub sync_period: Duration,
    pub file_check_frequency: Duration,
    /// Exited containers kept per container name (kubelet's `--maximum-dead-containers-per-container`).
    pub max_dead_per_container: u32,
    /// Host ids for `hostUsers: false` pods, 65536 per pod (upstream: the `kubelet` user's subordinate ids).
    pub user_namespaces: userns::Range,
}

/// Counters the `/metrics` endpoint reports.
#[derive(Debug, Default)]
pub struct Metrics {
    pub manifest_errors: AtomicU64,
    pub pod_syncs: AtomicU64,
    /// Container events taken from the runtime's GetContainerEvents stream.
    pub pleg_events: AtomicU64,
    /// Relists of the fallback PLEG.
    pub pleg_relists: AtomicU64,
    /// Exited containers removed by container GC.
    pub containers_gc: AtomicU64,
}

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

    fn set_pleg_mode(&self, m: pleg::Mode) {
        *self.pleg_mode.lock().unwrap() = Some(m);
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
                _ = tokio::time::sleep(self.settings.sync_period) => {}
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
