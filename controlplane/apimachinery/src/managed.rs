//! Managed fields and server-side apply, after structured-merge-diff (the library kube-apiserver uses).
//!
//! Every write records which manager set which fields (`metadata.managedFields`, FieldsV1). An `Apply`
//! (`application/apply-patch+yaml`) merges the manager's intent into the object by the schema's list and map
//! semantics, refuses to change fields another manager owns unless forced (409 with the conflicts), and removes
//! fields the manager applied before and no longer does (unless someone else owns them). An `Update` (create,
//! put, other patches) hands the fields it changes to its manager.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use crate::schema::{ListType, Node};

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or map key: `f:name`.
    Field(String),
    /// A list-map item by its key fields: `k:{"name":"web"}` (canonical JSON, keys sorted).
    Key(String),
    /// A set item by value: `v:"a"`.
    Value(String),
    /// An atomic list's item by position: `i:0` (only in sets of other managers; never produced here).
    Index(usize),
}

impl PathElement {
    fn encode(&self) -> String {
        match self {
            PathElement::Field(f) => format!("f:{f}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Option<PathElement> {
        let (kind, rest) = s.split_once(':')?;
        Some(match kind {
            "f" => PathElement::Field(rest.to_string()),
            "k" => PathElement::Key(canonical(&serde_json::from_str(rest).ok()?)),
            "v" => PathElement::Value(canonical(&serde_json::from_str(rest).ok()?)),
            "i" => PathElement::Index(rest.parse().ok()?),
            _ => return None,
        })
    }
}

/// JSON with object keys sorted, so that equal values give equal path elements.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, String> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            let parts: Vec<String> = sorted
                .into_iter()
                .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

pub type Path = Vec<PathElement>;

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeSet<Path>);

impl FieldSet {
    pub fn new() -> Self {
        FieldSet::default()
    }

    pub fn insert(&mut self, p: Path) {
        self.0.insert(p);
    }

    pub fn contains(&self, p: &Path) -> bool {
        self.0.contains(p)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Path> {
        self.0.iter()
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// Paths of this set under (and including) `prefix`.
    fn under<'a>(&'a self, prefix: &'a Path) -> impl Iterator<Item = &'a Path> + 'a {
        self.0.iter().filter(move |p| p.starts_with(prefix))
    }

    /// The FieldsV1 form: nested objects keyed by encoded path elements, `".": {}` marking a member that has
    /// members below it.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for (i, pe) in path.iter().enumerate() {
                let entry = node
                    .entry(pe.encode())
                    .or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(m) = entry else {
                    unreachable!()
                };
                if i + 1 == path.len() {
                    // A member: leaf `{}`; marked with "." when something below is a member too.
                    if !m.is_empty() {
                        m.insert(".".into(), json!({}));
                    } else {
                        m.insert("\u{0}".into(), json!({}));
                    }
                }
                node = m;
            }
        }
        finish_marks(&mut root);
        Value::Object(root)
    }

    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::new();
        fn walk(v: &Value, path: &mut Path, set: &mut FieldSet) {
            let Some(m) = v.as_object() else { return };
            if m.is_empty() && !path.is_empty() {
                set.insert(path.clone());
                return;
            }
            for (k, child) in m {
                if k == "." {
                    set.insert(path.clone());
                    continue;
                }
                if let Some(pe) = PathElement::decode(k) {
                    path.push(pe);
                    walk(child, path, set);
                    path.pop();
                }
            }
        }
        walk(v, &mut Vec::new(), &mut set);
        set
    }
}

/// Turns the temporary leaf marks into upstream's form: a member with children gets `"."`, a member without
/// stays `{}`.
fn finish_marks(m: &mut Map<String, Value>) {
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if let Some(Value::Object(child)) = m.get_mut(&k) {
            let marked = child.remove("\u{0}").is_some();
            finish_marks(child);
            if marked && !child.is_empty() {
                child.insert(".".into(), json!({}));
            }
        }
    }
}

/// The key path element of a list-map item. A key field the item leaves out counts with its schema
/// default (a port without a protocol is the TCP port), as structured-merge-diff keys it.
fn key_element(item: &Value, keys: &[String], item_node: &Node) -> PathElement {
    let mut m = Map::new();
    for k in keys {
        let v = item.get(k).cloned().or_else(|| {
            item_node
                .field(k)
                .and_then(Node::meta)
                .and_then(|m| m.default.clone())
        });
        if let Some(v) = v {
            m.insert(k.clone(), v);
        }
    }
    PathElement::Key(canonical(&Value::Object(m)))
}

