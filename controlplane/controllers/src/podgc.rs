//! The pod garbage collector (`pod-garbage-collector-controller`), as upstream's: every 20 s it
//! - deletes the oldest terminated pods (Succeeded or Failed) beyond `--terminated-pod-gc-threshold`
//!   (12,500 by default; 0 turns this off), evicted ones first;
//! - fails and force-deletes pods bound to a node that no longer exists, once the node has been missing
//!   for 40 s and the apiserver confirms it (a node informer may lag behind a node just made);
//! - force-deletes terminating pods no node was ever given (no kubelet will confirm their end);
//! - force-deletes terminating pods on a node that is not Ready and tainted `out-of-service` (the
//!   operator's word that the node is gone for good).
//!
//! A pod failed by the collector gets the condition `DisruptionTarget` (reason `DeletionByPodGC`) first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::informers::Informer;

/// How often the collector looks (upstream's `gcCheckPeriod`).
const PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods are orphans (upstream's `quarantineTime`).
const QUARANTINE: Duration = Duration::from_secs(40);
const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Runs the collector until the future is dropped.
pub async fn run(
    client: Client,
    threshold: usize,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
) {
    let mut gc = Collector {
        client,
        threshold,
        pods: pods.store(),
        nodes: nodes.store(),
        missing_since: HashMap::new(),
    };
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        gc.pass().await;
        crate::metrics::record("pod-garbage-collector", true);
    }
}

struct Collector {
    client: Client,
    threshold: usize,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Nodes pods are bound to that the store does not show, and since when.
    missing_since: HashMap<String, Instant>,
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn terminated(p: &Pod) -> bool {
    matches!(phase(p), Some("Succeeded" | "Failed"))
}

fn node_name(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn evicted(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

/// The terminated pods beyond `threshold`, the ones to go first first: evicted, then oldest.
pub fn over_threshold(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<Arc<Pod>> = pods.iter().filter(|p| terminated(p)).cloned().collect();
    let surplus = done.len().saturating_sub(threshold);
    done.sort_by_key(|p| {
        (
            !evicted(p),
            p.metadata.creation_timestamp.as_ref().map(|t| t.0),
        )
    });
    done.truncate(surplus);
    done
}

fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn out_of_service(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .any(|t| t.key == OUT_OF_SERVICE)
}

impl Collector {
    async fn pass(&mut self) {
        let pods = self.pods.state();
        for p in over_threshold(&pods, self.threshold) {
            self.delete(&p, None).await;
        }
        let nodes: HashMap<String, Arc<Node>> = self
            .nodes
            .state()
            .into_iter()
            .map(|n| (n.name_any(), n))
            .collect();

        // Orphans: bound to a node missing for the quarantine and confirmed gone.
        let wanted: HashSet<&str> = pods
            .iter()
            .filter_map(|p| node_name(p))
            .filter(|n| !nodes.contains_key(*n))
            .collect();
        self.missing_since
            .retain(|n, _| wanted.contains(n.as_str()));
        let now = Instant::now();
        let mut gone = HashSet::new();
        for n in wanted {
            let since = *self.missing_since.entry(n.to_string()).or_insert(now);
            if now.duration_since(since) < QUARANTINE {
                continue;
            }
            match Api::<Node>::all(self.client.clone()).get_opt(n).await {
                Ok(None) => {
                    gone.insert(n.to_string());
                }
                Ok(Some(_)) => {
                    self.missing_since.remove(n);
                }
                Err(e) => tracing::debug!(node = n, error = %e, "pod gc: node lookup"),
            }
        }
        for p in &pods {
            let on = node_name(p);
            let terminating = p.metadata.deletion_timestamp.is_some();
            let out = on
                .and_then(|n| nodes.get(n))
                .is_some_and(|n| !ready(n) && out_of_service(n));
            if on.is_some_and(|n| gone.contains(n)) {
                self.delete(p, Some("PodGC: node no longer exists")).await;
            } else if terminating && on.is_none() {
                self.delete(p, None).await;
            } else if terminating && out {
                self.delete(p, Some("PodGC: node is out of service")).await;
            }
        }
    }

    /// Force-deletes the pod (guarded by its uid); with `why`, fails it first unless it already ended.
    async fn delete(&self, p: &Pod, why: Option<&str>) {
        let ns = p.namespace().unwrap_or_default();
        let name = p.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if let Some(message) = why.filter(|_| !terminated(p)) {
            let now = Timestamp::now().to_string();
            let status = json!({"status": {"phase": "Failed", "conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": message, "lastTransitionTime": now}]}});
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&status))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "pod gc: fail pod");
            }
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {
                tracing::info!(pod = %format!("{ns}/{name}"), reason = why.unwrap_or("terminated"), "pod gc: deleted")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => tracing::warn!(pod = %name, error = %e, "pod gc: delete"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, phase: &str, created: &str, reason: Option<&str>) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "creationTimestamp": created},
                "status": {"phase": phase, "reason": reason},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_oldest_terminated_go_first_evicted_before_them() {
        let pods = vec![
            pod("running", "Running", "2026-01-01T00:00:00Z", None),
            pod("old", "Succeeded", "2026-01-02T00:00:00Z", None),
            pod("new", "Failed", "2026-01-04T00:00:00Z", None),
            pod("evicted", "Failed", "2026-01-05T00:00:00Z", Some("Evicted")),
            pod("mid", "Succeeded", "2026-01-03T00:00:00Z", None),
        ];
        let names = |v: Vec<Arc<Pod>>| v.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(over_threshold(&pods, 2)), ["evicted", "old"]);
        assert_eq!(names(over_threshold(&pods, 4)), Vec::<String>::new());
        assert_eq!(
            names(over_threshold(&pods, 0)),
            Vec::<String>::new(),
            "0 turns it off"
        );
    }
}
