//! What the server keeps doing on its own: a new namespace's default service account and root CA bundle,
//! emptying deleted namespaces, cascading deletion along owner references (background, foreground,
//! orphan), expiring old events, and compacting old history.
//!
//! Upstream runs the namespace, service-account, root-CA-publisher and garbage collectors in
//! kube-controller-manager; they live here until `basalt server` has them as controllers. The garbage
//! collector of `basalt-controllers` replaces the one here when it runs (`Config::garbage_collector`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use basalt_store::{EventKind, ListRequest};
use serde_json::{json, Value};

use crate::internal::Internal;
use crate::meta;
use crate::rest::DeleteOptions;
use crate::state::{Call, State};

/// Hooks after a create through the API.
pub async fn after_create(call: &Call<'_>, created: &Value) {
    if call.res.group.is_empty() && call.res.plural == "namespaces" {
        // Boxed: populating creates objects through the same create path that calls this hook.
        Box::pin(populate_namespace(call.state, meta::name(created))).await;
    }
}

/// The default service account and the `kube-root-ca.crt` config map of a namespace.
pub async fn populate_namespace(state: &Arc<State>, ns: &str) {
    let internal = Internal::new(state.clone());
    let sa = internal.resource("", "serviceaccounts");
    let cm = internal.resource("", "configmaps");
    let r1 = internal
        .ensure(&sa, &json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}}))
        .await;
    let r2 = internal
        .ensure(&cm, &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": ns, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": state.ca_pem},
        }))
        .await;
    for r in [r1, r2] {
        if let Err(e) = r {
            if e.code != 403 && e.code != 404 {
                tracing::warn!(namespace = ns, error = %e.message, "populating a namespace failed");
            }
        }
    }
}

/// Runs the background loops until the process ends.
pub fn spawn(state: Arc<State>) {
    tokio::spawn(namespaces(state.clone()));
    if state.config.garbage_collector {
        tokio::spawn(garbage_collector(state.clone()));
    }
    tokio::spawn(event_expiry(state.clone()));
    tokio::spawn(compactor(state));
}

/// When an event was last written: the newest of the times it carries (etcd expires upstream's events
/// through a lease that each write renews).
fn last_written(event: &Value) -> Option<std::time::SystemTime> {
    let mut times = vec![
        event.pointer("/metadata/creationTimestamp"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.pointer("/series/lastObservedTime"),
    ];
    if let Some(fields) = event
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        times.extend(fields.iter().map(|f| f.get("time")));
    }
    times
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(crate::clock::parse)
        .max()
}

/// Deletes events whose last write is older than the event TTL (kube-apiserver's --event-ttl, an hour by
/// default), so that a cluster's history does not grow without bound. events.k8s.io shares the storage.
async fn event_expiry(state: Arc<State>) {
    let internal = Internal::new(state.clone());
    let res = internal.resource("", "events");
    let ttl = state.config.event_ttl;
    let period = (ttl / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
    loop {
        tokio::time::sleep(period).await;
        let Ok((items, _)) = state.objects.list_all(&res, None).await else {
            continue;
        };
        let now = std::time::SystemTime::now();
        for e in items {
            let expired = last_written(&e)
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= ttl);
            if expired {
                let ns = meta::namespace(&e);
                let _ = internal
                    .delete(&res, Some(ns), meta::name(&e), &DeleteOptions::default())
                    .await;
            }
        }
    }
}

