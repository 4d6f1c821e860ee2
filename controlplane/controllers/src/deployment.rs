//! The deployment controller, as upstream's: a Deployment owns one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), numbered by the `deployment.kubernetes.io/revision` annotation.
//! A sync either scales (the replicas changed: proportionally across the active ReplicaSets) or rolls out
//! (RollingUpdate within maxSurge and maxUnavailable, or Recreate), then reports status with upstream's
//! Progressing and Available conditions, which `kubectl rollout status` reads. A rollback is only a
//! template change back to an older ReplicaSet's (`kubectl rollout undo` patches it): that ReplicaSet
//! becomes the new one again, under the next revision.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::informers::{Indexed, Informer};
use crate::owners;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const HASH_LABEL: &str = "pod-template-hash";
/// Annotations of a Deployment that are its own, not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("hash collision for {0}: collisionCount raised")]
    Collision(String),
}

struct Ctx {
    client: Client,
    replicasets: Store<ReplicaSet>,
    /// Pods, for Recreate: no new pod while an old one still runs, terminating or not (upstream's
    /// oldPodsRunning).
    pods: Indexed<Pod>,
    events: Arc<basalt_events::Recorder>,
}

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>, replicasets: Arc<Informer<ReplicaSet>>) {
    let (replicasets, rs_events) = (replicasets.store(), replicasets.subscribe());
    let (pods, pod_events) = (pods.indexed(), pods.subscribe());
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    let rs_of_pod = replicasets.clone();
    let ctx = Arc::new(Ctx {
        events: Arc::new(basalt_events::Recorder::new(
            client.clone(),
            "deployment-controller",
            None,
        )),
        client,
        replicasets,
        pods,
    });
    // A ReplicaSet wakes its Deployment, or, an orphan, every Deployment whose selector matches it.
    let run = controller
        .watches_shared_stream(rs_events, move |rs: Arc<ReplicaSet>| {
            owners::to_wake(&rs.metadata, "Deployment", &deployments, |d| {
                &d.spec.selector
            })
        })
        // A pod wakes the Deployment of its ReplicaSet (a Recreate waits for the old pods to end).
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            owners::controller_of(&pod.metadata)
                .filter(|r| r.kind == "ReplicaSet")
                .and_then(|r| rs_of_pod.get(&ObjectRef::new(&r.name).within(&ns)))
                .and_then(|rs| {
                    owners::controller_of(&rs.metadata)
                        .filter(|r| r.kind == "Deployment")
                        .map(|r| ObjectRef::new(&r.name).within(&ns))
                })
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("deployment", run).await;
}

// ------------------------------------------------------------------------------------------- helpers

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn sum(rss: &[ReplicaSet], f: impl Fn(&ReplicaSet) -> i32) -> i32 {
    rss.iter().map(f).sum()
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn revision(meta: &ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> (i64, String) {
    (
        rs.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
        rs.name_any(),
    )
}

/// A pod template as JSON without the hash label, the form two templates are compared in.
fn template_value(t: &PodTemplateSpec) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            v["metadata"].as_object_mut().map(|m| m.remove("labels"));
        }
    }
    v
}

/// The `pod-template-hash`: [`owners::hash`] of the template without its own label.
fn template_hash(t: &PodTemplateSpec, collisions: Option<i32>) -> String {
    owners::hash(&template_value(t), collisions)
}

/// maxSurge and maxUnavailable resolved against the replicas: surge rounded up, unavailable down, and
/// never both zero.
fn fenceposts(d: &Deployment) -> (i32, i32) {
    let replicas = d.spec.replicas.unwrap_or(1);
    let strategy = d.spec.strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.rolling_update.unwrap_or_default();
    let resolve = |v: Option<IntOrString>, up: bool| -> i32 {
        match v {
            None => {
                let q = f64::from(replicas) * 0.25;
                (if up { q.ceil() } else { q.floor() }) as i32
            }
            Some(IntOrString::Int(i)) => i,
            Some(IntOrString::String(s)) => {
                let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
                let q = f64::from(replicas) * pct / 100.0;
                (if up { q.ceil() } else { q.floor() }) as i32
            }
        }
    };
    let surge = resolve(ru.max_surge, true);
    let mut unavailable = resolve(ru.max_unavailable, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = d.spec.replicas.unwrap_or(1);
    if replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn condition(status: &DeploymentStatus, type_: &str) -> Option<DeploymentCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some(type_))
        .cloned()
}

