//! The garbage collector, as upstream's: a graph of every object's owner references, kept from a watch
//! of every resource that can be listed, watched and deleted (events aside, as upstream), and three
//! duties:
//!
//! - background: an object whose owners are all gone is deleted (owners are looked up in the API, not
//!   the graph, before anything is deleted: a watch may lag);
//! - foreground: an owner deleted with `propagationPolicy=Foreground` keeps the `foregroundDeletion`
//!   finalizer while its dependents are deleted (in the foreground too) and loses it once none that
//!   blocks its deletion (`blockOwnerDeletion`) is left;
//! - orphan: an owner deleted with `propagationPolicy=Orphan` keeps the `orphan` finalizer until the
//!   references to it are removed from its dependents.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::discovery::{verbs, Discovery, Scope};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::mpsc;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// What the graph keeps of an object.
#[derive(Clone)]
struct Node {
    resource: Arc<(ApiResource, Scope)>,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → dependents' uids.
    dependents: HashMap<String, BTreeSet<String>>,
}

impl Graph {
    fn remove(&mut self, uid: &str) -> Option<Node> {
        let old = self.nodes.remove(uid)?;
        for o in &old.owners {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        Some(old)
    }

    fn insert(&mut self, uid: String, node: Node) {
        self.remove(&uid);
        for o in &node.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.nodes.insert(uid, node);
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Node)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("no resource for {0}")]
    UnknownKind(String),
    #[error("{0} still has dependents that block its deletion")]
    Blocked(String),
}

struct Collector {
    client: Client,
    discovery: Discovery,
    graph: Mutex<Graph>,
    /// The resources whose objects have been seen with owners (plural → resource).
    dependent_kinds: Mutex<HashMap<String, Arc<(ApiResource, Scope)>>>,
    queue: mpsc::UnboundedSender<String>,
}

/// Runs the garbage collector until the future is dropped.
pub async fn run(client: Client) {
    let discovery = loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => break d,
            Err(e) => tracing::warn!(error = %e, "garbage collector: discovery"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gc = Arc::new(Collector {
        client: client.clone(),
        discovery,
        graph: Mutex::new(Graph::default()),
        dependent_kinds: Mutex::new(HashMap::new()),
        queue: tx,
    });
    let mut watches = tokio::task::JoinSet::new();
    for group in gc.discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let usable = [verbs::LIST, verbs::WATCH, verbs::DELETE]
                .iter()
                .all(|v| caps.supports_operation(v));
            if !usable || ar.plural == "events" {
                continue;
            }
            let resource = Arc::new((ar, caps.scope));
            watches.spawn(gc.clone().watch(resource));
        }
    }
    // One object at a time, each queued once however many events name it.
    let mut pending = HashSet::new();
    while let Some(uid) = rx.recv().await {
        pending.insert(uid);
        while let Ok(more) = rx.try_recv() {
            pending.insert(more);
        }
        for uid in std::mem::take(&mut pending) {
            if let Err(e) = gc.process(&uid).await {
                tracing::debug!(uid, error = %e, "garbage collector: retry");
                let again = gc.queue.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let _ = again.send(uid);
                });
            }
        }
    }
    drop(watches);
}

fn node_of(resource: &Arc<(ApiResource, Scope)>, obj: &DynamicObject) -> Option<(String, Node)> {
    let m = &obj.metadata;
    Some((
        m.uid.clone()?,
        Node {
            resource: resource.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone()?,
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        },
    ))
}

