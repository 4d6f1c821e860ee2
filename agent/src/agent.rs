//! The state every CRI call shares, and where a pod's and a container's files go.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::args::AgentConfig;
use crate::events::Events;
use crate::monitor;
use crate::store::Records;

/// Everything the CRI services share.
pub struct Agent {
    pub args: AgentConfig,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub records: Arc<Records>,
    pub images: Arc<basalt_images::Store>,
    pub hosts: basalt_images::Hosts,
    pub cni: basalt_cni::caller::Cni,
    /// State root of the runtime library (one directory per container), shared by all monitors.
    pub runtime_root: PathBuf,
    pub streaming: basalt_streaming::Server,
    pub events: Events,
    /// Set by UpdateRuntimeConfig.
    pub pod_cidr: Mutex<Option<String>>,
    pub monitor_joins: monitor::Joins,
}

impl Agent {
    /// A short name: the monitor's socket lives inside, and a unix socket path must fit in 108 bytes.
    pub fn shim_dir(&self, sandbox_id: &str) -> PathBuf {
        self.run_dir
            .join("shims")
            .join(&sandbox_id[..sandbox_id.len().min(16)])
    }
    pub fn pod_dir(&self, sandbox_id: &str) -> PathBuf {
        self.run_dir.join("pods").join(sandbox_id)
    }
    pub fn bundle_dir(&self, container_id: &str) -> PathBuf {
        self.run_dir.join("bundles").join(container_id)
    }
}
