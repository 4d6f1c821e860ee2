//! The scheduler of `basalt server`, modelled on kube-scheduler 1.35: a client of the apiserver (kube-rs,
//! as `system:kube-scheduler`) that places pending pods on nodes.
//!
//! - [`config`]: the KubeSchedulerConfiguration file: profiles, plugins, weights, leader election.
//! - [`model`]: what is kept of pods and nodes, parsed once (requests, affinity, spread constraints).
//! - [`cache`]: nodes with the pods counted on them, assumed pods while binding is in flight.
//! - [`index`]: pods by namespace and by affinity, spread counters kept as pods come and go.
//! - [`queue`]: active, backoff and unschedulable sub-queues, requeue on cluster events.
//! - [`framework`]: plugin names, filter statuses, score normalisation.
//! - [`plugins`]: NodeName, NodeUnschedulable, NodeResourcesFit, NodeAffinity, TaintToleration,
//!   NodePorts, PodTopologySpread, InterPodAffinity, VolumeBinding, ImageLocality, BalancedAllocation.
//! - [`algorithm`]: one scheduling attempt and upstream's FailedScheduling message.
//! - [`preemption`]: DefaultPreemption, honouring PodDisruptionBudgets.
//! - [`runtime`]: watches, the scheduling thread, asynchronous binding through `pods/binding`.
//! - [`events`]: core/v1 Events as `default-scheduler`.
//! - [`leader`]: leader election through a coordination.k8s.io Lease.

pub mod algorithm;
pub mod cache;
pub mod config;
pub mod events;
pub mod framework;
pub mod index;
pub mod leader;
pub mod model;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod runtime;

use std::path::Path;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("client: {0}")]
    Client(#[from] kube::Error),
    #[error("identity file {path}: {source}")]
    Identity {
        path: String,
        source: std::io::Error,
    },
}

/// The scheduler's leader-election identity: `<host>_<id>`, the id kept in `id_file` so that a server
/// restarted on the same data takes its own lease back at once instead of waiting for it to expire.
pub fn identity(id_file: &Path, host: &str) -> Result<String, Error> {
    let err = |source| Error::Identity {
        path: id_file.display().to_string(),
        source,
    };
    let id = match std::fs::read_to_string(id_file) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let mut bytes = [0u8; 8];
            getrandom::fill(&mut bytes).map_err(|e| err(e.into()))?;
            let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            basalt_atomic_file::write(id_file, id.as_bytes(), basalt_atomic_file::PUBLIC)
                .map_err(err)?;
            id
        }
    };
    Ok(format!("{host}_{id}"))
}

/// A kube-rs client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, Error> {
    Ok(kube::Client::try_from(client_config(kubeconfig).await?)?)
}

/// A kubeconfig file read as a kube-rs client configuration (the controllers derive their per-controller
/// service-account clients from it).
pub async fn client_config(kubeconfig: &Path) -> Result<kube::Config, Error> {
    let kerr = |message: String| Error::Kubeconfig {
        path: kubeconfig.display().to_string(),
        message,
    };
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| kerr(e.to_string()))?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| kerr(e.to_string()))
}

/// Runs the scheduler until the future is dropped: with leader election, schedules only while leading
/// (and starts afresh, cache and queue rebuilt from the watches, each time it leads again).
pub async fn run(client: kube::Client, config: Config, identity: String) {
    let instance = format!("default-scheduler-{identity}");
    if !config.leader_election.enabled {
        let _running = runtime::start(client, config, instance);
        std::future::pending::<()>().await;
        return;
    }
    let mut elector = leader::Elector::new(
        client.clone(),
        config.leader_election.clone(),
        identity.clone(),
    );
    loop {
        elector.acquire().await;
        let running = runtime::start(client.clone(), config.clone(), instance.clone());
        elector.hold().await;
        tracing::warn!(identity = %elector.identity(), "scheduler stopped: no longer the leader");
        tokio::task::spawn_blocking(move || running.stop())
            .await
            .ok();
    }
}
