//! `basalt agent`: serves the CRI on a unix socket (the stores opened, recovery done, the streaming server
//! started) and runs the kubelet against it, until SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use basalt_proto::{ImageServiceServer, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt;

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

/// The agent on a runtime someone else runs (`basalt server`, which is also a node), until SIGTERM.
pub async fn run(config: &basalt_config::Config, mut args: AgentConfig) -> anyhow::Result<()> {
    let (data_dir, run_dir) = (config.data_dir.as_path(), config.run_dir.as_path());
    if !args.cri_only {
        crate::kubelet::join(config, &mut args).await?;
    }
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
    if !args.cri_only && cri_task.is_some() {
        // A node nobody gave a pod network: pods would wait for one forever. A runtime engineer's
        // `--cri-only` instance writes nothing (NetworkReady stays false, saying why).
        let dir = &args.cni_conf_dir;
        match crate::network::write_default(dir, crate::network::DEFAULT_POD_CIDR) {
            Ok(Some(path)) => tracing::info!(
                path = %path.display(),
                subnet = crate::network::DEFAULT_POD_CIDR,
                "no CNI network configured: wrote the default bridge network"
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!("writing the default CNI network: {}", e.message()),
        }
    }
    let kubelet = if args.cri_only {
        None
    } else {
        Some(crate::kubelet::start(config, &args, &endpoint).await?)
    };
    let mut renewed = crate::kubelet::renew_credentials(config, &args)?;
    let mut restart = false;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        Ok(()) = &mut renewed => restart = true,
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
    if restart {
        // The kubelet's clients hold the old certificate: the agent starts again on the new one, as
        // after a crash (pods kept running; the agent recovers them from its state).
        use std::os::unix::process::CommandExt;
        tracing::info!("node credentials renewed: restarting the agent on them");
        let err = std::process::Command::new("/proc/self/exe")
            .args(std::env::args_os().skip(1))
            .exec();
        return Err(anyhow::anyhow!(
            "restarting the agent after renewing its credentials: {err}"
        ));
    }
    Ok(())
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
    let backend = Arc::new(crate::stream_backend::Backend::new(records.clone()));
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
    crate::events::watch_exits(agent.records.clone(), agent.events.clone());
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

    let runtime = crate::service::Runtime(agent.clone());
    let image = crate::service::Images(agent.clone());
    let sock = socket.clone();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(runtime))
            .add_service(ImageServiceServer::new(image))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener).map(|c| c.map(crate::authority::accept)),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            )
            .await
            .context("serving the CRI")?;
        let _ = std::fs::remove_file(&sock);
        Ok(())
    });
    Ok((socket, task))
}
