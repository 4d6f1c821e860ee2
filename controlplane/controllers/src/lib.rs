//! The controllers of `basalt server`, modelled on kube-controller-manager 1.35: clients of the apiserver
//! (kube-rs) that turn intent into objects, under leader election through the Lease
//! `kube-system/kube-controller-manager`.
//!
//! - [`credentials`]: as upstream's `--use-service-account-credentials`, the manager (itself
//!   `system:kube-controller-manager`) gives each controller a client of its own, a token of the service
//!   account `kube-system/<controller>` bound to the `system:controller:<controller>` role.
//! - [`owners`]: controller references, pod readiness and availability, the helpers every loop shares.
//! - [`replicaset`]: pods created and deleted to match `spec.replicas`, with expectations.
//! - [`deployment`]: ReplicaSets per template and revision; scaling, RollingUpdate, Recreate, status.
//! - [`revisions`]: ControllerRevisions, the template history of StatefulSets and DaemonSets.
//! - [`statefulset`]: pods with stable names and claims, ordered, rolled out through ControllerRevisions.
//! - [`daemonset`]: a pod on every node that should run one, rolled out through ControllerRevisions.
//! - [`disruption`]: the status of PodDisruptionBudgets (how many pods may go now).
//! - [`endpoints`]: the Endpoints and EndpointSlices of each Service with a selector.
//! - [`job`]: pods run to completion, NonIndexed and Indexed, counted through a finalizer.
//! - [`cronjob`]: Jobs made at the times a [`cron`] schedule names.
//! - [`ttl`]: finished Jobs deleted after `ttlSecondsAfterFinished`.
//! - [`nodeipam`]: a pod CIDR for each node from the cluster CIDR.
//! - [`nodelifecycle`]: nodes gone silent marked Unknown, taints from conditions, taint-based eviction.
//! - [`podgc`]: terminated pods beyond a threshold, orphans of deleted nodes, unbound terminating pods.
//! - [`csrapproving`] and [`csrsigning`]: kubelets' certificate requests approved by permission, and
//!   approved requests signed by the cluster CA, read through [`csr`]; [`csrcleaner`]: old ones deleted.
//! - [`tokencleaner`]: expired bootstrap tokens deleted.
//! - [`pvbinder`]: claims bound to volumes, released volumes reclaimed.
//! - [`resourcequota`]: each ResourceQuota's hard limits and what the namespace uses of them.
//! - [`gc`]: the garbage collector: background, foreground and orphan deletion by ownerReferences.
//! - [`expectations`]: what an owner created or deleted, awaited until its watch shows it.
//! - [`informers`]: one watch and store per kind, shared by the loops.
//! - [`metrics`]: each loop's passes and failures, served at the apiserver's `/metrics`.
//!
//! Each controller is a kube-rs `Controller` (watcher → reflector → reconciler).

pub mod credentials;
pub mod cron;
pub mod cronjob;
pub mod csr;
pub mod csrapproving;
pub mod csrcleaner;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod informers;
pub mod job;
pub mod metrics;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod owners;
pub mod podgc;
pub mod pvbinder;
pub mod replicaset;
pub mod resourcequota;
pub mod revisions;
pub mod statefulset;
pub mod tokencleaner;
pub mod ttl;

use std::path::PathBuf;

use basalt_scheduler::config::LeaderElection;
use basalt_scheduler::leader::Elector;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("controller client: {0}")]
    Client(#[from] kube::Error),
    #[error("token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("TokenRequest for {0} returned no token")]
    NoToken(String),
}

/// The loops, named as kube-controller-manager's `--controllers` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    ReplicaSet,
    Deployment,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    TtlAfterFinished,
    NodeIpam,
    NodeLifecycle,
    TaintEviction,
    GarbageCollector,
    PodGarbageCollector,
    Endpoints,
    EndpointSlice,
    Disruption,
    CsrApproving,
    CsrSigning,
    CsrCleaner,
    TokenCleaner,
    PersistentVolumeBinder,
    ResourceQuota,
}

impl Loop {
    pub const ALL: [Loop; 21] = [
        Loop::ReplicaSet,
        Loop::Deployment,
        Loop::StatefulSet,
        Loop::DaemonSet,
        Loop::Job,
        Loop::CronJob,
        Loop::TtlAfterFinished,
        Loop::NodeIpam,
        Loop::NodeLifecycle,
        Loop::TaintEviction,
        Loop::GarbageCollector,
        Loop::PodGarbageCollector,
        Loop::Endpoints,
        Loop::EndpointSlice,
        Loop::Disruption,
        Loop::CsrApproving,
        Loop::CsrSigning,
        Loop::CsrCleaner,
        Loop::TokenCleaner,
        Loop::PersistentVolumeBinder,
        Loop::ResourceQuota,
    ];

