//! `basalt agent`: opens the stores, starts the streaming server and serves the CRI on a unix socket.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use basalt_proto::{ImageServiceServer, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::agent::Agent;
use crate::args::{AgentArgs, AgentConfig};
use crate::events::Events;
use crate::store::Records;

/// Runs the agent until SIGTERM or SIGINT. Pods keep running when it stops (or is killed).
pub fn main(config: &basalt_config::Config, args: AgentArgs) -> anyhow::Result<()> {
    let args = AgentConfig::resolve(config.agent.as_ref(), &args).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run(config, args))
}

async fn run(config: &basalt_config::Config, args: AgentConfig) -> anyhow::Result<()> {
    let (data_dir, run_dir) = (config.data_dir.as_path(), config.run_dir.as_path());
    for d in [data_dir, run_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Before anything starts: a SIGTERM that comes while the servers start up (a node powered off at once)
    // is then still seen, instead of caught and lost.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut cri_task = None;
    let endpoint = match &args.container_runtime_endpoint {
        Some(p) if !args.cri_only => p.clone(),
        _ => {
            let (socket, task) = start_cri(data_dir, run_dir, args.clone(), stop_rx).await?;
            cri_task = Some(task);
            socket
        }
    };
    let kubelet = if args.cri_only {
        None
    } else {
        Some(start_kubelet(config, &args, &endpoint).await?)
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping; pods keep running");
    // The kubelet first: its PLEG holds a GetContainerEvents stream open, which the CRI server's graceful
    // shutdown would wait for.
    if let Some(k) = kubelet {
        k.abort();
        let _ = k.await;
    }
    let _ = stop_tx.send(true);
    if let Some(t) = cri_task {
        t.await.context("CRI server task")??;
    }
    Ok(())
}

async fn start_kubelet(
    config: &basalt_config::Config,
    args: &AgentConfig,
    endpoint: &Path,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let node_name = match &config.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let host_ip = match args.node_ip {
        Some(ip) => ip.to_string(),
        None => first_ipv4().unwrap_or_else(|| "127.0.0.1".into()),
    };
    let initial = crate::args::parse_duration(&args.restart_backoff).expect("checked by resolve");
    let settings = basalt_kubelet::Settings {
        node_name: node_name.clone(),
        host_ip,
        manifest_dir: args.manifest_dir.clone(),
        manifest_url: args.manifest_url.clone(),
        http_check_frequency: std::time::Duration::from_secs(20),
        log_root: args.pod_log_dir.clone(),
        pods_root: config.data_dir.join("pods"),
        cgroup_root: args.cgroup_parent.clone(),
        seccomp_default: true,
        backoff: basalt_kubelet::backoff::Policy {
            initial,
            ..Default::default()
        },
        sync_period: std::time::Duration::from_secs(1),
        file_check_frequency: std::time::Duration::from_secs(20),
        max_dead_per_container: 1,
        user_namespaces: basalt_kubelet::userns::Range::from_subid_files(
            Path::new("/etc/subuid"),
            Path::new("/etc/subgid"),
        )
        .map_err(anyhow::Error::msg)
        .context("hostUsers: false id range")?
        .unwrap_or_default(),
    };
    let cri = basalt_kubelet::cri::Cri::connect(endpoint).context("CRI endpoint")?;
    let kubelet = basalt_kubelet::Kubelet::new(cri, settings);
    // Pods start before the API is up: making its key on a first boot waits for the kernel's random pool,
    // which on a fresh machine without a hardware RNG took a second that static pods need not wait for.
    let run = tokio::spawn(kubelet.clone().run());
    let api = async {
        let data_dir = config.data_dir.clone();
        let creds = tokio::task::spawn_blocking(move || {
            basalt_kubelet::api::credentials(&data_dir, &[node_name])
        })
        .await?
        .context("kubelet API token and certificate")?;
        let addr = basalt_kubelet::api::serve(kubelet.clone(), args.kubelet_address, creds)
            .await
            .with_context(|| format!("serving the kubelet API on {}", args.kubelet_address))?;
        std::fs::write(config.run_dir.join("kubelet-api.addr"), addr.to_string())?;
        anyhow::Ok(addr)
    };
    let addr = match api.await {
        Ok(addr) => addr,
        Err(e) => {
            run.abort();
            return Err(e);
        }
    };
    tracing::info!(%addr, manifests = %args.manifest_dir.display(), runtime = %endpoint.display(), "kubelet ready");
    tokio::spawn(publish_pod_summary(
        kubelet.clone(),
        config.run_dir.join(POD_SUMMARY),
    ));
    Ok(run)
}

/// `<run-dir>/pods.summary`: one line per pod (`namespace/name phase ready/total restarts`), rewritten
/// atomically when it changes. The node image's console shows it; PID 1 cannot speak the TLS kubelet API.
pub const POD_SUMMARY: &str = "pods.summary";

async fn publish_pod_summary(kubelet: Arc<basalt_kubelet::Kubelet>, path: PathBuf) {
    let mut last = None;
    loop {
        let text = pod_summary(&kubelet.pods());
        if last.as_ref() != Some(&text) {
            let tmp = path.with_extension("tmp");
            match std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path)) {
                Ok(()) => last = Some(text),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "writing the pod summary")
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

fn pod_summary(pods: &[k8s_openapi::api::core::v1::Pod]) -> String {
    let mut lines: Vec<String> = pods
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let containers = status
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default();
            // Why a pod is not running yet is what an operator at the console needs most.
            let waiting = containers
                .iter()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .chain(
                    status
                        .and_then(|s| s.init_container_statuses.as_deref())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()),
                )
                .find_map(|w| {
                    let reason = w.reason.as_deref()?;
                    let message: String = w
                        .message
                        .as_deref()
                        .unwrap_or("")
                        .chars()
                        .take(160)
                        .collect();
                    Some(format!(" {reason}: {}", message.replace('\n', " ")))
                })
                .or_else(|| {
                    let m: String = status?.message.as_deref()?.chars().take(160).collect();
                    Some(format!(" {}", m.replace('\n', " ")))
                })
                .unwrap_or_default();
            format!(
                "{}/{} {} {}/{} {}{waiting}\n",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or("?"),
                status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending"),
                containers.iter().filter(|c| c.ready).count(),
                containers.len(),
                containers.iter().map(|c| c.restart_count).sum::<i32>()
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// The first non-loopback IPv4 address of the node: what pods see as status.hostIP.
fn first_ipv4() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    // The interface of the default route, then its address from getifaddrs.
    let iface = text
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some("00000000"))?
        .split_whitespace()
        .next()?
        .to_owned();
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip().to_string()))
}

