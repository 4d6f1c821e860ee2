//! The kubelet's own admission of a pod bound to its node, as upstream's (lifecycle's predicate admit
//! handler): the node must have room for the pod's requests, match its node selector and required node
//! affinity, and carry no NoExecute taint it does not tolerate. A pod refused here is not run; the
//! kubelet marks it Failed with upstream's reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`,
//! `NodeAffinity`, `Taint`) and a message starting "Pod was rejected: ".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};

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

fn labels_match(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = req.values.clone().unwrap_or_default();
    let value = labels.get(&req.key);
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// The pod's node selector and required node affinity, against the node.
fn affinity_matches(pod: &Pod, node: &Node) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let name = node.metadata.name.clone().unwrap_or_default();
    let fields = BTreeMap::from([("metadata.name".to_string(), name)]);
    let affinity_ok = required.is_none_or(|r| {
        r.node_selector_terms.iter().any(|t| {
            let exprs = t.match_expressions.iter().flatten();
            let flds = t.match_fields.iter().flatten();
            (t.match_expressions.is_some() || t.match_fields.is_some())
                && exprs.clone().all(|e| labels_match(e, &labels))
                && flds.clone().all(|e| labels_match(e, &fields))
        })
    });
    selector_ok && affinity_ok
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => t
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            t.key.as_deref() == Some(taint.key.as_str())
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
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
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if let Some(t) = taints
        .iter()
        .filter(|t| t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
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