/// Empties namespaces being deleted, then releases their `kubernetes` finalizer.
async fn namespaces(state: Arc<State>) {
    let informer = state.informers.namespaces.clone();
    informer.ready().await;
    let internal = Internal::new(state.clone());
    let ns_res = internal.resource("", "namespaces");
    loop {
        for ns in informer.items() {
            if !meta::is_deleting(&ns) {
                continue;
            }
            let name = meta::name(&ns).to_string();
            let pending = ns
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| f.iter().any(|x| x == "kubernetes"));
            if !pending {
                continue;
            }
            let mut remaining = 0;
            for res in state
                .registry
                .all()
                .into_iter()
                .filter(|r| r.namespaced && r.serves("delete"))
            {
                let Ok((items, _)) = state.objects.list_all(&res, Some(&name)).await else {
                    remaining += 1;
                    continue;
                };
                for o in items {
                    remaining += 1;
                    if !meta::is_deleting(&o) {
                        let _ = internal
                            .delete(&res, Some(&name), meta::name(&o), &DeleteOptions::default())
                            .await;
                    }
                }
            }
            if remaining == 0 {
                finalize_namespace(&state, &ns_res, &name).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Releases the `kubernetes` finalizer of an emptied namespace (what the finalize subresource does: the
/// namespace strategy keeps spec.finalizers out of ordinary updates), and deletes it when nothing else holds it.
async fn finalize_namespace(state: &Arc<State>, res: &crate::registry::Resource, name: &str) {
    for _ in 0..16 {
        let Ok(Some((mut o, rev))) = state.objects.get(res, None, name).await else {
            return;
        };
        if let Some(f) = o
            .pointer_mut("/spec/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != "kubernetes");
        }
        let empty = o
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|f| f.is_empty());
        let result = if empty && meta::finalizers(&o).is_empty() {
            state.objects.delete(res, None, name, rev).await.map(|_| ())
        } else {
            state.objects.update(res, &o, rev).await.map(|_| ())
        };
        match result {
            Ok(()) | Err(Some(_)) => return,
            Err(None) => continue,
        }
    }
}

/// What the collector knows of an object.
#[derive(Clone)]
struct Node {
    key: String,
    owners: Vec<(String, bool)>,
    deleting: bool,
    finalizers: Vec<String>,
}

fn node_of(v: &Value, key: &str) -> Node {
    Node {
        key: key.to_string(),
        owners: meta::owner_references(v)
            .iter()
            .filter_map(|o| {
                Some((
                    o.get("uid")?.as_str()?.to_string(),
                    o.get("blockOwnerDeletion")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                ))
            })
            .collect(),
        deleting: meta::is_deleting(v),
        finalizers: meta::finalizers(v),
    }
}

/// `/registry/<group>/<plural>/[<ns>/]<name>` → the resource and coordinates.
fn locate(
    state: &State,
    key: &str,
) -> Option<(Arc<crate::registry::Resource>, Option<String>, String)> {
    let rest = key.strip_prefix("/registry/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let group = if parts.first()? == &"core" {
        ""
    } else {
        parts[0]
    };
    let plural = *parts.get(1)?;
    let res = state
        .registry
        .all()
        .into_iter()
        .find(|r| r.group == group && r.plural == plural)?;
    if res.namespaced {
        Some((
            res,
            Some(parts.get(2)?.to_string()),
            parts.get(3)?.to_string(),
        ))
    } else {
        Some((res, None, parts.get(2)?.to_string()))
    }
}

/// The least time between two sweeps of the garbage collector.
const SWEEP_EVERY: Duration = Duration::from_millis(200);

/// Cascading deletion along owner references, as upstream's garbage collector does it.
async fn garbage_collector(state: Arc<State>) {
    loop {
        if let Err(e) = collect(&state).await {
            tracing::debug!(error = %e, "garbage collector restarts");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn collect(state: &Arc<State>) -> Result<(), basalt_store::StoreError> {
    let store = state.objects.store.clone();
    let page = store.list(ListRequest::prefix("/registry/")).await?;
    let mut by_uid: HashMap<String, Node> = HashMap::new();
    let mut uid_of: HashMap<String, String> = HashMap::new();
    for kv in &page.kvs {
        if kv.key.starts_with("/registry/core/ranges/") {
            continue;
        }
        if let Ok(v) = crate::objects::decode(kv) {
            let uid = meta::uid(&v).to_string();
            uid_of.insert(kv.key.clone(), uid.clone());
            by_uid.insert(uid, node_of(&v, &kv.key));
        }
    }
    let mut w = store.watch("/registry/", page.revision).await?;
    let internal = Internal::new(state.clone());
    let mut dirty = true;
    let mut swept = tokio::time::Instant::now() - SWEEP_EVERY;
    loop {
        if dirty && swept.elapsed() >= SWEEP_EVERY {
            dirty = false;
            sweep(state, &internal, &by_uid).await;
            swept = tokio::time::Instant::now();
        }
        // Under a stream of writes a sweep (a walk of every object) ran after each batch, costing more
        // than the writes: changes are gathered for SWEEP_EVERY between sweeps instead.
        let wait = if dirty {
            SWEEP_EVERY.saturating_sub(swept.elapsed())
        } else {
            Duration::from_millis(500)
        };
        let next = tokio::time::timeout(wait, w.next()).await;
        match next {
            Err(_) => {
                dirty = dirty
                    || by_uid
                        .values()
                        .any(|n| n.deleting && !n.finalizers.is_empty())
            }
            Ok(None) => return Err(basalt_store::StoreError::Unavailable("watch ended".into())),
            Ok(Some(batch)) => {
                for e in batch? {
                    if e.kv.key.starts_with("/registry/core/ranges/") {
                        continue;
                    }
                    match e.kind {
                        EventKind::Put => {
                            if let Ok(v) = crate::objects::decode(&e.kv) {
                                let uid = meta::uid(&v).to_string();
                                uid_of.insert(e.kv.key.clone(), uid.clone());
                                by_uid.insert(uid, node_of(&v, &e.kv.key));
                            }
                        }
                        EventKind::Delete => {
                            if let Some(uid) = uid_of.remove(&e.kv.key) {
                                by_uid.remove(&uid);
                            }
                        }
                    }
                    dirty = true;
                }
            }
        }
    }
}

async fn sweep(state: &Arc<State>, internal: &Internal, by_uid: &HashMap<String, Node>) {
    let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
    for n in by_uid.values() {
        for (o, _) in &n.owners {
            dependents.entry(o.as_str()).or_default().push(n);
        }
    }
    // Dependents whose owners are all gone go too (background); dangling references to gone owners are
    // dropped from dependents that still have a live one.
    for n in by_uid.values() {
        if n.owners.is_empty() || n.deleting {
            continue;
        }
        let gone: Vec<&String> = n
            .owners
            .iter()
            .map(|(o, _)| o)
            .filter(|o| !by_uid.contains_key(*o))
            .collect();
        if gone.is_empty() {
            continue;
        }
        let Some((res, ns, name)) = locate(state, &n.key) else {
            continue;
        };
        if gone.len() == n.owners.len() {
            let _ = internal
                .delete(
                    &res,
                    ns.as_deref(),
                    &name,
                    &DeleteOptions {
                        propagation: Some("Background".into()),
                        ..Default::default()
                    },
                )
                .await;
        } else {
            let gone: BTreeSet<String> = gone.into_iter().cloned().collect();
            let _ = internal
                .modify(&res, ns.as_deref(), &name, |o| {
                    let refs = meta::owner_references(o);
                    let kept: Vec<Value> = refs
                        .iter()
                        .filter(|r| {
                            !gone.contains(r.get("uid").and_then(Value::as_str).unwrap_or_default())
                        })
                        .cloned()
                        .collect();
                    if kept.len() == refs.len() {
                        return false;
                    }
                    meta::set(o, "ownerReferences", kept);
                    true
                })
                .await;
        }
    }
    // Owners being deleted in the foreground or orphaning.
    for (uid, n) in by_uid.iter().filter(|(_, n)| n.deleting) {
        let deps = dependents.get(uid.as_str()).cloned().unwrap_or_default();
        let Some((res, ns, name)) = locate(state, &n.key) else {
            continue;
        };
        if n.finalizers.iter().any(|f| f == "orphan") {
            for d in &deps {
                let Some((dres, dns, dname)) = locate(state, &d.key) else {
                    continue;
                };
                let owner = uid.clone();
                let _ = internal
                    .modify(&dres, dns.as_deref(), &dname, |o| {
                        let refs = meta::owner_references(o);
                        let kept: Vec<Value> = refs
                            .iter()
                            .filter(|r| {
                                r.get("uid").and_then(Value::as_str) != Some(owner.as_str())
                            })
                            .cloned()
                            .collect();
                        if kept.len() == refs.len() {
                            return false;
                        }
                        if kept.is_empty() {
                            meta::remove(o, "ownerReferences");
                        } else {
                            meta::set(o, "ownerReferences", kept);
                        }
                        true
                    })
                    .await;
            }
            let _ = internal
                .modify(&res, ns.as_deref(), &name, |o| drop_finalizer(o, "orphan"))
                .await;
        } else if n.finalizers.iter().any(|f| f == "foregroundDeletion") {
            let mut blocking = false;
            for d in &deps {
                let Some((dres, dns, dname)) = locate(state, &d.key) else {
                    continue;
                };
                if d.owners.iter().any(|(o, block)| o == uid && *block) {
                    blocking = true;
                }
                if !d.deleting {
                    let _ = internal
                        .delete(
                            &dres,
                            dns.as_deref(),
                            &dname,
                            &DeleteOptions {
                                propagation: Some("Foreground".into()),
                                ..Default::default()
                            },
                        )
                        .await;
                }
            }
            if !blocking {
                let _ = internal
                    .modify(&res, ns.as_deref(), &name, |o| {
                        drop_finalizer(o, "foregroundDeletion")
                    })
                    .await;
            }
        }
    }
}

fn drop_finalizer(o: &mut Value, f: &str) -> bool {
    let mut list = meta::finalizers(o);
    let before = list.len();
    list.retain(|x| x != f);
    if list.len() == before {
        return false;
    }
    meta::set_finalizers(o, list);
    true
}

/// Compacts the store on a schedule: each tick to the revision seen at the tick before, as kube-apiserver
/// compacts etcd.
async fn compactor(state: Arc<State>) {
    let mut previous = None;
    loop {
        tokio::time::sleep(state.config.compaction_interval).await;
        let Ok(now) = state.objects.store.current_revision().await else {
            continue;
        };
        if let Some(rev) = previous {
            if let Err(e) = state.objects.store.compact(rev).await {
                tracing::warn!(revision = rev, error = %e, "compaction failed");
            } else {
                tracing::debug!(revision = rev, "compacted");
            }
        }
        previous = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_was_last_written_at_its_newest_time() {
        let e = json!({
            "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"time": "2026-01-01T00:05:00Z"}]},
            "lastTimestamp": "2026-01-01T00:03:00Z",
            "series": {"lastObservedTime": "2026-01-01T00:04:00.500000Z"},
        });
        assert_eq!(
            last_written(&e),
            crate::clock::parse("2026-01-01T00:05:00Z")
        );
        assert_eq!(last_written(&json!({})), None);
    }
}
