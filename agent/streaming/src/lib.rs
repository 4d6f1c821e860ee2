//! The CRI streaming server: Exec, Attach and PortForward sessions for kubelet's API server and kubectl.
//!
//! The CRI gRPC server calls [`Server::get_exec`] (or attach / port-forward) and returns the URL; the client
//! then connects to it once and upgrades to a WebSocket (`v5.channel.k8s.io` .. `channel.k8s.io`, port-forward
//! over `v4.channel.k8s.io`) or SPDY/3.1. The process side is a [`Backend`] supplied by the agent. Unary
//! `ExecSync` lives in [`exec_sync()`].
//!
//! It must never: listen on anything but the address it is given (the agent passes a loopback address), accept
//! a URL token twice or after its TTL, or leave an exec'd process running after its client has gone.

/// What the runtime must provide: the `Backend` trait and the typed requests and stdio it receives.
mod backend;
mod error;
/// Unary ExecSync: timeout and output caps on top of `Backend::exec`.
mod exec_sync;
/// Port-forward: one copy pump for both protocols.
mod port_forward;
/// Transport-independent exec/attach: runs the backend, turns output into events.
mod process;
/// HTTP listener, URL issuing, upgrade dispatch.
mod server;
/// What an upgraded connection serves.
mod session;
/// SPDY/3.1 framing, connection and sessions.
mod spdy;
/// metav1.Status for the error channel.
mod status;
/// One-time URL tokens with a TTL.
mod token;
/// WebSocket sessions (exec/attach/port-forward).
mod ws;
/// Channel WebSocket subprotocols: negotiation and framing.
mod wsproto;

pub use backend::{
    AttachTarget, Backend, ExecTarget, PortStream, PortStreamIo, ProcessIo, TermSize,
};
pub use error::Error;
pub use exec_sync::{exec_sync, ExecSyncError, ExecSyncOutput};
pub use server::{Config, Server};