    /// The name `--controllers` knows it by (upstream's since 1.27).
    pub fn name(self) -> &'static str {
        match self {
            Loop::ReplicaSet => "replicaset-controller",
            Loop::Deployment => "deployment-controller",
            Loop::StatefulSet => "statefulset-controller",
            Loop::DaemonSet => "daemonset-controller",
            Loop::Job => "job-controller",
            Loop::CronJob => "cronjob-controller",
            Loop::TtlAfterFinished => "ttl-after-finished-controller",
            Loop::NodeIpam => "node-ipam-controller",
            Loop::NodeLifecycle => "node-lifecycle-controller",
            Loop::TaintEviction => "taint-eviction-controller",
            Loop::GarbageCollector => "garbage-collector-controller",
            Loop::PodGarbageCollector => "pod-garbage-collector-controller",
            Loop::Endpoints => "endpoints-controller",
            Loop::EndpointSlice => "endpointslice-controller",
            Loop::Disruption => "disruption-controller",
            Loop::CsrApproving => "certificatesigningrequest-approving-controller",
            Loop::CsrSigning => "certificatesigningrequest-signing-controller",
            Loop::CsrCleaner => "certificatesigningrequest-cleaner-controller",
            // Off by default upstream; on here, as in k3s, since nodes join with bootstrap tokens.
            Loop::TokenCleaner => "token-cleaner-controller",
            Loop::PersistentVolumeBinder => "persistentvolume-binder-controller",
            Loop::ResourceQuota => "resourcequota-controller",
        }
    }

    /// The name the loop had before 1.27, still accepted by `--controllers`.
    fn alias(self) -> Option<&'static str> {
        match self {
            Loop::CsrApproving => Some("csrapproving"),
            Loop::CsrSigning => Some("csrsigning"),
            Loop::CsrCleaner => Some("csrcleaner"),
            Loop::TokenCleaner => Some("tokencleaner"),
            Loop::PersistentVolumeBinder => Some("persistentvolume-binder"),
            _ => None,
        }
    }

    /// The service account (and `system:controller:` role) the loop runs as.
    pub fn service_account(self) -> &'static str {
        match self {
            Loop::NodeLifecycle | Loop::NodeIpam => "node-controller",
            Loop::GarbageCollector => "generic-garbage-collector",
            Loop::PodGarbageCollector => "pod-garbage-collector",
            Loop::Endpoints => "endpoint-controller",
            Loop::Disruption => "disruption-controller",
            Loop::DaemonSet => "daemon-set-controller",
            Loop::CsrApproving | Loop::CsrSigning | Loop::CsrCleaner => "certificate-controller",
            Loop::TokenCleaner => "token-cleaner",
            Loop::PersistentVolumeBinder => "persistent-volume-binder",
            l => l.name(),
        }
    }

    /// The loops kube-controller-manager's `--controllers` list selects: `*` for all, `name` to add one,
    /// `-name` to leave one out. An unknown name is an error naming it.
    pub fn select(list: &[String]) -> Result<Vec<Loop>, String> {
        let mut all = false;
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            if item == "*" {
                all = true;
                continue;
            }
            let (set, name) = match item.strip_prefix('-') {
                Some(n) => (&mut off, n),
                None => (&mut on, item),
            };
            let l = Loop::ALL
                .into_iter()
                .find(|l| {
                    l.name() == name
                        || l.name().strip_suffix("-controller") == Some(name)
                        || l.alias() == Some(name)
                })
                .ok_or_else(|| {
                    let known: Vec<&str> = Loop::ALL.iter().map(|l| l.name()).collect();
                    format!(
                        "--controllers: unknown controller {name:?} (known: *, {})",
                        known.join(", ")
                    )
                })?;
            set.push(l);
        }
        Ok(Loop::ALL
            .into_iter()
            .filter(|l| (all || on.contains(l)) && !off.contains(l))
            .collect())
    }
}

/// What the controllers need from `basalt server`.
pub struct Manager {
    /// The manager's own client configuration (`system:kube-controller-manager`).
    pub config: kube::Config,
    /// Where the controllers' token files live.
    pub dir: PathBuf,
    /// `<host>_<id>`, the leader-election identity.
    pub identity: String,
    /// The loops to run (`--controllers`).
    pub loops: Vec<Loop>,
    pub node_lifecycle: nodelifecycle::Settings,
    /// `--terminated-pod-gc-threshold`: how many terminated pods may stay (0: no limit).
    pub terminated_pod_gc_threshold: usize,
    /// `--cluster-cidr` with its block sizes.
    pub cluster_cidrs: Vec<nodeipam::Range>,
    /// The CA that signs approved certificate requests (none: csrsigning does not run).
    pub signing: Option<csrsigning::Authority>,
}

