//! The endpoints and endpointslice controllers, as upstream's: for every Service with a selector, the
//! pods it selects, with their addresses and the ports the Service's target ports name in them.
//!
//! - `endpointslice-controller` keeps EndpointSlices `<service>-<random>` (label
//!   `kubernetes.io/service-name`, managed by `endpointslice-controller.k8s.io`, owned by the Service): one
//!   per set of resolved ports, at most 100 endpoints each, with the ready, serving and terminating
//!   conditions, the node and its zone.
//! - `endpoints-controller` keeps the Endpoints object of the same name (the legacy API many tools still
//!   read): ready addresses and notReadyAddresses, grouped by port set; terminating pods left out.
//!
//! A pod counts once it has an IP and until it ends (Succeeded or Failed). With
//! `publishNotReadyAddresses` every such pod is ready.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::informers::{Indexed, Informer};
use crate::owners;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's `--max-endpoints-per-slice` default.
const PER_SLICE: usize = 100;

/// One pod behind a Service: its address and state, and the Service's ports resolved in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub ip: String,
    pub pod: Arc<Pod>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// (port name, protocol, port number in the pod, appProtocol), in the Service's order.
    pub ports: Vec<(String, String, i32, Option<String>)>,
}

/// The container port a Service port's `targetPort` names in the pod (a number is itself).
fn resolve(target: Option<&IntOrString>, port: i32, protocol: &str, pod: &Pod) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.protocol.as_deref().unwrap_or("TCP") == protocol
            })
            .map(|p| p.container_port),
    }
}

/// The pods `svc` selects from `pods`, as backends; none for a Service without a selector.
pub fn backends(svc: &Service, pods: &[Arc<Pod>]) -> Option<Vec<Backend>> {
    let spec = svc.spec.as_ref()?;
    let selector = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let ns = svc.namespace();
    let publish = spec.publish_not_ready_addresses == Some(true);
    let mut out: Vec<Backend> = pods
        .iter()
        .filter(|p| p.metadata.namespace == ns)
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                return None;
            }
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let ready = owners::is_ready(p);
            let terminating = p.metadata.deletion_timestamp.is_some();
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter_map(|sp| {
                    let protocol = sp.protocol.clone().unwrap_or_else(|| "TCP".into());
                    let n = resolve(sp.target_port.as_ref(), sp.port, &protocol, p)?;
                    Some((
                        sp.name.clone().unwrap_or_default(),
                        protocol,
                        n,
                        sp.app_protocol.clone(),
                    ))
                })
                .collect();
            // Upstream's: publishNotReadyAddresses makes every pod ready, terminating ones too.
            Some(Backend {
                ip,
                pod: p.clone(),
                ready: publish || (ready && !terminating),
                serving: ready,
                terminating,
                ports,
            })
        })
        .collect();
    out.sort_by_key(|b| b.pod.name_any());
    Some(out)
}

fn target_ref(p: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: p.namespace(),
        name: Some(p.name_any()),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    }
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