/// Sets one metadata field by a merge patch naming the object's uid, as upstream's collector patches;
/// an object already gone is fine.
async fn merge_metadata(
    api: &Api<DynamicObject>,
    uid: &str,
    node: &Node,
    field: &str,
    value: serde_json::Value,
) -> Result<(), Error> {
    let patch = json!({"metadata": {"uid": uid, field: value}});
    match api
        .patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Collector {
    async fn watch(self: Arc<Self>, resource: Arc<(ApiResource, Scope)>) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource.0);
        let mut events = watcher(api, watcher::Config::default()).boxed();
        while let Some(e) = events.next().await {
            match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    self.seen(&resource, &o)
                }
                Ok(watcher::Event::Delete(o)) => self.gone(&o),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(resource = %resource.0.plural, error = %e, "garbage collector watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn seen(&self, resource: &Arc<(ApiResource, Scope)>, obj: &DynamicObject) {
        let Some((uid, node)) = node_of(resource, obj) else {
            return;
        };
        let interesting = !node.owners.is_empty()
            || (node.deleting
                && node
                    .finalizers
                    .iter()
                    .any(|f| f == FOREGROUND || f == ORPHAN));
        if !node.owners.is_empty() {
            let key = format!("{}.{}", resource.0.plural, resource.0.group);
            self.dependent_kinds
                .lock()
                .unwrap()
                .entry(key)
                .or_insert_with(|| resource.clone());
        }
        let mut g = self.graph.lock().unwrap();
        // An owner changed: it may be deleting with a finalizer of ours, or a dependent may wait on it.
        let owners: Vec<String> = node.owners.iter().map(|o| o.uid.clone()).collect();
        g.insert(uid.clone(), node);
        drop(g);
        if interesting {
            let _ = self.queue.send(uid);
        }
        for o in owners {
            let _ = self.queue.send(o);
        }
    }

    fn gone(&self, obj: &DynamicObject) {
        let Some(uid) = obj.metadata.uid.clone() else {
            return;
        };
        let mut g = self.graph.lock().unwrap();
        let old = g.remove(&uid);
        let dependents: Vec<String> = g.dependents_of(&uid).into_iter().map(|(d, _)| d).collect();
        drop(g);
        // Its dependents may be orphans now; its owners may be waiting for it.
        for d in dependents {
            let _ = self.queue.send(d);
        }
        for o in old.into_iter().flat_map(|n| n.owners) {
            let _ = self.queue.send(o.uid);
        }
    }

    fn api(&self, resource: &(ApiResource, Scope), ns: Option<&str>) -> Api<DynamicObject> {
        match (&resource.1, ns) {
            (Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(self.client.clone(), ns, &resource.0)
            }
            _ => Api::all_with(self.client.clone(), &resource.0),
        }
    }

    /// What an owner reference points at, looked up in the API: `None` when it is gone (or another
    /// object has its name now).
    async fn owner(
        &self,
        r: &OwnerReference,
        ns: Option<&str>,
    ) -> Result<Option<DynamicObject>, Error> {
        let (group, version) = match r.api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", r.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &r.kind);
        let (ar, caps) = self
            .discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| Error::UnknownKind(format!("{}/{}", r.api_version, r.kind)))?;
        let api = self.api(&(ar, caps.scope), ns);
        let found = api.get_opt(&r.name).await?;
        Ok(found.filter(|o| o.metadata.uid.as_deref() == Some(r.uid.as_str())))
    }

    async fn process(&self, uid: &str) -> Result<(), Error> {
        let Some(node) = self.graph.lock().unwrap().nodes.get(uid).cloned() else {
            return Ok(());
        };
        if node.deleting {
            if node.finalizers.iter().any(|f| f == ORPHAN) {
                return self.orphan(uid, &node).await;
            }
            if node.finalizers.iter().any(|f| f == FOREGROUND) {
                return self.foreground(uid, &node).await;
            }
            return Ok(());
        }
        if node.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut dangling = Vec::new();
        let mut waiting = Vec::new();
        for r in &node.owners {
            match self.owner(r, node.namespace.as_deref()).await? {
                None => dangling.push(r.uid.clone()),
                Some(o)
                    if o.metadata.deletion_timestamp.is_some()
                        && o.metadata
                            .finalizers
                            .iter()
                            .flatten()
                            .any(|f| f == FOREGROUND) =>
                {
                    waiting.push(r.uid.clone())
                }
                Some(_) => solid.push(r.uid.clone()),
            }
        }
        let api = self.api(&node.resource, node.namespace.as_deref());
        if !solid.is_empty() {
            if !dangling.is_empty() {
                let keep: Vec<&OwnerReference> = node
                    .owners
                    .iter()
                    .filter(|r| !dangling.contains(&r.uid))
                    .collect();
                self.set_owners(&api, uid, &node, &keep).await?;
            }
            return Ok(());
        }
        let policy = if waiting.is_empty() {
            PropagationPolicy::Background
        } else {
            PropagationPolicy::Foreground
        };
        tracing::info!(object = %node.name, kind = %node.resource.0.kind, ?policy, "garbage collector: deleting a dependent");
        self.delete(&api, uid, &node, policy).await
    }

    async fn delete(
        &self,
        api: &Api<DynamicObject>,
        uid: &str,
        node: &Node,
        policy: PropagationPolicy,
    ) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.into()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&node.name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrites an object's owner references.
    async fn set_owners(
        &self,
        api: &Api<DynamicObject>,
        uid: &str,
        node: &Node,
        keep: &[&OwnerReference],
    ) -> Result<(), Error> {
        // None left: the field goes, as upstream's omitempty leaves it out.
        let refs = if keep.is_empty() {
            serde_json::Value::Null
        } else {
            json!(keep)
        };
        merge_metadata(api, uid, node, "ownerReferences", refs).await
    }

    async fn remove_finalizer(&self, uid: &str, node: &Node, f: &str) -> Result<(), Error> {
        let api = self.api(&node.resource, node.namespace.as_deref());
        let rest: Vec<&String> = node.finalizers.iter().filter(|x| *x != f).collect();
        merge_metadata(&api, uid, node, "finalizers", json!(rest)).await
    }

    async fn orphan(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let dependents = self.graph.lock().unwrap().dependents_of(uid);
        for (d, dn) in dependents {
            let api = self.api(&dn.resource, dn.namespace.as_deref());
            let keep: Vec<&OwnerReference> = dn.owners.iter().filter(|r| r.uid != uid).collect();
            self.set_owners(&api, &d, &dn, &keep).await?;
        }
        tracing::info!(object = %node.name, kind = %node.resource.0.kind, "garbage collector: dependents orphaned");
        self.remove_finalizer(uid, node, ORPHAN).await
    }

    /// Whether the API still holds a dependent of `uid` that blocks its deletion (those not yet being
    /// deleted are deleted now).
    async fn blocked_in_api(&self, uid: &str, node: &Node) -> Result<bool, Error> {
        let kinds: Vec<_> = self
            .dependent_kinds
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for resource in kinds {
            let api = self.api(&resource, node.namespace.as_deref());
            let list = api.list(&Default::default()).await?;
            let mut blocked = false;
            for o in &list.items {
                let blocks = o
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
                if !blocks {
                    continue;
                }
                blocked = true;
                if let (None, Some(d), Some(name)) = (
                    &o.metadata.deletion_timestamp,
                    &o.metadata.uid,
                    &o.metadata.name,
                ) {
                    let dn = Node {
                        resource: resource.clone(),
                        namespace: o.metadata.namespace.clone(),
                        name: name.clone(),
                        owners: vec![],
                        deleting: false,
                        finalizers: vec![],
                    };
                    self.delete(&api, d, &dn, PropagationPolicy::Foreground)
                        .await?;
                }
            }
            if blocked {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn foreground(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let dependents = self.graph.lock().unwrap().dependents_of(uid);
        let mut blocking = 0;
        for (d, dn) in &dependents {
            let blocks = dn
                .owners
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if !dn.deleting {
                let api = self.api(&dn.resource, dn.namespace.as_deref());
                self.delete(&api, d, dn, PropagationPolicy::Foreground)
                    .await?;
            }
        }
        if blocking > 0 {
            // Each dependent's disappearance queues this owner again.
            return Ok(());
        }
        // The graph may lag the API: the owner is let go only when a list of every kind that has had
        // owners shows no dependent left that blocks it.
        if self.blocked_in_api(uid, node).await? {
            return Err(Error::Blocked(node.name.clone()));
        }
        tracing::info!(object = %node.name, kind = %node.resource.0.kind, "garbage collector: foreground deletion done");
        self.remove_finalizer(uid, node, FOREGROUND).await
    }
}
