//! Expectations, as upstream's controllers keep them: the pods an owner created or deleted are remembered
//! until the pod reflector shows them. Until then the owner's pods are not counted again, so a reconcile
//! that runs before the watch caught up never creates or deletes twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_events::{Recorder, Type};
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};

use crate::informers::{Indexed, Informer};
use crate::owners;

/// A pod created or deleted but never seen is given up on after this long (upstream's expectations TTL).
const EXPECTATIONS_TTL: Duration = Duration::from_secs(300);

/// The creations (by name) and deletions (by uid) an owner waits to see.
#[derive(Default)]
struct Pending {
    created: HashSet<String>,
    deleted: HashSet<String>,
    since: Option<Instant>,
}

#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

impl Expectations {
    pub fn expect(&self, key: &str, created: Vec<String>, deleted: Vec<String>) {
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        let mut m = self.0.lock().unwrap();
        let p = m.entry(key.into()).or_default();
        p.created.extend(created);
        p.deleted.extend(deleted);
        p.since = Some(Instant::now());
    }

    /// Whether the reflector shows everything expected of `key` (a created pod present, a deleted one
    /// gone or terminating); forgets what it shows.
    pub fn satisfied(&self, key: &str, pods: &[Arc<Pod>]) -> bool {
        let mut m = self.0.lock().unwrap();
        let Some(p) = m.get_mut(key) else {
            return true;
        };
        p.created
            .retain(|n| !pods.iter().any(|pod| pod.metadata.name.as_ref() == Some(n)));
        p.deleted.retain(|uid| {
            pods.iter().any(|pod| {
                pod.metadata.uid.as_ref() == Some(uid) && pod.metadata.deletion_timestamp.is_none()
            })
        });
        let done = (p.created.is_empty() && p.deleted.is_empty())
            || p.since.is_some_and(|t| t.elapsed() > EXPECTATIONS_TTL);
        if done {
            m.remove(key);
        }
        done
    }

    /// A pod the watch showed: a creation seen is no longer awaited, even if the pod is gone again by the
    /// time the ReplicaSet is synced.
    pub fn observe(&self, pod: &Pod) {
        let Some(owner) = owners::controller_of(&pod.metadata) else {
            return;
        };
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), owner.name);
        if let Some(p) = self.0.lock().unwrap().get_mut(&key) {
            p.created.remove(&pod.name_any());
        }
    }

    pub fn forget(&self, key: &str) {
        self.0.lock().unwrap().remove(key);
    }
}

/// The object pods are made for, and where its events go.
pub struct Owner<'a> {
    pub events: &'a Recorder,
    pub reference: ObjectReference,
}

impl Owner<'_> {
    pub fn event(&self, type_: Type, reason: &str, message: String) {
        self.events
            .record(self.reference.clone(), type_, reason, message);
    }
}

/// The shared pod store for an owner's loop, and its stream of pods with the expectations it fulfils.
pub fn watch_pods(
    pods: &Informer<Pod>,
) -> (
    Indexed<Pod>,
    impl Stream<Item = Arc<Pod>> + Send + 'static,
    Arc<Expectations>,
) {
    let expectations = Arc::new(Expectations::default());
    let seen = expectations.clone();
    let events = pods.subscribe().inspect(move |p| seen.observe(p));
    (pods.indexed(), events, expectations)
}

impl Expectations {
    /// Creates `count` copies of `pod(i)` for `key`, slow start as upstream: batches of 1, 2, 4, … so
    /// that a failing template costs one error. Remembers those made; gives the first error.
    pub async fn create(
        &self,
        api: &Api<Pod>,
        key: &str,
        owner: &Owner<'_>,
        mut pods: impl Iterator<Item = Pod>,
    ) -> Result<(), kube::Error> {
        let pp = PostParams::default();
        let mut created = Vec::new();
        let mut failed = None;
        let mut batch = 1;
        while failed.is_none() {
            let chunk: Vec<Pod> = pods.by_ref().take(batch).collect();
            if chunk.is_empty() {
                break;
            }
            let results =
                futures_util::future::join_all(chunk.iter().map(|p| api.create(&pp, p))).await;
            for r in results {
                match r {
                    Ok(p) => {
                        owner.event(
                            Type::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        );
                        created.push(p.name_any());
                    }
                    Err(e) => {
                        owner.event(
                            Type::Warning,
                            "FailedCreate",
                            format!("Error creating: {e}"),
                        );
                        failed = Some(e);
                    }
                }
            }
            batch *= 2;
        }
        self.expect(key, created, vec![]);
        failed.map_or(Ok(()), Err)
    }

    /// Deletes `victims` of `key`, each guarded by its uid. Remembers those deleted; gives how many, or
    /// the first error.
    pub async fn delete(
        &self,
        api: &Api<Pod>,
        key: &str,
        owner: &Owner<'_>,
        victims: &[&Pod],
    ) -> Result<usize, kube::Error> {
        let results = futures_util::future::join_all(victims.iter().map(|p| {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let name = p.name_any();
            async move { api.delete(&name, &dp).await }
        }))
        .await;
        let mut deleted = Vec::new();
        let mut failed = None;
        for (p, r) in victims.iter().zip(results) {
            match r {
                Ok(_) => {
                    owner.event(
                        Type::Normal,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", p.name_any()),
                    );
                    deleted.push(p.metadata.uid.clone().unwrap_or_default());
                }
                // Gone, or replaced by another of the same name: not ours to delete.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => {
                    owner.event(
                        Type::Warning,
                        "FailedDelete",
                        format!("Error deleting: {e}"),
                    );
                    failed = Some(e);
                }
            }
        }
        let n = deleted.len();
        self.expect(key, vec![], deleted);
        failed.map_or(Ok(n), Err)
    }
}
