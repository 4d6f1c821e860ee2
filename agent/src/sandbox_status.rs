//! PodSandboxStatus (with its containers' statuses, as containerd reports them) and ListPodSandbox.

use basalt_proto::cri;
use serde_json::json;
use tonic::Status;

use crate::agent::Agent;
use crate::{status, view};

pub async fn pod_sandbox_status(
    agent: &Agent,
    req: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, Status> {
    let rec = agent
        .records
        .find_sandbox(&req.pod_sandbox_id)
        .ok_or_else(|| status::not_found("pod sandbox", &req.pod_sandbox_id))?;
    let state = agent.sandbox_state(&rec).await;
    let status = view::sandbox_status(&rec, state);
    let mut info = std::collections::HashMap::new();
    if req.verbose {
        let pid = std::fs::read_to_string(rec.shim_dir.join("shim.pid")).unwrap_or_default();
        info.insert(
            "info".to_owned(),
            json!({
                "pid": pid.trim().parse::<i64>().unwrap_or(0),
                "monitorDir": rec.shim_dir,
                "namespaces": rec.namespaces,
                "cgroupParent": rec.cgroup_parent,
                "cniNetwork": rec.cni_network,
                "runtimeHandler": rec.runtime_handler,
                "config": rec.config,
            })
            .to_string(),
        );
    }
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

pub async fn list_pod_sandbox(
    agent: &Agent,
    req: cri::ListPodSandboxRequest,
) -> Result<cri::ListPodSandboxResponse, Status> {
    Ok(cri::ListPodSandboxResponse {
        items: list(agent, req.filter).await,
    })
}

/// The sandboxes the filter selects, oldest first.
pub async fn list(agent: &Agent, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
    let mut out = Vec::new();
    for rec in agent.records.all_sandboxes() {
        if let Some(f) = &filter {
            if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
                continue;
            }
            if !view::labels_match(&rec.config.labels, &f.label_selector) {
                continue;
            }
        }
        let state = agent.sandbox_state(&rec).await;
        if let Some(want) = filter.as_ref().and_then(|f| f.state.as_ref()) {
            if want.state != state as i32 {
                continue;
            }
        }
        out.push(view::sandbox(rec, state));
    }
    out
}