/// Which fields an object sets, as an applier states them: every scalar, atomic value, list item, map entry
/// and empty value; structs and lists only through what is in them.
pub fn applied_fields(v: &Value, node: &Node) -> FieldSet {
    let mut set = FieldSet::new();
    collect(v, node, &mut Vec::new(), &mut set, false);
    set
}

/// Which fields an object sets, as an update records them: as [`applied_fields`], plus every non-empty map
/// (labels, annotations…) as a member itself.
pub fn updated_fields(v: &Value, node: &Node) -> FieldSet {
    let mut set = FieldSet::new();
    collect(v, node, &mut Vec::new(), &mut set, true);
    set
}

fn collect(v: &Value, node: &Node, path: &mut Path, set: &mut FieldSet, maps_are_members: bool) {
    let node = node.resolved();
    match (v, node) {
        (Value::Object(m), Node::Object(o)) if !o.atomic => {
            if m.is_empty() && !path.is_empty() {
                set.insert(path.clone());
                return;
            }
            let is_map = o.properties.is_empty() && o.additional.is_some();
            if is_map && maps_are_members && !path.is_empty() {
                set.insert(path.clone());
            }
            for (k, child) in m {
                let Some(child_node) = node.field(k) else {
                    continue;
                };
                path.push(PathElement::Field(k.clone()));
                let declared = o.properties.contains_key(k);
                if child.is_null() || !declared || child.as_object().is_some_and(Map::is_empty) {
                    set.insert(path.clone());
                }
                collect(child, child_node, path, set, maps_are_members);
                path.pop();
            }
        }
        (Value::Array(items), Node::Array(a)) => match &a.list {
            ListType::Atomic => set.insert(path.clone()),
            ListType::Set => {
                for item in items {
                    path.push(PathElement::Value(canonical(item)));
                    set.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                for item in items {
                    path.push(key_element(item, keys, &a.items));
                    set.insert(path.clone());
                    collect(item, &a.items, path, set, maps_are_members);
                    path.pop();
                }
            }
        },
        (Value::Object(_), Node::Any(_)) if !path.is_empty() => set.insert(path.clone()),
        _ => {
            if !path.is_empty() {
                set.insert(path.clone());
            }
        }
    }
}

/// The value at `path`, if the object has it.
pub fn get<'a>(v: &'a Value, path: &[PathElement], node: &Node) -> Option<&'a Value> {
    let mut cur = v;
    let mut node = node;
    for pe in path {
        match pe {
            PathElement::Field(f) => {
                node = node.field(f)?;
                cur = cur.get(f)?;
            }
            PathElement::Key(k) => {
                let a = node.as_array()?;
                let ListType::Map(keys) = &a.list else {
                    return None;
                };
                cur = cur
                    .as_array()?
                    .iter()
                    .find(|i| key_element(i, keys, &a.items) == PathElement::Key(k.clone()))?;
                node = &a.items;
            }
            PathElement::Value(val) => {
                let a = node.as_array()?;
                cur = cur.as_array()?.iter().find(|i| canonical(i) == *val)?;
                node = &a.items;
            }
            PathElement::Index(i) => {
                cur = cur.as_array()?.get(*i)?;
                node = &node.as_array()?.items;
            }
        }
    }
    Some(cur)
}

/// Removes the value at `path` (a field, list item or set member).
fn remove(v: &mut Value, path: &[PathElement], node: &Node) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    let mut node = node;
    for pe in parent {
        let next = match pe {
            PathElement::Field(f) => {
                let Some(n) = node.field(f) else { return };
                node = n;
                cur.get_mut(f)
            }
            PathElement::Key(k) => {
                let Some(a) = node.as_array() else { return };
                let ListType::Map(keys) = &a.list else { return };
                node = &a.items;
                cur.as_array_mut().and_then(|l| {
                    l.iter_mut()
                        .find(|i| key_element(i, keys, &a.items) == PathElement::Key(k.clone()))
                })
            }
            PathElement::Value(_) | PathElement::Index(_) => return,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        PathElement::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        PathElement::Key(k) => {
            let Some(a) = node.as_array() else { return };
            let ListType::Map(keys) = &a.list else { return };
            if let Some(l) = cur.as_array_mut() {
                l.retain(|i| key_element(i, keys, &a.items) != PathElement::Key(k.clone()));
            }
        }
        PathElement::Value(val) => {
            if let Some(l) = cur.as_array_mut() {
                l.retain(|i| canonical(i) != *val);
            }
        }
        PathElement::Index(_) => {}
    }
}

