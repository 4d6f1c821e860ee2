//! The node lifecycle controller, as upstream's (`node-lifecycle-controller`, service account
//! `node-controller`): every `--node-monitor-period` it looks at each node's heartbeats, its Ready
//! condition and its Lease in `kube-node-lease`. A node heard from neither for `--node-monitor-grace-period`
//! (`--node-startup-grace-period` if it never posted a status) gets its conditions set to Unknown
//! (`NodeStatusUnknown`, "Kubelet stopped posting node status."), and its pods marked not ready.
//!
//! Taints follow the conditions as upstream's TaintNodesByCondition and taint-based eviction keep them:
//! `node.kubernetes.io/not-ready` (Ready False) or `unreachable` (Ready Unknown) with both NoSchedule and
//! NoExecute, and the NoSchedule taints for memory, disk and PID pressure, an unavailable network and
//! `spec.unschedulable`. The taint eviction loop ([`run_eviction`]) then removes the pods that do not
//! tolerate them.
//!
//! Heartbeats are timed on this controller's clock, as upstream's: a heartbeat is the moment it saw the
//! Ready condition's `lastHeartbeatTime` or the Lease's `renewTime` change, so that a node whose clock is
//! off is judged fairly. Unlike upstream, zones are not rate-limited apart (every node is one zone).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_scheduling::tolerates;
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::informers::Informer;
use crate::owners;

/// `--node-monitor-period`, `--node-monitor-grace-period` and `--node-startup-grace-period`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub monitor_period: Duration,
    pub grace_period: Duration,
    pub startup_grace_period: Duration,
}

impl Default for Settings {
    /// Upstream's defaults since 1.32.
    fn default() -> Self {
        Settings {
            monitor_period: Duration::from_secs(5),
            grace_period: Duration::from_secs(50),
            startup_grace_period: Duration::from_secs(60),
        }
    }
}

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taints this controller owns: it adds and removes only these.
const MANAGED: [&str; 7] = [
    NOT_READY,
    UNREACHABLE,
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];
/// The conditions a silent node's kubelet can no longer vouch for.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The last heartbeat seen of a node, and when (on this clock).
struct Probe {
    seen: (Option<Timestamp>, Option<Timestamp>),
    at: Instant,
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_is(node: &Node, type_: &str, status: &str) -> bool {
    condition(node, type_).is_some_and(|c| c.status == status)
}

/// The taints the node's conditions call for, as (key, effect).
pub fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match condition(node, "Ready").map(|c| c.status.as_str()) {
        Some("False") => out.extend([(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]),
        Some("Unknown") => out.extend([(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]),
        _ => {}
    }
    for (cond, key) in [
        ("MemoryPressure", MANAGED[2]),
        ("DiskPressure", MANAGED[3]),
        ("PIDPressure", MANAGED[4]),
        ("NetworkUnavailable", MANAGED[5]),
    ] {
        if condition_is(node, cond, "True") {
            out.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((MANAGED[6], "NoSchedule"));
    }
    out
}

/// The node's taints with the managed ones made to match its conditions; `None` when they already do.
pub fn retaint(node: &Node) -> Option<Vec<Taint>> {
    let have: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want = wanted_taints(node);
    let managed = |t: &Taint| MANAGED.contains(&t.key.as_str());
    let mut next: Vec<Taint> = have
        .iter()
        .filter(|t| !managed(t) || want.iter().any(|(k, e)| t.key == *k && t.effect == *e))
        .cloned()
        .collect();
    let now = Time(Timestamp::now());
    for (k, e) in &want {
        if !next.iter().any(|t| t.key == *k && t.effect == *e) {
            next.push(Taint {
                key: (*k).into(),
                effect: (*e).into(),
                value: None,
                // Taint eviction counts tolerationSeconds from here.
                time_added: (*e == "NoExecute").then(|| now.clone()),
            });
        }
    }
    (next != have).then_some(next)
}

/// Runs the monitor until the future is dropped.
pub async fn run(
    client: Client,
    settings: Settings,
    nodes: Arc<Informer<Node>>,
    pods: Arc<Informer<Pod>>,
) {
    // The shared stores are synced before any loop starts.
    let (nodes, pods) = (nodes.store(), pods.store());
    let (leases, lease_events) = reflect_leases(&client);
    // The reflector fills its store only while polled; in a JoinSet, so that it ends with this loop
    // (leadership lost) rather than leaking a watch per term.
    let mut background = tokio::task::JoinSet::new();
    background.spawn(lease_events.for_each(|_| async {}));
    if leases.wait_until_ready().await.is_err() {
        return;
    }
    let mut probes: HashMap<String, Probe> = HashMap::new();
    let mut tick = tokio::time::interval(settings.monitor_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let all = nodes.state();
        probes.retain(|name, _| all.iter().any(|n| n.name_any() == *name));
        for node in all {
            let r = monitor(&client, &settings, &node, &leases, &pods, &mut probes).await;
            crate::metrics::record("node-lifecycle", r.is_ok());
            if let Err(e) = r {
                tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle");
            }
        }
    }
}

fn reflect_leases(
    client: &Client,
) -> (
    Store<Lease>,
    impl futures_util::Stream<Item = Result<Lease, watcher::Error>> + Send + 'static,
) {
    use kube::runtime::WatchStreamExt;
    let (store, writer) = kube::runtime::reflector::store();
    let events = kube::runtime::reflector::reflector(
        writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), "kube-node-lease"),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    (store, events)
}

async fn monitor(
    client: &Client,
    settings: &Settings,
    node: &Node,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    probes: &mut HashMap<String, Probe>,
) -> Result<(), kube::Error> {
    let name = node.name_any();
    let api: Api<Node> = Api::all(client.clone());
    let ready = condition(node, "Ready");
    let renewed = leases
        .get(&ObjectRef::new(&name).within("kube-node-lease"))
        .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let seen = (
        ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0)),
        renewed,
    );
    let probe = probes.entry(name.clone()).or_insert_with(|| Probe {
        seen,
        at: Instant::now(),
    });
    if probe.seen != seen {
        *probe = Probe {
            seen,
            at: Instant::now(),
        };
    }
    let grace = if ready.is_some() {
        settings.grace_period
    } else {
        settings.startup_grace_period
    };
    let mut node = node.clone();
    if probe.at.elapsed() > grace && ready.is_none_or(|c| c.status != "Unknown") {
        let was_ready = ready.is_some_and(|c| c.status == "True");
        let now = Time(Timestamp::now());
        let created = node.metadata.creation_timestamp.clone();
        let status = node.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        for type_ in KUBELET_CONDITIONS {
            match conds.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(now.clone());
                }
                None => conds.push(NodeCondition {
                    type_: type_.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: created.clone(),
                    last_transition_time: Some(now.clone()),
                }),
            }
        }
        node = api
            .replace_status(&name, &PostParams::default(), &node)
            .await?;
        tracing::warn!(node = %name, silent_for = ?probe.at.elapsed(), "node stopped posting status: Unknown");
        if was_ready {
            mark_pods_not_ready(client, &name, pods).await?;
        }
    }
    if let Some(taints) = retaint(&node) {
        node.spec.get_or_insert_with(Default::default).taints = Some(taints);
        api.replace(&name, &PostParams::default(), &node).await?;
    }
    Ok(())
}

