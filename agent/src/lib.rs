//! The node agent: a native kubelet (static pods, sync loop, probes, volumes) and the CRI gRPC server with its
//! image store and per-pod monitors.
//!
//! It must never lose a running container because it crashed: all it knows is on disk under the data and run
//! directories, and a restart after SIGKILL recovers from there. The containers themselves belong to the pod
//! monitors (`basalt shim`), which outlive the agent.
//!
//! The CRI server: [`args`] is the command line, [`server`] binds the socket and the streaming server,
//! [`agent`] is the state the calls share, [`store`] is what the agent remembers of sandboxes and containers,
//! [`sandbox`] and [`container`] implement RuntimeService on top of the monitors, [`image`] implements
//! ImageService on the image store, [`stats`] reads cgroups, [`stream`] connects the streaming server to the
//! monitors, [`recover`] is start-up recovery, [`idmap`] idmaps a container's root for a pod user namespace,
//! and [`status`] maps errors to gRPC codes.

pub mod agent;
pub mod args;
pub mod container;
pub mod events;
pub mod files;
pub mod idmap;
pub mod image;
pub mod monitor;
pub mod recover;
pub mod runtime_service;
pub mod sandbox;
pub mod server;
pub mod spec;
pub mod stats;
pub mod status;
pub mod store;
pub mod stream;

pub use args::{AgentArgs, AgentConfig};
pub use server::main;
