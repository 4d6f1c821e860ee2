//! Cgroups for containers and pods, v1, v2 and hybrid hosts alike: the OCI runtime puts containers in them,
//! the kubelet makes the pod and QoS levels above them. Its own crate so that the kubelet reaches it without
//! linking the whole runtime.
//!
//! [`Cgroup`] creates, limits, freezes and removes one cgroup through cgroups-rs, with paths in cgroupfs or
//! systemd's `slice:prefix:name` form ([`resolve_path`]). Device rules go to the v1 devices controller, or on
//! v2 become an eBPF program: [`device_rules`] works out what the rules (then runc's defaults) amount to,
//! [`device_filter`] compiles, loads and attaches it. [`Error`] names the spec field or the cgroup.

mod cgroup;
pub mod device_filter;
pub mod device_rules;
mod error;

pub use cgroup::{check_device_rules, resolve_path, unified, Cgroup};
pub use error::{Error, Result};