/// Upstream's MarkPodsNotReady: the pods of a node gone silent are no longer Ready (endpoints drop them).
async fn mark_pods_not_ready(
    client: &Client,
    node: &str,
    pods: &Store<Pod>,
) -> Result<(), kube::Error> {
    let now = Timestamp::now().to_string();
    for p in pods.state() {
        if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
            || !owners::is_ready(&p)
        {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": now},
        ]}});
        match api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// -------------------------------------------------------------------------------- taint eviction

/// How long a pod may stay with `taints`: `Some(0)` when one is not tolerated, `None` for ever (every
/// matching toleration without `tolerationSeconds`), else the least `tolerationSeconds` (upstream's
/// getMinTolerationTime).
pub fn toleration_time(tolerations: &[Toleration], taints: &[&Taint]) -> Option<i64> {
    let mut least: Option<i64> = None;
    for taint in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        for t in matching {
            if let Some(s) = t.toleration_seconds {
                least = Some(least.map_or(s.max(0), |l| l.min(s.max(0))));
            }
        }
    }
    least
}

struct EvictCtx {
    client: Client,
    pods: Store<Pod>,
    events: basalt_events::Recorder,
}

/// The taint eviction loop (`taint-eviction-controller`): a pod on a node with NoExecute taints it does not
/// tolerate is deleted, at once or `tolerationSeconds` after the taint was added, with the condition
/// `DisruptionTarget` (reason `DeletionByTaintManager`) written first, as upstream.
pub async fn run_eviction(client: Client, nodes: Arc<Informer<Node>>, pods: Arc<Informer<Pod>>) {
    let (pods, pod_events) = (pods.store(), pods.subscribe());
    let ctx = Arc::new(EvictCtx {
        events: basalt_events::Recorder::new(client.clone(), "taint-eviction-controller", None),
        client: client.clone(),
        pods,
    });
    let run = Controller::for_shared_stream(nodes.subscribe(), nodes.store())
        .watches_shared_stream(pod_events, |pod: Arc<Pod>| {
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .map(|n| ObjectRef::new(n))
        })
        .run(evict, owners::retry, ctx);
    owners::drive("taint-eviction", run).await;
}

