//! Basalt's own OCI low-level runtime: the library the pod monitor calls to create containers, and the
//! runc-compatible CLI (`basalt runtime …`, or the binary named `basalt-runc`).
//!
//! It must never link C for policy (no libseccomp: the seccomp BPF compiler is pure Rust) and must never leave
//! a cgroup, mount, state directory or process behind after a failure or `delete`.
//!
//! A container's life: [`spec`] loads and checks `config.json` (errors name the JSON path), [`container`] clones
//! the init process into its namespaces and puts it in its [`cgroup`], [`init`] (running inside the new
//! namespaces) builds the root filesystem with [`mounts`] and [`devices`], sets up the [`process`] and waits on the
//! exec FIFO until `start`; [`state`] is what survives on disk between CLI calls, in runc's format.

pub mod cli;
pub mod container;
pub mod devices;
pub mod error;
pub mod exec;
pub mod hooks;
pub mod init;
pub mod mount_api;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod spec;
pub mod state;
mod sync;
pub mod tty;

/// The runtime's cgroup layer, a crate of its own so that the kubelet reaches it without the runtime.
pub use basalt_cgroups as cgroup;
pub use container::{Container, CreateOptions};
pub use error::{Error, Result};
pub use state::{State, Status};
