//! Checking a decoded object against its schema, as kube-apiserver's decoding does.
//!
//! - Unknown fields are pruned, and reported for `fieldValidation=Strict|Warn` ([`Report::unknown`]).
//! - A value of the wrong JSON type fails decoding ([`Report::type_errors`]): a 400 for built-in kinds.
//! - Structural-schema constraints of custom resources (required, enum, bounds, lengths, patterns, list and
//!   map sizes) are field errors ([`Report::invalid`]): a 422. Defaults from the schema are applied.
//! - Duplicate fields in the raw JSON are found by [`parse_json`], which keeps the position of a syntax error.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::schema::{Checks, ListType, Meta, Node, Scalar};

/// A field error, as upstream's `field.Error`: the path, what kind of problem, the bad value and a detail.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: String,
    pub kind: ErrorKind,
    pub value: Option<Value>,
    pub detail: String,
}

/// Upstream's `field.ErrorType`s, whose names are the `reason` of a 422's causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
    NotFound,
}

impl ErrorKind {
    /// The cause `reason` in a Status (`FieldValueRequired` …).
    pub fn reason(self) -> &'static str {
        match self {
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::TooMany => "FieldValueTooMany",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::NotFound => "FieldValueNotFound",
        }
    }
}

impl FieldError {
    pub fn new(
        path: impl Into<String>,
        kind: ErrorKind,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            path: path.into(),
            kind,
            value,
            detail: detail.into(),
        }
    }

    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Required, None, detail)
    }

    pub fn invalid(path: impl Into<String>, value: Value, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Invalid, Some(value), detail)
    }

    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(path, ErrorKind::Forbidden, None, detail)
    }

    pub fn not_supported(path: impl Into<String>, value: Value, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            path,
            ErrorKind::NotSupported,
            Some(value),
            format!("supported values: {}", list.join(", ")),
        )
    }
}

