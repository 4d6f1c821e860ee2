//! Label and field selectors: the `labelSelector=` / `fieldSelector=` query syntax, LabelSelector objects,
//! and matching.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::names;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
}

/// A label selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match &self.op {
            Op::Equals(x) => v == Some(x),
            Op::NotEquals(x) => v != Some(x),
            Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
            Op::NotIn(xs) => v.is_none_or(|v| !xs.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::GreaterThan(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            Op::LessThan(n) => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        }
    }
}

impl LabelSelector {
    pub fn everything() -> Self {
        LabelSelector::default()
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches an object's `metadata.labels`.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.is_empty() {
            return true;
        }
        self.matches(&labels_of(obj))
    }

    /// Parses the query syntax: `app=web,tier!=db,env in (a,b),!legacy,release`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(LabelSelector { requirements })
    }

    /// A `LabelSelector` object (`matchLabels`, `matchExpressions`). `None` (a null selector) selects
    /// nothing in upstream's controllers; callers decide what a missing selector means.
    pub fn from_object(v: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                let val = val.as_str().unwrap_or_default().to_string();
                validate_key(k)?;
                validate_value(&val)?;
                requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::Equals(val),
                });
            }
        }
        if let Some(exprs) = v.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                validate_key(&key)?;
                let values: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let op = match e
                    .get("operator")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                {
                    "In" if !values.is_empty() => Op::In(values),
                    "NotIn" if !values.is_empty() => Op::NotIn(values),
                    "Exists" if values.is_empty() => Op::Exists,
                    "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
                    "In" | "NotIn" => {
                        return Err(SelectorError(
                            "for 'in', 'notin' operators, values set can't be empty".into(),
                        ))
                    }
                    "Exists" | "DoesNotExist" => {
                        return Err(SelectorError(
                            "values set must be empty for exists and does not exist".into(),
                        ))
                    }
                    other => {
                        return Err(SelectorError(format!(
                            "{other:?} is not a valid label selector operator"
                        )))
                    }
                };
                requirements.push(Requirement { key, op });
            }
        }
        Ok(LabelSelector { requirements })
    }

    /// The query syntax of this selector.
    pub fn to_query(&self) -> String {
        let terms: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                Op::Equals(v) => format!("{}={v}", r.key),
                Op::NotEquals(v) => format!("{}!={v}", r.key),
                Op::In(vs) => format!("{} in ({})", r.key, vs.join(",")),
                Op::NotIn(vs) => format!("{} notin ({})", r.key, vs.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
                Op::GreaterThan(n) => format!("{}>{n}", r.key),
                Op::LessThan(n) => format!("{}<{n}", r.key),
            })
            .collect();
        terms.join(",")
    }
}

/// An object's labels as a map.
pub fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn split_terms(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                if depth == 0 {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: found ')', expected: identifier in {text:?}"
                    )));
                }
                depth -= 1
            }
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!(
            "unable to parse requirement: unterminated set in {text:?}"
        )));
    }
    out.push(&text[start..]);
    Ok(out)
}

fn validate_key(k: &str) -> Result<(), SelectorError> {
    names::qualified_name(k).map_err(|e| {
        SelectorError(format!(
            "unable to parse requirement: invalid label key {k:?}: {e}"
        ))
    })
}

fn validate_value(v: &str) -> Result<(), SelectorError> {
    names::label_value(v).map_err(|e| {
        SelectorError(format!(
            "unable to parse requirement: invalid label value: {v:?}: {e}"
        ))
    })
}

fn parse_set(s: &str) -> Result<Vec<String>, SelectorError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| {
            SelectorError(format!(
                "unable to parse requirement: found {s:?}, expected: '('"
            ))
        })?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        validate_value(v)?;
    }
    Ok(values)
}