/// Merges an applied configuration into the live object: structs and granular maps field by field, list maps
/// item by item (by key), sets by value, atomic values replaced.
pub fn merge(live: &Value, applied: &Value, node: &Node) -> Value {
    let node = node.resolved();
    match (live, applied, node) {
        (Value::Object(l), Value::Object(a), Node::Object(o)) if !o.atomic => {
            let mut out = l.clone();
            for (k, av) in a {
                let child = node.field(k);
                let merged = match (l.get(k), child) {
                    (Some(lv), Some(c)) if !av.is_null() => merge(lv, av, c),
                    _ => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a), Node::Array(arr)) => match &arr.list {
            ListType::Atomic => applied.clone(),
            ListType::Set => {
                let mut out = a.clone();
                for item in l {
                    if !out.contains(item) {
                        out.push(item.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Map(keys) => {
                // Applied items in the applier's order, each merged over its live version; live items the
                // applier does not mention keep their place after the ones before them.
                let key = |i: &Value| key_element(i, keys, &arr.items);
                let applied_keys: Vec<PathElement> = a.iter().map(key).collect();
                let mut out = Vec::new();
                let mut next_applied = 0;
                for li in l {
                    let k = key(li);
                    if let Some(pos) = applied_keys.iter().position(|ak| *ak == k) {
                        while next_applied <= pos {
                            let ai = &a[next_applied];
                            let base = l.iter().find(|x| key(x) == applied_keys[next_applied]);
                            out.push(match base {
                                Some(b) => merge(b, ai, &arr.items),
                                None => ai.clone(),
                            });
                            next_applied += 1;
                        }
                    } else {
                        out.push(li.clone());
                    }
                }
                while next_applied < a.len() {
                    let ai = &a[next_applied];
                    let base = l.iter().find(|x| key(x) == applied_keys[next_applied]);
                    out.push(match base {
                        Some(b) => merge(b, ai, &arr.items),
                        None => ai.clone(),
                    });
                    next_applied += 1;
                }
                Value::Array(out)
            }
        },
        _ => applied.clone(),
    }
}

/// One entry of `metadata.managedFields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Entry {
    fn same_owner(&self, manager: &str, op: Operation, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == op
            && self.subresource.as_deref() == subresource
    }
}

/// The managed fields recorded in an object.
pub fn read(obj: &Value) -> Vec<Entry> {
    let Some(list) = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            Some(Entry {
                manager: e.get("manager")?.as_str()?.to_string(),
                operation: match e.get("operation")?.as_str()? {
                    "Apply" => Operation::Apply,
                    _ => Operation::Update,
                },
                api_version: e
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                time: e
                    .get("time")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                fields: FieldSet::from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null)),
            })
        })
        .collect()
}

/// Writes the entries into the object, in upstream's order (Apply before Update, then by time and manager),
/// dropping entries that own nothing.
pub fn write(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.fields.is_empty());
    entries.sort_by(|a, b| {
        (a.operation, &a.time, &a.manager).cmp(&(b.operation, &b.time, &b.manager))
    });
    let list: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), e.manager.into());
            m.insert(
                "operation".into(),
                match e.operation {
                    Operation::Apply => "Apply",
                    Operation::Update => "Update",
                }
                .into(),
            );
            m.insert("apiVersion".into(), e.api_version.into());
            m.insert("time".into(), e.time.into());
            m.insert("fieldsType".into(), "FieldsV1".into());
            m.insert("fieldsV1".into(), e.fields.to_fields_v1());
            if let Some(s) = e.subresource {
                m.insert("subresource".into(), s.into());
            }
            Value::Object(m)
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

