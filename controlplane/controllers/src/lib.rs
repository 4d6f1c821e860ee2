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
//! - [`gc`]: the garbage collector: background, foreground and orphan deletion by ownerReferences.
//!
//! Each controller is a kube-rs `Controller` (watcher → reflector → reconciler).

pub mod credentials;
pub mod deployment;
pub mod gc;
pub mod owners;
pub mod replicaset;

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
    GarbageCollector,
}

impl Loop {
    pub const ALL: [Loop; 3] = [Loop::ReplicaSet, Loop::Deployment, Loop::GarbageCollector];

    /// The service account (and `system:controller:` role) the loop runs as.
    pub fn service_account(self) -> &'static str {
        match self {
            Loop::ReplicaSet => "replicaset-controller",
            Loop::Deployment => "deployment-controller",
            Loop::GarbageCollector => "generic-garbage-collector",
        }
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
        let running = tokio::spawn(start(
            client.clone(),
            manager.config.clone(),
            manager.dir.clone(),
        ));
        elector.hold().await;
        tracing::warn!(identity = %elector.identity(), "controllers stopped: no longer the leader");
        running.abort();
    }
}

/// Starts every loop with its own credentials; runs until aborted.
async fn start(manager: kube::Client, config: kube::Config, dir: PathBuf) {
    let mut tasks = tokio::task::JoinSet::new();
    for l in Loop::ALL {
        let client = credentials::client_for(&manager, &config, &dir, l.service_account()).await;
        match l {
            Loop::ReplicaSet => tasks.spawn(replicaset::run(client)),
            Loop::Deployment => tasks.spawn(deployment::run(client)),
            Loop::GarbageCollector => tasks.spawn(gc::run(client)),
        };
    }
    tasks.spawn(credentials::refresh(
        manager,
        dir,
        Loop::ALL.map(Loop::service_account),
    ));
    while tasks.join_next().await.is_some() {}
}
