//! The disruption controller, as upstream's: the status of every PodDisruptionBudget, which the eviction
//! subresource and the scheduler's preemption read.
//!
//! - `minAvailable: N`: `N` healthy pods wanted of the pods the selector matches.
//! - `minAvailable: P%` or `maxUnavailable`: counted against the scale of the pods' controllers (a
//!   ReplicaSet's Deployment, a StatefulSet, …, read through their `scale` subresource); matching pods
//!   without a controller are left out of that count (upstream warns of them as UnmanagedPods), and a
//!   controller without a scale makes the budget fail safe (no disruptions allowed).
//! - A pod is healthy when Ready and not being deleted, and not just evicted: the eviction subresource
//!   records it in `status.disruptedPods`, and it stays unhealthy for 2 minutes unless it goes first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, ResourceExt};

use crate::informers::{Indexed, Informer};
use crate::owners;

/// How long an evicted pod not yet deleted counts as disrupted (upstream's `DeletionTimeout`).
const DISRUPTED_FOR: Duration = Duration::from_secs(120);

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: Client,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
) {
    let ctx = Arc::new(Ctx {
        client,
        pods: pods.indexed(),
    });
    let of_pod = budgets.store();
    let run = Controller::for_shared_stream(budgets.subscribe(), budgets.store())
        // Every budget of the pod's namespace: a relabelled pod must also leave the budget it no longer
        // matches, and its old labels are not at hand.
        .watches_shared_stream(pods.subscribe(), move |p: Arc<Pod>| {
            of_pod
                .state()
                .iter()
                .filter(|b| b.metadata.namespace == p.metadata.namespace)
                .map(|b| ObjectRef::from_obj(&**b))
                .collect::<Vec<_>>()
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("disruption", run).await;
}

/// Whether the budget's selector matches the pod: an empty selector matches every pod of the namespace
/// and a missing one none, as in policy/v1.
fn covers(b: &PodDisruptionBudget, p: &Pod) -> bool {
    owners::selector(b.spec.as_ref().and_then(|s| s.selector.as_ref()))
        .is_some_and(|s| s.matches(&owners::labels(&p.metadata)))
}

/// `v` of `total`: a number, or a percentage rounded up.
fn scaled(v: &IntOrString, total: i32) -> Option<i32> {
    match v {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let pct: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The resource of a controller kind whose scale counts pods.
fn scalable(kind: &str) -> Option<ApiResource> {
    let (group, version, plural) = match kind {
        "ReplicaSet" => ("apps", "v1", "replicasets"),
        "Deployment" => ("apps", "v1", "deployments"),
        "StatefulSet" => ("apps", "v1", "statefulsets"),
        "ReplicationController" => ("", "v1", "replicationcontrollers"),
        _ => return None,
    };
    Some(ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.into(),
        plural: plural.into(),
    })
}

/// Why the expected count cannot be known: the budget then fails safe.
#[derive(Debug, thiserror::Error)]
enum ScaleError {
    #[error("pod {0:?} is controlled by a {1}, which has no scale")]
    NotScalable(String, String),
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// The sum of the replicas the pods' controllers want, each controller counted once; a ReplicaSet
/// a Deployment controls counts as the Deployment.
async fn expected_scale(client: &Client, ns: &str, pods: &[Arc<Pod>]) -> Result<i32, ScaleError> {
    let mut controllers: BTreeSet<(String, String)> = BTreeSet::new();
    for p in pods {
        match owners::controller_of(&p.metadata) {
            Some(r) => {
                controllers.insert((r.kind.clone(), r.name.clone()));
            }
            None => {
                tracing::debug!(pod = %p.name_any(), "disruption: an unmanaged pod, not counted")
            }
        }
    }
    let mut total = 0;
    let mut seen = BTreeSet::new();
    for (kind, name) in controllers {
        let ar =
            scalable(&kind).ok_or_else(|| ScaleError::NotScalable(name.clone(), kind.clone()))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        let (kind, name, api) = if kind == "ReplicaSet" {
            let rs = api.get(&name).await?;
            match owners::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                Some(d) => {
                    let ar = scalable("Deployment").expect("a scalable kind");
                    (
                        d.kind.clone(),
                        d.name.clone(),
                        Api::namespaced_with(client.clone(), ns, &ar),
                    )
                }
                None => (kind, name, api),
            }
        } else {
            (kind, name, api)
        };
        if seen.insert((kind, name.clone())) {
            let scale = api.get_scale(&name).await?;
            total += scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        }
    }
    Ok(total)
}

fn ready(p: &Pod) -> bool {
    owners::is_ready(p) && p.metadata.deletion_timestamp.is_none()
}

fn condition(
    allowed: i32,
    reason: Option<&str>,
    now: Timestamp,
    old: Option<&Condition>,
) -> Condition {
    let (status, reason) = match reason {
        Some(r) => ("False", r),
        None if allowed > 0 => ("True", "SufficientPods"),
        None => ("False", "InsufficientPods"),
    };
    let unchanged = old.filter(|c| c.status == status && c.reason == reason);
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: None,
        last_transition_time: unchanged.map_or(Time(now), |c| c.last_transition_time.clone()),
    }
}

async fn reconcile(b: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = b.namespace().unwrap_or_default();
    let name = b.name_any();
    let now = Timestamp::now();
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .in_namespace(&ns)
        .into_iter()
        .filter(|p| covers(&b, p))
        .collect();
    let old = b.status.clone().unwrap_or_default();

    // Evictions recorded by the apiserver: a pod still there (not deleting) within the timeout stays
    // disrupted; the earliest such deadline wakes the budget again.
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    let mut recheck: Option<Duration> = None;
    for (pod, at) in old.disrupted_pods.clone().unwrap_or_default() {
        let present = pods
            .iter()
            .any(|p| p.name_any() == pod && p.metadata.deletion_timestamp.is_none());
        let age = now.duration_since(at.0);
        let left = SignedDuration::try_from(DISRUPTED_FOR)
            .unwrap_or_default()
            .checked_sub(age)
            .unwrap_or_default();
        if present && left.is_positive() {
            let left = Duration::try_from(left).unwrap_or_default();
            recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
            disrupted.insert(pod, at);
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| ready(p) && !disrupted.contains_key(&p.name_any()))
        .count() as i32;

    let spec = b.spec.clone().unwrap_or_default();
    let counts = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => expected_scale(&ctx.client, &ns, &pods)
            .await
            .map(|expected| {
                let max = scaled(max, expected).unwrap_or(0);
                (expected, (expected - max).max(0))
            }),
        (None, Some(IntOrString::Int(n))) => Ok((pods.len() as i32, *n)),
        (None, Some(min)) => expected_scale(&ctx.client, &ns, &pods)
            .await
            .map(|expected| (expected, scaled(min, expected).unwrap_or(expected))),
        (None, None) => Ok((pods.len() as i32, 0)),
    };
    let old_condition = old
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let next = match counts {
        Ok((expected, desired)) => {
            let allowed = (healthy - desired).max(0);
            PodDisruptionBudgetStatus {
                current_healthy: Some(healthy),
                desired_healthy: Some(desired),
                expected_pods: Some(expected),
                disruptions_allowed: Some(allowed),
                disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
                observed_generation: b.metadata.generation,
                conditions: Some(vec![condition(allowed, None, now, old_condition)]),
            }
        }
        Err(e) => {
            tracing::info!(budget = %format!("{ns}/{name}"), error = %e, "disruption: failing safe");
            PodDisruptionBudgetStatus {
                current_healthy: Some(healthy),
                disruptions_allowed: Some(0),
                disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
                observed_generation: b.metadata.generation,
                conditions: Some(vec![condition(0, Some("SyncFailed"), now, old_condition)]),
                desired_healthy: old.desired_healthy,
                expected_pods: old.expected_pods,
            }
        }
    };
    if b.status.as_ref() != Some(&next) {
        let mut obj = (*b).clone();
        obj.status = Some(next);
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&name, &PostParams::default(), &obj)
            .await
        {
            Ok(_) => {}
            // Changed meanwhile (an eviction): the watch brings it back here.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(recheck.map_or(Action::await_change(), Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
        assert_eq!(scaled(&IntOrString::String("25%".into()), 4), Some(1));
        assert_eq!(scaled(&IntOrString::Int(2), 10), Some(2));
        assert_eq!(scaled(&IntOrString::String("half".into()), 4), None);
    }
}
