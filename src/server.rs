//! `basalt server`: the control plane and, unless `--disable-agent`, this machine's node (the CRI server and
//! the kubelet in API mode, with node credentials the server signs), in one process as `k3s server` is.

use anyhow::Context;

use crate::cli::ServerCommand;

pub fn main(config: &basalt_config::Config, cmd: ServerCommand) -> anyhow::Result<()> {
    // Bad agent settings are refused before the server writes anything.
    let agent = match cmd.disable_agent {
        true => None,
        false => Some(
            basalt_agent::AgentConfig::resolve(config.agent.as_ref(), &cmd.agent)
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let Some(mut agent) = agent else {
            return basalt_controlplane::run(config, cmd.server).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let server = basalt_controlplane::serve(config, cmd.server, Some(tx));
        let node = async {
            // A server that fails before it serves ends the whole command with its own error.
            let Ok(ready) = rx.await else {
                return std::future::pending().await;
            };
            if agent.kubeconfig.is_none() {
                agent.kubeconfig = Some(ready.node_kubeconfig);
            }
            tracing::info!(node = %ready.node_name, "starting this machine's node");
            basalt_agent::run(config, agent).await
        };
        tokio::try_join!(server, node).map(|_| ())
    })
}
