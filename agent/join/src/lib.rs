//! Joining a cluster as a k3s agent joins one.
//!
//! - [`token`]: the join token, `K10<sha256 of the CA bundle>::<id>.<secret>` — a bootstrap token
//!   pinned to the cluster's CA — made by `basalt server`, given to `basalt agent --token`.
//! - [`bootstrap`]: the kubelet's TLS bootstrap with it: the CA checked by its hash, a certificate
//!   request for `system:node:<name>`, the issued credentials kept as a kubeconfig.

pub mod bootstrap;
pub mod token;

pub use bootstrap::join;
pub use token::Token;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("join token: {0}")]
    Token(String),
    #[error("server {0:?}: {1}")]
    Server(String, String),
    #[error("the CA served by {server} has sha256 {got}, but the join token names {want}: not this cluster, or someone in between; refusing to join")]
    CaMismatch {
        server: String,
        got: String,
        want: String,
    },
    #[error("{server} refused the join token: {why}")]
    Refused { server: String, why: String },
    #[error("certificate request {csr} was {condition}: {why}")]
    NotIssued {
        csr: String,
        condition: String,
        why: String,
    },
    #[error("node key: {0}")]
    Key(String),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0}")]
    Client(kube::Error),
}
