//! Strategic merge patch (`application/strategic-merge-patch+json`), as kubectl and client-go send it.
//!
//! Maps merge key by key (`null` deletes). Lists follow their schema: with the `merge` strategy, items that
//! are objects merge by the list's merge key and scalars merge as a set; other lists are replaced. The
//! directives upstream defines are honoured: `$patch: replace|delete|merge`, `$retainKeys`,
//! `$setElementOrder/<list>` and `$deleteFromPrimitiveList/<list>`.

use serde_json::{Map, Value};

use crate::schema::{Node, PatchStrategy};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("{0}")]
    Invalid(String),
}

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies `patch` to `original` (both whole objects) under `schema`.
pub fn apply(original: &Value, patch: &Value, schema: &Node) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(PatchError::Invalid(
            "a strategic merge patch must be a JSON object".into(),
        ));
    };
    let base = match original {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    match merge_map(base, p, Some(schema))? {
        Some(m) => Ok(Value::Object(m)),
        None => Ok(Value::Object(Map::new())),
    }
}

/// Merges a patch map into a map. `None`: the map is deleted (`$patch: delete`).
fn merge_map(
    mut original: Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Option<&Node>,
) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get(PATCH).and_then(Value::as_str) {
        Some("replace") => return Ok(Some(strip(patch))),
        Some("delete") => return Ok(None),
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::Invalid(format!(
                "unknown patch type: {other:?}"
            )))
        }
    }
    if let Some(retain) = patch.get(RETAIN_KEYS) {
        let keep: Vec<&str> = retain
            .as_array()
            .ok_or_else(|| PatchError::Invalid("$retainKeys must be a list of strings".into()))?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_PRIMITIVE) {
            let remove = value
                .as_array()
                .ok_or_else(|| PatchError::Invalid(format!("{key} must be a list")))?;
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if key.starts_with(SET_ORDER) || key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        let child = schema.and_then(|s| s.field(key));
        if value.is_null() {
            original.remove(key);
            continue;
        }
        let merged = match (original.remove(key), value) {
            (Some(Value::Object(o)), Value::Object(p)) => {
                merge_map(o, p, child)?.map(Value::Object)
            }
            (Some(Value::Array(o)), Value::Array(p)) => Some(merge_list(o, p, child, key)?),
            (None, Value::Object(p)) => merge_map(Map::new(), p, child)?.map(Value::Object),
            (None, Value::Array(p)) => Some(merge_list(Vec::new(), p, child, key)?),
            (_, other) => Some(strip_value(other)),
        };
        if let Some(v) = merged {
            original.insert(key.clone(), v);
        }
    }
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix(SET_ORDER) {
            let order = order
                .as_array()
                .ok_or_else(|| PatchError::Invalid(format!("{key} must be a list")))?;
            let merge_key = schema
                .and_then(|s| s.field(field))
                .and_then(Node::as_array)
                .and_then(|a| a.merge_key.clone());
            if let Some(Value::Array(list)) = original.get_mut(field) {
                reorder(list, order, merge_key.as_deref());
            }
        }
    }
    Ok(Some(original))
}

fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    schema: Option<&Node>,
    key: &str,
) -> Result<Value, PatchError> {
    let array = schema.and_then(Node::as_array);
    let strategy = array.map(|a| a.patch).unwrap_or_default();
    // `[{"$patch": "replace"}, …]` replaces the list with the other items whatever the strategy.
    if patch
        .iter()
        .any(|i| i.get(PATCH).and_then(Value::as_str) == Some("replace"))
    {
        return Ok(Value::Array(
            patch
                .iter()
                .filter(|i| i.get(PATCH).is_none())
                .map(strip_value)
                .collect(),
        ));
    }
    if strategy != PatchStrategy::Merge {
        return Ok(Value::Array(patch.iter().map(strip_value).collect()));
    }
    let items_are_maps = patch.iter().chain(original.iter()).any(Value::is_object);
    if !items_are_maps {
        // A set of scalars: the union, in original order then the patch's new values.
        let mut out = original;
        for v in patch {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let Some(merge_key) = array.and_then(|a| a.merge_key.clone()) else {
        return Err(PatchError::Invalid(format!(
            "the list {key:?} has no merge key to merge its items by"
        )));
    };
    let item_schema = array.map(|a| &a.items);
    let mut out = original;
    for item in patch {
        let Value::Object(p) = item else {
            return Err(PatchError::Invalid(format!(
                "the items of {key:?} must be objects"
            )));
        };
        let id = p.get(&merge_key).cloned().ok_or_else(|| {
            PatchError::Invalid(format!(
                "map: {item} does not contain declared merge key: {merge_key}"
            ))
        })?;
        let pos = out.iter().position(|o| o.get(&merge_key) == Some(&id));
        if p.get(PATCH).and_then(Value::as_str) == Some("delete") {
            out.retain(|o| o.get(&merge_key) != Some(&id));
            continue;
        }
        match pos {
            Some(i) => {
                let base = match out[i].take() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                match merge_map(base, p, item_schema)? {
                    Some(m) => out[i] = Value::Object(m),
                    None => {
                        out.remove(i);
                    }
                }
            }
            None => {
                if let Some(m) = merge_map(Map::new(), p, item_schema)? {
                    out.push(Value::Object(m));
                }
            }
        }
    }
    Ok(Value::Array(out))
}

/// Puts the items named in `order` first, in that order; the others keep their places after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], merge_key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match merge_key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&id).collect();
    let mut head: Vec<Option<Value>> = vec![None; wanted.len()];
    let mut tail = Vec::new();
    for item in list.drain(..) {
        match wanted.iter().position(|w| *w == id(&item)) {
            Some(i) if head[i].is_none() => head[i] = Some(item),
            _ => tail.push(item),
        }
    }
    list.extend(head.into_iter().flatten());
    list.extend(tail);
}

/// A patch value with its directives removed (it lands where nothing was).
fn strip_value(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(strip(m)),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| i.get(PATCH).and_then(Value::as_str) != Some("delete"))
                .map(strip_value)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn strip(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| {
            !(k.as_str() == PATCH
                || k.as_str() == RETAIN_KEYS
                || k.starts_with(SET_ORDER)
                || k.starts_with(DELETE_PRIMITIVE)
                || v.is_null())
        })
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schemas;
    use serde_json::json;

    fn pod() -> &'static Node {
        Schemas::builtin().kind("", "v1", "Pod").unwrap()
    }

    fn deployment() -> &'static Node {
        Schemas::builtin().kind("apps", "v1", "Deployment").unwrap()
    }

    #[test]
    fn containers_merge_by_name_and_lists_without_strategy_are_replaced() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:1", "args": ["a", "b"], "env": [{"name": "X", "value": "1"}]},
            {"name": "side", "image": "busybox"}
        ]}});
        let patch = json!({"metadata": {"labels": {"b": null, "c": "3"}}, "spec": {"containers": [
            {"name": "web", "image": "nginx:2", "args": ["c"], "env": [{"name": "Y", "value": "2"}]}
        ]}});
        let out = apply(&original, &patch, pod()).unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "c": "3"}));
        let web = &out["spec"]["containers"][0];
        assert_eq!(web["image"], "nginx:2");
        assert_eq!(
            web["args"],
            json!(["c"]),
            "args has no merge strategy: replaced"
        );
        assert_eq!(
            web["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}])
        );
        assert_eq!(out["spec"]["containers"][1]["name"], "side");
    }

    #[test]
    fn directives() {
        let original = json!({"metadata": {"finalizers": ["a", "b", "c"]}, "spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "b", "image": "y"}
        ]}});
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["b"], "finalizers": ["d"]},
            "spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}]}]
            }
        });
        let out = apply(&original, &patch, pod()).unwrap();
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "c", "d"]));
        assert_eq!(out["spec"]["containers"][0]["name"], "b");
        assert_eq!(
            out["spec"]["containers"][1]["env"],
            json!([{"name": "Y", "value": "2"}])
        );

        let replace = json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "z"}]}});
        let out = apply(&original, &replace, pod()).unwrap();
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "only", "image": "z"}])
        );

        let delete_map = json!({"spec": {"$patch": "delete"}});
        assert!(apply(&original, &delete_map, pod())
            .unwrap()
            .get("spec")
            .is_none());
    }

    #[test]
    fn retain_keys_drops_the_other_strategy_fields() {
        let original = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = apply(&original, &patch, deployment()).unwrap();
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn new_fields_arrive_without_directives() {
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "image": "x"}]}});
        let out = apply(&json!({}), &patch, pod()).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a", "image": "x"}]}})
        );
    }

    #[test]
    fn items_without_their_merge_key_are_refused() {
        let patch = json!({"spec": {"containers": [{"image": "x"}]}});
        assert!(apply(&json!({}), &patch, pod()).is_err());
    }
}
