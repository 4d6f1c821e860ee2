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
//! - for the agent: [`client::Client`], [`spawn()`](spawn::spawn) and [`cleanup()`](pin::cleanup).

pub mod cli;
pub mod client;
mod daemon;
mod exec;
pub mod logs;
mod monitor;
pub mod pin;
pub mod protocol;
mod server;
pub mod spawn;
mod stdio;

pub use cli::main;
pub use pin::{cleanup, Namespace};
pub use spawn::{spawn, SpawnError, SpawnOptions, Spawned};

/// What the monitor prints on stdout once it serves: its pid and the pinned namespace paths.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub pid: i32,
    pub namespaces: std::collections::BTreeMap<String, std::path::PathBuf>,
}

/// The files under a monitor's directory.
pub mod paths {
    use std::path::{Path, PathBuf};

    pub fn socket(dir: &Path) -> PathBuf {
        dir.join("shim.sock")
    }
    pub fn pid_file(dir: &Path) -> PathBuf {
        dir.join("shim.pid")
    }
    pub fn log(dir: &Path) -> PathBuf {
        dir.join("shim.log")
    }
    /// Where a container's last known [`crate::protocol::ContainerStatus`] is kept.
    pub fn status(dir: &Path, id: &str) -> PathBuf {
        dir.join("containers").join(id).join("status.json")
    }
}