/// The labels both objects carry: the Service's own, and upstream's headless mark.
fn labels_for(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The Endpoints of a Service: a subset per set of resolved ports, addresses sorted by IP.
pub fn endpoints_of(svc: &Service, backends: &[Backend]) -> Endpoints {
    let mut subsets: BTreeMap<Vec<(String, String, i32)>, EndpointSubset> = BTreeMap::new();
    // Terminating pods are left out, unless publishNotReadyAddresses made them ready.
    for b in backends.iter().filter(|b| !b.terminating || b.ready) {
        let key: Vec<(String, String, i32)> = b
            .ports
            .iter()
            .map(|(n, proto, port, _)| (n.clone(), proto.clone(), *port))
            .collect();
        let subset = subsets.entry(key).or_insert_with(|| EndpointSubset {
            ports: Some(
                b.ports
                    .iter()
                    .map(|(name, protocol, port, app)| EndpointPort {
                        name: Some(name.clone()).filter(|n| !n.is_empty()),
                        port: *port,
                        protocol: Some(protocol.clone()),
                        app_protocol: app.clone(),
                    })
                    .collect(),
            )
            .filter(|p: &Vec<EndpointPort>| !p.is_empty()),
            ..Default::default()
        });
        let hostname = b
            .pod
            .spec
            .as_ref()
            .filter(|s| s.subdomain.as_deref() == svc.metadata.name.as_deref())
            .and_then(|s| s.hostname.clone());
        let address = EndpointAddress {
            ip: b.ip.clone(),
            hostname,
            node_name: node_of(&b.pod),
            target_ref: Some(target_ref(&b.pod)),
        };
        let list = if b.ready {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let mut subsets: Vec<EndpointSubset> = subsets.into_values().collect();
    for s in &mut subsets {
        for list in [&mut s.addresses, &mut s.not_ready_addresses]
            .into_iter()
            .flatten()
        {
            list.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
    }
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.namespace(),
            labels: Some(labels_for(svc)).filter(|l| !l.is_empty()),
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// The EndpointSlices a Service should have (names left to the apiserver): per set of resolved ports,
/// in chunks of [`PER_SLICE`]. A Service selecting nothing still has one empty slice, as upstream's.
pub fn slices_of(
    svc: &Service,
    backends: &[Backend],
    zones: &dyn Fn(&str) -> Option<String>,
) -> Vec<EndpointSlice> {
    let mut groups: BTreeMap<Vec<(String, String, i32)>, Vec<&Backend>> = BTreeMap::new();
    for b in backends.iter().filter(|b| !b.ip.contains(':')) {
        let key = b
            .ports
            .iter()
            .map(|(n, proto, port, _)| (n.clone(), proto.clone(), *port))
            .collect();
        groups.entry(key).or_default().push(b);
    }
    let mut labels = labels_for(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slice = |ports: Option<Vec<SlicePort>>, endpoints: Vec<Endpoint>| EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", svc.name_any())),
            namespace: svc.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owners::controller_ref("v1", "Service", &svc.metadata)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(endpoints),
        ports,
    };
    if groups.is_empty() {
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .map(|_| Vec::new());
        return vec![slice(ports, Vec::new())];
    }
    let mut out = Vec::new();
    for members in groups.values() {
        let ports: Vec<SlicePort> = members[0]
            .ports
            .iter()
            .map(|(name, protocol, port, app)| SlicePort {
                name: Some(name.clone()),
                port: Some(*port),
                protocol: Some(protocol.clone()),
                app_protocol: app.clone(),
            })
            .collect();
        for chunk in members.chunks(PER_SLICE) {
            let endpoints = chunk
                .iter()
                .map(|b| {
                    let node = node_of(&b.pod);
                    Endpoint {
                        addresses: vec![b.ip.clone()],
                        conditions: Some(EndpointConditions {
                            ready: Some(b.ready),
                            serving: Some(b.serving),
                            terminating: Some(b.terminating),
                        }),
                        zone: node.as_deref().and_then(zones),
                        node_name: node,
                        target_ref: Some(target_ref(&b.pod)),
                        hostname: b
                            .pod
                            .spec
                            .as_ref()
                            .filter(|s| s.subdomain.as_deref() == svc.metadata.name.as_deref())
                            .and_then(|s| s.hostname.clone()),
                        ..Default::default()
                    }
                })
                .collect();
            out.push(slice(Some(ports.clone()), endpoints));
        }
    }
    out
}

/// What a pod wakes: every Service with a selector in its namespace, since a relabelled pod must also
/// leave the Service it no longer matches, and its old labels are not at hand.
fn services_of(pod: &Pod, services: &Store<Service>) -> Vec<ObjectRef<Service>> {
    services
        .state()
        .iter()
        .filter(|s| s.metadata.namespace == pod.metadata.namespace)
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| !sel.is_empty())
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect()
}

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
    nodes: Store<Node>,
    slices: Store<EndpointSlice>,
}

/// Runs the endpointslice controller until the future is dropped.
pub async fn run_slices(
    client: Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
) {
    let ctx = Arc::new(Ctx {
        client,
        pods: pods.indexed(),
        nodes: nodes.store(),
        slices: slices.store(),
    });
    let (by_pod, by_slice) = (services.store(), services.store());
    let run = Controller::for_shared_stream(services.subscribe(), services.store())
        .watches_shared_stream(pods.subscribe(), move |p: Arc<Pod>| {
            services_of(&p, &by_pod)
        })
        // A slice changed or deleted by someone else is put back.
        .watches_shared_stream(slices.subscribe(), move |s: Arc<EndpointSlice>| {
            s.labels()
                .get(SERVICE_NAME_LABEL)
                .filter(|_| {
                    s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
                })
                .map(|n| ObjectRef::new(n).within(&s.namespace().unwrap_or_default()))
                .filter(|r| by_slice.get(r).is_some())
        })
        .run(sync_slices, owners::retry, ctx);
    owners::drive("endpointslice", run).await;
}

/// Whether two slices hold the same (their names and bookkeeping aside).
fn same_slice(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    let endpoints = |s: &EndpointSlice| s.endpoints.clone().unwrap_or_default();
    let ports = |s: &EndpointSlice| s.ports.clone().unwrap_or_default();
    endpoints(a) == endpoints(b)
        && ports(a) == ports(b)
        && a.address_type == b.address_type
        && a.metadata.labels == b.metadata.labels
}

async fn sync_slices(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let uid = svc.uid().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut have: Vec<Arc<EndpointSlice>> = ctx
        .slices
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|s| owners::controlled_by(&s.metadata, &uid))
        .collect();
    have.sort_by_key(|s| s.name_any());
    let pods = ctx.pods.in_namespace(&ns);
    let Some(backends) =
        backends(&svc, &pods).filter(|_| svc.metadata.deletion_timestamp.is_none())
    else {
        // No selector: slices are the user's to write; any of ours go.
        for s in have {
            delete_slice(&api, &s).await?;
        }
        return Ok(Action::await_change());
    };
    let nodes = ctx.nodes.clone();
    let zone = move |n: &str| {
        nodes
            .get(&ObjectRef::new(n))
            .and_then(|n| n.labels().get("topology.kubernetes.io/zone").cloned())
    };
    let mut want = slices_of(&svc, &backends, &zone);
    // Slices already holding what is wanted stay as they are; the rest are rewritten, made or deleted.
    have.retain(|h| match want.iter().position(|w| same_slice(w, h)) {
        Some(i) => {
            want.remove(i);
            false
        }
        None => true,
    });
    let mut spare = have.into_iter();
    for w in want {
        match spare.next() {
            Some(old) => {
                let mut next = w;
                next.metadata.name = old.metadata.name.clone();
                next.metadata.generate_name = None;
                next.metadata.resource_version = old.metadata.resource_version.clone();
                match api
                    .replace(&old.name_any(), &PostParams::default(), &next)
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            None => {
                api.create(&PostParams::default(), &w).await?;
            }
        }
    }
    for s in spare {
        delete_slice(&api, &s).await?;
    }
    Ok(Action::await_change())
}

async fn delete_slice(api: &Api<EndpointSlice>, s: &EndpointSlice) -> Result<(), kube::Error> {
    match api.delete(&s.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

struct EndpointsCtx {
    client: Client,
    pods: Indexed<Pod>,
    endpoints: Store<Endpoints>,
}

/// Runs the endpoints controller until the future is dropped.
pub async fn run_endpoints(
    client: Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    endpoints: Arc<Informer<Endpoints>>,
) {
    let ctx = Arc::new(EndpointsCtx {
        client,
        pods: pods.indexed(),
        endpoints: endpoints.store(),
    });
    // A Service deleted takes its Endpoints along (the controller never sees a Service that is gone): the
    // informer hands on a deleted Service with its last state; the apiserver confirms it is gone, and the
    // Endpoints seen then are deleted by uid, so a Service made again meanwhile keeps its own.
    let (svc_store, ep_store, client_gc) =
        (services.store(), endpoints.store(), ctx.client.clone());
    let leftovers = services.subscribe().for_each(move |s| {
        let (ns, name) = (s.namespace().unwrap_or_default(), s.name_any());
        let key = ObjectRef::new(&name).within(&ns);
        let gone = svc_store.get(&key).is_none();
        let uid = ep_store
            .get(&ObjectRef::new(&name).within(&ns))
            .and_then(|e| e.metadata.uid.clone());
        let client = client_gc.clone();
        async move {
            let Some(uid) = uid.filter(|_| gone) else {
                return;
            };
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            if !matches!(services.get_opt(&name).await, Ok(None)) {
                return;
            }
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            let api: Api<Endpoints> = Api::namespaced(client, &ns);
            if let Err(e) = api.delete(&name, &dp).await {
                tracing::debug!(endpoints = %name, error = %e, "endpoints of a deleted Service");
            }
        }
    });
    let by_pod = services.store();
    let run = Controller::for_shared_stream(services.subscribe(), services.store())
        .watches_shared_stream(pods.subscribe(), move |p: Arc<Pod>| {
            services_of(&p, &by_pod)
        })
        .watches_shared_stream(endpoints.subscribe(), |e: Arc<Endpoints>| {
            Some(ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default()))
        })
        .run(sync_endpoints, owners::retry, ctx);
    // Joined, not spawned: both end when the loop is stopped (leadership lost).
    futures_util::future::join(leftovers, owners::drive("endpoints", run)).await;
}

async fn sync_endpoints(svc: Arc<Service>, ctx: Arc<EndpointsCtx>) -> Result<Action, kube::Error> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let have = ctx.endpoints.get(&ObjectRef::new(&name).within(&ns));
    let pods = ctx.pods.in_namespace(&ns);
    let Some(backends) =
        backends(&svc, &pods).filter(|_| svc.metadata.deletion_timestamp.is_none())
    else {
        // Without a selector the Endpoints are the user's (how a Service points outside the cluster).
        return Ok(Action::await_change());
    };
    let want = endpoints_of(&svc, &backends);
    match have {
        Some(h) if h.subsets == want.subsets && h.metadata.labels == want.metadata.labels => {}
        Some(h) => {
            let mut next = want;
            next.metadata.resource_version = h.metadata.resource_version.clone();
            next.metadata.annotations = h.metadata.annotations.clone();
            match api.replace(&name, &PostParams::default(), &next).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        None => match api.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        },
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: Option<&str>, ready: bool, labels: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": labels},
                "spec": {"nodeName": "n1", "containers": [{"name": "c",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip,
                    "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
            }))
            .unwrap(),
        )
    }

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns", "uid": "s"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn endpoints_split_ready_from_not_ready_and_resolve_named_ports() {
        let svc = service(json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}));
        let pods = vec![
            pod("a", Some("10.0.0.2"), true, json!({"app": "web"})),
            pod("b", Some("10.0.0.1"), false, json!({"app": "web"})),
            pod("c", None, true, json!({"app": "web"})),
            pod("d", Some("10.0.0.3"), true, json!({"app": "other"})),
        ];
        let b = backends(&svc, &pods).unwrap();
        assert_eq!(b.len(), 2, "no IP or not selected: left out");
        let e = endpoints_of(&svc, &b);
        let subsets = e.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        assert_eq!(s.addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(s.not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 8080);
        let slices = slices_of(&svc, &b, &|_| Some("z1".into()));
        assert_eq!(slices.len(), 1);
        let eps = slices[0].endpoints.as_ref().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].zone.as_deref(), Some("z1"));
        assert_eq!(
            slices[0].metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
    }

    #[test]
    fn a_service_without_selector_is_left_alone_and_an_empty_one_gets_an_empty_slice() {
        assert!(backends(&service(json!({"ports": [{"port": 80}]})), &[]).is_none());
        let svc = service(json!({"selector": {"app": "none"}, "ports": [{"port": 80}]}));
        let b = backends(&svc, &[]).unwrap();
        let slices = slices_of(&svc, &b, &|_| None);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].endpoints.as_deref(), Some(&[][..]));
        assert!(endpoints_of(&svc, &b).subsets.is_none());
    }

    #[test]
    fn more_than_a_slice_holds_are_split() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i:03}"),
                    Some(&format!("10.0.{}.{}", i / 200, i % 200)),
                    true,
                    json!({"app": "web"}),
                )
            })
            .collect();
        let b = backends(&svc, &pods).unwrap();
        let sizes: Vec<usize> = slices_of(&svc, &b, &|_| None)
            .iter()
            .map(|s| s.endpoints.as_ref().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, [100, 100, 50]);
    }
}
