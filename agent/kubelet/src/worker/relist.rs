//! What the runtime has of the pod: one relist per pass, and the container GC that works from it.

use std::collections::HashMap;

use basalt_proto::cri;

use super::Worker;
use crate::podconfig::{self, CONTAINER_NAME};
use crate::status::{Observed, Relisted};
use crate::Error;

impl Worker {
    /// The sandbox's containers: the latest and the previous attempt per name with full status, and every
    /// exited one.
    pub(super) async fn relist(&mut self, sandbox_id: &str) -> Result<Relisted, Error> {
        let mut rt = self.cri.runtime.clone();
        let list = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox_id.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(Error::cri("ListContainers"))?
            .into_inner()
            .containers;
        let mut out = Relisted::default();
        // Per name: (attempt, id) of the latest and the one before.
        let mut latest: HashMap<String, [Option<(u32, String)>; 2]> = HashMap::new();
        for c in &list {
            let Some(name) = c.labels.get(CONTAINER_NAME) else {
                continue;
            };
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            if c.state() == cri::ContainerState::ContainerExited {
                out.exited.push((name.clone(), attempt, c.id.clone()));
            }
            let slot = latest.entry(name.clone()).or_default();
            let cand = Some((attempt, c.id.clone()));
            if slot[0].as_ref().is_none_or(|l| attempt > l.0) {
                slot[1] = std::mem::replace(&mut slot[0], cand);
            } else if slot[1].as_ref().is_none_or(|l| attempt > l.0) {
                slot[1] = cand;
            }
        }
        for (name, [last, prev]) in latest {
            let Some((attempt, id)) = last else { continue };
            if let Some(o) = observe(&mut rt, id, attempt).await {
                out.seen.insert(name.clone(), o);
            }
            if let Some((attempt, id)) = prev {
                if let Some(o) = observe(&mut rt, id, attempt).await {
                    out.previous.insert(name, o);
                }
            }
        }
        Ok(out)
    }

    /// Container GC: per container name, exited attempts beyond `max_dead_per_container` (newest kept) are
    /// removed; the latest attempt of every name is kept whatever its state, for status and restarts.
    pub(super) async fn gc(&mut self, relisted: &Relisted) -> usize {
        let keep = self.settings.max_dead_per_container as usize;
        let mut by_name: HashMap<&str, Vec<(u32, &str)>> = HashMap::new();
        for (name, attempt, id) in &relisted.exited {
            by_name
                .entry(name.as_str())
                .or_default()
                .push((*attempt, id.as_str()));
        }
        let mut rt = self.cri.runtime.clone();
        let mut removed = 0;
        for (name, mut dead) in by_name {
            dead.sort_by_key(|d| std::cmp::Reverse(d.0));
            let latest = relisted.seen.get(name).map(|s| s.id.as_str());
            for (_, id) in dead.into_iter().skip(keep) {
                if Some(id) == latest {
                    continue;
                }
                match rt
                    .remove_container(cri::RemoveContainerRequest {
                        container_id: id.to_owned(),
                    })
                    .await
                {
                    Ok(_) => removed += 1,
                    Err(e) => tracing::warn!(container = %id, "container GC: {}", e.message()),
                }
            }
        }
        removed
    }
}

/// One container's full status, with its termination message once it has exited; None when the runtime
/// does not know it (any more).
async fn observe(
    rt: &mut basalt_proto::RuntimeServiceClient<tonic::transport::Channel>,
    id: String,
    attempt: u32,
) -> Option<Observed> {
    let status = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .ok()?
        .into_inner()
        .status?;
    let state = cri::ContainerState::try_from(status.state)
        .unwrap_or(cri::ContainerState::ContainerUnknown);
    let termination_message = (state == cri::ContainerState::ContainerExited)
        .then(|| termination_message(&status))
        .flatten();
    Some(Observed {
        id,
        attempt,
        state,
        status,
        termination_message,
    })
}

/// The container's termination message: the file it wrote at terminationMessagePath (mounted from the pod
/// dir), capped at 4 KiB as upstream; with FallbackToLogsOnError an empty file on failure means the log tail.
fn termination_message(s: &cri::ContainerStatus) -> Option<String> {
    let host = s
        .mounts
        .iter()
        .find(|m| {
            Some(&m.container_path) == s.annotations.get(podconfig::TERMINATION_MESSAGE_PATH)
        })?
        .host_path
        .clone();
    let text = std::fs::read(&host).ok()?;
    let text = String::from_utf8_lossy(&text[..text.len().min(4096)]).into_owned();
    if !text.is_empty() {
        return Some(text);
    }
    let fallback = s
        .annotations
        .get(podconfig::TERMINATION_MESSAGE_POLICY)
        .is_some_and(|p| p == "FallbackToLogsOnError");
    if s.exit_code != 0 && fallback && !s.log_path.is_empty() {
        let log = std::fs::read_to_string(&s.log_path).ok()?;
        let lines: Vec<&str> = log.lines().collect();
        let tail: Vec<&str> = lines[lines.len().saturating_sub(80)..]
            .iter()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
            .collect();
        let t = tail.join("\n");
        // The last 2 KiB, cut at a character boundary.
        let mut start = t.len().saturating_sub(2048);
        while !t.is_char_boundary(start) {
            start += 1;
        }
        return Some(t[start..].to_owned());
    }
    None
}
