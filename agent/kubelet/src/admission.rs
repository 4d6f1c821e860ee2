//! The kubelet's own admission of a pod bound to its node, as upstream's (lifecycle's predicate admit
//! handler): the node must have room for the pod's requests, match its node selector and required node
//! affinity, and carry no NoExecute taint it does not tolerate. A pod refused here is not run; the
//! kubelet marks it Failed with upstream's reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`,
//! `NodeAffinity`, `Taint`) and a message starting "Pod was rejected: ".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};

/// Why a pod was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    pub message: String,
}

fn requested(pod: &Pod, resource: &str) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let of = |r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>| {
        r.and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource))
            .and_then(|q| amount(resource, &q.0))
            .unwrap_or(0)
    };
    let sum: i64 = spec
        .containers
        .iter()
        .map(|c| of(c.resources.as_ref()))
        .sum();
    // Init containers run one at a time, before the others: the pod needs the larger of the two.
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| of(c.resources.as_ref()))
        .max()
        .unwrap_or(0);
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get(resource))
        .and_then(|q| amount(resource, &q.0))
        .unwrap_or(0);
    sum.max(init) + overhead
}

/// CPU in millicores, everything else in units.
fn amount(resource: &str, q: &str) -> Option<i64> {
    match resource {
        "cpu" => crate::quantity::milli(q).ok(),
        _ => crate::quantity::units(q).ok(),
    }
}

/// The pod's node selector and required node affinity, against the node (the scheduler's own rule).
fn affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let no_labels = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&no_labels);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    basalt_scheduling::RequiredNodeAffinity::of(spec).matches(labels, name)
}

/// Whether `pod` may run on `node` beside `running` (the pods already admitted there).
pub fn admit(pod: &Pod, node: &Node, running: &[&Pod]) -> Result<(), Rejection> {
    let rejected = |reason: &str, why: String| Rejection {
        reason: reason.into(),
        message: format!("Pod was rejected: {why}"),
    };
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.clone())
        .unwrap_or_default();
    if let Some(max) = allocatable.get("pods").and_then(|q| amount("pods", &q.0)) {
        if running.len() as i64 + 1 > max {
            return Err(rejected(
                "OutOfpods",
                format!(
                    "Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {max}",
                    running.len()
                ),
            ));
        }
    }
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        let want = requested(pod, resource);
        let Some(cap) = allocatable
            .get(resource)
            .and_then(|q| amount(resource, &q.0))
        else {
            continue;
        };
        let used: i64 = running.iter().map(|p| requested(p, resource)).sum();
        if want > 0 && used + want > cap {
            return Err(rejected(
                &format!("OutOf{resource}"),
                format!(
                    "Node didn't have enough resource: {resource}, requested: {want}, used: {used}, capacity: {cap}"
                ),
            ));
        }
    }
    if !affinity_matches(pod, node) {
        return Err(rejected(
            "NodeAffinity",
            "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"
                .into(),
        ));
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    if let Some(t) = basalt_scheduling::untolerated(taints, tolerations, &["NoExecute"]) {
        return Err(rejected(
            "Taint",
            format!(
                "Predicate TaintToleration failed: node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "size": "4"}},
            "spec": {"taints": [{"key": "gone", "value": "soon", "effect": "NoExecute"},
                {"key": "busy", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "3"}},
        }))
        .unwrap()
    }

    fn pod(cpu: &str, extra: serde_json::Value) -> Pod {
        let mut spec = serde_json::json!({"containers": [{"name": "c",
            "resources": {"requests": {"cpu": cpu}}}],
            "tolerations": [{"key": "gone", "operator": "Exists", "effect": "NoExecute"}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn resources_affinity_and_taints() {
        let n = node();
        let small = pod("500m", serde_json::json!({}));
        assert_eq!(admit(&small, &n, &[]), Ok(()));
        let e = admit(&pod("1800m", serde_json::json!({})), &n, &[&small]).unwrap_err();
        assert_eq!(e.reason, "OutOfcpu");
        assert_eq!(
            e.message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 1800, used: 500, capacity: 2000"
        );
        let e = admit(&small, &n, &[&small, &small, &small]).unwrap_err();
        assert_eq!(e.reason, "OutOfpods");
        let elsewhere = pod("1m", serde_json::json!({"nodeSelector": {"zone": "b"}}));
        assert_eq!(
            admit(&elsewhere, &n, &[]).unwrap_err().reason,
            "NodeAffinity"
        );
        let big = pod(
            "1m",
            serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "size", "operator": "Gt", "values": ["2"]}]}]}}}}),
        );
        assert_eq!(admit(&big, &n, &[]), Ok(()));
        let untolerant = pod("1m", serde_json::json!({"tolerations": []}));
        let e = admit(&untolerant, &n, &[]).unwrap_err();
        assert_eq!(e.reason, "Taint");
        assert!(
            e.message.ends_with("untolerated taint {gone: soon}"),
            "{}",
            e.message
        );
    }
}
