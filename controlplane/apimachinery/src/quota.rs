//! ResourceQuota usage: what one object counts against a namespace's quotas, shared by the admission
//! that refuses an object over quota and the controller that reports `status.used`.

use serde_json::Value;

use crate::quantity::Quantity;

fn q(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// Whether the object still counts: not being deleted, and (a pod) not finished.
pub fn counts(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_none_or(Value::is_null)
        && !matches!(
            obj.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        )
}

/// The quota resources an object of `group`/`plural` uses: its count (`pods`, `count/pods`,
/// `count/deployments.apps`), a pod's requests and limits (`requests.cpu`, `cpu`, `limits.memory`), a
/// claim's `requests.storage`, a service's node ports and load balancers.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Vec<(String, Quantity)> {
    let one = Quantity::from_value(1, Default::default());
    let mut out = Vec::new();
    if group.is_empty() {
        out.push((plural.to_string(), one));
        out.push((format!("count/{plural}"), one));
    } else {
        out.push((format!("count/{plural}.{group}"), one));
    }
    if group.is_empty() && plural == "pods" {
        let mut sums: Vec<(String, Quantity)> = Vec::new();
        for c in obj
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (section, prefix) in [("requests", "requests."), ("limits", "limits.")] {
                for (res, v) in c
                    .pointer(&format!("/resources/{section}"))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let Some(v) = q(v) else { continue };
                    let mut names = vec![format!("{prefix}{res}")];
                    if section == "requests" && (res == "cpu" || res == "memory") {
                        names.push(res.clone());
                    }
                    for n in names {
                        match sums.iter_mut().find(|(k, _)| *k == n) {
                            Some((_, s)) => *s = s.add(&v),
                            None => sums.push((n, v)),
                        }
                    }
                }
            }
        }
        out.extend(sums);
    }
    if group.is_empty() && plural == "persistentvolumeclaims" {
        if let Some(s) = obj.pointer("/spec/resources/requests/storage").and_then(q) {
            out.push(("requests.storage".into(), s));
        }
    }
    if group.is_empty() && plural == "services" {
        let ty = obj
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if ty == "NodePort" || ty == "LoadBalancer" {
            out.push(("services.nodeports".into(), one));
        }
        if ty == "LoadBalancer" {
            out.push(("services.loadbalancers".into(), one));
        }
    }
    out
}

/// Adds `usage` into `total`, resource by resource.
pub fn add(total: &mut Vec<(String, Quantity)>, usage: Vec<(String, Quantity)>) {
    for (k, v) in usage {
        match total.iter_mut().find(|(n, _)| *n == k) {
            Some((_, s)) => *s = s.add(&v),
            None => total.push((k, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_uses_its_count_requests_and_limits() {
        let pod = serde_json::json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}},
            {"resources": {"requests": {"cpu": "150m"}}}]}});
        let u = usage("", "pods", &pod);
        let get = |k: &str| u.iter().find(|(n, _)| n == k).map(|(_, v)| v.milli());
        assert_eq!(get("pods"), Some(1000));
        assert_eq!(get("requests.cpu"), Some(250));
        assert_eq!(get("cpu"), Some(250));
        assert_eq!(get("limits.memory"), Some(1024 * 1024 * 1024 * 1000));
        assert!(counts(&pod));
        assert!(!counts(
            &serde_json::json!({"status": {"phase": "Succeeded"}})
        ));
        assert_eq!(
            usage("apps", "deployments", &pod)[0].0,
            "count/deployments.apps"
        );
    }
}
