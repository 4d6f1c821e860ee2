//! Errors returned to the CRI server.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the streaming server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A request that can never be served; maps to gRPC `InvalidArgument`.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// Too many URLs handed out and not yet used; maps to gRPC `ResourceExhausted`.
    #[error("too many in-flight streaming requests (limit {limit}); try again later")]
    TooManyRequests { limit: usize },
}
