//! PodSandboxStatus (with its containers' statuses, as containerd reports them) and ListPodSandbox.

use basalt_proto::cri;
use serde_json::json;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::view;

impl Call for cri::PodSandboxStatusRequest {
    type Reply = cri::PodSandboxStatusResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let rec = agent.sandbox(&self.pod_sandbox_id)?;
        let state = agent.sandbox_state(&rec).await;
        let status = view::sandbox_status(&rec, state);
        let info = view::verbose_info(self.verbose, "info", || {
            let pid = std::fs::read_to_string(rec.shim_dir.join("shim.pid")).unwrap_or_default();
            json!({
                "pid": pid.trim().parse::<i64>().unwrap_or(0),
                "monitorDir": rec.shim_dir,
                "namespaces": rec.namespaces,
                "cgroupParent": rec.cgroup_parent,
                "cniNetwork": rec.cni_network,
                "runtimeHandler": rec.runtime_handler,
                "config": rec.config,
            })
        });
        let mut containers_statuses = Vec::new();
        for c in agent.records.containers_of(&rec.id) {
            let live = agent.live_status(&c).await;
            containers_statuses.push(view::container_status(&c, live.as_ref()));
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses,
            ..Default::default()
        })
    }
}

impl Call for cri::ListPodSandboxRequest {
    type Reply = cri::ListPodSandboxResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        // Oldest first.
        let mut out = Vec::new();
        for rec in agent.records.all_sandboxes() {
            if let Some(f) = &self.filter {
                if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
                    continue;
                }
                if !view::labels_match(&rec.config.labels, &f.label_selector) {
                    continue;
                }
            }
            let state = agent.sandbox_state(&rec).await;
            if let Some(want) = self.filter.as_ref().and_then(|f| f.state.as_ref()) {
                if want.state != state as i32 {
                    continue;
                }
            }
            out.push(view::sandbox(rec, state));
        }
        Ok(cri::ListPodSandboxResponse { items: out })
    }
}
