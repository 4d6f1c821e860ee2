//! Events as upstream's recorders write them (client-go's record package): core/v1 Events about an object,
//! from a component on a host, named `<object>.<time in hex>`. A repeat of the same event (object, reason,
//! message, field path) raises its count and `lastTimestamp` instead of making another, written at most
//! every [`REPEAT_WRITE`] as upstream's correlator spaces them, so a crash-looping pod is one event, not
//! thousands. Writes never block the caller: they are spawned on the current tokio runtime.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// A repeated event's count is written at most this often.
pub const REPEAT_WRITE: Duration = Duration::from_secs(10);
/// Events not repeated for this long are forgotten (the apiserver's default --event-ttl).
const MEMORY: Duration = Duration::from_secs(3600);

/// Normal or Warning, as `Event.type` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

impl Type {
    pub fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

/// Object uid, field path, reason, message.
type Key = (String, Option<String>, String, String);

struct Written {
    name: String,
    count: i32,
    at: Instant,
}

/// Writes the events of one component (`kubelet`, `deployment-controller`, …) on one host.
pub struct Recorder {
    client: kube::Client,
    component: String,
    host: Option<String>,
    written: Mutex<HashMap<Key, Written>>,
}

impl Recorder {
    pub fn new(client: kube::Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event about `about` (its kind, namespace, name, uid and perhaps field path).
    pub fn record(&self, about: ObjectReference, type_: Type, reason: &str, message: String) {
        let (Some(ns), Some(name), Some(uid)) = (
            about.namespace.clone().or(Some("default".into())),
            about.name.clone(),
            about.uid.clone(),
        ) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let now = Timestamp::now();
        let key: Key = (
            uid,
            about.field_path.clone(),
            reason.to_string(),
            message.clone(),
        );
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let mut written = self.written.lock().unwrap();
        written.retain(|_, w| w.at.elapsed() < MEMORY);
        if let Some(w) = written.get_mut(&key) {
            w.count += 1;
            if w.at.elapsed() < REPEAT_WRITE {
                return;
            }
            w.at = Instant::now();
            let (event, patch) = (
                w.name.clone(),
                json!({"count": w.count, "lastTimestamp": now.to_string()}),
            );
            runtime.spawn(async move {
                let r = api
                    .patch(&event, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
                if let Err(e) = r {
                    tracing::debug!(%event, error = %e, "event count");
                }
            });
            return;
        }
        let event_name = format!("{name}.{:x}", now.as_nanosecond());
        written.insert(
            key,
            Written {
                name: event_name.clone(),
                count: 1,
                at: Instant::now(),
            },
        );
        let obj = json!({
            "metadata": {"name": event_name, "namespace": ns},
            "involvedObject": about,
            "reason": reason, "message": message, "type": type_.as_str(),
            "source": {"component": self.component, "host": self.host},
            "reportingComponent": self.component,
            "reportingInstance": self.host.clone().unwrap_or_default(),
            "firstTimestamp": now.to_string(), "lastTimestamp": now.to_string(), "count": 1,
        });
        let Ok(obj) = serde_json::from_value::<Event>(obj) else {
            return;
        };
        runtime.spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &obj).await {
                tracing::debug!(event = %event_name, error = %e, "event");
            }
        });
    }
}

/// A reference to `obj` (kind and apiVersion given, as an object fetched by kube-rs lacks them).
pub fn reference(
    api_version: &str,
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    field_path: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        field_path,
        ..Default::default()
    }
}