/// Renders a value as upstream's field errors quote it: strings quoted, numbers bare.
pub fn quote(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

impl fmt::Display for FieldError {
    /// Upstream's `field.Error.Error()` text: `spec.replicas: Invalid value: -1: must be …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ErrorKind::Required => "Required value",
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::TooLong => "Too long",
            ErrorKind::TooMany => "Too many",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::NotFound => "Not found",
        };
        write!(f, "{}: {what}", self.path)?;
        if let Some(v) = &self.value {
            if matches!(
                self.kind,
                ErrorKind::Invalid
                    | ErrorKind::NotSupported
                    | ErrorKind::Duplicate
                    | ErrorKind::NotFound
            ) {
                write!(f, ": {}", quote(v))?;
            }
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// What checking one object found.
#[derive(Debug, Default)]
pub struct Report {
    /// Paths (`spec.containers[0].imagee`) of fields the schema does not know, already removed.
    pub unknown: Vec<String>,
    /// Values of the wrong JSON type: `(path, expected type, what was there)`.
    pub type_errors: Vec<(String, &'static str, &'static str)>,
    /// Constraint violations of a structural schema.
    pub invalid: Vec<FieldError>,
}

/// What to check besides types and unknown fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Enforce structural-schema constraints and apply schema defaults (custom resources).
    pub structural: bool,
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks `value` against `node`, pruning unknown fields and (structural) applying defaults.
pub fn check(value: &mut Value, node: &Node, opts: Options) -> Report {
    let mut report = Report::default();
    walk(value, node, &mut String::new(), opts, &mut report);
    report
}

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(value: &mut Value, node: &Node, path: &mut String, opts: Options, r: &mut Report) {
    let node = node.resolved();
    if value.is_null() {
        return;
    }
    match node {
        Node::Ref(_) => unreachable!("resolved"),
        Node::Any(meta) => {
            if opts.structural {
                constraints(value, meta, path, r);
            }
        }
        Node::Quantity => match value {
            Value::String(s) => {
                if crate::quantity::Quantity::parse(s).is_err() {
                    r.invalid.push(FieldError::invalid(
                        path.clone(),
                        value.clone(),
                        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    ));
                }
            }
            Value::Number(_) => {}
            other => r
                .type_errors
                .push((path.clone(), "string", json_type(other))),
        },
        Node::IntOrString(meta) => match value {
            Value::String(_) => {
                if opts.structural {
                    constraints(value, meta, path, r)
                }
            }
            Value::Number(n) if n.is_i64() => {
                if opts.structural {
                    constraints(value, meta, path, r)
                }
            }
            other => r
                .type_errors
                .push((path.clone(), "int-or-string", json_type(other))),
        },
        Node::Scalar(kind, meta) => {
            let ok = match (kind, &*value) {
                (Scalar::String, Value::String(_)) => true,
                (Scalar::Boolean, Value::Bool(_)) => true,
                (Scalar::Integer, Value::Number(n)) => {
                    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
                }
                (Scalar::Number, Value::Number(_)) => true,
                _ => false,
            };
            if !ok {
                let expected = match kind {
                    Scalar::String => "string",
                    Scalar::Boolean => "boolean",
                    Scalar::Integer => "integer",
                    Scalar::Number => "number",
                };
                r.type_errors
                    .push((path.clone(), expected, json_type(value)));
                return;
            }
            if opts.structural {
                constraints(value, meta, path, r);
            }
        }
        Node::Array(a) => {
            let Value::Array(items) = value else {
                r.type_errors
                    .push((path.clone(), "array", json_type(value)));
                return;
            };
            for (i, item) in items.iter_mut().enumerate() {
                let mut p = format!("{path}[{i}]");
                if item.is_null() && opts.structural && !a.items.meta().is_some_and(|m| m.nullable)
                {
                    continue;
                }
                walk(item, &a.items, &mut p, opts, r);
            }
            if opts.structural {
                constraints(value, &a.meta, path, r);
                list_uniqueness(value, &a.list, path, r);
            }
        }
        Node::Object(o) => {
            let Value::Object(map) = value else {
                r.type_errors
                    .push((path.clone(), "object", json_type(value)));
                return;
            };
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child = o
                    .properties
                    .get(&key)
                    .or(o.additional.as_ref())
                    .or_else(|| node.field(&key));
                match child {
                    Some(child) => {
                        let v = map.get_mut(&key).expect("key listed");
                        if v.is_null() {
                            // A null is an absent field for a built-in kind (Go decodes it to the zero
                            // value) and for a non-nullable schema field (pruned, as upstream does).
                            let nullable =
                                opts.structural && child.meta().is_some_and(|m| m.nullable);
                            if !nullable && o.additional.is_none() {
                                map.remove(&key);
                            }
                            continue;
                        }
                        let mut p = if o.properties.contains_key(&key) || o.additional.is_none() {
                            child_path(path, &key)
                        } else {
                            format!("{path}[{key}]")
                        };
                        walk(v, child, &mut p, opts, r);
                    }
                    None => {
                        r.unknown.push(child_path(path, &key));
                        map.remove(&key);
                    }
                }
            }
            if opts.structural {
                for (key, child) in &o.properties {
                    if map.contains_key(key) {
                        continue;
                    }
                    if let Some(default) = child.meta().and_then(|m| m.default.clone()) {
                        let mut d = default;
                        // Defaults are themselves defaulted and pruned.
                        let mut p = child_path(path, key);
                        walk(&mut d, child, &mut p, opts, &mut Report::default());
                        map.insert(key.clone(), d);
                    }
                }
                constraints(value, &o.meta, path, r);
            }
        }
    }
}

fn list_uniqueness(value: &Value, list: &ListType, path: &str, r: &mut Report) {
    let Value::Array(items) = value else { return };
    match list {
        ListType::Set => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    r.invalid.push(FieldError::new(
                        format!("{path}[{i}]"),
                        ErrorKind::Duplicate,
                        Some(item.clone()),
                        "",
                    ));
                }
            }
        }
        ListType::Map(keys) => {
            let mut seen = BTreeSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|k| item.get(k).map(Value::to_string).unwrap_or_default())
                    .collect();
                if !seen.insert(key.clone()) {
                    let shown: Map<String, Value> = keys
                        .iter()
                        .filter_map(|k| item.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    r.invalid.push(FieldError::new(
                        format!("{path}[{i}]"),
                        ErrorKind::Duplicate,
                        Some(Value::Object(shown)),
                        "",
                    ));
                }
            }
        }
        ListType::Atomic => {}
    }
}

