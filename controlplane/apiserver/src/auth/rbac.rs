//! RBAC: roles and bindings from the informers, evaluated as upstream's RBAC authorizer does (cluster role
//! aggregation included).

use std::sync::Arc;

use basalt_apimachinery::selector::LabelSelector;
use serde_json::Value;

use super::{Attributes, Decision, UserInfo};
use crate::informer::Informer;

pub struct Rbac {
    pub roles: Arc<Informer>,
    pub cluster_roles: Arc<Informer>,
    pub role_bindings: Arc<Informer>,
    pub cluster_role_bindings: Arc<Informer>,
}

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn subject_matches(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
    match s.get("kind").and_then(Value::as_str) {
        Some("User") => user.name == name,
        Some("Group") => user.in_group(name),
        Some("ServiceAccount") => {
            let ns = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Whether one policy rule allows the request.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    let verbs = strs(rule.get("verbs"));
    if !verbs.iter().any(|v| *v == "*" || *v == a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return strs(rule.get("nonResourceURLs")).iter().any(|u| {
            *u == "*" || *u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        });
    }
    let groups = strs(rule.get("apiGroups"));
    if !groups.iter().any(|g| *g == "*" || *g == a.group) {
        return false;
    }
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let resources = strs(rule.get("resources"));
    let resource_ok = resources.iter().any(|r| {
        *r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
            || (!a.subresource.is_empty() && *r == format!("{}/*", a.resource))
    });
    if !resource_ok {
        return false;
    }
    let names = strs(rule.get("resourceNames"));
    names.is_empty() || names.contains(&a.name.as_str())
}

impl Rbac {
    fn cluster_role(&self, name: &str) -> Option<Arc<Value>> {
        self.cluster_roles
            .get(&format!("{}{name}", self.cluster_roles.prefix))
    }

    /// A cluster role's rules, with the rules of the roles it aggregates, and theirs (upstream's aggregation
    /// controller reaches the same through the rules it writes back).
    pub fn cluster_role_rules(&self, name: &str) -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        self.aggregated_rules(name, &mut seen)
    }

    fn aggregated_rules(
        &self,
        name: &str,
        seen: &mut std::collections::HashSet<String>,
    ) -> Vec<Value> {
        if !seen.insert(name.to_string()) {
            return Vec::new();
        }
        let Some(role) = self.cluster_role(name) else {
            return Vec::new();
        };
        let mut rules: Vec<Value> = role
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(selectors) = role
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
        {
            let selectors: Vec<LabelSelector> = selectors
                .iter()
                .filter_map(|s| LabelSelector::from_object(s).ok())
                .collect();
            for other in self.cluster_roles.items() {
                if selectors
                    .iter()
                    .any(|s| !s.is_empty() && s.matches_object(&other))
                {
                    rules.extend(self.aggregated_rules(crate::meta::name(&other), seen));
                }
            }
        }
        rules
    }

    fn role_rules(&self, binding: &Value) -> Vec<Value> {
        let kind = binding
            .pointer("/roleRef/kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = binding
            .pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match kind {
            "ClusterRole" => self.cluster_role_rules(name),
            "Role" => {
                let ns = crate::meta::namespace(binding);
                self.roles
                    .get(&format!("{}{ns}/{name}", self.roles.prefix))
                    .and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Every rule that applies to `user` in `namespace` (cluster-wide ones included).
    pub fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<Value> {
        let mut rules = Vec::new();
        for b in self.cluster_role_bindings.items() {
            let subjects = b
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if subjects.iter().any(|s| subject_matches(s, user, "")) {
                rules.extend(self.role_rules(&b));
            }
        }
        if !namespace.is_empty() {
            let prefix = format!("{}{namespace}/", self.role_bindings.prefix);
            for b in self.role_bindings.items() {
                let key_ns = crate::meta::namespace(&b);
                if format!("{}{key_ns}/", self.role_bindings.prefix) != prefix {
                    continue;
                }
                let subjects = b
                    .get("subjects")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if subjects.iter().any(|s| subject_matches(s, user, key_ns)) {
                    rules.extend(self.role_rules(&b));
                }
            }
        }
        rules
    }

    pub fn authorize(&self, user: &UserInfo, a: &Attributes) -> Decision {
        // Cluster-wide bindings first: most requests are settled there.
        for b in self.cluster_role_bindings.items() {
            let subjects = b
                .get("subjects")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if subjects.iter().any(|s| subject_matches(s, user, ""))
                && self.role_rules(&b).iter().any(|r| rule_allows(r, a))
            {
                return Decision::Allow;
            }
        }
        if !a.namespace.is_empty() && a.path.is_none() {
            for b in self.role_bindings.items() {
                let ns = crate::meta::namespace(&b);
                if ns != a.namespace {
                    continue;
                }
                let subjects = b
                    .get("subjects")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if subjects.iter().any(|s| subject_matches(s, user, ns))
                    && self.role_rules(&b).iter().any(|r| rule_allows(r, a))
                {
                    return Decision::Allow;
                }
            }
        }
        Decision::NoOpinion
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            namespace: "default".into(),
            path: None,
        }
    }

    #[test]
    fn rules_match_like_upstream() {
        let r =
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]});
        assert!(rule_allows(&r, &attrs("get", "", "pods", "", "x")));
        assert!(rule_allows(&r, &attrs("get", "", "pods", "log", "x")));
        assert!(!rule_allows(&r, &attrs("get", "", "pods", "exec", "x")));
        assert!(!rule_allows(&r, &attrs("delete", "", "pods", "", "x")));
        assert!(!rule_allows(&r, &attrs("get", "apps", "pods", "", "x")));
        let star = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]});
        assert!(rule_allows(
            &star,
            &attrs("delete", "apps", "deployments", "scale", "")
        ));
        let named = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]});
        assert!(rule_allows(&named, &attrs("get", "", "secrets", "", "a")));
        assert!(!rule_allows(&named, &attrs("get", "", "secrets", "", "b")));
        assert!(!rule_allows(&named, &attrs("get", "", "secrets", "", "")));
        let sub = json!({"verbs": ["update"], "apiGroups": ["*"], "resources": ["*/scale"]});
        assert!(rule_allows(
            &sub,
            &attrs("update", "apps", "deployments", "scale", "d")
        ));
        let url = json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]});
        let mut a = attrs("get", "", "", "", "");
        a.path = Some("/api/v1".into());
        assert!(rule_allows(&url, &a));
        a.path = Some("/metrics".into());
        assert!(!rule_allows(&url, &a));
    }

    #[test]
    fn subjects() {
        let user = UserInfo {
            name: "system:serviceaccount:ns1:builder".into(),
            groups: vec!["system:serviceaccounts".into()],
            ..Default::default()
        };
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "builder"}),
            &user,
            "ns1"
        ));
        assert!(!subject_matches(
            &json!({"kind": "ServiceAccount", "name": "builder"}),
            &user,
            "ns2"
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "system:serviceaccounts"}),
            &user,
            ""
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "builder"}),
            &user,
            ""
        ));
    }
}
