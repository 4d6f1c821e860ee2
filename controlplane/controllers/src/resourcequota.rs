//! The resourcequota controller, as upstream's: each ResourceQuota's `status.hard` (its spec) and
//! `status.used`, summed over the namespace's objects with the same accounting as the quota admission
//! (basalt-apimachinery's `quota`): counts, a pod's requests and limits, claims' storage, services' node
//! ports and load balancers. Pods, services and claims wake their namespace's quotas as they change;
//! other kinds (configMaps, secrets, `count/<resource>.<group>`) are recounted every 30 s, as upstream's
//! full resync does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_apimachinery::quantity::Quantity;
use basalt_apimachinery::quota;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;
use kube::api::{DynamicObject, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use crate::informers::{Indexed, Informer};
use crate::owners;

const RESYNC: Duration = Duration::from_secs(30);

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
    services: Indexed<Service>,
    claims: Indexed<PersistentVolumeClaim>,
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<Pod>>,
    services: Arc<Informer<Service>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
) {
    let ctx = Arc::new(Ctx {
        client,
        pods: pods.indexed(),
        services: services.indexed(),
        claims: claims.indexed(),
    });
    // The quotas of an object's namespace: any of them may count it.
    let of_namespace = |store: Store<ResourceQuota>| {
        move |ns: Option<String>| {
            store
                .state()
                .iter()
                .filter(|q| q.metadata.namespace == ns)
                .map(|q| ObjectRef::from_obj(&**q))
                .collect::<Vec<_>>()
        }
    };
    let (a, b, c) = (
        of_namespace(quotas.store()),
        of_namespace(quotas.store()),
        of_namespace(quotas.store()),
    );
    let run = Controller::for_shared_stream(quotas.subscribe(), quotas.store())
        .watches_shared_stream(pods.subscribe(), move |o: Arc<Pod>| a(o.namespace()))
        .watches_shared_stream(
            services.subscribe(),
            move |o: Arc<Service>| b(o.namespace()),
        )
        .watches_shared_stream(claims.subscribe(), move |o: Arc<PersistentVolumeClaim>| {
            c(o.namespace())
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("resourcequota", run).await;
}

/// Which kind a quota resource name is counted on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Pods,
    Services,
    Claims,
    /// Counted through the API: `(group, plural)`.
    Other(String, String),
}

fn source(resource: &str) -> Option<Source> {
    let core = |plural: &str| match plural {
        "pods" => Source::Pods,
        "services" => Source::Services,
        "persistentvolumeclaims" => Source::Claims,
        p => Source::Other(String::new(), p.to_string()),
    };
    if let Some(counted) = resource.strip_prefix("count/") {
        return Some(match counted.split_once('.') {
            Some((plural, group)) => match (plural, group) {
                // Core kinds may be named with an empty group too.
                (p, "") => core(p),
                (p, g) => Source::Other(g.to_string(), p.to_string()),
            },
            None => core(counted),
        });
    }
    Some(match resource {
        "cpu" | "memory" => Source::Pods,
        r if r.starts_with("requests.") && r != "requests.storage" => Source::Pods,
        r if r.starts_with("limits.") => Source::Pods,
        "requests.storage" => Source::Claims,
        r if r.starts_with("services.") => Source::Services,
        "pods" | "services" | "persistentvolumeclaims" => core(resource),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(resource),
        _ => return None,
    })
}

/// The usage of every object of `ns` in `store` that still counts.
fn sum_store<K: Serialize + kube::Resource<DynamicType = ()> + Clone + 'static>(
    store: &Indexed<K>,
    ns: &str,
    group: &str,
    plural: &str,
    total: &mut Vec<(String, Quantity)>,
) {
    for o in store.in_namespace(ns) {
        let Ok(v) = serde_json::to_value(&*o) else {
            continue;
        };
        if quota::counts(&v) {
            quota::add(total, quota::usage(group, plural, &v));
        }
    }
}

/// How many objects of `plural` in `group` the namespace holds (not being deleted), found through
/// discovery; `None` when the API has no such resource.
async fn count(
    client: &Client,
    ns: &str,
    group: &str,
    plural: &str,
) -> Result<Option<usize>, kube::Error> {
    let api_group = kube::discovery::oneshot::group(client, group).await;
    let Ok(api_group) = api_group else {
        return Ok(None);
    };
    let Some((ar, _)) = api_group
        .recommended_resources()
        .into_iter()
        .find(|(ar, _)| ar.plural == plural)
    else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let list = api.list_metadata(&ListParams::default()).await?;
    Ok(Some(
        list.items
            .iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .count(),
    ))
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = q.namespace().unwrap_or_default();
    let hard: BTreeMap<String, ApiQuantity> = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let mut sources: Vec<Source> = hard.keys().filter_map(|r| source(r)).collect();
    sources.sort();
    sources.dedup();
    let mut total: Vec<(String, Quantity)> = Vec::new();
    let mut polled = false;
    for s in &sources {
        match s {
            Source::Pods => sum_store(&ctx.pods, &ns, "", "pods", &mut total),
            Source::Services => sum_store(&ctx.services, &ns, "", "services", &mut total),
            Source::Claims => sum_store(&ctx.claims, &ns, "", "persistentvolumeclaims", &mut total),
            Source::Other(group, plural) => {
                polled = true;
                if let Some(n) = count(&ctx.client, &ns, group, plural).await? {
                    let one =
                        |name: String| (name, Quantity::from_value(n as i128, Default::default()));
                    if group.is_empty() {
                        total.push(one(plural.clone()));
                        total.push(one(format!("count/{plural}")));
                    } else {
                        total.push(one(format!("count/{plural}.{group}")));
                    }
                }
            }
        }
    }
    // Every resource the quota limits is reported, at zero when nothing uses it.
    let used: BTreeMap<String, ApiQuantity> = hard
        .keys()
        .filter(|r| source(r).is_some())
        .map(|r| {
            let v = total
                .iter()
                .find(|(n, _)| n == r)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| "0".into());
            (r.clone(), ApiQuantity(v))
        })
        .collect();
    let status = ResourceQuotaStatus {
        hard: Some(hard),
        used: Some(used),
    };
    if q.status.as_ref() != Some(&status) {
        let mut next = (*q).clone();
        next.status = Some(status);
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        owners::settled(
            api.replace_status(&q.name_any(), &PostParams::default(), &next)
                .await,
        )?;
    }
    Ok(if polled {
        Action::requeue(RESYNC)
    } else {
        Action::await_change()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_counted_on_their_kind() {
        assert_eq!(source("requests.cpu"), Some(Source::Pods));
        assert_eq!(source("cpu"), Some(Source::Pods));
        assert_eq!(source("count/pods"), Some(Source::Pods));
        assert_eq!(source("requests.storage"), Some(Source::Claims));
        assert_eq!(source("services.nodeports"), Some(Source::Services));
        assert_eq!(
            source("count/deployments.apps"),
            Some(Source::Other("apps".into(), "deployments".into()))
        );
        assert_eq!(
            source("configmaps"),
            Some(Source::Other(String::new(), "configmaps".into()))
        );
        assert_eq!(source("frobs"), None);
    }
}