async fn evict(node: Arc<Node>, ctx: Arc<EvictCtx>) -> Result<Action, kube::Error> {
    let taints: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    if taints.is_empty() {
        return Ok(Action::await_change());
    }
    let since = taints
        .iter()
        .filter_map(|t| t.time_added.as_ref().map(|t| t.0.as_second()))
        .min()
        .unwrap_or_else(|| Timestamp::now().as_second());
    let name = node.name_any();
    let now = Timestamp::now().as_second();
    let mut next: Option<i64> = None;
    let mut due: BTreeMap<String, Arc<Pod>> = BTreeMap::new();
    for p in ctx.pods.state() {
        let spec = p.spec.as_ref();
        if spec.and_then(|s| s.node_name.as_deref()) != Some(name.as_str())
            || p.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let tolerations = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
        match toleration_time(&tolerations, &taints) {
            None => {}
            Some(secs) if since + secs <= now => {
                due.insert(
                    format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()),
                    p,
                );
            }
            Some(secs) => next = Some(next.map_or(since + secs, |n| n.min(since + secs))),
        }
    }
    for (key, p) in due {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &p.namespace().unwrap_or_default());
        let cond = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Timestamp::now().to_string(),
        }]}});
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        ctx.events.record(
            basalt_events::reference("v1", "Pod", &p.metadata, None),
            basalt_events::Type::Normal,
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        );
        let r = async {
            api.patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&cond),
            )
            .await?;
            api.delete(&p.name_any(), &dp).await
        }
        .await;
        match r {
            Ok(_) => {
                tracing::info!(pod = %key, node = %name, "evicted: NoExecute taint not tolerated")
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(match next {
        Some(at) => Action::requeue(Duration::from_secs((at - now).max(1) as u64)),
        None => Action::await_change(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }
    }

    fn toleration(key: &str, secs: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            ..Default::default()
        }
    }

    #[test]
    fn toleration_time_is_upstreams_least_seconds() {
        let (u, n) = (taint(UNREACHABLE), taint(NOT_READY));
        assert_eq!(toleration_time(&[], &[&u]), Some(0));
        assert_eq!(
            toleration_time(&[toleration(UNREACHABLE, None)], &[&u]),
            None
        );
        assert_eq!(
            toleration_time(
                &[
                    toleration(UNREACHABLE, Some(300)),
                    toleration(UNREACHABLE, Some(5))
                ],
                &[&u]
            ),
            Some(5)
        );
        // Tolerating one taint of two is not enough.
        assert_eq!(
            toleration_time(&[toleration(UNREACHABLE, None)], &[&u, &n]),
            Some(0)
        );
        assert_eq!(
            toleration_time(&[toleration(UNREACHABLE, Some(-3))], &[&u]),
            Some(0)
        );
    }

    fn node(ready: Option<&str>, pressure: bool, taints: Vec<Taint>) -> Node {
        let mut conds: Vec<NodeCondition> = ready
            .map(|s| NodeCondition {
                type_: "Ready".into(),
                status: s.into(),
                ..Default::default()
            })
            .into_iter()
            .collect();
        if pressure {
            conds.push(NodeCondition {
                type_: "MemoryPressure".into(),
                status: "True".into(),
                ..Default::default()
            });
        }
        Node {
            spec: Some(k8s_openapi::api::core::v1::NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::core::v1::NodeStatus {
                conditions: Some(conds),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn taints_follow_conditions_and_others_are_kept() {
        let own = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            value: Some("gpu".into()),
            time_added: None,
        };
        assert_eq!(retaint(&node(Some("True"), false, vec![own.clone()])), None);
        let t = retaint(&node(
            Some("Unknown"),
            true,
            vec![own.clone(), taint(NOT_READY)],
        ))
        .unwrap();
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE, "NoSchedule"),
                (UNREACHABLE, "NoExecute"),
                ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ]
        );
        assert!(t[2].time_added.is_some() && t[1].time_added.is_none());
        // Back to Ready: only the node's own taint stays.
        assert_eq!(retaint(&node(Some("True"), false, t)).unwrap(), vec![own]);
    }
}
