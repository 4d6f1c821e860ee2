//! rbac.authorization.k8s.io/v1: names, role references and subjects.

use basalt_apimachinery::validate::FieldError;
use serde_json::{json, Value};

use super::table::{self, col, wide, AGE, NAME};
use super::{NameRule, Strategy, Table};
use crate::meta;

pub struct Roles;

impl Strategy for Roles {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn create_on_update(&self) -> bool {
        true
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        for (i, r) in obj
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if r.get("verbs")
                .and_then(Value::as_array)
                .is_none_or(|v| v.is_empty())
            {
                errs.push(FieldError::required(
                    format!("rules[{i}].verbs"),
                    "verbs must contain at least one value",
                ));
            }
            let has_urls = r
                .get("nonResourceURLs")
                .and_then(Value::as_array)
                .is_some_and(|v| !v.is_empty());
            let has_resources = r
                .get("resources")
                .and_then(Value::as_array)
                .is_some_and(|v| !v.is_empty());
            if has_urls && !meta::namespace(obj).is_empty() {
                errs.push(FieldError::invalid(
                    format!("rules[{i}].nonResourceURLs"),
                    r["nonResourceURLs"].clone(),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !has_urls && !has_resources && r.get("resourceNames").is_none() {
                errs.push(FieldError::required(
                    format!("rules[{i}].resources"),
                    "resource rules must supply at least one api group",
                ));
            }
        }
        errs
    }
}

pub struct Bindings;

const SUBJECT_KINDS: [&str; 3] = ["ServiceAccount", "User", "Group"];

impl Strategy for Bindings {
    fn name_rule(&self) -> NameRule {
        NameRule::PathSegment
    }
    fn create_on_update(&self) -> bool {
        true
    }
    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let role_ref = obj.get("roleRef").unwrap_or(&Value::Null);
        let kind = role_ref
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let allowed: &[&str] = if meta::namespace(obj).is_empty() {
            &["ClusterRole"]
        } else {
            &["Role", "ClusterRole"]
        };
        if !allowed.contains(&kind) {
            errs.push(FieldError::not_supported(
                "roleRef.kind",
                json!(kind),
                allowed,
            ));
        }
        if role_ref
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            errs.push(FieldError::required("roleRef.name", ""));
        }
        if role_ref.get("apiGroup").and_then(Value::as_str) != Some("rbac.authorization.k8s.io") {
            errs.push(FieldError::not_supported(
                "roleRef.apiGroup",
                role_ref.get("apiGroup").cloned().unwrap_or(json!("")),
                &["rbac.authorization.k8s.io"],
            ));
        }
        for (i, s) in obj
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let k = s.get("kind").and_then(Value::as_str).unwrap_or_default();
            if !SUBJECT_KINDS.contains(&k) {
                errs.push(FieldError::not_supported(
                    format!("subjects[{i}].kind"),
                    json!(k),
                    &SUBJECT_KINDS,
                ));
            }
            if s.get("name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required(format!("subjects[{i}].name"), ""));
            }
            if k == "ServiceAccount"
                && meta::namespace(obj).is_empty()
                && s.get("namespace")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                errs.push(FieldError::required(format!("subjects[{i}].namespace"), ""));
            }
        }
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        if new.get("roleRef") != old.get("roleRef") {
            errs.push(FieldError::invalid(
                "roleRef",
                new.get("roleRef").cloned().unwrap_or_default(),
                "cannot change roleRef",
            ));
        }
        errs
    }
    fn table(&self) -> Table {
        Table::new(
            vec![
                NAME,
                col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
                AGE,
                wide("Users", "string", "Users in the binding"),
                wide("Groups", "string", "Groups in the binding"),
                wide("ServiceAccounts", "string", "ServiceAccounts in the binding"),
            ],
            |o| {
                let subjects = |kind: &str| -> String {
                    let v: Vec<String> = o
                        .get("subjects")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|s| s.get("kind").and_then(Value::as_str) == Some(kind))
                        .map(|s| {
                            let n = s.get("name").and_then(Value::as_str).unwrap_or_default();
                            match (kind, s.get("namespace").and_then(Value::as_str)) {
                                ("ServiceAccount", Some(ns)) => format!("{ns}/{n}"),
                                _ => n.to_string(),
                            }
                        })
                        .collect();
                    v.join(", ")
                };
                vec![
                    json!(meta::name(o)),
                    json!(format!(
                        "{}/{}",
                        o.pointer("/roleRef/kind").and_then(Value::as_str).unwrap_or_default(),
                        o.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default()
                    )),
                    table::age(o),
                    json!(subjects("User")),
                    json!(subjects("Group")),
                    json!(subjects("ServiceAccount")),
                ]
            },
        )
    }
}
