//! The daemonset controller, as upstream's: one pod of the template on every node that should run it.
//!
//! A node should run the pod when it matches the template's nodeSelector and required node affinity and
//! every NoSchedule and NoExecute taint on it is tolerated; a pod already there may keep running while
//! only its NoExecute taints are tolerated. Daemon pods get upstream's default tolerations (not-ready and
//! unreachable NoExecute; the pressure and unschedulable NoSchedule taints; network-unavailable with
//! hostNetwork) and are pinned to their node by a required node affinity on `metadata.name`, so the
//! scheduler binds them. A failed daemon pod is deleted and made again; of two on a node the oldest stays.
//!
//! Templates are kept as ControllerRevisions; a pod carries the hash of its template in
//! `controller-revision-hash`. RollingUpdate replaces old pods while at most `maxUnavailable` (default 1)
//! of the desired pods are unavailable; OnDelete leaves it to the user. `maxSurge` is not honoured yet: the
//! old pod always goes before the new one comes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::expectations::{self, Expectations, Owner};
use crate::informers::{Indexed, Informer};
use crate::owners;
use crate::revisions::{self, HASH_LABEL};

/// The label upstream still sets with the DaemonSet's generation (deprecated, read by older tools).
const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Revision(#[from] revisions::Error),
}

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Arc<Expectations>,
    events: basalt_events::Recorder,
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: Client,
    daemonsets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
) {
    let (pod_store, pod_events, expectations) = expectations::watch_pods(&pods);
    let ctx = Arc::new(Ctx {
        events: basalt_events::Recorder::new(client.clone(), "daemonset-controller", None),
        client,
        pods: pod_store,
        nodes: nodes.store(),
        revisions: revisions.store(),
        expectations,
    });
    let sets = daemonsets.store();
    let all = daemonsets.store();
    let run = Controller::for_shared_stream(daemonsets.subscribe(), daemonsets.store())
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            owners::to_wake(&pod.metadata, "DaemonSet", &sets, |d| &d.spec.selector)
        })
        // A node added, relabelled or tainted may change where every DaemonSet runs.
        .watches_shared_stream(nodes.subscribe(), move |_: Arc<Node>| {
            all.state()
                .iter()
                .map(|d| ObjectRef::from_obj(&**d))
                .collect::<Vec<_>>()
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("daemonset", run).await;
}

fn toleration(key: &str, effect: &str) -> Toleration {
    Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    }
}

/// Upstream's tolerations for daemon pods, each added unless the template has one of its key and effect.
fn with_daemon_tolerations(spec: &mut k8s_openapi::api::core::v1::PodSpec) {
    let mut add = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        add.push(toleration(
            "node.kubernetes.io/network-unavailable",
            "NoSchedule",
        ));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for t in add {
        if !tolerations
            .iter()
            .any(|have| have.key == t.key && have.effect == t.effect)
        {
            tolerations.push(t);
        }
    }
}

/// The template as the pods get it: labelled with the hash and generation, with the daemon tolerations.
fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds.spec.template.clone();
    let meta = t.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    if let Some(g) = ds.metadata.generation {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), g.to_string());
    }
    with_daemon_tolerations(t.spec.get_or_insert_with(Default::default));
    t
}

/// The daemon pod for `node`: the template, pinned to the node by a required affinity on its name (which
/// replaces the template's required terms, already checked against the node).
fn new_pod(ds: &DaemonSet, template: &PodTemplateSpec, node: &str) -> Pod {
    let mut template = template.clone();
    let spec = template.spec.get_or_insert_with(Default::default);
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(pin);
    owners::templated_pod("apps/v1", "DaemonSet", &ds.metadata, template)
}

