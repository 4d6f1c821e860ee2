//! Server-side printing for `kubectl get` (meta.k8s.io/v1 Table): columns and one row per object.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::clock;

/// A column of a Table (`columnDefinitions`). Priority 1 columns show only with `-o wide`.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: u8,
}

pub const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 0,
    }
}

pub const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        description,
        priority: 1,
    }
}

pub const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

pub const AGE: Column = col(
    "Age",
    "string",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
);

/// How a kind prints.
#[derive(Clone)]
pub struct Table {
    pub columns: Vec<Column>,
    pub row: fn(&Value) -> Vec<Value>,
}

impl Table {
    /// Upstream's default for kinds without a printer: NAME and CREATED AT.
    pub fn default_for_kind() -> Table {
        Table {
            columns: vec![
                NAME,
                Column {
                    name: "Created At",
                    kind: "date",
                    format: "",
                    description: AGE.description,
                    priority: 0,
                },
            ],
            row: |o| {
                vec![
                    json!(crate::meta::name(o)),
                    o.pointer("/metadata/creationTimestamp")
                        .cloned()
                        .unwrap_or(Value::Null),
                ]
            },
        }
    }

    pub fn new(columns: Vec<Column>, row: fn(&Value) -> Vec<Value>) -> Table {
        Table { columns, row }
    }

    pub fn definitions(&self) -> Value {
        Value::Array(
            self.columns
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name,
                        "type": c.kind,
                        "format": c.format,
                        "description": c.description,
                        "priority": c.priority,
                    })
                })
                .collect(),
        )
    }
}

/// The AGE cell of an object.
pub fn age(obj: &Value) -> Value {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    {
        Some(t) => json!(age_of(t)),
        None => json!("<unknown>"),
    }
}

pub fn age_of(time: &str) -> String {
    match clock::parse(time) {
        Some(t) => basalt_apimachinery::duration::human(
            SystemTime::now().duration_since(t).unwrap_or_default(),
        ),
        None => "<unknown>".into(),
    }
}

pub fn s(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => json!(s),
        Some(Value::Null) | None => json!("<none>"),
        Some(other) => json!(other.to_string()),
    }
}

pub fn or_none(text: String) -> Value {
    if text.is_empty() {
        json!("<none>")
    } else {
        json!(text)
    }
}

pub fn int(v: Option<&Value>) -> Value {
    json!(v.and_then(Value::as_i64).unwrap_or(0))
}

/// `k=v,k2=v2` of a string map.
pub fn map_text(v: Option<&Value>) -> String {
    v.and_then(Value::as_object)
        .map(|m| {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            parts.sort();
            parts.join(",")
        })
        .unwrap_or_default()
}