/// Fields that should not be owned: the identity and bookkeeping of an object.
fn unowned(path: &Path) -> bool {
    let f = |s: &str| PathElement::Field(s.to_string());
    matches!(path.as_slice(), [a] if *a == f("apiVersion") || *a == f("kind"))
        || matches!(path.as_slice(), [m, x, ..] if *m == f("metadata") && [
            "name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
            "managedFields", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds",
        ].iter().any(|s| *x == f(s)))
        || matches!(path.as_slice(), [m] if *m == f("metadata"))
}

fn owned(set: FieldSet) -> FieldSet {
    FieldSet(set.0.into_iter().filter(|p| !unowned(p)).collect())
}

/// Paths of `new`'s fields whose values differ from `old`'s (added or modified members).
fn changed(old: Option<&Value>, new: &Value, node: &Node) -> FieldSet {
    let new_set = owned(updated_fields(new, node));
    let Some(old) = old else { return new_set };
    FieldSet(
        new_set
            .0
            .into_iter()
            .filter(|p| {
                let (o, n) = (get(old, p, node), get(new, p, node));
                match (o, n) {
                    (Some(o), Some(n)) => {
                        // A member with members below changed only if it was not there; its own value is
                        // judged by them.
                        let leaf = !matches!(n, Value::Object(m) if !m.is_empty())
                            || node_at(node, p).is_some_and(Node::is_atomic);
                        leaf && o != n
                    }
                    (None, _) => true,
                    _ => false,
                }
            })
            .collect(),
    )
}

fn node_at<'a>(node: &'a Node, path: &[PathElement]) -> Option<&'a Node> {
    let mut n = node;
    for pe in path {
        n = match pe {
            PathElement::Field(f) => n.field(f)?,
            _ => &n.as_array()?.items,
        };
    }
    Some(n)
}

/// Records an update (create, put, json/merge/strategic patch) by `manager`: the fields it added or changed
/// become its own (taken from whoever had them); fields it removed are no one's.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    node: &Node,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    now: &str,
) {
    // Entries as the request stated them only when it set them explicitly; otherwise the stored ones.
    let mut entries = match old {
        Some(o) => read(o),
        None => Vec::new(),
    };
    let changed = changed(old, new, node);
    let present = owned(updated_fields(new, node));
    for e in entries.iter_mut() {
        e.fields = e.fields.intersection(&present).difference(&changed);
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.same_owner(manager, Operation::Update, subresource))
        {
            Some(e) => {
                e.fields = e.fields.union(&changed);
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: Operation::Update,
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: subresource.map(str::to_string),
                fields: changed,
            }),
        }
    }
    write(new, entries);
}

/// A field another manager owns that an apply would change.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: String,
    /// `.spec.replicas`, `.spec.containers[name="web"].image`
    pub field: String,
}

impl Conflict {
    /// Upstream's per-conflict message: `conflict with "kubectl-client-side-apply" using apps/v1`.
    pub fn message(&self) -> String {
        match self.operation {
            Operation::Apply => format!("conflict with {:?}", self.manager),
            Operation::Update => format!(
                "conflict with {:?} using {}",
                self.manager, self.api_version
            ),
        }
    }
}

