//! `basalt csi`: opens the store (recovering from whatever a crash or reboot left), then serves Identity,
//! Controller and Node on the socket until SIGTERM or SIGINT.

use std::os::unix::fs::PermissionsExt;

use anyhow::Context;
use basalt_proto::csi::{
    controller_server::ControllerServer, identity_server::IdentityServer, node_server::NodeServer,
};

use crate::args::{Address, CsiArgs, CsiConfig};
use crate::service::Plugin;
use crate::store::Store;

pub fn main(config: &basalt_config::Config, args: CsiArgs) -> anyhow::Result<()> {
    let settings = CsiConfig::resolve(config.csi.as_ref(), &args).map_err(anyhow::Error::msg)?;
    let node_id = match &config.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    };
    let base = settings.base(&config.data_dir);
    let store = Store::open(&base, settings.volume_backend).map_err(anyhow::Error::msg)?;
    tracing::info!(
        base = %store.base.display(),
        volumes = store.index.volumes.len(),
        snapshots = store.index.snapshots.len(),
        "filesystem volumes: {}",
        store.kind_reason
    );
    let plugin = Plugin::new(
        store,
        settings.driver_name.clone(),
        node_id,
        settings.max_volumes_per_node,
    );
    let address = settings.address(&config.run_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(plugin, address))
}

async fn serve(plugin: Plugin, address: Address) -> anyhow::Result<()> {
    // Taken before the socket exists: a SIGTERM right after start is seen, not lost.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("stopping; volumes and their mounts stay");
    };
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(plugin.clone()))
        .add_service(ControllerServer::new(plugin.clone()))
        .add_service(NodeServer::new(plugin.clone()));
    match &address {
        Address::Unix(path) => {
            if let Some(dir) = path.parent() {
                if !dir.exists() {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    // Ours: no one else needs to see the socket being made (chmod follows the bind).
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
                }
            }
            // A socket left by a killed plugin; anything else at that path is not ours to remove.
            if let Ok(m) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                anyhow::ensure!(
                    m.file_type().is_socket(),
                    "csi-address {}: exists and is not a socket",
                    path.display()
                );
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the old {}", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding {}", path.display()))?;
            // Whoever reaches the socket can mount anything beneath the base directory anywhere: root only.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            tracing::info!(address = %address, driver = %plugin.driver_name, node = %plugin.node_id, "CSI plugin ready");
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    stop,
                )
                .await
                .context("serving CSI")?;
            let _ = std::fs::remove_file(path);
        }
        Address::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::warn!(address = %address, "CSI over TCP has no authentication: anyone who reaches it can mount");
            tracing::info!(address = %address, driver = %plugin.driver_name, node = %plugin.node_id, "CSI plugin ready");
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop,
                )
                .await
                .context("serving CSI")?;
        }
    }
    Ok(())
}