fn parse_requirement(term: &str) -> Result<Requirement, SelectorError> {
    if let Some(key) = term.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement {
            key: key.into(),
            op: Op::DoesNotExist,
        });
    }
    for (sym, make) in [("!=", 0), ("==", 1), ("=", 1), (">", 2), ("<", 3)] {
        if let Some((k, v)) = term.split_once(sym) {
            let key = k.trim();
            let value = v.trim();
            validate_key(key)?;
            let op = match make {
                0 => {
                    validate_value(value)?;
                    Op::NotEquals(value.into())
                }
                1 => {
                    validate_value(value)?;
                    Op::Equals(value.into())
                }
                2 | 3 => {
                    let n: i64 = value.parse().map_err(|_| {
                        SelectorError(format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value:?}"))
                    })?;
                    if make == 2 {
                        Op::GreaterThan(n)
                    } else {
                        Op::LessThan(n)
                    }
                }
                _ => unreachable!(),
            };
            return Ok(Requirement {
                key: key.into(),
                op,
            });
        }
    }
    let words: Vec<&str> = term.splitn(2, char::is_whitespace).collect();
    if words.len() == 2 {
        let key = words[0].trim();
        let rest = words[1].trim();
        validate_key(key)?;
        if let Some(set) = rest.strip_prefix("notin") {
            return Ok(Requirement {
                key: key.into(),
                op: Op::NotIn(parse_set(set)?),
            });
        }
        if let Some(set) = rest.strip_prefix("in") {
            return Ok(Requirement {
                key: key.into(),
                op: Op::In(parse_set(set)?),
            });
        }
        return Err(SelectorError(format!(
            "unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"
        )));
    }
    validate_key(term)?;
    Ok(Requirement {
        key: term.into(),
        op: Op::Exists,
    })
}

/// One term of a field selector: `spec.nodeName=node-1` or `status.phase!=Running`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A field selector: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(text, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some((f, v)) = split_op(&term, "!=") {
                (f, v, false)
            } else if let Some((f, v)) = split_op(&term, "==") {
                (f, v, true)
            } else if let Some((f, v)) = split_op(&term, "=") {
                (f, v, true)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{text}'; can't understand '{term}'"
                )));
            };
            requirements.push(FieldRequirement {
                field: field.trim().to_string(),
                value: unescape(value.trim()),
                equal,
            });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Matches given a way to read a field's value (as upstream's field sets: absent fields read as "").
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let v = get(&r.field).unwrap_or_default();
            (v == r.value) == r.equal
        })
    }

    /// The value a term requires the field to equal, if any (`metadata.name=x` narrows a list to a get).
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.equal && r.field == field)
            .map(|r| r.value.as_str())
    }
}

fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn split_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let bytes = term.as_bytes();
    let mut i = 0;
    while i + op.len() <= term.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if &term[i..i + op.len()] == op {
            return Some((&term[..i], &term[i + op.len()..]));
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            out.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_syntax() {
        let s =
            LabelSelector::parse("app=web, tier!=db,env in (prod, staging),!legacy,release,gen>2")
                .unwrap();
        assert_eq!(s.requirements.len(), 6);
        let l = labels(&[
            ("app", "web"),
            ("env", "prod"),
            ("release", "1"),
            ("gen", "3"),
        ]);
        assert!(s.matches(&l));
        let mut l2 = l.clone();
        l2.insert("legacy".into(), "".into());
        assert!(!s.matches(&l2));
        assert!(LabelSelector::parse("app==web")
            .unwrap()
            .matches(&labels(&[("app", "web")])));
        assert!(LabelSelector::parse("env notin (a)")
            .unwrap()
            .matches(&labels(&[])));
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
        for bad in ["app=we b", "a b c", "x in (a", "-a=b", "gen>x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_selector_objects() {
        let s = LabelSelector::from_object(&serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]
        }))
        .unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
        assert_eq!(s.to_query(), "app=web,tier in (fe,be)");
        assert!(LabelSelector::from_object(
            &serde_json::json!({"matchExpressions": [{"key": "a", "operator": "In"}]})
        )
        .is_err());
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        let get = |f: &str| match f {
            "spec.nodeName" => Some("n1".to_string()),
            "status.phase" => Some("Running".to_string()),
            _ => None,
        };
        assert!(s.matches(get));
        assert_eq!(s.required_value("spec.nodeName"), Some("n1"));
        assert!(FieldSelector::parse("a==b")
            .unwrap()
            .matches(|_| Some("b".into())));
        assert!(FieldSelector::parse("metadata.name=a\\,b")
            .unwrap()
            .matches(|_| Some("a,b".into())));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