/// Whether the node should run the daemon pod, and whether one already there may stay.
fn placement(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let Some(spec) = template.spec.as_ref() else {
        return (false, false);
    };
    let no_labels = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    if !basalt_scheduling::RequiredNodeAffinity::of(spec).matches(labels, name) {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated =
        |effect: &str| basalt_scheduling::untolerated(taints, tolerations, &[effect]).is_some();
    let stay = !untolerated("NoExecute");
    (stay && !untolerated("NoSchedule"), stay)
}

/// The node a daemon pod is for: where it is bound, or where its affinity pins it.
fn node_of(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

fn failed(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

/// `maxUnavailable` of a RollingUpdate against `desired` pods: a number or a percentage rounded up, at
/// least one.
fn max_unavailable(ds: &DaemonSet, desired: i32) -> i32 {
    let v = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.max_unavailable.clone());
    let n = match v {
        None => 1,
        Some(IntOrString::Int(i)) => i,
        Some(IntOrString::String(s)) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((pct * i64::from(desired) + 99) / 100) as i32
        }
    };
    n.max(1)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = format!("{ns}/{name}");
    let uid = ds.uid().unwrap_or_default();
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let Some(selector) = owners::selector(Some(&ds.spec.selector)) else {
        return Ok(Action::await_change());
    };
    let api_pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let api_revisions: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    if deleting {
        ctx.expectations.forget(&key);
        return Ok(Action::await_change());
    }

    let history = revisions::owned(&ctx.revisions, &ns, &uid);
    let owner_of_history = revisions::Owner {
        kind: "DaemonSet",
        meta: &ds.metadata,
        labels: ds.spec.selector.match_labels.clone(),
        template: &ds.spec.template,
        collisions: ds.status.as_ref().and_then(|s| s.collision_count),
    };
    let update = revisions::current(&api_revisions, &owner_of_history, &history).await?;
    let update_name = update.name_any();
    let hash = update_name
        .strip_prefix(&format!("{name}-"))
        .unwrap_or(&update_name)
        .to_string();
    let template = pod_template(&ds, &hash);

    // The pods, by node; orphans the selector matches are adopted.
    let me = owners::controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let (in_ns, owned) =
        owners::claim_pods(&ctx.pods, &api_pods, &me, &selector, true, |_| true).await?;
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in owned {
        if let Some(n) = node_of(&p) {
            by_node.entry(n).or_default().push(p);
        }
    }

    let owner = Owner {
        events: &ctx.events,
        reference: basalt_events::reference("apps/v1", "DaemonSet", &ds.metadata, None),
    };
    let now = Timestamp::now();
    let min_ready = ds.spec.min_ready_seconds.unwrap_or(0);
    let nodes = ctx.nodes.state();
    let (mut create, mut delete): (Vec<String>, Vec<Arc<Pod>>) = (Vec::new(), Vec::new());
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        ..Default::default()
    };
    // Rolling update candidates: old pods on nodes that should run one, available ones last.
    let mut stale: Vec<Arc<Pod>> = Vec::new();
    for node in &nodes {
        let node_name = node.name_any();
        let (run, stay) = placement(&template, node);
        let mut pods = by_node.remove(&node_name).unwrap_or_default();
        // A pod still terminating holds its node (its host ports, its state): the next comes after it.
        let exists = !pods.is_empty();
        pods.retain(|p| p.metadata.deletion_timestamp.is_none());
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        if run {
            status.desired_number_scheduled += 1;
        }
        if !pods.is_empty() && !run {
            status.number_misscheduled += 1;
        }
        if !stay {
            delete.extend(pods);
            continue;
        }
        // Failed pods go (and are made again); of several, the oldest stays.
        let (dead, mut live): (Vec<_>, Vec<_>) = pods.into_iter().partition(|p| failed(p));
        if !dead.is_empty() {
            let names: Vec<String> = dead.iter().map(|p| p.name_any()).collect();
            owner.event(
                basalt_events::Type::Warning,
                "FailedDaemonPod",
                format!(
                    "Found failed daemon pod {ns}/{} on node {node_name}, will try to kill it",
                    names.join(", ")
                ),
            );
        }
        delete.extend(dead);
        if live.len() > 1 {
            delete.extend(live.drain(1..));
        }
        match live.first() {
            None if run && !exists => create.push(node_name),
            None => {}
            // A pod that may stay where it should not start (a NoSchedule taint) is not counted, as
            // upstream counts only the nodes that should run one.
            Some(_) if !run => {}
            Some(p) => {
                status.current_number_scheduled += 1;
                if owners::is_ready(p) {
                    status.number_ready += 1;
                }
                if owners::is_available(p, min_ready, now) {
                    status.number_available = Some(status.number_available.unwrap_or(0) + 1);
                }
                if hash_of(p) == Some(hash.as_str()) {
                    status.updated_number_scheduled =
                        Some(status.updated_number_scheduled.unwrap_or(0) + 1);
                } else {
                    stale.push(p.clone());
                }
            }
        }
    }
    // Pods for nodes that no longer exist are left to the pod garbage collector, as upstream does.

    let rolling = ds
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    if rolling && !stale.is_empty() {
        let available = status.number_available.unwrap_or(0);
        let unavailable = status.desired_number_scheduled - available;
        let budget = (max_unavailable(&ds, status.desired_number_scheduled) - unavailable).max(0);
        // Unavailable old pods go first: replacing them costs nothing.
        stale.sort_by_key(|p| owners::is_available(p, min_ready, now));
        let mut budget = budget as usize;
        for p in stale {
            if !owners::is_available(&p, min_ready, now) {
                delete.push(p);
            } else if budget > 0 {
                budget -= 1;
                delete.push(p);
            }
        }
    }

    if ctx.expectations.satisfied(&key, &in_ns) {
        if !delete.is_empty() {
            let victims: Vec<&Pod> = delete.iter().map(|p| &**p).collect();
            ctx.expectations
                .delete(&api_pods, &key, &owner, &victims)
                .await?;
        }
        if !create.is_empty() {
            let pods = create.iter().map(|n| new_pod(&ds, &template, n));
            ctx.expectations
                .create(&api_pods, &key, &owner, pods)
                .await?;
        }
    }

    status.number_unavailable =
        Some(status.desired_number_scheduled - status.number_available.unwrap_or(0))
            .filter(|n| *n > 0);
    if ds.status.as_ref() != Some(&status) {
        let mut obj = (*ds).clone();
        obj.status = Some(status);
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&name, &PostParams::default(), &obj)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let in_use: Vec<String> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| owners::controlled_by(&p.metadata, &uid))
        .filter_map(|p| hash_of(p).map(|h| format!("{name}-{h}")))
        .collect();
    let keep = |n: &str| n == update_name || in_use.iter().any(|u| u == n);
    let limit = ds.spec.revision_history_limit.unwrap_or(10);
    revisions::prune(&api_revisions, &history, keep, limit).await?;
    if min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ds(spec: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u", "generation": 3},
            "spec": spec,
        }))
        .unwrap()
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pods_are_pinned_labelled_and_tolerate_the_node_conditions() {
        let d = ds(json!({"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"hostNetwork": true, "containers": [{"name": "c"}],
                    "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]}}}));
        let t = pod_template(&d, "h1");
        let p = new_pod(&d, &t, "n1");
        assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels[HASH_LABEL], "h1");
        assert_eq!(labels[TEMPLATE_GENERATION_LABEL], "3");
        assert_eq!(node_of(&p).as_deref(), Some("n1"));
        let tols = p.spec.unwrap().tolerations.unwrap();
        let keys: Vec<&str> = tols.iter().filter_map(|t| t.key.as_deref()).collect();
        assert_eq!(
            keys.iter()
                .filter(|k| **k == "node.kubernetes.io/not-ready")
                .count(),
            1,
            "the template's own toleration is kept, not doubled: {keys:?}"
        );
        assert!(keys.contains(&"node.kubernetes.io/network-unavailable"));
        assert!(keys.contains(&"node.kubernetes.io/unschedulable"));
    }

    #[test]
    fn placement_follows_selector_and_taints() {
        let d = ds(json!({"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "a"}},
                "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "c"}]}}}));
        let t = pod_template(&d, "h");
        let edge = node(json!({"metadata": {"name": "e", "labels": {"role": "edge"}}}));
        let core = node(json!({"metadata": {"name": "c", "labels": {"role": "core"}}}));
        assert_eq!(placement(&t, &edge), (true, true));
        assert_eq!(placement(&t, &core), (false, false));
        let no_schedule = node(
            json!({"metadata": {"name": "e", "labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            placement(&t, &no_schedule),
            (false, true),
            "may stay, not start"
        );
        let no_execute = node(
            json!({"metadata": {"name": "e", "labels": {"role": "edge"}},
            "spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}),
        );
        assert_eq!(placement(&t, &no_execute), (false, false));
        let cordoned = node(
            json!({"metadata": {"name": "e", "labels": {"role": "edge"}},
            "spec": {"unschedulable": true, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            placement(&t, &cordoned),
            (true, true),
            "daemons tolerate cordoning"
        );
    }

    #[test]
    fn max_unavailable_rounds_percentages_up() {
        let with = |v: serde_json::Value| {
            ds(json!({"selector": {}, "template": {},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": v}}}))
        };
        assert_eq!(max_unavailable(&with(json!(3)), 10), 3);
        assert_eq!(max_unavailable(&with(json!("25%")), 10), 3);
        assert_eq!(max_unavailable(&with(json!("0%")), 10), 1);
        assert_eq!(
            max_unavailable(&ds(json!({"selector": {}, "template": {}})), 10),
            1
        );
    }
}
