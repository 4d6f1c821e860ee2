//! RBAC's escalation prevention, as upstream's RBAC registry enforces it: a user may write a Role or
//! ClusterRole only with rules they already hold, and bind a role only if they hold its rules, unless they
//! are `system:masters` or are granted `escalate` (on roles) or `bind` (on the role bound). Without it,
//! anyone allowed to create RoleBindings in a namespace could bind themselves `cluster-admin` there.

use std::sync::Arc;

use serde_json::{json, Value};

use super::rbac::{rule_allows, Rbac};
use super::{Attributes, Decision, UserInfo, MASTERS};
use crate::errors::{ApiError, ApiResult};
use crate::meta;
use crate::state::State;

const GROUP: &str = "rbac.authorization.k8s.io";

/// One verb on one resource (and name) or one URL: what a rule grants, broken down so that each piece can
/// be checked against the owner's rules on its own (a servant rule may be covered by several owner rules).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Resource {
        verb: String,
        group: String,
        resource: String,
        name: Option<String>,
    },
    Url {
        verb: String,
        url: String,
    },
}

fn strs(rule: &Value, field: &str) -> Vec<String> {
    rule.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn atoms(rule: &Value) -> Vec<Atom> {
    let verbs = strs(rule, "verbs");
    let mut out = Vec::new();
    for url in strs(rule, "nonResourceURLs") {
        for verb in &verbs {
            out.push(Atom::Url {
                verb: verb.clone(),
                url: url.clone(),
            });
        }
    }
    let names = strs(rule, "resourceNames");
    let names: Vec<Option<String>> = if names.is_empty() {
        vec![None]
    } else {
        names.into_iter().map(Some).collect()
    };
    for group in strs(rule, "apiGroups") {
        for resource in strs(rule, "resources") {
            for verb in &verbs {
                for name in &names {
                    out.push(Atom::Resource {
                        verb: verb.clone(),
                        group: group.clone(),
                        resource: resource.clone(),
                        name: name.clone(),
                    });
                }
            }
        }
    }
    out
}

impl Atom {
    /// The request this piece of a rule would allow: an owner rule covers the piece if it allows it.
    fn attributes(&self) -> Attributes {
        match self {
            Atom::Url { verb, url } => Attributes {
                verb: verb.clone(),
                path: Some(url.clone()),
                ..Default::default()
            },
            Atom::Resource {
                verb,
                group,
                resource,
                name,
            } => {
                let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
                Attributes {
                    verb: verb.clone(),
                    group: group.clone(),
                    resource: resource.into(),
                    subresource: subresource.into(),
                    name: name.clone().unwrap_or_default(),
                    ..Default::default()
                }
            }
        }
    }

    /// Upstream's rendering of a missing permission: `{APIGroups:["apps"], Resources:["deployments"], Verbs:["create"]}`.
    fn render(&self) -> String {
        match self {
            Atom::Url { verb, url } => format!("{{NonResourceURLs:[{url:?}], Verbs:[{verb:?}]}}"),
            Atom::Resource {
                verb,
                group,
                resource,
                name,
            } => {
                let names = name
                    .as_ref()
                    .map(|n| format!(", ResourceNames:[{n:?}]"))
                    .unwrap_or_default();
                format!(
                    "{{APIGroups:[{group:?}], Resources:[{resource:?}]{names}, Verbs:[{verb:?}]}}"
                )
            }
        }
    }
}

/// The pieces of `servant` that no rule of `owner` grants.
fn uncovered(owner: &[Value], servant: &[Value]) -> Vec<Atom> {
    let mut missing: Vec<Atom> = Vec::new();
    for atom in servant.iter().flat_map(atoms) {
        let a = atom.attributes();
        if !owner.iter().any(|r| rule_allows(r, &a)) && !missing.contains(&atom) {
            missing.push(atom);
        }
    }
    missing
}

/// What a write of an RBAC object asks to grant.
enum Grant {
    /// A Role or ClusterRole: its own rules.
    Rules(Vec<Value>),
    /// A ClusterRole that aggregates others: it may come to hold anything, so only full authority covers it.
    Aggregation,
    /// A binding: the rules of the role it refers to (`kind` "Role" or "ClusterRole").
    Binding { kind: String, name: String },
}

fn grant(plural: &str, obj: &Value) -> Option<Grant> {
    let rules = || {
        obj.get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    match plural {
        "roles" => Some(Grant::Rules(rules())),
        "clusterroles" if obj.get("aggregationRule").is_some_and(|a| !a.is_null()) => {
            Some(Grant::Aggregation)
        }
        "clusterroles" => Some(Grant::Rules(rules())),
        "rolebindings" | "clusterrolebindings" => Some(Grant::Binding {
            kind: obj
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            name: obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
        }),
        _ => None,
    }
}

fn allowed(state: &Arc<State>, user: &UserInfo, a: Attributes) -> bool {
    state.rbac.authorize(user, &a) == Decision::Allow
}

fn role_rules(rbac: &Rbac, kind: &str, name: &str, namespace: &str) -> Option<Vec<Value>> {
    match kind {
        "ClusterRole" => rbac
            .cluster_roles
            .get(&format!("{}{name}", rbac.cluster_roles.prefix))
            .map(|_| rbac.cluster_role_rules(name)),
        _ => rbac
            .roles
            .get(&format!("{}{namespace}/{name}", rbac.roles.prefix))
            .map(|r| {
                r.get("rules")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            }),
    }
}

/// Refuses (403) a create or update of a role or binding that would grant `user` more than they hold.
pub fn check(state: &Arc<State>, user: &UserInfo, plural: &str, obj: &Value) -> ApiResult<()> {
    let Some(grant) = grant(plural, obj) else {
        return Ok(());
    };
    if user.in_group(MASTERS) {
        return Ok(());
    }
    let namespace = meta::namespace(obj).to_string();
    let name = meta::name(obj);
    let forbidden = |why: String| ApiError::forbidden(GROUP, plural, name, why);
    let servant = match grant {
        Grant::Rules(_) | Grant::Aggregation => {
            let role_plural = if plural == "roles" {
                "roles"
            } else {
                "clusterroles"
            };
            let escalate = Attributes {
                verb: "escalate".into(),
                group: GROUP.into(),
                resource: role_plural.into(),
                namespace: namespace.clone(),
                name: name.into(),
                ..Default::default()
            };
            if allowed(state, user, escalate) {
                return Ok(());
            }
            match grant {
                Grant::Rules(rules) => rules,
                _ => vec![json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})],
            }
        }
        Grant::Binding { kind, name: role } => {
            let bind = Attributes {
                verb: "bind".into(),
                group: GROUP.into(),
                resource: if kind == "ClusterRole" {
                    "clusterroles"
                } else {
                    "roles"
                }
                .into(),
                namespace: namespace.clone(),
                name: role.clone(),
                ..Default::default()
            };
            if allowed(state, user, bind) {
                return Ok(());
            }
            match role_rules(&state.rbac, &kind, &role, &namespace) {
                Some(rules) => rules,
                None => {
                    let what = if kind == "ClusterRole" {
                        "clusterrole"
                    } else {
                        "role"
                    };
                    return Err(forbidden(format!("{what}.{GROUP} {role:?} not found")));
                }
            }
        }
    };
    let owner = state.rbac.rules_for(user, &namespace);
    let missing = uncovered(&owner, &servant);
    if missing.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = missing.iter().map(Atom::render).collect();
    Err(forbidden(format!(
        "user {:?} (groups={:?}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        user.groups,
        list.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_covered_piece_by_piece() {
        let owner = vec![
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}),
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]}),
            json!({"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["update"]}),
            json!({"nonResourceURLs": ["/api/*"], "verbs": ["get"]}),
        ];
        // Held across two owner rules: covered.
        let servant =
            [json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete"]})];
        assert!(uncovered(&owner, &servant).is_empty());
        assert!(uncovered(
            &owner,
            &[json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]})]
        )
        .is_empty());
        assert!(uncovered(
            &owner,
            &[json!({"nonResourceURLs": ["/api/v1"], "verbs": ["get"]})]
        )
        .is_empty());
        // A named secret is held, the secret type is not; a wildcard verb is more than every verb listed.
        assert!(uncovered(
            &owner,
            &[json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]})]
        )
        .is_empty());
        let missing = uncovered(
            &owner,
            &[
                json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
                json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}),
                json!({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}),
            ],
        );
        let rendered: Vec<String> = missing.iter().map(Atom::render).collect();
        assert_eq!(
            rendered,
            [
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["*"]}"#,
                r#"{APIGroups:[""], Resources:["pods/exec"], Verbs:["get"]}"#,
            ]
        );
        // Full authority covers anything.
        let all = [json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})];
        assert!(uncovered(&all, &owner[..4]).is_empty());
        assert_eq!(uncovered(&owner, &all).len(), 1);
    }

    #[test]
    fn what_each_kind_grants() {
        assert!(matches!(
            grant(
                "clusterroles",
                &json!({"aggregationRule": {"clusterRoleSelectors": []}})
            ),
            Some(Grant::Aggregation)
        ));
        assert!(matches!(
            grant("clusterroles", &json!({"rules": [{}]})),
            Some(Grant::Rules(r)) if r.len() == 1
        ));
        assert!(matches!(
            grant("rolebindings", &json!({"roleRef": {"kind": "ClusterRole", "name": "edit"}})),
            Some(Grant::Binding { kind, name }) if kind == "ClusterRole" && name == "edit"
        ));
        assert!(grant("configmaps", &json!({})).is_none());
    }
}