/// Runs the controllers until the future is dropped: only while leading the `kube-controller-manager`
/// Lease, each started afresh (reflectors relisted) every time this server leads again.
pub async fn run(manager: Manager) {
    let client = match kube::Client::try_from(manager.config.clone()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "controllers: no client");
            return;
        }
    };
    let election = LeaderElection {
        name: "kube-controller-manager".into(),
        ..Default::default()
    };
    let mut elector = Elector::new(client.clone(), election, manager.identity.clone());
    loop {
        elector.acquire().await;
        let running = tokio::spawn(start(client.clone(), manager.clone_parts()));
        elector.hold().await;
        tracing::warn!(identity = %elector.identity(), "controllers stopped: no longer the leader");
        running.abort();
    }
}

impl Manager {
    fn clone_parts(&self) -> Manager {
        Manager {
            config: self.config.clone(),
            dir: self.dir.clone(),
            identity: self.identity.clone(),
            loops: self.loops.clone(),
            node_lifecycle: self.node_lifecycle,
            cluster_cidrs: self.cluster_cidrs.clone(),
            terminated_pod_gc_threshold: self.terminated_pod_gc_threshold,
            signing: self.signing.clone(),
        }
    }
}

/// Starts every selected loop with its own credentials; runs until aborted.
async fn start(client: kube::Client, m: Manager) {
    type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let mut tasks = tokio::task::JoinSet::new();
    let inf = informers::Informers::new(client.clone());
    // Each loop names the informers it reads as it is built; none runs before they are synced.
    let mut loops: Vec<Task> = Vec::new();
    for &l in &m.loops {
        let c = credentials::client_for(&client, &m.config, &m.dir, l.service_account()).await;
        loops.push(match l {
            Loop::ReplicaSet => Box::pin(replicaset::run(c, inf.pods(), inf.replicasets())),
            Loop::Deployment => Box::pin(deployment::run(c, inf.pods(), inf.replicasets())),
            Loop::StatefulSet => Box::pin(statefulset::run(c, inf.pods(), inf.revisions())),
            Loop::DaemonSet => Box::pin(daemonset::run(
                c,
                inf.daemonsets(),
                inf.pods(),
                inf.nodes(),
                inf.revisions(),
            )),
            Loop::Job => Box::pin(job::run(c, inf.pods(), inf.jobs())),
            Loop::CronJob => Box::pin(cronjob::run(c, inf.jobs())),
            Loop::TtlAfterFinished => Box::pin(ttl::run(c, inf.jobs())),
            Loop::NodeIpam if m.cluster_cidrs.is_empty() => continue,
            Loop::NodeIpam => Box::pin(nodeipam::run(c, m.cluster_cidrs.clone(), inf.nodes())),
            Loop::NodeLifecycle => Box::pin(nodelifecycle::run(
                c,
                m.node_lifecycle,
                inf.nodes(),
                inf.pods(),
            )),
            Loop::TaintEviction => {
                Box::pin(nodelifecycle::run_eviction(c, inf.nodes(), inf.pods()))
            }
            Loop::GarbageCollector => Box::pin(gc::run(c)),
            Loop::Disruption => Box::pin(disruption::run(c, inf.budgets(), inf.pods())),
            Loop::Endpoints => Box::pin(endpoints::run_endpoints(
                c,
                inf.services(),
                inf.pods(),
                inf.endpoints(),
            )),
            Loop::EndpointSlice => Box::pin(endpoints::run_slices(
                c,
                inf.services(),
                inf.pods(),
                inf.nodes(),
                inf.endpointslices(),
            )),
            Loop::CsrApproving => Box::pin(csrapproving::run(c, inf.csrs())),
            Loop::CsrSigning => match &m.signing {
                Some(a) => Box::pin(csrsigning::run(c, a.clone(), inf.csrs())),
                None => continue,
            },
            Loop::CsrCleaner => Box::pin(csrcleaner::run(c, inf.csrs())),
            Loop::TokenCleaner => Box::pin(tokencleaner::run(c)),
            Loop::ResourceQuota => Box::pin(resourcequota::run(
                c,
                inf.quotas(),
                inf.pods(),
                inf.services(),
                inf.claims(),
            )),
            Loop::PersistentVolumeBinder => {
                Box::pin(pvbinder::run(c, inf.claims(), inf.volumes(), inf.classes()))
            }
            Loop::PodGarbageCollector => Box::pin(podgc::run(
                c,
                m.terminated_pod_gc_threshold,
                inf.pods(),
                inf.nodes(),
            )),
        });
    }
    inf.start(&mut tasks);
    inf.synced().await;
    for l in loops {
        tasks.spawn(l);
    }
    let mut accounts: Vec<&'static str> = m.loops.iter().map(|l| l.service_account()).collect();
    accounts.sort();
    accounts.dedup();
    tasks.spawn(credentials::refresh(client, m.dir, accounts));
    while tasks.join_next().await.is_some() {}
}
