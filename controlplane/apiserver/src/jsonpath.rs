//! The JSONPath subset CRD printer columns and scale paths use: `.a.b`, `.a[0]`, `.a[*].b`,
//! `.a[?(@.type=="Ready")].status`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    Filter(String, Value),
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim();
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut steps = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => {
                i += 1;
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
                if i > start {
                    steps.push(Step::Field(p[start..i].to_string()));
                }
            }
            b'[' => {
                let end = p[i..].find(']')? + i;
                let inner = &p[i + 1..end];
                if inner == "*" {
                    steps.push(Step::All);
                } else if let Some(f) = inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')'))
                {
                    let (k, v) = f.split_once("==")?;
                    let v = v.trim();
                    let value = serde_json::from_str(v)
                        .or_else(|_| serde_json::from_str(&format!("\"{}\"", v.trim_matches('\''))))
                        .ok()?;
                    steps.push(Step::Filter(k.trim().to_string(), value));
                } else if let Ok(n) = inner.parse() {
                    steps.push(Step::Index(n));
                } else {
                    steps.push(Step::Field(
                        inner.trim_matches('\'').trim_matches('"').to_string(),
                    ));
                }
                i = end + 1;
            }
            _ => return None,
        }
    }
    Some(steps)
}

/// Every value `path` selects in `v`.
pub fn select<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let Some(steps) = parse(path) else {
        return Vec::new();
    };
    let mut cur = vec![v];
    for s in &steps {
        let mut next = Vec::new();
        for c in cur {
            match s {
                Step::Field(f) => next.extend(c.get(f)),
                Step::Index(i) => next.extend(c.get(*i)),
                Step::All => match c {
                    Value::Array(a) => next.extend(a.iter()),
                    Value::Object(m) => next.extend(m.values()),
                    _ => {}
                },
                Step::Filter(k, val) => {
                    if let Value::Array(a) = c {
                        next.extend(a.iter().filter(|i| i.get(k) == Some(val)));
                    }
                }
            }
        }
        cur = next;
    }
    cur
}

/// The text of the first selected value (upstream's printer column cell).
pub fn first(v: &Value, path: &str) -> Option<Value> {
    select(v, path).into_iter().next().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let v = json!({"spec": {"size": 3, "tags": ["a", "b"]}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}});
        assert_eq!(first(&v, ".spec.size"), Some(json!(3)));
        assert_eq!(first(&v, ".spec.tags[1]"), Some(json!("b")));
        assert_eq!(select(&v, ".spec.tags[*]").len(), 2);
        assert_eq!(
            first(&v, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(json!("True"))
        );
        assert_eq!(first(&v, ".spec.missing"), None);
    }
}
