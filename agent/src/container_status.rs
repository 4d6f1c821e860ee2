//! ContainerStatus and ListContainers: the record, with the state the monitor reports (or the exit it
//! recorded when it is gone).

use std::collections::{BTreeSet, HashMap};

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::ContainerRecord;
use crate::{monitor, view};

impl Call for cri::ContainerStatusRequest {
    type Reply = cri::ContainerStatusResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let c = agent.container(&self.container_id)?;
        let live = agent.live_status(&c).await;
        let status = view::container_status(&c, live.as_ref());
        let info = view::verbose_info(self.verbose, "info", || {
            serde_json::json!({
                "sandboxID": c.sandbox_id,
                "pid": live.as_ref().map(|s| s.pid).unwrap_or(0),
                "bundle": c.bundle,
                "rootfs": c.rootfs,
                "cgroupPath": live.as_ref().map(|s| s.cgroup_path.clone()).unwrap_or_default(),
                "config": c.config,
            })
        });
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }
}

impl Call for cri::ListContainersRequest {
    type Reply = cri::ListContainersResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        // Oldest first.
        let mut recs: Vec<ContainerRecord> = agent
            .records
            .containers
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        recs.sort_by_key(|c| c.created_at);
        if let Some(f) = &self.filter {
            recs.retain(|c| {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                    && view::labels_match(&c.config.labels, &f.label_selector)
            });
        }
        // One List per monitor rather than one Status per container.
        let mut live = HashMap::new();
        let sandboxes: BTreeSet<String> = recs
            .iter()
            .filter(|c| c.final_status.is_none())
            .map(|c| c.sandbox_id.clone())
            .collect();
        for sid in sandboxes {
            if let Some(s) = agent.records.sandbox(&sid) {
                if let Ok(list) = monitor::list(&s.shim_dir).await {
                    live.extend(list.into_iter().map(|st| (st.id.clone(), st)));
                }
            }
        }
        let mut out = Vec::new();
        for c in recs {
            let st = c
                .final_status
                .clone()
                .or_else(|| live.remove(&c.id))
                .or_else(|| {
                    let s = agent.records.sandbox(&c.sandbox_id)?;
                    monitor::exit_record(&s.shim_dir, &c.id)
                });
            let state = view::cri_state(st.as_ref());
            if let Some(want) = self.filter.as_ref().and_then(|f| f.state.as_ref()) {
                if want.state != state as i32 {
                    continue;
                }
            }
            out.push(view::container(c, state));
        }
        Ok(cri::ListContainersResponse { containers: out })
    }
}
