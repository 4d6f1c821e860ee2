//! The statefulset controller, as upstream's: pods with stable names `<set>-<ordinal>` (from
//! `spec.ordinals.start`), a hostname and the governing service's subdomain, and one PersistentVolumeClaim
//! per `volumeClaimTemplates` entry named `<template>-<pod>` that outlives them (the default Retain
//! policy). With `podManagementPolicy: OrderedReady` (the default) a pod is made only when every one
//! before it is Running and Ready, and removed only after those above it are gone; `Parallel` makes and
//! removes them all at once.
//!
//! Templates are kept as ControllerRevisions (`<set>-<hash>`); a pod carries the revision it was made from
//! in `controller-revision-hash`. A RollingUpdate replaces the pods at or above `partition` from the highest
//! ordinal down, one at a time, each only once the set is Ready again; OnDelete leaves it to the user.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::informers::{Indexed, Informer};
use crate::owners;
use crate::revisions::{self, template_of, HASH_LABEL};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    Revision(#[from] revisions::Error),
}

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
    revisions: Store<ControllerRevision>,
    events: basalt_events::Recorder,
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: Client,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
) {
    let (pods, pod_events) = (pods.indexed(), pods.subscribe());
    let (revisions, revision_events) = (revisions.store(), revisions.subscribe());
    let ctx = Arc::new(Ctx {
        events: basalt_events::Recorder::new(client.clone(), "statefulset-controller", None),
        client: client.clone(),
        pods,
        revisions,
    });
    let controller = Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default());
    let sets = controller.store();
    let sets2 = sets.clone();
    let run = controller
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            owners::to_wake(&pod.metadata, "StatefulSet", &sets, |s| &s.spec.selector)
        })
        .watches_shared_stream(revision_events, move |r: Arc<ControllerRevision>| {
            owners::to_wake(&r.metadata, "StatefulSet", &sets2, |s| &s.spec.selector)
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("statefulset", run).await;
}

/// The ordinal in a pod's name, if it is one of `set`'s.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|o: &i32| *o >= 0)
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

fn running_and_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && owners::is_ready(p)
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The claim for `template` of the pod `pod`: named `<template>-<pod>`, labelled with the set's selector.
fn claim(set: &StatefulSet, template: &PersistentVolumeClaim, pod: &str) -> PersistentVolumeClaim {
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.extend(set.spec.selector.match_labels.clone().unwrap_or_default());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(format!("{}-{pod}", template.name_any())),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The pod of `ordinal` from `template` (of the revision `revision`): its identity and its claims.
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(svc) = set.spec.service_name.as_ref().filter(|s| !s.is_empty()) {
        spec.subdomain = Some(svc.clone());
    }
    for t in set.spec.volume_claim_templates.iter().flatten() {
        let vname = t.name_any();
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != vname);
        volumes.push(Volume {
            name: vname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{vname}-{name}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![owners::controller_ref(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

struct Sync<'a> {
    set: &'a StatefulSet,
    events: &'a basalt_events::Recorder,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    revisions: Api<ControllerRevision>,
}

impl Sync<'_> {
    /// Upstream's events: `<verb> <Kind> <name> in StatefulSet <set> successful`.
    fn event(&self, ok: bool, verb: &str, what: String) {
        let set = self.set.name_any();
        let (type_, reason, message) = if ok {
            (
                basalt_events::Type::Normal,
                format!("Successful{verb}"),
                format!(
                    "{} {what} in StatefulSet {set} successful",
                    verb.to_lowercase()
                ),
            )
        } else {
            (
                basalt_events::Type::Warning,
                format!("Failed{verb}"),
                format!("{} {what} in StatefulSet {set} failed", verb.to_lowercase()),
            )
        };
        let about = basalt_events::reference("apps/v1", "StatefulSet", &self.set.metadata, None);
        self.events.record(about, type_, &reason, message);
    }

    async fn create(&self, pod: &Pod) -> Result<(), Error> {
        for t in self.set.spec.volume_claim_templates.iter().flatten() {
            let c = claim(self.set, t, &pod.name_any());
            match self.claims.create(&PostParams::default(), &c).await {
                Ok(_) => self.event(
                    true,
                    "Create",
                    format!("Claim {} Pod {}", c.name_any(), pod.name_any()),
                ),
                // The claim of an earlier pod of this ordinal: kept, as its data is.
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.event(true, "Create", format!("Pod {}", pod.name_any()));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => {
                self.event(false, "Create", format!("Pod {}", pod.name_any()));
                Err(e.into())
            }
        }
    }

    async fn delete(&self, pod: &Pod) -> Result<(), Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.pods.delete(&pod.name_any(), &dp).await {
            Ok(_) => {
                self.event(true, "Delete", format!("Pod {}", pod.name_any()));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.uid().unwrap_or_default();
    let Some(selector) = owners::selector(Some(&set.spec.selector)) else {
        return Ok(Action::await_change());
    };
    let s = Sync {
        set: &set,
        events: &ctx.events,
        pods: Api::namespaced(ctx.client.clone(), &ns),
        claims: Api::namespaced(ctx.client.clone(), &ns),
        revisions: Api::namespaced(ctx.client.clone(), &ns),
    };

    let revisions = revisions::owned(&ctx.revisions, &ns, &uid);
    let history = revisions::Owner {
        kind: "StatefulSet",
        meta: &set.metadata,
        labels: set.spec.selector.match_labels.clone(),
        template: &set.spec.template,
        collisions: set.status.as_ref().and_then(|s| s.collision_count),
    };
    let update = revisions::current(&s.revisions, &history, &revisions).await?;
    let update_name = update.name_any();
    let status = set.status.clone().unwrap_or_default();
    let current = status
        .current_revision
        .as_ref()
        .and_then(|c| {
            revisions
                .iter()
                .find(|r| r.name_any() == *c)
                .map(|r| (**r).clone())
        })
        .unwrap_or_else(|| update.clone());
    let current_name = current.name_any();

    // The pods: by ordinal, adopting orphans the selector matches.
    let me = owners::controller_ref("apps/v1", "StatefulSet", &set.metadata);
    let (_, owned) = owners::claim_pods(&ctx.pods, &s.pods, &me, &selector, true, |p| {
        ordinal(&name, &p.name_any()).is_some()
    })
    .await?;
    let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for p in owned {
        if let Some(o) = ordinal(&name, &p.name_any()) {
            by_ordinal.insert(o, p);
        }
    }

    let spec = &set.spec;
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let wanted = start..start + replicas;
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let current_template = template_of(&current)?;
    let update_template = template_of(&update)?;

    // Make the missing, replace the finished; OrderedReady stops at the first pod not yet Running and Ready.
    let mut blocked = false;
    for o in wanted.clone() {
        match by_ordinal.get(&o) {
            None => {
                let (t, r) = if rolling && o < start + partition {
                    (&current_template, &current_name)
                } else {
                    (&update_template, &update_name)
                };
                s.create(&new_pod(&set, t, r, o)).await?;
                blocked = true;
            }
            Some(p) if finished(p) && p.metadata.deletion_timestamp.is_none() => {
                s.delete(p).await?;
                blocked = true;
            }
            Some(p) => blocked = !running_and_ready(p) || p.metadata.deletion_timestamp.is_some(),
        }
        if blocked && !parallel {
            break;
        }
    }
    // Scale down: the highest first; OrderedReady one at a time, and only with the rest healthy.
    let condemned: Vec<&Arc<Pod>> = by_ordinal
        .iter()
        .rev()
        .filter(|(o, _)| !wanted.contains(o))
        .map(|(_, p)| p)
        .collect();
    if !blocked || parallel {
        for p in &condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    break;
                }
                continue;
            }
            s.delete(p).await?;
            if !parallel {
                break;
            }
        }
    }
    // Rolling update: with every pod Running and Ready and none condemned, the highest pod at or above
    // the partition that is not of the update revision is replaced.
    if rolling && !blocked && condemned.is_empty() {
        let stale = wanted
            .clone()
            .rev()
            .filter(|o| *o >= start + partition)
            .filter_map(|o| by_ordinal.get(&o))
            .find(|p| revision_of(p) != Some(update_name.as_str()));
        if let Some(p) = stale {
            s.delete(p).await?;
        }
    }

    // Status from the pods as they were seen.
    let live: Vec<&Arc<Pod>> = by_ordinal.values().collect();
    let count = |f: &dyn Fn(&Pod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let updated = count(&|p| revision_of(p) == Some(update_name.as_str()));
    let mut next = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: live.len() as i32,
        ready_replicas: Some(count(&|p| owners::is_ready(p))),
        available_replicas: Some(count(&|p| owners::is_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| revision_of(p) == Some(current_name.as_str()))),
        updated_replicas: Some(updated),
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        collision_count: status.collision_count,
        conditions: status.conditions.clone(),
    };
    // The rollout is done: what was the update is now the current revision.
    let done = updated == replicas
        && live.len() as i32 == replicas
        && live.iter().all(|p| running_and_ready(p));
    if done || !rolling && current_name == update_name {
        next.current_revision = Some(update_name.clone());
        next.current_replicas = Some(updated);
    }
    if set.status.as_ref() != Some(&next) {
        let mut obj = (*set).clone();
        obj.status = Some(next);
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api
            .replace_status(&name, &PostParams::default(), &obj)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Old revisions beyond the history limit go, never one a pod still uses.
    let in_use: Vec<&str> = live.iter().filter_map(|p| revision_of(p)).collect();
    let keep = |n: &str| n == update_name || n == current_name || in_use.contains(&n);
    let limit = spec.revision_history_limit.unwrap_or(10);
    revisions::prune(&s.revisions, &revisions, keep, limit).await?;
    if min_ready > 0 {
        return Ok(Action::requeue(Duration::from_secs(min_ready as u64)));
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ordinals_are_the_sets_own() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "web--1"), None);
    }

    #[test]
    fn pods_carry_identity_revision_and_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "ns", "uid": "u"},
            "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c"}],
                    "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}
        }))
        .unwrap();
        let p = new_pod(&set, &set.spec.template, "db-abc", 2);
        assert_eq!(p.name_any(), "db-2");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let vols = spec.volumes.unwrap();
        assert_eq!(
            vols.len(),
            1,
            "the claim replaces the template's volume of that name"
        );
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-db-2"
        );
        let l = p.metadata.labels.unwrap();
        assert_eq!(l[HASH_LABEL], "db-abc");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        let c = claim(
            &set,
            &set.spec.volume_claim_templates.as_ref().unwrap()[0],
            "db-2",
        );
        assert_eq!(c.name_any(), "data-db-2");
        assert_eq!(c.metadata.labels.unwrap()["app"], "db");
    }
}
