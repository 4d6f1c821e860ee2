//! A CSI client on the plugin's address (unix socket or tcp://), for the tests, the benchmark and, later, the
//! kubelet's CSI volume plugin.

use std::time::Duration;

use basalt_proto::csi::{
    controller_client::ControllerClient, identity_client::IdentityClient, node_client::NodeClient,
};
use hyper_util::rt::TokioIo;
use tonic::transport::Channel;

use crate::args::Address;

/// The three services of one plugin on one HTTP/2 connection. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Client {
    pub async fn connect(address: &str) -> anyhow::Result<Client> {
        let channel = match Address::parse(address).map_err(anyhow::Error::msg)? {
            Address::Tcp(a) => {
                tonic::transport::Endpoint::try_from(format!("http://{a}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .connect()
                    .await?
            }
            Address::Unix(path) => {
                // The URI is required by tonic but unused: the connector dials the socket.
                tonic::transport::Endpoint::try_from("http://[::]:50051")?
                    .connect_timeout(Duration::from_secs(5))
                    .connect_with_connector(tower::service_fn(move |_| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await?
            }
        };
        Ok(Client {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        })
    }

    /// Connects and probes until the plugin answers, or fails after `limit`.
    pub async fn wait_ready(address: &str, limit: Duration) -> anyhow::Result<Client> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let err = match Client::connect(address).await {
                Ok(mut c) => match c.identity.probe(basalt_proto::csi::ProbeRequest {}).await {
                    Ok(_) => return Ok(c),
                    Err(e) => anyhow::Error::from(e),
                },
                Err(e) => e,
            };
            if std::time::Instant::now() >= deadline {
                return Err(
                    err.context(format!("CSI plugin at {address} not ready after {limit:?}"))
                );
            }
            // The plugin has no readiness signal to wait on but its socket; probe again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
