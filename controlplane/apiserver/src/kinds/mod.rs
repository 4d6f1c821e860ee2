//! Per-kind behaviour, as upstream's registry strategies: defaults, validation, what an update may change,
//! how `kubectl get` prints the kind, which fields its field selectors know.
//!
//! One module per API group family; each kind is a [`Strategy`]. Kinds with nothing special use [`Plain`].

pub mod apps;
pub mod core;
pub mod misc;
pub mod pods;
pub mod rbac;
pub mod storage;
pub mod table;

use basalt_apimachinery::names;
use basalt_apimachinery::validate::FieldError;
use serde_json::Value;

use crate::meta;
pub use table::{Column, Table};

/// How a kind's `status` relates to its main resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPolicy {
    /// No status, or one written with the object.
    WithObject,
    /// A `status` subresource: writes to the object keep the old status, writes to `status` only change it.
    /// A create starts from an empty status.
    Subresource,
    /// As `Subresource`, but a create keeps the status it is given: upstream's Node, which the kubelet
    /// (and scheduler_perf, and every tool that makes fake nodes) registers with its capacity.
    SubresourceSetOnCreate,
}

/// Which rule an object's name follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label,
    PathSegment,
}

impl NameRule {
    pub fn check(self, name: &str) -> Result<(), String> {
        match self {
            NameRule::Subdomain => names::dns1123_subdomain(name),
            NameRule::Label => names::dns1123_label(name),
            NameRule::PathSegment => names::path_segment(name),
        }
    }
}

/// What a field selector can read of a kind.
pub enum FieldValue {
    Value(Option<String>),
    /// The kind has no such selectable field (400: `field label not supported`).
    Unsupported,
}

pub trait Strategy: Send + Sync + 'static {
    fn status(&self) -> StatusPolicy {
        StatusPolicy::WithObject
    }

    /// Whether writes to the object and to its `status` are apart.
    fn has_status_subresource(&self) -> bool {
        matches!(
            self.status(),
            StatusPolicy::Subresource | StatusPolicy::SubresourceSetOnCreate
        )
    }

    /// Whether `metadata.generation` counts changes of everything but metadata and status.
    fn tracks_generation(&self) -> bool {
        self.has_status_subresource()
    }

    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }

    /// Upstream's defaulting of the kind (what the scheme's SetDefaults functions fill in).
    fn default(&self, _obj: &mut Value) {}

    /// Server-set fields of a new object (status on create).
    fn prepare_create(&self, _obj: &mut Value) {}

    /// Server-set fields of an update of the object itself.
    fn prepare_update(&self, _new: &mut Value, _old: &Value) {}
    /// What an update through the `status` subresource may not change, put back from `old`.
    fn prepare_status_update(&self, _new: &mut Value, _old: &Value) {}

    fn validate(&self, _obj: &Value) -> Vec<FieldError> {
        Vec::new()
    }

    /// Validation of an update: immutable fields, then the object itself.
    fn validate_update(&self, new: &Value, _old: &Value) -> Vec<FieldError> {
        self.validate(new)
    }

    fn table(&self) -> Table {
        Table::default_for_kind()
    }

    /// A field for field selectors; `metadata.name` and `metadata.namespace` are handled for every kind.
    fn field(&self, _obj: &Value, _field: &str) -> FieldValue {
        FieldValue::Unsupported
    }

    /// PUT of a missing object creates it (upstream's AllowCreateOnUpdate).
    fn create_on_update(&self) -> bool {
        false
    }

    /// PUT without a resourceVersion overwrites (upstream's AllowUnconditionalUpdate).
    fn unconditional_update(&self) -> bool {
        true
    }

    /// A graceful deletion period for this object, when the kind deletes gracefully (pods).
    fn grace_period(&self, _obj: &Value, _requested: Option<i64>) -> Option<i64> {
        None
    }
}

/// A kind with no behaviour of its own.
pub struct Plain {
    pub status: StatusPolicy,
    pub names: NameRule,
    pub create_on_update: bool,
    pub table: fn() -> Table,
}

impl Plain {
    pub const fn new() -> Self {
        Plain {
            status: StatusPolicy::WithObject,
            names: NameRule::Subdomain,
            create_on_update: false,
            table: Table::default_for_kind,
        }
    }
}

impl Default for Plain {
    fn default() -> Self {
        Self::new()
    }
}

impl Strategy for Plain {
    fn status(&self) -> StatusPolicy {
        self.status
    }
    fn name_rule(&self) -> NameRule {
        self.names
    }
    fn create_on_update(&self) -> bool {
        self.create_on_update
    }
    fn table(&self) -> Table {
        (self.table)()
    }
}

/// `spec.x` style pointer reads for field selectors.
pub fn field_str(obj: &Value, pointer: &str) -> FieldValue {
    FieldValue::Value(obj.pointer(pointer).map(|v| match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }))
}

/// Sets `pointer` (a JSON pointer into objects) to `value` when it is absent.
pub fn default_at(obj: &mut Value, pointer: &str, value: Value) {
    if obj.pointer(pointer).is_some_and(|v| !v.is_null()) {
        return;
    }
    let mut cur = obj;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let m = cur.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            m.insert(p.to_string(), value);
            return;
        }
        cur = m
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
}

/// An error when a field changed between two versions of an object (`field is immutable`).
pub fn immutable(new: &Value, old: &Value, pointer: &str, path: &str) -> Option<FieldError> {
    let (n, o) = (new.pointer(pointer), old.pointer(pointer));
    (n != o).then(|| {
        FieldError::invalid(
            path,
            n.cloned().unwrap_or(Value::Null),
            "field is immutable",
        )
    })
}

/// Validates every label key and value, as ObjectMeta validation does.
pub fn validate_labels(obj: &Value, path: &str, errs: &mut Vec<FieldError>) {
    for (k, v) in meta::labels(obj) {
        if let Err(e) = names::qualified_name(&k) {
            errs.push(FieldError::invalid(
                format!("{path}.labels"),
                Value::String(k.clone()),
                e,
            ));
        }
        if let Err(e) = names::label_value(&v) {
            errs.push(FieldError::invalid(
                format!("{path}.labels"),
                Value::String(v),
                e,
            ));
        }
    }
    if let Some(a) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in a {
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            if let Err(e) = names::qualified_name(&k.to_ascii_lowercase()) {
                errs.push(FieldError::invalid(
                    format!("{path}.annotations"),
                    Value::String(k.clone()),
                    e,
                ));
            }
        }
        if total > 256 * 1024 {
            errs.push(FieldError::new(
                format!("{path}.annotations"),
                basalt_apimachinery::validate::ErrorKind::TooLong,
                None,
                "must have at most 262144 bytes",
            ));
        }
    }
}
