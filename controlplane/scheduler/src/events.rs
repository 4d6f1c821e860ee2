//! Events about pods (`Scheduled`, `FailedScheduling`, `Preempted`), written as core/v1 Events from
//! `default-scheduler` as `kubectl describe` and `kubectl events` show them. Recording never blocks
//! scheduling: events go through a bounded channel and are dropped when it is full (upstream drops them
//! too); a repeat of the same event for the same pod bumps the count of the first.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::mpsc;

use crate::model::PodInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

struct Record {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    kind: Type,
    reason: &'static str,
    action: &'static str,
    message: String,
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
}

const COMPONENT: &str = "default-scheduler";
/// How many distinct events are remembered for counting repeats.
const REMEMBERED: usize = 4096;
/// Event writes in flight at once (each holds an HTTP/1.1 connection while it lasts).
const IN_FLIGHT: usize = 8;

impl Recorder {
    /// Starts the writer on the current runtime.
    pub fn start(client: Client, instance: String) -> Recorder {
        let (tx, rx) = mpsc::channel(1000);
        tokio::spawn(writer(client, instance, rx));
        Recorder { tx }
    }

    pub fn record(
        &self,
        pod: &PodInfo,
        kind: Type,
        reason: &'static str,
        action: &'static str,
        message: String,
    ) {
        let _ = self.tx.try_send(Record {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            resource_version: pod.resource_version.clone(),
            kind,
            reason,
            action,
            message,
        });
    }
}

async fn writer(client: Client, instance: String, mut rx: mpsc::Receiver<Record>) {
    // (pod uid, reason, message) → (namespace, event name, count)
    let mut seen: HashMap<(String, &'static str, String), (String, String, i32)> = HashMap::new();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    while let Some(r) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let now = Time(Timestamp::now());
        let key = (r.uid.clone(), r.reason, r.message.clone());
        if let Some((ns, name, count)) = seen.get_mut(&key) {
            *count += 1;
            let api: Api<Event> = Api::namespaced(client.clone(), ns);
            let patch = serde_json::json!({"count": *count, "lastTimestamp": now});
            let name = name.clone();
            tokio::spawn(async move {
                let _ = api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                drop(permit);
            });
            continue;
        }
        let nanos = Timestamp::now().as_nanosecond();
        let name = format!("{}.{:x}", r.name, nanos);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(r.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(r.namespace.clone()),
                name: Some(r.name.clone()),
                uid: Some(r.uid.clone()),
                resource_version: Some(r.resource_version.clone()).filter(|v| !v.is_empty()),
                ..Default::default()
            },
            reason: Some(r.reason.into()),
            message: Some(r.message.clone()),
            type_: Some(format!("{:?}", r.kind)),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            action: Some(r.action.into()),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(instance.clone()),
            ..Default::default()
        };
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(key, (r.namespace.clone(), name, 1));
        let api: Api<Event> = Api::namespaced(client.clone(), &r.namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "event not written");
            }
            drop(permit);
        });
    }
}
