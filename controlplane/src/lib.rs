//! `basalt server`: the control plane of a cluster, composed from its crates.
//!
//! - [`pki`]: the cluster CA, the serving and client certificates, the service-account key, the admin
//!   kubeconfig — made at first start, kept under `<data-dir>/server/tls`.
//! - [`node_token`]: the join token other nodes join with (`<data-dir>/server/node-token`).
//! - [`run`]: opens the store (SQLite under `<data-dir>/server/db` by default, or etcd), starts the
//!   apiserver, and serves until SIGTERM.
//!
//! The apiserver lives in `controlplane/apiserver`, the store in `controlplane/store`, the scheduler in
//! `controlplane/scheduler` (a client of the apiserver with its own certificate, as upstream's), the
//! controllers in `controlplane/controllers` (`system:kube-controller-manager`, each loop then on a
//! service-account token of its own). It must never be required for a node to run its static pods.

pub mod node_token;
pub mod pki;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use basalt_store::{EtcdConfig, EtcdStore, SqliteStore, Store};
use clap::Args;

/// `basalt server`'s flags (k3s's names where it has one).
#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Address the apiserver listens on
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port of the apiserver (0: any free port, printed at start)
    #[arg(long, default_value_t = 6443)]
    pub https_listen_port: u16,
    /// Address other nodes and the cluster reach this server at [default: the first non-loopback address]
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Extra names and addresses in the serving certificate (repeatable)
    #[arg(long = "tls-san", value_name = "NAME")]
    pub tls_san: Vec<String>,
    /// etcd instead of the embedded SQLite: etcd://host:port[,host:port…] or https://…
    #[arg(long, value_name = "URL")]
    pub datastore_endpoint: Option<String>,
    /// CA of the etcd members' certificates
    #[arg(long, value_name = "FILE")]
    pub datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd
    #[arg(long, value_name = "FILE")]
    pub datastore_certfile: Option<PathBuf>,
    /// Client key for etcd
    #[arg(long, value_name = "FILE")]
    pub datastore_keyfile: Option<PathBuf>,
    /// Service IP range
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Where to write the admin kubeconfig [default: <data-dir>/server/admin.kubeconfig]
    #[arg(long, value_name = "FILE")]
    pub write_kubeconfig: Option<PathBuf>,
    /// Requests in flight that are not long-running, with the next flag: summed, then shared among the
    /// priority levels (kube-apiserver's flag)
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
    /// See --max-requests-inflight
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// How long an event is kept after its last write (kube-apiserver's flag; a Go duration: 1h, 90m)
    #[arg(long, default_value = "1h", value_parser = go_duration)]
    pub event_ttl: std::time::Duration,
    /// How often the store's old history is compacted, in seconds
    #[arg(long, default_value_t = 300, hide = true)]
    pub compaction_interval: u64,
    /// Components not to run (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "COMPONENT")]
    pub disable: Vec<Component>,
    /// The only components to run (comma-separated) [default: all]
    #[arg(long, value_delimiter = ',', value_name = "COMPONENT")]
    pub enable: Vec<Component>,
    /// KubeSchedulerConfiguration file for the scheduler (profiles, plugin weights, leader election)
    #[arg(long, value_name = "FILE")]
    pub scheduler_config: Option<PathBuf>,
    /// The controllers to run, kube-controller-manager's flag: `*` for all, `-name` to leave one out
    /// (e.g. `*,-node-lifecycle-controller`)
    #[arg(long, value_delimiter = ',', default_value = "*", value_name = "NAMES")]
    pub controllers: Vec<String>,
    /// The pods' address ranges, comma-separated for dual-stack (a block of each per node)
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// The size of each node's IPv4 block
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size_ipv4: u8,
    /// The size of each node's IPv6 block
    #[arg(long, default_value_t = 64)]
    pub node_cidr_mask_size_ipv6: u8,
    /// How often the node lifecycle controller looks at the nodes (a Go duration)
    #[arg(long, default_value = "5s", value_parser = go_duration)]
    pub node_monitor_period: std::time::Duration,
    /// How long a node may go without a heartbeat before it is marked Unknown (a Go duration)
    #[arg(long, default_value = "50s", value_parser = go_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// How many terminated pods (Succeeded or Failed) may stay before the oldest are deleted (0: no limit)
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
    /// The same for a node that never posted a status (a Go duration)
    #[arg(long, default_value = "1m", value_parser = go_duration)]
    pub node_startup_grace_period: std::time::Duration,
    /// The longest life of a certificate the cluster CA signs for an approved request (a Go duration)
    #[arg(long, default_value = "8760h", value_parser = go_duration)]
    pub cluster_signing_duration: std::time::Duration,
}

