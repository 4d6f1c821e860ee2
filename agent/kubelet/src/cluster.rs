//! API mode: the kubelet as a member of a cluster, as upstream's kubelet is with `--kubeconfig`. It
//! registers its Node (capacity, addresses, node info, a Ready condition), renews its Lease in
//! `kube-node-lease` every 10 s (the heartbeat the node lifecycle controller reads), runs the pods bound to
//! it (a pod source beside the manifest directory), writes their status back through the `status`
//! subresource, and deletes a deleted pod with grace 0 once its containers are gone.
//!
//! The credentials are the node's own (`system:node:<name>` in `system:nodes`), so the apiserver's Node
//! authorizer and NodeRestriction hold it to its own Node, Lease and pods.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::source::Snapshot;
use crate::volumes::{ApiData, ApiSource, Fetch};
use crate::{Kubelet, Settings};

/// How often the Lease is renewed (upstream's default: a quarter of its 40 s duration).
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_SECONDS: i32 = 40;
/// How often the Node's status is written when nothing changed (upstream's nodeStatusReportFrequency is
/// 5 minutes; the Ready condition's heartbeat is refreshed at this period).
const NODE_STATUS: Duration = Duration::from_secs(60);
/// How often pod statuses are compared with what was last written.
const STATUS_SYNC: Duration = Duration::from_millis(500);
/// The version the node reports, the apiserver's (one binary, one version).
pub const KUBELET_VERSION: &str = "v1.37.0+basalt";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

/// The node's connection to the cluster and what it has written there.
pub struct Cluster {
    client: kube::Client,
    node: String,
    /// The pods the API source declares to the kubelet (by UID): only those have their status written
    /// back.
    known: Mutex<HashSet<String>>,
    /// The cluster CA (DER), whose client certificates the kubelet API accepts.
    ca: Vec<Vec<u8>>,
    /// Where the kubelet API listens, published in the Node's `daemonEndpoints` (0: not yet).
    api_port: AtomicU16,
    /// The kubelet's events about its pods.
    events: basalt_events::Recorder,
    /// The Node's uid once registered (mirror pods are owned by it).
    node_uid: Mutex<Option<String>>,
    /// Static pods whose mirror pod was just made: their status is written again, to the new one.
    pub(crate) remirrored: Mutex<HashSet<String>>,
}

