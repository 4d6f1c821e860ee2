//! The replicaset controller, as upstream's: it adopts the orphan pods its selector matches, creates and
//! deletes pods until the active ones number `spec.replicas`, and reports replicas, fully labelled, ready
//! and available pods and the generation it saw.
//!
//! Pods it creates or deletes are remembered ([`Expectations`]) until the pod reflector shows them.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};

use crate::expectations::{self, Expectations, Owner};
use crate::informers::{Indexed, Informer};
use crate::owners;

/// Upstream's burst: at most this many creations or deletions in one sync.
const BURST: usize = 500;

pub use crate::owners::SyncError as Error;

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
    expectations: Arc<Expectations>,
    events: basalt_events::Recorder,
}

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>, replicasets: Arc<Informer<ReplicaSet>>) {
    let (pods, pod_events, expectations) = expectations::watch_pods(&pods);
    let ctx = Arc::new(Ctx {
        events: basalt_events::Recorder::new(client.clone(), "replicaset-controller", None),
        client: client.clone(),
        pods,
        expectations,
    });
    let controller = Controller::for_shared_stream(replicasets.subscribe(), replicasets.store());
    let replicasets = replicasets.store();
    // A pod wakes its controller, or, an orphan, every ReplicaSet whose selector matches it (adoption).
    let run = controller
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            owners::to_wake(&pod.metadata, "ReplicaSet", &replicasets, |rs| {
                &rs.spec.selector
            })
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("replicaset", run).await;
}

/// Upstream's order for scale-down: unassigned before assigned, pending before running, not ready before
/// ready, then the most recently created first.
pub(crate) fn deletion_rank(p: &Pod) -> (bool, u8, bool, std::cmp::Reverse<i64>) {
    let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let created = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some(),
        phase,
        owners::is_ready(p),
        std::cmp::Reverse(created),
    )
}

fn new_pod(rs: &ReplicaSet) -> Pod {
    let template = rs.spec.template.clone().unwrap_or_default();
    owners::templated_pod("apps/v1", "ReplicaSet", &rs.metadata, template)
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let key = format!("{ns}/{name}");
    let api_rs: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let api_pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = &rs.spec;
    let Some(selector) = owners::selector(Some(&spec.selector)) else {
        return Ok(Action::await_change());
    };

    let deleting = rs.metadata.deletion_timestamp.is_some();
    let me = owners::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    let (in_ns, owned) =
        owners::claim_pods(&ctx.pods, &api_pods, &me, &selector, !deleting, |_| true).await?;
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| owners::is_active(p)).collect();
    let owner = Owner {
        events: &ctx.events,
        reference: basalt_events::reference("apps/v1", "ReplicaSet", &rs.metadata, None),
    };

    if !deleting && ctx.expectations.satisfied(&key, &in_ns) {
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        if active.len() < want {
            let missing = (want - active.len()).min(BURST);
            let pod = new_pod(&rs);
            ctx.expectations
                .create(&api_pods, &key, &owner, std::iter::repeat_n(pod, missing))
                .await?;
        } else if active.len() > want {
            let mut victims: Vec<&Arc<Pod>> = active.clone();
            victims.sort_by_key(|p| deletion_rank(p));
            victims.truncate((active.len() - want).min(BURST));
            let victims: Vec<&Pod> = victims.iter().map(|p| &***p).collect();
            ctx.expectations
                .delete(&api_pods, &key, &owner, &victims)
                .await?;
        }
    } else if deleting {
        ctx.expectations.forget(&key);
    }

    // Status from the pods as they were seen at the start, as upstream computes it.
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .map(owners::labels)
        .unwrap_or_default();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let l = owners::labels(&p.metadata);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| owners::is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| owners::is_available(p, min_ready, now))
        .count();
    let status = rs.status.clone().unwrap_or_default();
    let generation = rs.metadata.generation;
    let changed = status.replicas != active.len() as i32
        || status.fully_labeled_replicas.unwrap_or(0) != fully_labeled as i32
        || status.ready_replicas.unwrap_or(0) != ready as i32
        || status.available_replicas.unwrap_or(0) != available as i32
        || status.observed_generation != generation;
    if changed {
        // An update, not a patch: upstream's role grants `update` on replicasets/status only.
        let nz = |n: usize| (n > 0).then_some(n as i32);
        let mut next = (*rs).clone();
        next.status = Some(ReplicaSetStatus {
            replicas: active.len() as i32,
            fully_labeled_replicas: nz(fully_labeled),
            ready_replicas: nz(ready),
            available_replicas: nz(available),
            observed_generation: generation,
            ..status
        });
        match api_rs
            .replace_status(&name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => {}
            // Gone, or changed since the reflector saw it: the watch brings the newer one back here.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {
                return Ok(Action::await_change())
            }
            Err(e) => return Err(e.into()),
        }
    }
    // A pod ready but not yet for minReadySeconds becomes available without any event: look again then.
    if min_ready > 0 && ready > available {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}