async fn start_cri(
    data_dir: &Path,
    run_dir: &Path,
    args: AgentConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(PathBuf, tokio::task::JoinHandle<anyhow::Result<()>>)> {
    let records = Arc::new(
        Records::load(&data_dir.join("cri")).context("loading sandbox and container records")?,
    );
    let images = Arc::new(
        basalt_images::Store::open(data_dir.join("images")).context("opening the image store")?,
    );
    // Air-gapped nodes: archives dropped next to the store (PID 1 links the node image's preloads there) are
    // imported, pinned, before the CRI serves: k3s's agent/images.
    let airgap = data_dir.join("images");
    let store = images.clone();
    let imported =
        tokio::task::spawn_blocking(move || basalt_images::import_airgap_dir(&store, &airgap))
            .await
            .context("air-gap import task")?
            .context("air-gap import")?;
    for i in imported {
        match (&i.images, &i.error) {
            (_, Some(e)) => {
                tracing::error!(archive = %i.path.display(), "air-gap import failed: {e}")
            }
            (Some(names), None) => tracing::info!(archive = %i.path.display(), ?names, "imported"),
            (None, None) => {}
        }
    }
    let mut hosts = basalt_images::Hosts {
        insecure: args.insecure_registry.iter().cloned().collect(),
        ..Default::default()
    };
    if let Some(p) = &args.registry_config {
        hosts.config = basalt_images::RegistriesConfig::load(p)?;
    }
    let cni = basalt_cni::caller::Cni {
        plugin_dirs: args.cni_bin_dir.clone(),
        cache_dir: data_dir.join("cni"),
        ..Default::default()
    };
    let backend = Arc::new(crate::stream::Backend::new(
        records.clone(),
        run_dir.join("shims"),
    ));
    let streaming = basalt_streaming::Server::start(args.streaming_address, backend)
        .await
        .context("starting the streaming server")?;
    let socket = args
        .cri_socket
        .clone()
        .unwrap_or_else(|| run_dir.join("cri.sock"));
    let agent = Arc::new(Agent {
        data_dir: data_dir.to_owned(),
        run_dir: run_dir.to_owned(),
        records,
        images,
        hosts,
        cni,
        runtime_root: run_dir.join("runtime"),
        streaming,
        events: Events::new(),
        pod_cidr: Mutex::new(None),
        monitor_joins: Default::default(),
        args,
    });
    crate::events::watch_exits(agent.clone());
    crate::recover::run(&agent)
        .await
        .context("orphan sweep task")?;

    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // A socket file left by a killed agent would make bind fail.
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o660))?;
    tracing::info!(socket = %socket.display(), streaming = %agent.streaming.addr(), "CRI server ready");

    let runtime = crate::runtime_service::Runtime(agent.clone());
    let image = crate::image::Images(agent.clone());
    let sock = socket.clone();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(runtime))
            .add_service(ImageServiceServer::new(image))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .context("serving the CRI")?;
        let _ = std::fs::remove_file(&sock);
        Ok(())
    });
    Ok((socket, task))
}
