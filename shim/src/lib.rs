//! `basalt shim`: the per-pod monitor (what conmon-rs is to CRI-O). One small single-threaded daemon per pod
//! holds the pod's pinned namespaces, creates and starts its containers through the runtime library, owns
//! their stdio, writes their CRI logs, records their exits and serves exec/attach, over a unix socket the
//! agent finds again after its own restart.
//!
//! It must never run more than one thread (the runtime library forks and then allocates in the child), never
//! block on a client (the agent may be SIGKILLed at any time), and never leave a mount, process, cgroup or
//! directory behind after a failed start or a `Shutdown`.
//!
//! - [`protocol`]: the requests, replies and exec/attach frames on the socket.
//! - [`main`] / [`cli`]: `basalt shim ARGS`: pin, daemonize, report, serve ([`daemon`]).
//! - [`pin`]: the pod's net/ipc/uts(/pid) namespaces, bind-mounted under `<dir>/ns`.
//! - the daemon: [`server`] (connections), [`monitor`] (containers and exits), [`exec`] (exec, exec-sync,
//!   attach), [`stdio`] (pipes, ptys and the output pumps), [`logs`] (the CRI log format).
//! - for the agent: [`client::Client`], [`spawn()`](spawn::spawn) (which answers a [`Ready`]),
//!   [`cleanup()`](pin::cleanup) and the files under a monitor's directory ([`paths`]).

pub mod cli;
pub mod client;
mod daemon;
mod exec;
pub mod logs;
mod monitor;
pub mod paths;
pub mod pin;
pub mod protocol;
mod server;
pub mod spawn;
mod stdio;

pub use cli::main;
pub use pin::{cleanup, Namespace};
pub use spawn::{spawn, Ready, SpawnError, SpawnOptions, Spawned};
