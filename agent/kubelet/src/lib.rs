//! The native kubelet: runs pods from a manifest directory (static pods) and, given a kubeconfig, the pods
//! the cluster binds to its node, on any CRI runtime.
//!
//! It must never lose track of a pod because it restarted: everything it needs is in the runtime (labels and
//! annotations on sandboxes and containers) and in the manifests, so a restart adopts running pods.
//!
//! - Pods come from a [`source`] (the manifest dir and an HTTP URL, parsed by [`manifest`]) and, in API
//!   mode, from the [`cluster`], which also registers the Node, heartbeats and writes pod statuses back;
//!   a pod bound to the node is first checked by [`admission`] (room, node affinity, NoExecute taints).
//! - The [`Kubelet`] ([`manager`]) keeps one [`worker`] per pod, run with [`Settings`] and counted in
//!   [`Metrics`]; the [`pleg`] wakes a worker when its containers change; [`housekeeping`] tears down the
//!   pods no source wants any more (removed while the kubelet was down, or cut short by a restart).
//! - A worker drives the runtime through [`cri`] with configs from [`podconfig`] (for a pod seen through its
//!   [`context`]), [`volumes`], a [`pod_cgroup`] under its [`qos`] class and a [`userns`] range for
//!   `hostUsers: false`; it restarts with [`backoff`], checks [`probes`], runs [`hooks`] and computes the
//!   pod's [`status`]. What stops a pass is an [`Error`].
//! - [`api`] serves the kubelet API, with [`stream_proxy`] for exec/attach/port-forward and [`node`] for the
//!   eviction signals; [`quantity`] reads resource quantities.

pub mod admission;
pub mod api;
pub mod backoff;
pub mod cluster;
pub mod context;
pub mod cri;
mod error;
pub mod events;
pub mod hooks;
pub mod housekeeping;
pub mod manager;
pub mod manifest;
mod metrics;
pub mod mirror;
pub mod node;
pub mod pleg;
pub mod pod_cgroup;
pub mod podconfig;
pub mod probes;
pub mod qos;
pub mod quantity;
mod settings;
pub mod source;
pub mod status;
pub mod stream_proxy;
pub mod userns;
pub mod volumes;
pub mod worker;

pub use error::{ContainerCall, Error};
pub use manager::Kubelet;
pub use metrics::Metrics;
pub use settings::Settings;