fn new_condition(type_: &str, status: bool, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(if status { "True" } else { "False" }.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

/// Upstream's SetDeploymentCondition: an unchanged status and reason leaves the condition as it is; an
/// unchanged status keeps its transition time; the condition set goes last.
fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

/// Compares statuses ignoring the times of conditions.
fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

// ------------------------------------------------------------------------------------------ the sync

struct Sync {
    d: Deployment,
    api_d: Api<Deployment>,
    api_rs: Api<ReplicaSet>,
    surge: i32,
    events: Arc<basalt_events::Recorder>,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = d.namespace().unwrap_or_default();
    let uid = d.uid().unwrap_or_default();
    let Some(selector) = owners::selector(Some(&d.spec.selector)) else {
        return Ok(Action::await_change());
    };
    if selector.is_empty() {
        // Upstream refuses to select everything.
        return Ok(Action::await_change());
    }
    let mut s = Sync {
        d: (*d).clone(),
        api_d: Api::namespaced(ctx.client.clone(), &ns),
        api_rs: Api::namespaced(ctx.client.clone(), &ns),
        surge: fenceposts(&d).0,
        events: ctx.events.clone(),
    };
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut owned = Vec::new();
    for rs in ctx.replicasets.state() {
        if rs.metadata.namespace.as_deref() != Some(ns.as_str()) {
            continue;
        }
        if owners::controlled_by(&rs.metadata, &uid) {
            owned.push((*rs).clone());
        } else if !deleting && owners::adoptable(&rs.metadata, &selector) {
            let owner = owners::controller_ref("apps/v1", "Deployment", &d.metadata);
            if let Some(adopted) = owners::adopt(&s.api_rs, &rs.metadata, owner).await? {
                owned.push(adopted);
            }
        }
    }
    owned.sort_by_key(created);

    if deleting {
        let (new, old) = s.split(owned);
        return s.sync_status(new.as_ref(), &old, false).await;
    }
    if s.d.spec.paused == Some(true) || s.is_scaling_event(&owned) {
        let (new, old) = s.sync_revision(owned, false).await?;
        let (new, old) = s.scale(new, old).await?;
        return s.sync_status(new.as_ref(), &old, false).await;
    }
    if is_recreate(&s.d) {
        let pods = ctx.pods.in_namespace(&ns);
        s.rollout_recreate(owned, pods).await
    } else {
        s.rollout_rolling(owned).await
    }
}

impl Sync {
    fn replicas(&self) -> i32 {
        self.d.spec.replicas.unwrap_or(1)
    }

    /// The ReplicaSet of the current template (the oldest, should there be several) and the others.
    fn split(&self, owned: Vec<ReplicaSet>) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let want = template_value(&self.d.spec.template);
        let mut new = None;
        let mut old = Vec::new();
        for rs in owned {
            let same = rs
                .spec
                .template
                .as_ref()
                .is_some_and(|t| template_value(t) == want);
            if same && new.is_none() {
                new = Some(rs);
            } else {
                old.push(rs);
            }
        }
        (new, old)
    }

    /// A scaling event: an active ReplicaSet was sized for other replicas than the Deployment's now.
    fn is_scaling_event(&self, owned: &[ReplicaSet]) -> bool {
        let want = self.replicas().to_string();
        owned.iter().filter(|rs| spec_replicas(rs) > 0).any(|rs| {
            rs.annotations()
                .get(DESIRED_REPLICAS)
                .is_some_and(|v| *v != want)
        })
    }

    fn copy_annotations(&self, rs: &mut ObjectMeta) -> bool {
        let mut changed = false;
        let a = rs.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in self.d.annotations() {
            if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
                continue;
            }
            a.insert(k.clone(), v.clone());
            changed = true;
        }
        changed
    }

    fn set_replicas_annotations(&self, meta: &mut ObjectMeta) -> bool {
        let a = meta.annotations.get_or_insert_with(BTreeMap::new);
        let desired = self.replicas().to_string();
        let max = (self.replicas() + self.surge).to_string();
        let changed =
            a.get(DESIRED_REPLICAS) != Some(&desired) || a.get(MAX_REPLICAS) != Some(&max);
        a.insert(DESIRED_REPLICAS.into(), desired);
        a.insert(MAX_REPLICAS.into(), max);
        changed
    }

    fn has_progress_deadline(&self) -> bool {
        self.d
            .spec
            .progress_deadline_seconds
            .is_some_and(|s| s != i32::MAX)
    }

    /// Writes the Deployment's revision annotation when it changed.
    async fn set_deployment_revision(&mut self, rev: i64) -> Result<(), Error> {
        let rev = rev.to_string();
        if self.d.annotations().get(REVISION) == Some(&rev) {
            return Ok(());
        }
        let mut next = self.d.clone();
        next.annotations_mut().insert(REVISION.into(), rev);
        let status = self.d.status.clone();
        self.d = self
            .api_d
            .replace(&self.d.name_any(), &PostParams::default(), &next)
            .await?;
        // The status in memory may carry a condition not yet written.
        self.d.status = status;
        Ok(())
    }

    /// Finds (and, with `create`, makes) the new ReplicaSet and brings its revision to one past the old
    /// ones', as upstream's getAllReplicaSetsAndSyncRevision.
    async fn sync_revision(
        &mut self,
        owned: Vec<ReplicaSet>,
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let (new, old) = self.split(owned);
        let max_old = old
            .iter()
            .map(|rs| revision(&rs.metadata))
            .max()
            .unwrap_or(0);
        let next_revision = max_old + 1;
        if let Some(mut rs) = new {
            let mut changed = self.copy_annotations(&mut rs.metadata);
            let current = revision(&rs.metadata);
            if current < next_revision {
                let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
                if current > 0 {
                    let history = match a.get(REVISION_HISTORY) {
                        Some(h) if !h.is_empty() => format!("{h},{current}"),
                        _ => current.to_string(),
                    };
                    a.insert(REVISION_HISTORY.into(), history);
                }
                a.insert(REVISION.into(), next_revision.to_string());
                changed = true;
            }
            if rs.spec.min_ready_seconds != self.d.spec.min_ready_seconds {
                rs.spec.min_ready_seconds = self.d.spec.min_ready_seconds;
                changed = true;
            }
            if changed {
                rs = self
                    .api_rs
                    .replace(&rs.name_any(), &PostParams::default(), &rs)
                    .await?;
            }
            let rev = revision(&rs.metadata);
            self.set_deployment_revision(rev).await?;
            if self.has_progress_deadline() {
                let status = self.d.status.get_or_insert_with(Default::default);
                if condition(status, "Progressing").is_none() {
                    set_condition(
                        status,
                        new_condition(
                            "Progressing",
                            true,
                            "FoundNewReplicaSet",
                            format!("Found new replica set \"{}\"", rs.name_any()),
                        ),
                    );
                }
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let collisions = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&self.d.spec.template, collisions);
        let mut template = self.d.spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut selector = self.d.spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        let mut meta = ObjectMeta {
            name: Some(name.clone()),
            namespace: self.d.namespace(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            owner_references: Some(vec![owners::controller_ref(
                "apps/v1",
                "Deployment",
                &self.d.metadata,
            )]),
            ..Default::default()
        };
        self.copy_annotations(&mut meta);
        self.set_replicas_annotations(&mut meta);
        meta.annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(REVISION.into(), next_revision.to_string());
        let replicas = self.new_replicas(&old, 0);
        let rs = ReplicaSet {
            metadata: meta,
            spec: ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: self.d.spec.min_ready_seconds,
                selector,
                template: Some(template),
            },
            status: None,
        };
        let rs = match self.api_rs.create(&PostParams::default(), &rs).await {
            Ok(rs) => rs,
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = self.api_rs.get(&name).await?;
                let ours = owners::controlled_by(
                    &existing.metadata,
                    self.d.uid().as_deref().unwrap_or_default(),
                );
                let same = existing.spec.template.as_ref().map(template_value)
                    == Some(template_value(&self.d.spec.template));
                if ours && same {
                    existing
                } else {
                    // Another object took the name: hash again with one more collision.
                    let mut next = self.d.clone();
                    let st = next.status.get_or_insert_with(Default::default);
                    st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                    self.api_d
                        .replace_status(&self.d.name_any(), &PostParams::default(), &next)
                        .await?;
                    return Err(Error::Collision(name));
                }
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(deployment = %self.d.name_any(), replicaset = %rs.name_any(), replicas, "scaled up replica set");
        if replicas > 0 {
            self.scaled(format!(
                "Scaled up replica set {} from 0 to {replicas}",
                rs.name_any()
            ));
        }
        self.set_deployment_revision(next_revision).await?;
        if self.has_progress_deadline() {
            let status = self.d.status.get_or_insert_with(Default::default);
            set_condition(
                status,
                new_condition(
                    "Progressing",
                    true,
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{}\"", rs.name_any()),
                ),
            );
        }
        Ok((Some(rs), old))
    }

    /// How big the new ReplicaSet may be now: for RollingUpdate, up to replicas + maxSurge pods in all.
    fn new_replicas(&self, others: &[ReplicaSet], new_size: i32) -> i32 {
        if is_recreate(&self.d) {
            return self.replicas();
        }
        let current = sum(others, spec_replicas) + new_size;
        let max_total = self.replicas() + self.surge;
        if current >= max_total {
            return new_size;
        }
        new_size + (max_total - current).min(self.replicas() - new_size).max(0)
    }

    /// Upstream's event for a size change.
    fn scaled(&self, message: String) {
        let about = basalt_events::reference("apps/v1", "Deployment", &self.d.metadata, None);
        self.events.record(
            about,
            basalt_events::Type::Normal,
            "ScalingReplicaSet",
            message,
        );
    }

    /// Sets a ReplicaSet's size (and the annotations saying for which Deployment size); gives whether it
    /// changed.
    async fn scale_rs(&self, rs: &mut ReplicaSet, size: i32) -> Result<bool, Error> {
        let mut next = rs.clone();
        let annotated = self.set_replicas_annotations(&mut next.metadata);
        if spec_replicas(rs) == size && !annotated {
            return Ok(false);
        }
        let from = spec_replicas(rs);
        next.spec.replicas = Some(size);
        *rs = self
            .api_rs
            .replace(&rs.name_any(), &PostParams::default(), &next)
            .await?;
        if from != size {
            tracing::info!(deployment = %self.d.name_any(), replicaset = %rs.name_any(), from, to = size, "scaled replica set");
            let way = if size > from { "up" } else { "down" };
            self.scaled(format!(
                "Scaled {way} replica set {} from {from} to {size}",
                rs.name_any()
            ));
        }
        Ok(from != size)
    }

    /// A scaling event (or a paused Deployment): sizes change, templates do not, as upstream's scale().
    async fn scale(
        &self,
        mut new: Option<ReplicaSet>,
        mut old: Vec<ReplicaSet>,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
        let replicas = self.replicas();
        let active: Vec<usize> = old
            .iter()
            .enumerate()
            .filter(|(_, rs)| spec_replicas(rs) > 0)
            .map(|(i, _)| i)
            .collect();
        let new_active = new.as_ref().is_some_and(|rs| spec_replicas(rs) > 0);
        // One active ReplicaSet (or none: the newest) takes the whole size.
        if active.len() + usize::from(new_active) <= 1 {
            if new_active || (active.is_empty() && new.is_some()) {
                let rs = new.as_mut().expect("checked");
                self.scale_rs(rs, replicas).await?;
            } else if let Some(&i) = active.first() {
                self.scale_rs(&mut old[i], replicas).await?;
            } else if let Some(rs) = old.last_mut() {
                self.scale_rs(rs, replicas).await?;
            }
            return Ok((new, old));
        }
        // The new ReplicaSet saturated: the old ones go.
        if let Some(rs) = &new {
            if spec_replicas(rs) == replicas && status_of(rs).2 == replicas {
                for i in active {
                    self.scale_rs(&mut old[i], 0).await?;
                }
                return Ok((new, old));
            }
        }
        if is_recreate(&self.d) {
            return Ok((new, old));
        }
        // Proportional scaling: what is to add (or take away) is shared by size, the rest to the largest.
        let allowed = if replicas > 0 {
            replicas + self.surge
        } else {
            0
        };
        let mut all: Vec<&mut ReplicaSet> = old
            .iter_mut()
            .filter(|rs| spec_replicas(rs) > 0)
            .chain(new.iter_mut().filter(|rs| spec_replicas(rs) > 0))
            .collect();
        let total = all.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
        let to_add = allowed - total;
        if to_add == 0 || total == 0 {
            return Ok((new, old));
        }
        // Larger first; newer first when adding, older first when taking away.
        all.sort_by(|a, b| {
            spec_replicas(b).cmp(&spec_replicas(a)).then_with(|| {
                if to_add > 0 {
                    created(b).cmp(&created(a))
                } else {
                    created(a).cmp(&created(b))
                }
            })
        });
        let mut sizes: Vec<i32> = all.iter().map(|rs| spec_replicas(rs)).collect();
        let mut added = 0;
        for size in sizes.iter_mut() {
            let share = (f64::from(*size) * f64::from(to_add) / f64::from(total)).round() as i32;
            let share = if to_add > 0 {
                share.min(to_add - added)
            } else {
                share.max(to_add - added)
            };
            *size = (*size + share).max(0);
            added += share;
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in all.into_iter().zip(sizes) {
            self.scale_rs(rs, size).await?;
        }
        Ok((new, old))
    }

    async fn rollout_rolling(&mut self, owned: Vec<ReplicaSet>) -> Result<Action, Error> {
        let (new, mut old) = self.sync_revision(owned, true).await?;
        let mut new = new.expect("created");
        let replicas = self.replicas();
        // The new ReplicaSet grows within maxSurge…
        let size = spec_replicas(&new);
        let target = if size > replicas {
            replicas
        } else {
            self.new_replicas(&old, size)
        };
        if target != size && self.scale_rs(&mut new, target).await? {
            return self.sync_status(Some(&new), &old, true).await;
        }
        // …and the old ones shrink within maxUnavailable.
        if self.reconcile_old(&mut old, &new).await? {
            return self.sync_status(Some(&new), &old, true).await;
        }
        let status = self.status_of(Some(&new), &old);
        if self.complete(&status) {
            self.cleanup(&old).await?;
        }
        self.sync_status(Some(&new), &old, true).await
    }

    /// Upstream's reconcileOldReplicaSets: unhealthy old pods go first, then old pods as long as the
    /// available ones stay at or above replicas - maxUnavailable. An old ReplicaSet counts as available
    /// no more pods than it is sized for (its status may not yet show a scale-down).
    async fn reconcile_old(&self, old: &mut [ReplicaSet], new: &ReplicaSet) -> Result<bool, Error> {
        if sum(old, spec_replicas) == 0 {
            return Ok(false);
        }
        let all_pods = sum(old, spec_replicas) + spec_replicas(new);
        let min_available = self.replicas() - max_unavailable(&self.d);
        let new_unavailable = spec_replicas(new) - status_of(new).2;
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut order: Vec<usize> = (0..old.len()).collect();
        order.sort_by_key(|&i| created(&old[i]));
        let mut cleaned = 0;
        for &i in &order {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = spec_replicas(&old[i]);
            let available = status_of(&old[i]).2.min(size);
            if size == 0 || size == available {
                continue;
            }
            let down = (max_scaled_down - cleaned).min(size - available);
            self.scale_rs(&mut old[i], size - down).await?;
            cleaned += down;
        }
        let available_of = |rs: &ReplicaSet| status_of(rs).2.min(spec_replicas(rs));
        let available = sum(old, available_of) + available_of(new);
        if available <= min_available {
            return Ok(cleaned > 0);
        }
        let budget = (available - min_available).min(max_scaled_down - cleaned);
        let mut scaled = 0;
        for &i in &order {
            if scaled >= budget {
                break;
            }
            let size = spec_replicas(&old[i]);
            if size == 0 {
                continue;
            }
            let down = size.min(budget - scaled);
            self.scale_rs(&mut old[i], size - down).await?;
            scaled += down;
        }
        Ok(cleaned + scaled > 0)
    }

    async fn rollout_recreate(
        &mut self,
        owned: Vec<ReplicaSet>,
        pods: Vec<Arc<Pod>>,
    ) -> Result<Action, Error> {
        let (new, mut old) = self.sync_revision(owned, false).await?;
        let mut scaled = false;
        for rs in old.iter_mut().filter(|rs| spec_replicas(rs) > 0) {
            scaled |= self.scale_rs(rs, 0).await?;
        }
        // Old pods must be gone, terminating ones too, before new ones start.
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        let old_running = pods.iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
                && owners::controller_of(&p.metadata)
                    .is_some_and(|r| old_uids.contains(&r.uid.as_str()))
        });
        if scaled || old_running {
            return self.sync_status(new.as_ref(), &old, true).await;
        }
        let (new, old) = match new {
            Some(n) => (n, old),
            None => {
                let mut all = old;
                let (n, o) = {
                    all.sort_by_key(created);
                    self.sync_revision(all, true).await?
                };
                (n.expect("created"), o)
            }
        };
        let mut new = new;
        if self.scale_rs(&mut new, self.replicas()).await? {
            return self.sync_status(Some(&new), &old, true).await;
        }
        let status = self.status_of(Some(&new), &old);
        if self.complete(&status) {
            self.cleanup(&old).await?;
        }
        self.sync_status(Some(&new), &old, true).await
    }

    /// Old ReplicaSets scaled to zero beyond revisionHistoryLimit are deleted, oldest revision first.
    async fn cleanup(&self, old: &[ReplicaSet]) -> Result<(), Error> {
        let Some(limit) = self.d.spec.revision_history_limit else {
            return Ok(());
        };
        let mut idle: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0
                    && status_of(rs).0 == 0
                    && rs.metadata.deletion_timestamp.is_none()
                    && rs.status.as_ref().and_then(|s| s.observed_generation)
                        >= rs.metadata.generation
            })
            .collect();
        let extra = idle.len().saturating_sub(limit.max(0) as usize);
        idle.sort_by_key(|rs| revision(&rs.metadata));
        for rs in idle.into_iter().take(extra) {
            match self
                .api_rs
                .delete(&rs.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Upstream's calculateStatus: counts from the ReplicaSets, and the Available condition.
    fn status_of(&self, new: Option<&ReplicaSet>, old: &[ReplicaSet]) -> DeploymentStatus {
        let all: Vec<&ReplicaSet> = old.iter().chain(new).collect();
        let total_spec: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
        let actual: i32 = all.iter().map(|rs| status_of(rs).0).sum();
        let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
        let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
        let nz = |n: i32| (n != 0).then_some(n);
        let prev = self.d.status.clone().unwrap_or_default();
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: nz(actual),
            updated_replicas: nz(new.map(|rs| status_of(rs).0).unwrap_or(0)),
            ready_replicas: nz(ready),
            available_replicas: nz(available),
            unavailable_replicas: nz((total_spec - available).max(0)),
            collision_count: prev.collision_count,
            conditions: prev.conditions.clone(),
            terminating_replicas: None,
        };
        let c = if available >= self.replicas() - max_unavailable(&self.d) {
            new_condition(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            )
        } else {
            new_condition(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            )
        };
        set_condition(&mut status, c);
        status
    }

    fn complete(&self, s: &DeploymentStatus) -> bool {
        let r = self.replicas();
        s.updated_replicas.unwrap_or(0) == r
            && s.replicas.unwrap_or(0) == r
            && s.available_replicas.unwrap_or(0) == r
            && s.observed_generation >= self.d.metadata.generation
    }

    /// Writes the status (with the Progressing condition when `rollout`, as upstream's
    /// syncRolloutStatus) and says when to look again for a deadline.
    async fn sync_status(
        &mut self,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
        rollout: bool,
    ) -> Result<Action, Error> {
        let mut status = self.status_of(new, old);
        let prev = self.d.status.clone().unwrap_or_default();
        let mut recheck = None;
        if rollout && self.has_progress_deadline() {
            let current = condition(&prev, "Progressing");
            let done = status.replicas == status.updated_replicas
                && current.as_ref().and_then(|c| c.reason.as_deref())
                    == Some("NewReplicaSetAvailable");
            let what = match new {
                Some(rs) => format!("ReplicaSet \"{}\"", rs.name_any()),
                None => format!("Deployment \"{}\"", self.d.name_any()),
            };
            if !done {
                let progressed = status.updated_replicas > prev.updated_replicas
                    || status.replicas < prev.replicas
                    || status.ready_replicas > prev.ready_replicas
                    || status.available_replicas > prev.available_replicas;
                let deadline = i64::from(self.d.spec.progress_deadline_seconds.unwrap_or(600));
                let since = current
                    .as_ref()
                    .and_then(|c| c.last_update_time.as_ref())
                    .map(|t| t.0.as_second());
                let timed_out = since.is_some_and(|t| t + deadline < Timestamp::now().as_second());
                if self.complete(&status) {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            true,
                            "NewReplicaSetAvailable",
                            format!("{what} has successfully progressed."),
                        ),
                    );
                } else if progressed {
                    let mut c = new_condition(
                        "Progressing",
                        true,
                        "ReplicaSetUpdated",
                        format!("{what} is progressing."),
                    );
                    if let Some(cur) = &current {
                        if cur.status.as_deref() == Some("True") {
                            c.last_transition_time = cur.last_transition_time.clone();
                        }
                        status
                            .conditions
                            .get_or_insert_with(Vec::new)
                            .retain(|x| x.type_.as_deref() != Some("Progressing"));
                    }
                    status.conditions.get_or_insert_with(Vec::new).push(c);
                } else if timed_out {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            false,
                            "ProgressDeadlineExceeded",
                            format!("{what} has timed out progressing."),
                        ),
                    );
                } else if let Some(t) = since {
                    let left = (t + deadline - Timestamp::now().as_second()).max(1);
                    recheck = Some(Duration::from_secs(left as u64));
                }
            }
        }
        if same_status(&prev, &status) {
            return Ok(recheck.map_or_else(Action::await_change, Action::requeue));
        }
        let mut next = self.d.clone();
        next.status = Some(status);
        match self
            .api_d
            .replace_status(&self.d.name_any(), &PostParams::default(), &next)
            .await
        {
            Ok(d) => self.d = d,
            // Changed meanwhile: the watch brings it back.
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "selector": {},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                "template": {}},
        }))
        .unwrap()
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(fenceposts(&deployment(10, "25%", "25%")), (3, 2));
        assert_eq!(fenceposts(&deployment(1, "0%", "0%")), (0, 1));
        assert_eq!(fenceposts(&deployment(4, "1", "0")), (1, 0));
    }

    #[test]
    fn hash_ignores_its_own_label_and_changes_with_collisions() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}}})).unwrap();
        let mut labelled = t.clone();
        labelled
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "x".into());
        assert_eq!(template_hash(&t, None), template_hash(&labelled, None));
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        assert!(template_hash(&t, None)
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }
}