/// The loops that run beside the apiserver, each its own client of it.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Scheduler,
    /// kube-controller-manager's loops (replicaset, deployment, statefulset, job, cronjob, ttl-after-finished, node lifecycle,
    /// taint eviction, garbage collectors, daemonset; `--controllers` picks among them)
    Controllers,
}

impl ServerArgs {
    pub fn runs(&self, c: Component) -> bool {
        (self.enable.is_empty() || self.enable.contains(&c)) && !self.disable.contains(&c)
    }
}

fn default_advertise() -> IpAddr {
    // The address the kernel would use to reach the outside, without sending anything.
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Runs `basalt server` until SIGTERM or SIGINT.
pub fn main(config: &basalt_config::Config, args: ServerArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()?;
    rt.block_on(run(config, args))
}

/// What the node on the same machine needs once the server is up (`basalt server` is also a node).
pub struct Ready {
    pub node_name: String,
    /// Credentials of `system:node:<node_name>` in `system:nodes`, signed by the cluster CA.
    pub node_kubeconfig: PathBuf,
}

pub async fn run(config: &basalt_config::Config, args: ServerArgs) -> anyhow::Result<()> {
    serve(config, args, None).await
}

/// Runs the server until SIGTERM; once it serves, `ready` (if any) gets the local node's credentials.
pub async fn serve(
    config: &basalt_config::Config,
    args: ServerArgs,
    ready: Option<tokio::sync::oneshot::Sender<Ready>>,
) -> anyhow::Result<()> {
    // A bad configuration file is refused before anything is written.
    let scheduler_config = match (&args.scheduler_config, args.runs(Component::Scheduler)) {
        (Some(path), true) => Some(basalt_scheduler::Config::load(path)?),
        (None, true) => Some(basalt_scheduler::Config::default()),
        (_, false) => None,
    };
    let loops = basalt_controllers::Loop::select(&args.controllers).map_err(anyhow::Error::msg)?;
    let cluster_cidrs = basalt_controllers::nodeipam::ranges(
        &args.cluster_cidr,
        args.node_cidr_mask_size_ipv4,
        args.node_cidr_mask_size_ipv6,
    )
    .map_err(anyhow::Error::msg)?;
    let dir = config.data_dir.join("server");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let advertise = args.advertise_address.unwrap_or_else(default_advertise);
    let node_name = config
        .node_name
        .clone()
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_else(|| "localhost".into());
    let mut sans = vec![node_name.clone()];
    sans.extend(args.tls_san.iter().cloned());
    let service_ip = basalt_apiserver::admission::first_service_ip(&args.service_cidr);
    let pki = pki::Pki::ensure(
        &dir.join("tls"),
        &sans,
        &[advertise, IpAddr::V4(service_ip)],
    )?;

    let store: Arc<dyn Store> = match &args.datastore_endpoint {
        None => {
            let db = dir.join("db");
            std::fs::create_dir_all(&db)?;
            Arc::new(SqliteStore::open(&db.join("state.db")).context("open the SQLite datastore")?)
        }
        Some(endpoint) => {
            let mut etcd = EtcdConfig::from_endpoint(endpoint).map_err(anyhow::Error::msg)?;
            etcd.ca_file = args.datastore_cafile.clone();
            etcd.cert_file = args.datastore_certfile.clone();
            etcd.key_file = args.datastore_keyfile.clone();
            Arc::new(
                EtcdStore::connect(&etcd)
                    .await
                    .context("connect to the etcd datastore")?,
            )
        }
    };
    let bind = SocketAddr::new(args.bind_address, args.https_listen_port);
    let mut api = basalt_apiserver::Config::new(bind, &pki.dir);
    api.cert_file = pki.serving_cert.clone();
    api.key_file = pki.serving_key.clone();
    api.client_ca_file = pki.ca_cert.clone();
    api.service_account_key_file = pki.service_account_key.clone();
    api.advertise_address = advertise;
    api.service_cidr = args.service_cidr.clone();
    api.compaction_interval = std::time::Duration::from_secs(args.compaction_interval.max(1));
    api.event_ttl = args.event_ttl;
    api.kubelet_client_cert = Some(pki.kubelet_client()?);
    api.max_inflight = args.max_requests_inflight;
    api.max_mutating_inflight = args.max_mutating_requests_inflight;
    api.garbage_collector = !args.runs(Component::Controllers);
    if args.runs(Component::Controllers) {
        api.extra_metrics = Some(basalt_controllers::metrics::render);
    }
    let server = basalt_apiserver::ApiServer::start(api, store.clone()).await?;

    let kubeconfig = args
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| dir.join("admin.kubeconfig"));
    let host = if args.bind_address.is_unspecified() || args.bind_address.is_loopback() {
        format!("127.0.0.1:{}", server.addr.port())
    } else {
        server.addr.to_string()
    };
    pki.write_admin_kubeconfig(&kubeconfig, &format!("https://{host}"))?;
    // Before the server says it is ready: whoever reads that may read the token next.
    let ca_pem = std::fs::read(&pki.ca_cert)?;
    let (_, token_path) = node_token::ensure(&dir, &ca_pem, &server).await?;
    if let Some(config) = scheduler_config {
        let path = dir.join("scheduler.kubeconfig");
        pki.write_kubeconfig(
            &path,
            &format!("https://{host}"),
            "system:kube-scheduler",
            &[],
        )?;
        let identity = basalt_scheduler::identity(&dir.join("scheduler.id"), &node_name)?;
        let client = basalt_scheduler::client(&path).await?;
        tokio::spawn(basalt_scheduler::run(client, config, identity));
    }
    if args.runs(Component::Controllers) {
        let path = dir.join("controller-manager.kubeconfig");
        pki.write_kubeconfig(
            &path,
            &format!("https://{host}"),
            "system:kube-controller-manager",
            &[],
        )?;
        let manager = basalt_controllers::Manager {
            config: basalt_scheduler::client_config(&path).await?,
            dir: dir.join("controllers"),
            identity: basalt_scheduler::identity(&dir.join("controller-manager.id"), &node_name)?,
            loops,
            cluster_cidrs,
            terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
            signing: Some(basalt_controllers::csrsigning::Authority {
                cert: pki.ca_cert.clone(),
                key: pki.ca_key.clone(),
                duration: args.cluster_signing_duration,
            }),
            node_lifecycle: basalt_controllers::nodelifecycle::Settings {
                monitor_period: args.node_monitor_period,
                grace_period: args.node_monitor_grace_period,
                startup_grace_period: args.node_startup_grace_period,
            },
        };
        tokio::spawn(basalt_controllers::run(manager));
    }
    // What scripts and the tests read: where the API is, and how to reach it.
    println!(
        "basalt server: apiserver on https://{host} ({} datastore)",
        store.backend()
    );
    println!("basalt server: admin kubeconfig {}", kubeconfig.display());
    println!(
        "basalt server: join other nodes with: basalt agent --server https://{} --token \"$(cat {})\"",
        SocketAddr::new(advertise, server.addr.port()),
        token_path.display()
    );
    tracing::info!(addr = %server.addr, kubeconfig = %kubeconfig.display(), "server ready");
    if let Some(ready) = ready {
        let path = dir.join("node.kubeconfig");
        pki.write_kubeconfig(
            &path,
            &format!("https://{host}"),
            &format!("system:node:{node_name}"),
            &["system:nodes"],
        )?;
        let _ = ready.send(Ready {
            node_name: node_name.clone(),
            node_kubeconfig: path,
        });
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("server stopping");
    Ok(())
}

fn go_duration(s: &str) -> Result<std::time::Duration, String> {
    basalt_apimachinery::duration::parse_go(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a positive duration (such as 1h, 30m, 90s)"))
}