impl Cluster {
    pub async fn connect(kubeconfig: &Path, node: &str) -> Result<Arc<Cluster>, ClusterError> {
        let err = |message: String| ClusterError::Kubeconfig {
            path: kubeconfig.display().to_string(),
            message,
        };
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| err(e.to_string()))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| err(e.to_string()))?;
        let client = kube::Client::try_from(cfg.clone())?;
        Ok(Arc::new(Cluster {
            ca: cfg.root_cert.clone().unwrap_or_default(),
            events: basalt_events::Recorder::new(client.clone(), "kubelet", Some(node)),
            client,
            node_uid: Mutex::new(None),
            remirrored: Mutex::new(HashSet::new()),
            node: node.to_string(),
            known: Mutex::new(HashSet::new()),
            api_port: AtomicU16::new(0),
        }))
    }

    pub(crate) fn node_uid(&self) -> Option<String> {
        self.node_uid.lock().unwrap().clone()
    }

    pub(crate) fn node_name(&self) -> String {
        self.node.clone()
    }

    pub(crate) fn client(&self) -> kube::Client {
        self.client.clone()
    }

    pub fn ca_roots(&self) -> &[Vec<u8>] {
        &self.ca
    }

    /// The kubelet API's port, to be published with the Node (set before [`Cluster::start`]).
    pub fn set_api_port(&self, port: u16) {
        self.api_port.store(port, Ordering::Relaxed);
    }

    /// Whether `user` (in `groups`) may `verb` the node's `subresource`: the kubelet's webhook
    /// authorization, a SubjectAccessReview as upstream's `--authorization-mode=Webhook` sends.
    pub async fn authorize(
        &self,
        user: &str,
        groups: &[String],
        verb: &str,
        subresource: &str,
    ) -> Result<bool, kube::Error> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.to_string()),
                groups: Some(groups.to_vec()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_string()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.to_string()),
                    name: Some(self.node.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = api.create(&PostParams::default(), &review).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    /// Runs the node's side of the cluster until the process ends: registration, heartbeats, the pod
    /// source (returned), status write-back and the final deletes of the pods the kubelet has stopped.
    pub fn start(
        self: &Arc<Self>,
        kubelet: Arc<Kubelet>,
        terminated: mpsc::UnboundedReceiver<Pod>,
    ) -> watch::Receiver<Snapshot> {
        let (tx, rx) = watch::channel(Snapshot::default());
        kubelet.set_api(self.clone());
        tokio::spawn(self.clone().heartbeat(kubelet.settings.clone()));
        tokio::spawn(self.clone().pod_source(tx));
        tokio::spawn(self.clone().mirror_pods(kubelet.clone()));
        tokio::spawn(self.clone().write_statuses(kubelet));
        tokio::spawn(self.clone().finish_deletes(terminated));
        rx
    }

    /// The Node as the kubelet registers it: labels, addresses, capacity, node info and a Ready condition.
    fn node_object(&self, settings: &Settings) -> Value {
        let capacity = capacity(settings);
        json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": arch(),
                    "beta.kubernetes.io/os": "linux",
                    "beta.kubernetes.io/arch": arch(),
                },
            },
            "status": node_status(settings, &capacity, self.api_port.load(Ordering::Relaxed)),
        })
    }

    /// Registers the Node (or takes over the one already there), then renews the Lease and refreshes the
    /// Node's status, retrying on failure (an apiserver that is down must not stop the pods).
    async fn heartbeat(self: Arc<Self>, settings: Arc<Settings>) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let mut registered: Option<String> = None;
        let mut last_status = tokio::time::Instant::now() - NODE_STATUS;
        loop {
            if registered.is_none() {
                match self.register(&nodes, &settings).await {
                    Ok(uid) => {
                        tracing::info!(node = %self.node, "node registered");
                        *self.node_uid.lock().unwrap() = Some(uid.clone());
                        registered = Some(uid);
                        last_status = tokio::time::Instant::now();
                    }
                    Err(e) => {
                        tracing::warn!(node = %self.node, error = %e, "node registration failed")
                    }
                }
            } else if last_status.elapsed() >= NODE_STATUS {
                let port = self.api_port.load(Ordering::Relaxed);
                let status = node_status(&settings, &capacity(&settings), port);
                match nodes
                    .patch_status(
                        &self.node,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": status })),
                    )
                    .await
                {
                    Ok(_) => last_status = tokio::time::Instant::now(),
                    Err(e) => tracing::warn!(error = %e, "node status update failed"),
                }
            }
            if let Some(uid) = &registered {
                if let Err(e) = self.renew_lease(&leases, uid).await {
                    tracing::warn!(error = %e, "node lease renewal failed");
                }
            }
            tokio::time::sleep(LEASE_RENEW).await;
        }
    }

    async fn register(
        &self,
        nodes: &Api<Node>,
        settings: &Settings,
    ) -> Result<String, kube::Error> {
        let obj: Node =
            serde_json::from_value(self.node_object(settings)).map_err(kube::Error::SerdeError)?;
        let node = match nodes.create(&PostParams::default(), &obj).await {
            Ok(n) => n,
            // Already registered (a restart, or a node name taken over): its status becomes ours.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                nodes
                    .patch_status(
                        &self.node,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": obj.status })),
                    )
                    .await?
            }
            Err(e) => return Err(e),
        };
        Ok(node.metadata.uid.unwrap_or_default())
    }

    async fn renew_lease(&self, leases: &Api<Lease>, node_uid: &str) -> Result<(), kube::Error> {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        );
        let spec = json!({
            "holderIdentity": self.node,
            "leaseDurationSeconds": LEASE_SECONDS,
            "renewTime": now,
        });
        match leases
            .patch(
                &self.node,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let lease: Lease = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {
                        "name": self.node,
                        "namespace": "kube-node-lease",
                        // Deleted with its Node, as upstream's.
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": node_uid}],
                    },
                    "spec": spec,
                }))
                .map_err(kube::Error::SerdeError)?;
                leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// The pods bound to this node, as a pod source: every change of the watch publishes a snapshot. A pod
    /// being deleted is left out, so its worker stops it (with its grace period) and then
    /// [`Cluster::finish_deletes`] removes it.
    async fn pod_source(self: Arc<Self>, tx: watch::Sender<Snapshot>) {
        use futures_util::StreamExt;
        let api: Api<Pod> = Api::all(self.client.clone());
        let config = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let (reader, writer) = kube::runtime::reflector::store();
        let stream = kube::runtime::reflector(writer, watcher(api, config)).default_backoff();
        futures_util::pin_mut!(stream);
        // Pods refused by admission, until their Failed status comes back through the watch.
        let mut rejected: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            match event {
                Err(e) => {
                    tracing::warn!(error = %e, "pod watch");
                    continue;
                }
                // A (re)list in progress: the store is complete only at its end, and a snapshot taken
                // halfway would stop the pods not listed yet.
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                Ok(_) => {}
            }
            let mut snap = Snapshot::default();
            // Pods already admitted first, then new ones oldest first: the earlier pod keeps its room.
            let mut pods = reader.state();
            pods.sort_by_key(|p| {
                let known = p.metadata.uid.as_deref().is_some_and(|u| self.is_known(u));
                (!known, p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            let mut node: Option<Option<Node>> = None;
            for p in pods {
                let Some(uid) = p.metadata.uid.clone() else {
                    continue;
                };
                // A pod that has finished is not run again (after a restart of the kubelet, say); one
                // that finished here stays declared until it is deleted, so its worker keeps its status.
                let finished_elsewhere = is_terminal(&p) && !self.is_known(&uid);
                // A mirror pod stands for a static pod the node runs already.
                let mirror = crate::manifest::is_mirror(&p);
                if p.metadata.deletion_timestamp.is_some() || finished_elsewhere || mirror {
                    continue;
                }
                if !self.is_known(&uid) {
                    if rejected.contains(&uid) {
                        continue;
                    }
                    if node.is_none() {
                        let nodes: Api<Node> = Api::all(self.client.clone());
                        node = Some(nodes.get_opt(&self.node).await.ok().flatten());
                    }
                    if let Some(Some(n)) = &node {
                        let running: Vec<&Pod> = snap.pods.values().collect();
                        if let Err(r) = crate::admission::admit(&p, n, &running) {
                            rejected.insert(uid);
                            tokio::spawn(self.clone().reject((*p).clone(), r));
                            continue;
                        }
                    }
                }
                snap.pods.insert(uid, (*p).clone());
            }
            *self.known.lock().unwrap() = snap.pods.keys().cloned().collect();
            tx.send_replace(snap);
        }
    }

    /// A pod refused by admission: Failed, with the reason and message, and never run here.
    async fn reject(self: Arc<Self>, pod: Pod, r: crate::admission::Rejection) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        tracing::warn!(pod = %format!("{ns}/{name}"), reason = %r.reason, message = %r.message, "pod rejected");
        let about = basalt_events::reference("v1", "Pod", &pod.metadata, None);
        self.events.record(
            about,
            basalt_events::Type::Warning,
            &r.reason,
            r.message.clone(),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch =
            json!({"status": {"phase": "Failed", "reason": r.reason, "message": r.message}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %name, error = %e, "writing a rejected pod's status");
        }
    }

    fn is_known(&self, uid: &str) -> bool {
        self.known.lock().unwrap().contains(uid)
    }

    /// Writes each API pod's status when it differs from what was last written (merge patch of the status
    /// subresource: the apiserver keeps what the kubelet does not set, such as the QoS class).
    async fn write_statuses(self: Arc<Self>, kubelet: Arc<Kubelet>) {
        let mut written: HashMap<String, Value> = HashMap::new();
        loop {
            tokio::time::sleep(STATUS_SYNC).await;
            let known = self.known.lock().unwrap().clone();
            let pods = kubelet.pods();
            for uid in self.remirrored.lock().unwrap().drain() {
                written.remove(&uid);
            }
            written.retain(|uid, _| {
                known.contains(uid)
                    || pods.iter().any(|p| {
                        crate::manifest::is_static(p) && p.metadata.uid.as_ref() == Some(uid)
                    })
            });
            for pod in pods {
                // A static pod's status goes to its mirror pod (same name).
                let is_static = crate::manifest::is_static(&pod);
                let Some(uid) = pod
                    .metadata
                    .uid
                    .clone()
                    .filter(|u| known.contains(u) || is_static)
                else {
                    continue;
                };
                let Ok(status) = serde_json::to_value(&pod.status) else {
                    continue;
                };
                if written.get(&uid) == Some(&status) {
                    continue;
                }
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
                match api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({ "status": status })),
                    )
                    .await
                {
                    Ok(_) => {
                        written.insert(uid, status);
                    }
                    // Gone; a static pod's mirror not made yet is tried again.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        if !is_static {
                            written.insert(uid, status);
                        }
                    }
                    Err(e) => tracing::warn!(pod = %name, error = %e, "pod status update failed"),
                }
            }
        }
    }

    /// A pod whose worker has stopped it: if it came from the API and is being deleted, its containers
    /// are gone, so it is deleted for good (grace 0, only that UID: a new pod of the same name stays).
    async fn finish_deletes(self: Arc<Self>, mut terminated: mpsc::UnboundedReceiver<Pod>) {
        while let Some(pod) = terminated.recv().await {
            let (Some(ns), Some(name), Some(uid)) = (
                pod.metadata.namespace.clone(),
                pod.metadata.name.clone(),
                pod.metadata.uid.clone(),
            ) else {
                continue;
            };
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            let Ok(Some(current)) = api.get_opt(&name).await else {
                continue;
            };
            if current.metadata.uid.as_deref() != Some(&uid)
                || current.metadata.deletion_timestamp.is_none()
            {
                continue;
            }
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(&name, &params).await {
                tracing::warn!(pod = %name, error = %e, "final delete failed");
            }
        }
    }
}

