//! ControllerRevisions, the template history of a StatefulSet or DaemonSet as upstream keeps it: one
//! object `<owner>-<hash>` per template, numbered in the order they were made, holding the template as a
//! patch (`{"spec": {"template": {…, "$patch": "replace"}}}`). A pod names its revision in
//! `controller-revision-hash`.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use crate::owners;

pub const HASH_LABEL: &str = "controller-revision-hash";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("revision {0}: {1}")]
    Template(String, serde_json::Error),
}

/// What owns the history.
pub struct Owner<'a> {
    pub kind: &'static str,
    pub meta: &'a ObjectMeta,
    /// The labels revisions carry (the owner's selector's `matchLabels`).
    pub labels: Option<BTreeMap<String, String>>,
    pub template: &'a PodTemplateSpec,
    /// `status.collisionCount`: raised, the hash and so the name change.
    pub collisions: Option<i32>,
}

/// The template a revision holds.
pub fn template_of(r: &ControllerRevision) -> Result<PodTemplateSpec, Error> {
    let mut t = r
        .data
        .0
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    serde_json::from_value(t).map_err(|e| Error::Template(r.name_any(), e))
}

/// The revisions `uid` controls in `ns`, oldest first.
pub fn owned(
    store: &Store<ControllerRevision>,
    ns: &str,
    uid: &str,
) -> Vec<Arc<ControllerRevision>> {
    let mut revisions: Vec<Arc<ControllerRevision>> = store
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
        .filter(|r| owners::controlled_by(&r.metadata, uid))
        .collect();
    revisions.sort_by_key(|r| r.revision);
    revisions
}

fn comparable(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(l) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        l.remove(HASH_LABEL);
    }
    v
}

fn holds(r: &ControllerRevision, template: &Value) -> bool {
    template_of(r).is_ok_and(|t| comparable(&t) == *template)
}

/// The revision of the owner's template: found among `owned`, or made with the next number.
pub async fn current(
    api: &Api<ControllerRevision>,
    owner: &Owner<'_>,
    owned: &[Arc<ControllerRevision>],
) -> Result<ControllerRevision, Error> {
    let template = comparable(owner.template);
    if let Some(r) = owned.iter().find(|r| holds(r, &template)) {
        return Ok((**r).clone());
    }
    let mut data = template.clone();
    data["$patch"] = json!("replace");
    let mut collisions = owner.collisions;
    let name = owner.meta.name.clone().unwrap_or_default();
    loop {
        let rname = format!("{name}-{}", owners::hash(&template, collisions));
        let r = ControllerRevision {
            metadata: ObjectMeta {
                name: Some(rname.clone()),
                namespace: owner.meta.namespace.clone(),
                labels: owner.labels.clone(),
                owner_references: Some(vec![owners::controller_ref(
                    "apps/v1", owner.kind, owner.meta,
                )]),
                ..Default::default()
            },
            data: RawExtension(json!({"spec": {"template": data}})),
            revision: Some(owned.iter().filter_map(|r| r.revision).max().unwrap_or(0) + 1),
        };
        match api.create(&PostParams::default(), &r).await {
            Ok(r) => return Ok(r),
            // The same name for another template (or one not yet in the store): taken as it is when it
            // holds this template, else a collision that changes the name.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get(&rname).await?;
                if holds(&existing, &template) {
                    return Ok(existing);
                }
                collisions = Some(collisions.unwrap_or(0) + 1);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Deletes the oldest revisions beyond `limit` (`revisionHistoryLimit`) among those `keep` does not
/// hold on to (the current ones, those a pod still runs).
pub async fn prune(
    api: &Api<ControllerRevision>,
    owned: &[Arc<ControllerRevision>],
    keep: impl Fn(&str) -> bool,
    limit: i32,
) -> Result<(), kube::Error> {
    let old: Vec<&Arc<ControllerRevision>> =
        owned.iter().filter(|r| !keep(&r.name_any())).collect();
    let surplus = old.len().saturating_sub(limit.max(0) as usize);
    for r in old.iter().take(surplus) {
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