/// Upstream's field path text for a conflict.
pub fn path_string(path: &Path) -> String {
    let mut out = String::new();
    for pe in path {
        match pe {
            PathElement::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            PathElement::Key(k) => {
                let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let parts: Vec<String> = v
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            PathElement::Value(v) => out.push_str(&format!("[={v}]")),
            PathElement::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Applies `applied` (the manager's whole intent) to `live` (`None`: the object is created). Returns the
/// merged object with its managed fields, or the conflicts when `force` is off.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    node: &Node,
    manager: &str,
    force: bool,
    api_version: &str,
    subresource: Option<&str>,
    now: &str,
) -> Result<Value, Vec<Conflict>> {
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut entries = read(live_v);
    let applied_set = owned(applied_fields(applied, node));
    let mut merged = merge(live_v, applied, node);

    // Conflicts: fields others own whose value the apply changes.
    let mut conflicts = Vec::new();
    let mut taken = FieldSet::new();
    for e in entries.iter() {
        if e.same_owner(manager, Operation::Apply, subresource) {
            continue;
        }
        for p in e.fields.intersection(&applied_set).iter() {
            let before = get(live_v, p, node);
            let after = get(&merged, p, node);
            let leaf = node_at(node, p).is_some_and(Node::is_atomic)
                || !matches!(after, Some(Value::Object(m)) if !m.is_empty());
            if leaf && before != after {
                conflicts.push(Conflict {
                    manager: e.manager.clone(),
                    operation: e.operation,
                    api_version: e.api_version.clone(),
                    time: e.time.clone(),
                    field: path_string(p),
                });
                taken.insert(p.clone());
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in entries.iter_mut() {
        if !e.same_owner(manager, Operation::Apply, subresource) {
            e.fields = e.fields.difference(&taken);
        }
    }

    // Fields this manager applied before and leaves out now are removed, unless another manager owns them.
    let previous = entries
        .iter()
        .find(|e| e.same_owner(manager, Operation::Apply, subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !e.same_owner(manager, Operation::Apply, subresource))
        .fold(FieldSet::new(), |acc, e| acc.union(&e.fields));
    let dropped = previous.difference(&applied_set);
    // Deepest paths first, so that an item goes after the fields in it.
    // A path whose children are still applied (or owned) stays: only its own membership was dropped.
    let mut doomed: Vec<&Path> = dropped
        .iter()
        .filter(|p| {
            !others.contains(p)
                && others.under(p).next().is_none()
                && applied_set.under(p).next().is_none()
        })
        .collect();
    doomed.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in doomed {
        remove(&mut merged, p, node);
    }

    match entries
        .iter_mut()
        .find(|e| e.same_owner(manager, Operation::Apply, subresource))
    {
        Some(e) => {
            if e.fields != applied_set {
                e.time = now.to_string();
            }
            e.fields = applied_set;
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: Operation::Apply,
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: subresource.map(str::to_string),
            fields: applied_set,
        }),
    }
    // Whatever the merge removed is no one's any more.
    let present = owned(updated_fields(&merged, node));
    for e in entries.iter_mut() {
        e.fields = e.fields.intersection(&present);
    }
    write(&mut merged, entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Schemas;

    fn deployment() -> &'static Node {
        Schemas::builtin().kind("apps", "v1", "Deployment").unwrap()
    }

    fn manifest(replicas: i64, image: &str, extra_label: bool) -> Value {
        let mut labels = json!({"app": "web"});
        if extra_label {
            labels["tier"] = json!("fe");
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}
                }
            }
        })
    }

    #[test]
    fn fields_v1_round_trips_in_upstreams_shape() {
        let set = applied_fields(&manifest(2, "nginx", false), deployment());
        let v1 = owned(set.clone()).to_fields_v1();
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            v1["f:spec"]["f:selector"],
            json!({}),
            "an atomic struct is one member"
        );
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
        assert_eq!(
            c["."],
            json!({}),
            "a list item is a member with members below"
        );
        assert_eq!(c["f:image"], json!({}));
        assert!(c["f:ports"]
            .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
            .is_some());
        assert!(
            v1["f:metadata"]["f:labels"].get(".").is_none(),
            "applied maps are not members"
        );
        assert_eq!(FieldSet::from_fields_v1(&v1), owned(set));

        let updated =
            owned(updated_fields(&manifest(2, "nginx", false), deployment())).to_fields_v1();
        assert_eq!(
            updated["f:metadata"]["f:labels"]["."],
            json!({}),
            "updated maps are"
        );
    }

    #[test]
    fn apply_creates_then_changes_then_prunes_its_own_fields() {
        let node = deployment();
        let first = apply(
            None,
            &manifest(2, "nginx:1", true),
            node,
            "me",
            false,
            "apps/v1",
            None,
            "t1",
        )
        .unwrap();
        assert_eq!(first["spec"]["replicas"], 2);
        let entries = read(&first);
        assert_eq!(entries.len(), 1);
        assert_eq!(
            (entries[0].manager.as_str(), entries[0].operation),
            ("me", Operation::Apply)
        );

        // Applying without the tier label removes it; a new image replaces the old.
        let second = apply(
            Some(&first),
            &manifest(3, "nginx:2", false),
            node,
            "me",
            false,
            "apps/v1",
            None,
            "t2",
        )
        .unwrap();
        assert_eq!(second["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:2"
        );
        assert_eq!(second["spec"]["replicas"], 3);
    }

    #[test]
    fn another_managers_field_conflicts_unless_forced() {
        let node = deployment();
        let created = apply(
            None,
            &manifest(2, "nginx:1", false),
            node,
            "alice",
            false,
            "apps/v1",
            None,
            "t1",
        )
        .unwrap();
        // Bob applies a different replica count: a conflict on .spec.replicas only.
        let mut bobs = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
        let conflicts = apply(
            Some(&created),
            &bobs,
            node,
            "bob",
            false,
            "apps/v1",
            None,
            "t2",
        )
        .unwrap_err();
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].field, ".spec.replicas");
        assert_eq!(conflicts[0].message(), "conflict with \"alice\"");
        // The same value is no conflict: both own it.
        bobs["spec"]["replicas"] = json!(2);
        let shared = apply(
            Some(&created),
            &bobs,
            node,
            "bob",
            false,
            "apps/v1",
            None,
            "t2",
        )
        .unwrap();
        let owners: Vec<String> = read(&shared)
            .into_iter()
            .filter(|e| {
                e.fields.contains(&vec![
                    PathElement::Field("spec".into()),
                    PathElement::Field("replicas".into()),
                ])
            })
            .map(|e| e.manager)
            .collect();
        assert_eq!(owners, vec!["alice", "bob"]);
        // Forced, bob takes the field from alice.
        bobs["spec"]["replicas"] = json!(7);
        let forced = apply(
            Some(&created),
            &bobs,
            node,
            "bob",
            true,
            "apps/v1",
            None,
            "t3",
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 7);
        let alice = read(&forced)
            .into_iter()
            .find(|e| e.manager == "alice")
            .unwrap();
        assert!(!alice.fields.contains(&vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into())
        ]));
        // Alice's next apply without replicas does not remove bob's field.
        let mut alices = manifest(2, "nginx:1", false);
        alices["spec"].as_object_mut().unwrap().remove("replicas");
        let after = apply(
            Some(&forced),
            &alices,
            node,
            "alice",
            false,
            "apps/v1",
            None,
            "t4",
        )
        .unwrap();
        assert_eq!(after["spec"]["replicas"], 7);
    }

    #[test]
    fn updates_take_the_fields_they_change() {
        let node = deployment();
        let created = apply(
            None,
            &manifest(2, "nginx:1", false),
            node,
            "alice",
            false,
            "apps/v1",
            None,
            "t1",
        )
        .unwrap();
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(4);
        record_update(
            Some(&created),
            &mut scaled,
            node,
            "kubectl-scale",
            "apps/v1",
            None,
            "t2",
        );
        let entries = read(&scaled);
        let scaler = entries
            .iter()
            .find(|e| e.manager == "kubectl-scale")
            .unwrap();
        let replicas = vec![
            PathElement::Field("spec".into()),
            PathElement::Field("replicas".into()),
        ];
        assert!(scaler.fields.contains(&replicas));
        assert!(!entries
            .iter()
            .find(|e| e.manager == "alice")
            .unwrap()
            .fields
            .contains(&replicas));
        // Alice re-applying 2 now conflicts with the scaler.
        let conflicts = apply(
            Some(&scaled),
            &manifest(2, "nginx:1", false),
            node,
            "alice",
            false,
            "apps/v1",
            None,
            "t3",
        )
        .unwrap_err();
        assert_eq!(
            conflicts[0].message(),
            "conflict with \"kubectl-scale\" using apps/v1"
        );
    }

    #[test]
    fn a_key_field_left_out_counts_with_its_default() {
        // Live ports carry the defaulted protocol; an applier that leaves it out means the same port.
        let node = deployment();
        let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}}});
        let applied = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80}]}]}}}});
        let merged = merge(&live, &applied, node);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
        let set = applied_fields(&applied, node).to_fields_v1();
        assert!(
            set["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]
                ["f:ports"]
                .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
                .is_some()
        );
    }

    #[test]
    fn list_maps_merge_by_key_keeping_other_items() {
        let node = deployment();
        let live = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}}}});
        let applied = json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "3"}, {"name": "c", "image": "4"}]}}}});
        let merged = merge(&live, &applied, node);
        let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "b", "c"]);
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"][1]["image"],
            "3"
        );
    }
}
