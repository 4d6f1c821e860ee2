//! The Node authorizer: a kubelet (`system:node:<name>` in `system:nodes`) may read what the pods bound to
//! its node use (their secrets, config maps, volume claims and volumes, service-account tokens) and nothing
//! else of that kind; it manages its own Node, Lease and pods' status, and reads what every kubelet reads.

use serde_json::Value;

use super::rbac::rule_allows;
use super::{Attributes, Decision, UserInfo};
use crate::objects::Objects;

pub const NODES_GROUP: &str = "system:nodes";

/// The node a kubelet identity speaks for.
pub fn node_name(user: &UserInfo) -> Option<&str> {
    if !user.in_group(NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix("system:node:")
}

/// What every kubelet may do whatever its pods are (upstream's system:node role).
fn general_rules() -> Vec<Value> {
    let r = |verbs: &[&str], groups: &[&str], resources: &[&str]| serde_json::json!({"verbs": verbs, "apiGroups": groups, "resources": resources});
    vec![
        r(
            &["get", "list", "watch"],
            &[""],
            &["nodes", "services", "endpoints", "pods"],
        ),
        r(&["create", "delete"], &[""], &["pods"]),
        r(&["update", "patch"], &[""], &["pods/status"]),
        r(&["create"], &[""], &["pods/eviction"]),
        r(
            &["create", "patch", "update"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        r(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        r(
            &["get", "list", "watch"],
            &["storage.k8s.io"],
            &["csidrivers", "storageclasses", "volumeattachments"],
        ),
        r(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
        r(
            &["get", "list", "watch"],
            &["discovery.k8s.io"],
            &["endpointslices"],
        ),
    ]
}

/// Names a pod refers to, by resource.
fn references(pod: &Value, resource: &str) -> Vec<String> {
    let mut out = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or_default();
    let mut push = |v: Option<&Value>| {
        if let Some(s) = v.and_then(Value::as_str) {
            out.push(s.to_string());
        }
    };
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match resource {
            "secrets" => push(v.pointer("/secret/secretName")),
            "configmaps" => push(v.pointer("/configMap/name")),
            "persistentvolumeclaims" => push(v.pointer("/persistentVolumeClaim/claimName")),
            _ => {}
        }
        for s in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match resource {
                "secrets" => push(s.pointer("/secret/name")),
                "configmaps" => push(s.pointer("/configMap/name")),
                _ => {}
            }
        }
        if resource == "secrets" {
            for p in [
                "/csi/nodePublishSecretRef/name",
                "/cephfs/secretRef/name",
                "/iscsi/secretRef/name",
                "/rbd/secretRef/name",
            ] {
                push(v.pointer(p));
            }
        }
    }
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                match resource {
                    "secrets" => push(e.pointer("/valueFrom/secretKeyRef/name")),
                    "configmaps" => push(e.pointer("/valueFrom/configMapKeyRef/name")),
                    _ => {}
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match resource {
                    "secrets" => push(e.pointer("/secretRef/name")),
                    "configmaps" => push(e.pointer("/configMapRef/name")),
                    _ => {}
                }
            }
        }
    }
    if resource == "secrets" {
        for s in spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(s.get("name"));
        }
    }
    if resource == "serviceaccounts" {
        push(spec.get("serviceAccountName"));
    }
    out
}

pub async fn authorize(objects: &Objects, node: &str, a: &Attributes) -> Decision {
    if a.path.is_some() {
        return Decision::NoOpinion;
    }
    // Its own Node object and Lease.
    if a.group.is_empty()
        && a.resource == "nodes"
        && ["create", "update", "patch", "delete"].contains(&a.verb.as_str())
    {
        return if a.name == node || (a.verb == "create" && a.name.is_empty()) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        };
    }
    if a.group == "coordination.k8s.io"
        && a.resource == "leases"
        && a.namespace == "kube-node-lease"
    {
        return if a.name == node
            || (a.verb == "create" && a.name.is_empty())
            || a.verb == "list"
            || a.verb == "watch"
        {
            Decision::Allow
        } else {
            Decision::NoOpinion
        };
    }
    if a.group == "storage.k8s.io" && a.resource == "csinodes" {
        return if a.name == node || a.name.is_empty() || a.verb == "get" {
            Decision::Allow
        } else {
            Decision::NoOpinion
        };
    }
    let via_pods = matches!(
        (a.group.as_str(), a.resource.as_str()),
        ("", "secrets")
            | ("", "configmaps")
            | ("", "persistentvolumeclaims")
            | ("", "persistentvolumes")
            | ("", "serviceaccounts")
    );
    if via_pods {
        let token =
            a.resource == "serviceaccounts" && a.subresource == "token" && a.verb == "create";
        if !(token || a.verb == "get" && a.subresource.is_empty()) {
            return Decision::NoOpinion;
        }
        let Ok(page) = objects
            .store
            .list(basalt_store::ListRequest::prefix("/registry/core/pods/"))
            .await
        else {
            return Decision::NoOpinion;
        };
        let mut claims = Vec::new();
        for kv in &page.kvs {
            let Ok(pod) = crate::objects::decode(kv) else {
                continue;
            };
            if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
                continue;
            }
            let ns = crate::meta::namespace(&pod);
            if a.resource == "persistentvolumes" {
                if ns.is_empty() {
                    continue;
                }
                claims.extend(
                    references(&pod, "persistentvolumeclaims")
                        .into_iter()
                        .map(|c| (ns.to_string(), c)),
                );
                continue;
            }
            if ns == a.namespace && references(&pod, &a.resource).contains(&a.name) {
                return Decision::Allow;
            }
        }
        if a.resource == "persistentvolumes" {
            for (ns, claim) in claims {
                if let Ok(Some(kv)) = objects
                    .store
                    .get(&format!(
                        "/registry/core/persistentvolumeclaims/{ns}/{claim}"
                    ))
                    .await
                {
                    if let Ok(pvc) = crate::objects::decode(&kv) {
                        if pvc.pointer("/spec/volumeName").and_then(Value::as_str)
                            == Some(a.name.as_str())
                        {
                            return Decision::Allow;
                        }
                    }
                }
            }
        }
        return Decision::Deny(format!(
            "no relationship found between node '{node}' and this object"
        ));
    }
    if general_rules().iter().any(|r| rule_allows(r, a)) {
        Decision::Allow
    } else {
        Decision::NoOpinion
    }
}
