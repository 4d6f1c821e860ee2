//! StopPodSandbox, and the teardown RunPodSandbox also uses to undo a half-made sandbox: containers,
//! network, monitor, namespaces and shm go; the records stay until RemovePodSandbox.

use basalt_proto::cri;
use basalt_shim::protocol::Request;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::{now_ns, SandboxRecord, SandboxState, Survive};
use crate::{files, monitor, network, status};

impl Call for cri::StopPodSandboxRequest {
    type Reply = cri::StopPodSandboxResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        stop(agent, &self.pod_sandbox_id).await?;
        Ok(cri::StopPodSandboxResponse {})
    }
}

pub async fn stop(agent: &Agent, id: &str) -> Result<(), Status> {
    // Kubernetes 1.33: stopping an unknown sandbox is not an error.
    let Some(rec) = agent.records.find_sandbox(id) else {
        return Ok(());
    };
    let lock = agent.records.lock_for(&rec.id);
    let _guard = lock.lock().await;
    let mut rec = agent.records.sandbox(&rec.id).unwrap_or(rec);
    let result = teardown(agent, &mut rec).await;
    agent
        .records
        .put_sandbox(&rec, Survive::PowerLoss)
        .map_err(|e| status::internal("recording the sandbox", e))?;
    for c in agent.records.containers_of(&rec.id) {
        agent.events.container(
            &c.id,
            &rec.id,
            cri::ContainerEventType::ContainerStoppedEvent,
        );
    }
    result
}

/// Stops everything of a sandbox but its records: containers, network, monitor, namespaces, shm.
/// Idempotent; each step is recorded as done so that a crash in between resumes.
pub async fn teardown(agent: &Agent, rec: &mut SandboxRecord) -> Result<(), Status> {
    // Containers' last statuses move into their records before the monitor goes.
    if rec.shim_dir.join("shim.sock").exists() {
        for c in agent.records.containers_of(&rec.id) {
            let _ = monitor::call(
                &rec.shim_dir,
                Request::Stop {
                    id: c.id.clone(),
                    timeout_secs: 0,
                    signal: None,
                },
            )
            .await;
        }
        if let Ok(list) = monitor::list(&rec.shim_dir).await {
            for s in list {
                if let Some(mut c) = agent.records.container(&s.id) {
                    c.final_status = Some(s);
                    let _ = agent.records.put_container(&c, Survive::PowerLoss);
                }
            }
        }
    }
    network::del(agent, rec).await?;
    agent
        .records
        .put_sandbox(rec, Survive::PowerLoss)
        .map_err(|e| status::internal("recording the sandbox", e))?;
    if rec.shim_dir.exists() {
        let shut_down = monitor::call(&rec.shim_dir, Request::Shutdown)
            .await
            .is_ok();
        for mut c in agent.records.containers_of(&rec.id) {
            if shut_down {
                // Containers the monitor never reported get their exit records from disk.
                if c.final_status.is_none() {
                    c.final_status = monitor::exit_record(&rec.shim_dir, &c.id);
                    let _ = agent.records.put_container(&c, Survive::PowerLoss);
                }
                continue;
            }
            // The monitor died: its containers may still run, with runtime state and cgroups of their own.
            // The runtime library kills and removes them as `runc delete --force` would.
            let (root, id) = (agent.runtime_root.clone(), c.id.clone());
            let deleted = tokio::task::spawn_blocking(move || {
                match basalt_runtime::Container::load(&root, &id) {
                    Ok(container) => container.delete(true),
                    // No state: never created, or already gone.
                    Err(_) => Ok(()),
                }
            })
            .await
            .map_err(status::from_join)?;
            if let Err(e) = deleted {
                return Err(status::internal(
                    &format!("removing container {} of a dead monitor", c.id),
                    e,
                ));
            }
            if c.final_status.is_none() {
                c.final_status = monitor::exit_record(&rec.shim_dir, &c.id).or_else(|| {
                    Some(basalt_shim::protocol::ContainerStatus {
                        id: c.id.clone(),
                        state: basalt_shim::protocol::State::Exited,
                        pid: 0,
                        created_at: c.created_at,
                        started_at: 0,
                        finished_at: now_ns(),
                        // As kubelet reports a container whose runtime lost track of it.
                        exit_code: 255,
                        oom_killed: false,
                        cgroup_path: String::new(),
                    })
                });
                let _ = agent.records.put_container(&c, Survive::PowerLoss);
            }
        }
        monitor::cleanup(rec.shim_dir.clone()).await?;
    }
    if rec.shm_mounted {
        files::unmount_shm(&rec.pod_dir.join("shm"))
            .map_err(|e| status::internal("unmounting the pod's /dev/shm", e))?;
        rec.shm_mounted = false;
    }
    // Whether or not a record names it: a crash may have come between making it and recording it.
    let netns = network::netns_pin(&rec.pod_dir);
    basalt_shim::pin::unpin_network(&netns)
        .map_err(|e| status::internal("unmounting the pod's network namespace", e))?;
    if rec.namespaces.get("net") == Some(&netns) {
        rec.namespaces.remove("net");
    }
    rec.state = SandboxState::NotReady;
    Ok(())
}