fn constraints(value: &Value, meta: &Meta, path: &str, r: &mut Report) {
    let c: &Checks = &meta.checks;
    let at = if path.is_empty() { "<root>" } else { path };
    if let Some(allowed) = &c.enumeration {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(quote).collect();
            r.invalid.push(FieldError::new(
                path,
                ErrorKind::NotSupported,
                Some(value.clone()),
                format!("supported values: {}", list.join(", ")),
            ));
        }
    }
    match value {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if let Some(min) = c.minimum {
                if f < min || (c.exclusive_minimum && f == min) {
                    let op = if c.exclusive_minimum {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    r.invalid.push(FieldError::invalid(
                        path,
                        value.clone(),
                        format!("{at} in body should be {op} {}", fmt_num(min)),
                    ));
                }
            }
            if let Some(max) = c.maximum {
                if f > max || (c.exclusive_maximum && f == max) {
                    let op = if c.exclusive_maximum {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    r.invalid.push(FieldError::invalid(
                        path,
                        value.clone(),
                        format!("{at} in body should be {op} {}", fmt_num(max)),
                    ));
                }
            }
            if let Some(format) = &c.format {
                let bounds = match format.as_str() {
                    "int32" => Some((i32::MIN as f64, i32::MAX as f64)),
                    _ => None,
                };
                if let Some((lo, hi)) = bounds {
                    if f < lo || f > hi {
                        r.invalid.push(FieldError::invalid(
                            path,
                            value.clone(),
                            format!("{at} in body must be of type {format}"),
                        ));
                    }
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = c.max_length {
                if len > max {
                    r.invalid.push(FieldError::new(
                        path,
                        ErrorKind::TooLong,
                        Some(value.clone()),
                        format!("may not be more than {max} bytes"),
                    ));
                }
            }
            if let Some(min) = c.min_length {
                if len < min {
                    r.invalid.push(FieldError::invalid(
                        path,
                        value.clone(),
                        format!("{at} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(pattern) = &c.pattern {
                match regex::Regex::new(pattern) {
                    Ok(re) if !re.is_match(s) => r.invalid.push(FieldError::invalid(
                        path,
                        value.clone(),
                        format!("{at} in body should match '{pattern}'"),
                    )),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(max) = c.max_items {
                if n > max {
                    r.invalid.push(FieldError::new(
                        path,
                        ErrorKind::TooMany,
                        Some(Value::from(n)),
                        format!("must have at most {max} items"),
                    ));
                }
            }
            if let Some(min) = c.min_items {
                if n < min {
                    r.invalid.push(FieldError::invalid(
                        path,
                        value.clone(),
                        format!("{at} in body should have at least {min} items"),
                    ));
                }
            }
            if c.unique_items {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    if !seen.insert(item.to_string()) {
                        r.invalid.push(FieldError::new(
                            format!("{path}[{i}]"),
                            ErrorKind::Duplicate,
                            Some(item.clone()),
                            "",
                        ));
                    }
                }
            }
        }
        Value::Object(map) => {
            for req in &c.required {
                if !map.contains_key(req) {
                    r.invalid
                        .push(FieldError::required(child_path(path, req), ""));
                }
            }
            let n = map.len() as u64;
            if let Some(max) = c.max_properties {
                if n > max {
                    r.invalid.push(FieldError::new(
                        path,
                        ErrorKind::TooMany,
                        Some(Value::from(n)),
                        format!("must have at most {max} items"),
                    ));
                }
            }
            if let Some(min) = c.min_properties {
                if n < min {
                    r.invalid.push(FieldError::invalid(
                        path,
                        value.clone(),
                        format!("{at} in body should have at least {min} properties"),
                    ));
                }
            }
        }
        _ => {}
    }
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Parses a JSON body, keeping the last value of a repeated key (as Go's decoder does) and reporting each
/// repeated key's path, for strict field validation. A syntax error keeps serde_json's line and column.
pub fn parse_json(bytes: &[u8]) -> Result<(Value, Vec<String>), serde_json::Error> {
    let mut duplicates = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Tracked {
        path: String::new(),
        duplicates: &mut duplicates,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, duplicates))
}

struct Tracked<'a> {
    path: String,
    duplicates: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Tracked<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tracked<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            let seed = Tracked {
                path: format!("{}[{}]", self.path, out.len()),
                duplicates: &mut *self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let path = child_path(&self.path, &key);
            let v = access.next_value_seed(Tracked {
                path: path.clone(),
                duplicates: &mut *self.duplicates,
            })?;
            if out.insert(key, v).is_some() {
                self.duplicates.push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{structural, Schemas};
    use serde_json::json;

    fn pod() -> &'static Node {
        Schemas::builtin().kind("", "v1", "Pod").unwrap()
    }

    #[test]
    fn unknown_fields_are_pruned_and_named() {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "x"}], "extra": true}
        });
        let r = check(&mut v, pod(), Options::default());
        assert_eq!(
            r.unknown,
            vec!["metadata.bogus", "spec.containers[0].imagee", "spec.extra"]
        );
        assert!(r.type_errors.is_empty() && r.invalid.is_empty());
        assert_eq!(
            v["spec"]["containers"][0],
            json!({"name": "c", "image": "i"})
        );
        assert!(v["metadata"].get("bogus").is_none());
    }

    #[test]
    fn wrong_types_are_decode_errors() {
        let mut v = json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": "eighty"}]}], "hostNetwork": "yes"}});
        let r = check(&mut v, pod(), Options::default());
        assert_eq!(
            r.type_errors,
            vec![
                (
                    "spec.containers[0].ports[0].containerPort".to_string(),
                    "integer",
                    "string"
                ),
                ("spec.hostNetwork".to_string(), "boolean", "string")
            ]
        );
    }

    #[test]
    fn quantities_and_int_or_strings_take_both_forms() {
        let mut v = json!({"spec": {"containers": [{"name": "c",
            "resources": {"limits": {"cpu": "500m", "memory": 1024}},
            "livenessProbe": {"httpGet": {"port": "http"}}, "readinessProbe": {"httpGet": {"port": 8080}}}]}});
        let r = check(&mut v, pod(), Options::default());
        assert!(r.type_errors.is_empty() && r.invalid.is_empty(), "{r:?}");
        let mut bad = json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "lots"}}}]}});
        let r = check(&mut bad, pod(), Options::default());
        assert_eq!(
            r.invalid[0].path,
            "spec.containers[0].resources.limits[cpu]"
        );
    }

    #[test]
    fn structural_constraints_and_defaults() {
        let node = structural(&json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "required": ["size"], "properties": {
                "size": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["fast", "slow"], "default": "slow"},
                "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}
            }}}
        }));
        let mut ok = json!({"spec": {"size": 2}});
        let r = check(&mut ok, &node, Options { structural: true });
        assert!(r.invalid.is_empty(), "{r:?}");
        assert_eq!(ok["spec"]["mode"], "slow", "the default is applied");

        let mut bad = json!({"spec": {"size": 0, "mode": "medium", "name": "ABCD", "tags": ["a", "a"], "other": 1}});
        let r = check(&mut bad, &node, Options { structural: true });
        let shown: Vec<String> = r.invalid.iter().map(ToString::to_string).collect();
        assert_eq!(r.unknown, vec!["spec.other"]);
        assert!(shown.contains(&"spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1".to_string()), "{shown:?}");
        assert!(
            shown.contains(
                &"spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\""
                    .to_string()
            ),
            "{shown:?}"
        );
        assert!(
            shown.iter().any(|s| s.starts_with("spec.name: Too long")),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("spec.name: Invalid value: \"ABCD\"")),
            "{shown:?}"
        );
        assert!(
            shown.contains(&"spec.tags[1]: Duplicate value: \"a\"".to_string()),
            "{shown:?}"
        );

        let mut missing = json!({"spec": {}});
        let r = check(&mut missing, &node, Options { structural: true });
        assert_eq!(r.invalid[0].to_string(), "spec.size: Required value");
    }

    #[test]
    fn duplicate_keys_are_found_with_their_paths() {
        let (v, dups) =
            parse_json(br#"{"a": 1, "b": {"c": 1, "c": 2}, "a": 3, "l": [{"x": 1, "x": 1}]}"#)
                .unwrap();
        assert_eq!(v["a"], 3);
        assert_eq!(v["b"]["c"], 2);
        assert_eq!(dups, vec!["b.c", "a", "l[0].x"]);
        let err = parse_json(b"{\n  \"a\": ,\n}").unwrap_err();
        assert_eq!((err.line(), err.column()), (2, 8));
    }
}
