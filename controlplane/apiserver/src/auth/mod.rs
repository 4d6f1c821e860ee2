//! Who is asking ([`authn`]), and whether they may ([`rbac`], [`node`]): kube-apiserver's chain of client
//! certificates, service-account and bootstrap tokens, then the Node authorizer and RBAC with upstream's
//! default roles ([`policy`]); RBAC objects that would grant more than their writer holds are refused
//! ([`escalation`]).

pub mod authn;
pub mod escalation;
pub mod node;
pub mod policy;
pub mod rbac;
pub mod tokens;

use std::collections::BTreeMap;

use serde_json::{json, Value};

pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
pub const MASTERS: &str = "system:masters";
pub const ANONYMOUS: &str = "system:anonymous";

/// An authenticated identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The `userInfo` of reviews and CSRs.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = json!(self.extra);
        }
        v
    }
}

/// What a request would do, as an authorizer sees it.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    /// Empty for a non-resource request.
    pub resource: String,
    pub subresource: String,
    pub group: String,
    pub namespace: String,
    pub name: String,
    /// Set for a non-resource request.
    pub path: Option<String>,
}

impl Attributes {
    /// `User "bob" cannot list resource "pods" in API group "" in the namespace "default"`.
    pub fn denial(&self, user: &UserInfo) -> String {
        if let Some(path) = &self.path {
            return format!("User {:?} cannot {} path {path:?}", user.name, self.verb);
        }
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", self.namespace)
        };
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
            user.name, self.verb, self.group
        )
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No opinion: the next authorizer decides; denial if none allows.
    NoOpinion,
    Deny(String),
}
