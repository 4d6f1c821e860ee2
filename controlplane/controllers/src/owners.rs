//! What the loops share: controller references and adoption, label selectors, and the pod
//! states upstream's controllers count (active, ready, available).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::informers::Indexed;
use basalt_apimachinery::selector;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;

/// What the sync of a pod owner (a ReplicaSet, a Job) fails with.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// A pod of `template` for the owner: named `<owner>-<random>` by the apiserver, controlled by the owner.
pub fn templated_pod(
    api_version: &str,
    kind: &str,
    owner: &ObjectMeta,
    template: k8s_openapi::api::core::v1::PodTemplateSpec,
) -> Pod {
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name.as_deref().unwrap_or_default())),
            namespace: owner.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![controller_ref(api_version, kind, owner)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with `uid`.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// A controller reference to `owner`, blocking its foreground deletion as upstream's controllers set it.
pub fn controller_ref(api_version: &str, kind: &str, owner: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A workload's selector; a missing or invalid one selects nothing, as upstream's controllers treat it.
pub fn selector(s: Option<&LabelSelector>) -> Option<selector::LabelSelector> {
    let v = serde_json::to_value(s?).ok()?;
    selector::LabelSelector::from_object(&v).ok()
}

pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Not finished and not being deleted: the pods a ReplicaSet counts.
pub fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && p.metadata.deletion_timestamp.is_none()
}

/// When the pod's Ready condition last turned true, if it is true.
pub fn ready_since(p: &Pod) -> Option<Option<Timestamp>> {
    let c = p
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

pub fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// Whether an object is an orphan that an owner with `selector` takes (upstream's ControllerRefManager):
/// no controller, not being deleted, and matched.
pub fn adoptable(child: &ObjectMeta, selector: &selector::LabelSelector) -> bool {
    controller_of(child).is_none()
        && child.deletion_timestamp.is_none()
        && selector.matches(&labels(child))
}

/// Adopts `child`: a strategic-merge patch adding the controller reference, guarded by the child's uid.
/// `None` when the child is gone or was replaced meanwhile.
pub async fn adopt<C>(
    api: &Api<C>,
    child: &ObjectMeta,
    owner: OwnerReference,
) -> Result<Option<C>, kube::Error>
where
    C: Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({"metadata": {"ownerReferences": [owner], "uid": child.uid}});
    let name = child.name.clone().unwrap_or_default();
    settled(
        api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await,
    )
}

/// 404 and 409 are answers, not failures: the object went or changed since it was read, and its next
/// event brings it back. `None` for those.
pub fn settled<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `name` only while it is still the object with `uid` (a namesake made since is not it);
/// whether this call deleted it.
pub async fn delete_exact<K>(
    api: &Api<K>,
    name: &str,
    uid: Option<String>,
    propagation: Option<PropagationPolicy>,
) -> Result<bool, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        propagation_policy: propagation,
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    Ok(settled(api.delete(name, &dp).await)?.is_some())
}

/// The pods of `ns` (all of them, then those `owner` controls), as upstream's ControllerRefManager claims
/// them: an orphan the selector matches is adopted when `adopt` allows and `fits` accepts it.
pub async fn claim_pods(
    store: &Indexed<Pod>,
    api: &Api<Pod>,
    owner: &OwnerReference,
    selector: &selector::LabelSelector,
    adopt: bool,
    fits: impl Fn(&Pod) -> bool,
) -> Result<(Vec<Arc<Pod>>, Vec<Arc<Pod>>), kube::Error> {
    let ns = api.namespace().unwrap_or_default().to_string();
    let in_ns = store.in_namespace(&ns);
    let mut owned = Vec::new();
    for p in &in_ns {
        if controlled_by(&p.metadata, &owner.uid) {
            owned.push(p.clone());
        } else if adopt && adoptable(&p.metadata, selector) && fits(p) {
            if let Some(adopted) = self::adopt(api, &p.metadata, owner.clone()).await? {
                owned.push(Arc::new(adopted));
            }
        }
    }
    Ok((in_ns, owned))
}

/// The owners an event about `child` wakes: its controller when of `kind`; for an orphan, every owner in
/// its namespace whose (non-empty) selector matches it, so that it is adopted.
pub fn to_wake<K>(
    child: &ObjectMeta,
    kind: &str,
    owners: &Store<K>,
    selector_of: impl Fn(&K) -> &LabelSelector,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = child.namespace.clone().unwrap_or_default();
    match controller_of(child) {
        Some(r) if r.kind == kind => vec![ObjectRef::new(&r.name).within(&ns)],
        Some(_) => vec![],
        None => {
            let labels = labels(child);
            owners
                .state()
                .iter()
                .filter(|o| o.meta().namespace.as_deref() == Some(ns.as_str()))
                .filter(|o| {
                    selector(Some(selector_of(o)))
                        .is_some_and(|s| !s.is_empty() && s.matches(&labels))
                })
                .map(|o| ObjectRef::from_obj(&**o))
                .collect()
        }
    }
}

/// Drives a controller's stream of reconciliations until it ends.
pub async fn drive<T, E: std::fmt::Display>(
    name: &'static str,
    s: impl Stream<Item = Result<T, E>>,
) {
    s.for_each(|r| async move {
        crate::metrics::record(name, r.is_ok());
        if let Err(e) = r {
            tracing::debug!(controller = name, error = %e, "reconcile");
        }
    })
    .await;
}

/// Every loop's error policy: the failure logged, the object tried again shortly.
pub fn retry<K: Resource, E: std::fmt::Display, C>(
    obj: std::sync::Arc<K>,
    e: &E,
    _: std::sync::Arc<C>,
) -> kube::runtime::controller::Action {
    let name = obj.meta().name.clone().unwrap_or_default();
    tracing::warn!(object = %name, error = %e, "sync failed");
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(2))
}

/// The hash upstream's controllers name what they make after (`pod-template-hash`, a ControllerRevision's
/// suffix): FNV-32a of the JSON (and the collision count), its decimal digits spelled in upstream's
/// alphabet without vowels.
pub fn hash(v: &serde_json::Value, collisions: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(v.to_string().as_bytes());
    if let Some(c) = collisions {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}
