//! The node agent: the CRI gRPC server with its image store and per-pod monitors, and the native kubelet
//! (`basalt-kubelet`) that runs pods on it.
//!
//! It must never lose a running container because it crashed: all it knows is on disk under the data and run
//! directories, and a restart after SIGKILL recovers from there. The containers themselves belong to the pod
//! monitors (`basalt shim`), which outlive the agent.
//!
//! - Start-up: [`args`] is the command line and config, [`server`] opens the stores, runs [`recover`]y,
//!   starts the streaming server and serves the CRI (every connection through [`authority`], which lets
//!   stock gRPC clients name the socket as they like); [`kubelet`] starts the kubelet against it.
//! - The CRI: each call is a [`service::Call`] on its request type, in a module per call or small family, and
//!   [`service`] routes the gRPC methods to them; their shared state is the [`agent::Agent`], their records
//!   the [`store`], their errors gRPC statuses built by [`status`].
//!   - sandboxes: [`sandbox_run`], [`sandbox_stop`], [`sandbox_remove`], [`sandbox_status`] (and List);
//!   - containers: [`container_create`], [`container_start`], [`container_stop`], [`container_remove`],
//!     [`container_status`] (and List), [`container_update`], [`container_log`];
//!   - streams: [`exec`] (ExecSync, Exec, Attach, PortForward), served by [`stream_backend`];
//!   - stats: [`container_stats`], [`sandbox_stats`], [`metrics`] (by [`cadvisor`]'s names), read by [`usage`];
//!   - images: [`image_pull`], [`image_status`] (and List), [`image_remove`], [`image_fs_info`];
//!   - the runtime: [`runtime_status`] (Version, Status, RuntimeConfig), [`update_runtime_config`],
//!     [`events`] (GetContainerEvents).
//! - What the calls share: [`monitor`] talks to the pod monitors, [`network`] runs CNI, [`files`] writes a
//!   pod's shared files, [`spec`] generates a container's OCI spec, [`idmap`] idmaps a root for a pod user
//!   namespace, [`view`] shows records as the CRI does.

pub mod agent;
pub mod args;
pub mod authority;
pub mod cadvisor;
pub mod container_create;
pub mod container_log;
pub mod container_remove;
pub mod container_start;
pub mod container_stats;
pub mod container_status;
pub mod container_stop;
pub mod container_update;
pub mod events;
pub mod exec;
pub mod files;
pub mod idmap;
pub mod image_fs_info;
pub mod image_pull;
pub mod image_remove;
pub mod image_status;
pub mod kubelet;
pub mod metrics;
pub mod monitor;
pub mod network;
pub mod recover;
pub mod runtime_status;
pub mod sandbox_remove;
pub mod sandbox_run;
pub mod sandbox_stats;
pub mod sandbox_status;
pub mod sandbox_stop;
pub mod server;
pub mod service;
pub mod spec;
pub mod status;
pub mod store;
pub mod stream_backend;
pub mod update_runtime_config;
pub mod usage;
pub mod view;

pub use args::{AgentArgs, AgentConfig};
pub use server::{main, run};