/// Go's GOARCH for this machine, as the kubernetes.io/arch label and nodeInfo carry it.
fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

impl Cluster {
    /// The config maps, secrets and bound tokens a pod's volumes project. The Node authorizer lets the
    /// node read only what pods bound to it reference, as upstream's.
    async fn volume_data(&self, pod: &Pod) -> Result<ApiData, String> {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let needs = crate::volumes::needs(pod);
        let mut data = ApiData::default();
        let err = |what: &str, e: kube::Error| format!("{what}: {e}");
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        for name in needs.config_maps {
            let got = maps.get_opt(&name).await.map_err(|e| err(&name, e))?;
            data.config_maps.insert(
                name,
                got.map(|c| {
                    let mut m: BTreeMap<String, Vec<u8>> = c
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    m.extend(
                        c.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    m
                }),
            );
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        for name in needs.secrets {
            let got = secrets.get_opt(&name).await.map_err(|e| err(&name, e))?;
            data.secrets.insert(
                name,
                got.map(|s| {
                    let mut m: BTreeMap<String, Vec<u8>> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    m.extend(
                        s.string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    m
                }),
            );
        }
        let sa = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        for (audience, seconds) in needs.tokens {
            // Bound to the pod: the token dies with it (upstream's kubelet asks the same).
            let req: TokenRequest = serde_json::from_value(json!({
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": if audience.is_empty() { vec![] } else { vec![audience.clone()] },
                    "expirationSeconds": seconds,
                    "boundObjectRef": {
                        "apiVersion": "v1", "kind": "Pod",
                        "name": pod.metadata.name, "uid": pod.metadata.uid,
                    },
                },
            }))
            .map_err(|e| e.to_string())?;
            let tr = accounts
                .create_token_request(&sa, &PostParams::default(), &req)
                .await
                .map_err(|e| err(&format!("token of service account {sa}"), e))?;
            let token = tr.status.and_then(|s| s.token).unwrap_or_default();
            if token.is_empty() {
                return Err(format!("no token for service account {sa}"));
            }
            data.tokens.insert((audience, seconds), token);
        }
        Ok(data)
    }
}

impl ApiSource for Cluster {
    fn fetch<'a>(&'a self, pod: &'a Pod) -> Fetch<'a> {
        Box::pin(self.volume_data(pod))
    }

    fn record(&self, pod: &Pod, e: crate::events::Event) {
        let about = basalt_events::reference("v1", "Pod", &pod.metadata, e.field_path);
        self.events
            .record(about, e.kind, e.reason.as_str(), e.message);
    }
}

fn is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// cpu, memory, ephemeral-storage and pods, as the kubelet reads them from the machine.
fn capacity(settings: &Settings) -> BTreeMap<String, String> {
    let mut c = BTreeMap::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    c.insert("cpu".to_string(), cpus.to_string());
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    c.insert("memory".to_string(), format!("{mem_kib}Ki"));
    let root = if settings.pods_root.exists() {
        settings.pods_root.clone()
    } else {
        "/".into()
    };
    if let Ok(fs) = nix::sys::statvfs::statvfs(&root) {
        let bytes = fs.blocks().saturating_mul(fs.fragment_size());
        c.insert(
            "ephemeral-storage".to_string(),
            format!("{}Ki", bytes / 1024),
        );
    }
    c.insert("pods".to_string(), "110".to_string());
    c
}

fn node_status(settings: &Settings, capacity: &BTreeMap<String, String>, api_port: u16) -> Value {
    let now = jiff_now();
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Basalt".into());
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": api_port}},
        "addresses": [
            {"type": "InternalIP", "address": settings.host_ip},
            {"type": "Hostname", "address": settings.node_name},
        ],
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady",
             "message": "kubelet is posting ready status",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
             "message": "kubelet has sufficient memory available",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
             "message": "kubelet has no disk pressure",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
            {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
             "message": "kubelet has sufficient PID available",
             "lastHeartbeatTime": now, "lastTransitionTime": now},
        ],
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": machine_id,
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "kernelVersion": kernel,
            "osImage": os_image,
            "operatingSystem": "linux",
            "architecture": arch(),
            "containerRuntimeVersion": format!("basalt://{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
        },
    })
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}
