//! The state every CRI call shares, and what the calls ask of it: where a pod's and a container's files go,
//! a container's live status (from its monitor) and whether a sandbox is ready.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use basalt_proto::cri::PodSandboxState;
use basalt_shim::protocol::{ContainerStatus, Request};
use tonic::Status;

use crate::args::AgentConfig;
use crate::events::Events;
use crate::monitor;
use crate::status;
use crate::store::{ContainerRecord, Records, SandboxRecord, SandboxState};

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

    /// The container `id` names: its full ID or an unambiguous prefix (crictl's short IDs).
    pub fn container(&self, id: &str) -> Result<ContainerRecord, Status> {
        let c = self.records.find_container(id);
        c.ok_or_else(|| status::not_found("container", id))
    }

    /// The sandbox `id` names: its full ID or an unambiguous prefix.
    pub fn sandbox(&self, id: &str) -> Result<SandboxRecord, Status> {
        let s = self.records.find_sandbox(id);
        s.ok_or_else(|| status::not_found("pod sandbox", id))
    }

    /// The container `id` names and its sandbox, ready or not.
    pub fn container_with_sandbox(
        &self,
        id: &str,
    ) -> Result<(ContainerRecord, SandboxRecord), Status> {
        let c = self.container(id)?;
        let s = self.records.sandbox(&c.sandbox_id);
        let s = s.ok_or_else(|| status::not_found("pod sandbox", &c.sandbox_id))?;
        Ok((c, s))
    }

    /// The live status from the monitor, or the last one recorded when the monitor is gone.
    pub async fn live_status(&self, c: &ContainerRecord) -> Option<ContainerStatus> {
        if let Some(s) = &c.final_status {
            return Some(s.clone());
        }
        let sandbox = self.records.sandbox(&c.sandbox_id)?;
        match monitor::status_of(&sandbox.shim_dir, &c.id).await {
            Ok(s) => Some(s),
            Err(_) => monitor::exit_record(&sandbox.shim_dir, &c.id),
        }
    }

    /// A sandbox is ready while its monitor answers; one whose monitor died is NOTREADY.
    pub async fn sandbox_state(&self, rec: &SandboxRecord) -> PodSandboxState {
        if rec.state != SandboxState::Ready {
            return PodSandboxState::SandboxNotready;
        }
        match monitor::call(&rec.shim_dir, Request::Ping).await {
            Ok(_) => PodSandboxState::SandboxReady,
            Err(_) => PodSandboxState::SandboxNotready,
        }
    }
}
