//! The scheduler at work: watches (pods, nodes and the objects plugins read) feed the cache and the queue;
//! one thread takes pods off the queue and runs the scheduling cycle against the cache; bindings,
//! status updates, evictions and events go out asynchronously, so the next cycle never waits for the
//! apiserver.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use basalt_apimachinery::selector::{LabelSelector, Op, Requirement};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::algorithm::Algorithm;
use crate::cache::{Cache, Pdb};
use crate::config::Config;
use crate::events::{Recorder, Type};
use crate::model::{selector_of, PodInfo};
use crate::plugins::{volumes, Ctx};
use crate::preemption::{self, Candidate};
use crate::queue::{ClusterEvent, Queue};

/// How long PreBind waits for the volume controller to bind a pod's claims (upstream's bindTimeout).
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// Writes to the apiserver in flight at once (bindings, status updates, evictions). kube-rs speaks
/// HTTP/1.1, one request per connection at a time: unbounded, a burst of bindings would open a TLS
/// connection each; bounded, a few pooled connections carry them all.
const WRITES_IN_FLIGHT: usize = 32;

/// Counters, for logs and the benchmark.
#[derive(Default)]
pub struct Stats {
    pub attempts: AtomicU64,
    pub scheduled: AtomicU64,
    pub unschedulable: AtomicU64,
    pub bound: AtomicU64,
    pub bind_errors: AtomicU64,
}

pub struct Shared {
    pub cache: Mutex<Cache>,
    pub queue: Mutex<Queue>,
    wake: Condvar,
    stop: AtomicBool,
    synced: AtomicUsize,
    config: Config,
    client: Client,
    events: Recorder,
    rt: tokio::runtime::Handle,
    pub stats: Stats,
    /// The last PodScheduled=False message written per pod, so unchanged ones are not rewritten.
    conditions: Mutex<std::collections::HashMap<String, String>>,
    writes: tokio::sync::Semaphore,
}

/// The watches that must have listed before the first cycle.
const INFORMERS: usize = 11;

impl Shared {
    fn notify(&self) {
        self.wake.notify_one();
    }

    fn event(&self, ev: ClusterEvent) {
        if self.queue.lock().unwrap().on_event(ev) > 0 {
            self.notify();
        }
    }

    fn serves(&self, pod: &PodInfo) -> bool {
        self.config
            .profiles
            .iter()
            .any(|p| p.scheduler_name == pod.scheduler_name)
    }
}

/// A running scheduler; dropping it stops it.
pub struct Running {
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.notify();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

type Handler<K> = Box<dyn FnMut(&Shared, Change<K>) + Send>;

/// What a watch says, with relists delivered whole so that objects deleted while disconnected go.
enum Change<K> {
    Apply(K),
    Delete(K),
    Relist(Vec<K>),
}

fn informer<K>(
    shared: Arc<Shared>,
    api: Api<K>,
    mut handle: Handler<K>,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    Box::pin(async move {
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        futures_util::pin_mut!(stream);
        let mut buffer: Option<Vec<K>> = None;
        let mut synced = false;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Init) => buffer = Some(Vec::new()),
                Ok(Event::InitApply(k)) => buffer.get_or_insert_with(Vec::new).push(k),
                Ok(Event::InitDone) => {
                    handle(&shared, Change::Relist(buffer.take().unwrap_or_default()));
                    if !synced {
                        synced = true;
                        shared.synced.fetch_add(1, Ordering::SeqCst);
                        shared.notify();
                    }
                }
                Ok(Event::Apply(k)) => handle(&shared, Change::Apply(k)),
                Ok(Event::Delete(k)) => handle(&shared, Change::Delete(k)),
                Err(e) => tracing::debug!(error = %e, "scheduler watch error"),
            }
        }
    })
}

fn on_pod(shared: &Shared, pod: &Pod) {
    let info = Arc::new(PodInfo::new(pod));
    if info.finished {
        return on_pod_gone(shared, &info.uid);
    }
    if info.node_name.is_some() {
        let (was, known) = {
            let mut cache = shared.cache.lock().unwrap();
            let known = cache.is_known(&info.uid);
            (cache.upsert_bound_pod(info.clone()), known)
        };
        shared.queue.lock().unwrap().delete(&info.uid);
        shared.conditions.lock().unwrap().remove(&info.uid);
        shared.event(if known && was.is_some() {
            ClusterEvent::AssignedPodUpdate
        } else {
            ClusterEvent::AssignedPodAdd
        });
        return;
    }
    if !shared.serves(&info) {
        return;
    }
    let mut q = shared.queue.lock().unwrap();
    if info.terminating {
        q.delete(&info.uid);
        return;
    }
    // A pod the cache holds as assumed is in its binding: the watch is only behind.
    if shared.cache.lock().unwrap().is_known(&info.uid) {
        return;
    }
    q.upsert(info);
    drop(q);
    shared.notify();
}

fn on_pod_gone(shared: &Shared, uid: &str) {
    shared.queue.lock().unwrap().delete(uid);
    shared.conditions.lock().unwrap().remove(uid);
    let was = shared.cache.lock().unwrap().remove_pod(uid);
    if was.is_some() {
        shared.event(ClusterEvent::AssignedPodDelete);
    }
}

fn pods_handler() -> Handler<Pod> {
    Box::new(|shared, change| match change {
        Change::Apply(p) => on_pod(shared, &p),
        Change::Delete(p) => on_pod_gone(shared, &p.uid().unwrap_or_default()),
        Change::Relist(list) => {
            let seen: HashSet<String> = list.iter().filter_map(|p| p.uid()).collect();
            for p in &list {
                on_pod(shared, p);
            }
            let gone: Vec<String> = {
                let cache = shared.cache.lock().unwrap();
                cache
                    .placement_uids()
                    .into_iter()
                    .filter(|u| !seen.contains(u))
                    .collect()
            };
            for uid in gone {
                on_pod_gone(shared, &uid);
            }
        }
    })
}

fn on_node(shared: &Shared, node: &Node) {
    let change = shared.cache.lock().unwrap().upsert_node(node);
    if change.added {
        shared.event(ClusterEvent::NodeAdd);
        return;
    }
    if change.allocatable {
        shared.event(ClusterEvent::NodeAllocatableUp);
    }
    if change.labels {
        shared.event(ClusterEvent::NodeLabels);
    }
    if change.taints {
        shared.event(ClusterEvent::NodeTaints);
    }
    if change.unschedulable {
        shared.event(ClusterEvent::NodeSchedulable);
    }
}

fn nodes_handler() -> Handler<Node> {
    Box::new(|shared, change| match change {
        Change::Apply(n) => on_node(shared, &n),
        Change::Delete(n) => shared.cache.lock().unwrap().remove_node(&n.name_any()),
        Change::Relist(list) => {
            let seen: HashSet<String> = list.iter().map(|n| n.name_any()).collect();
            let gone: Vec<String> = {
                let cache = shared.cache.lock().unwrap();
                cache
                    .node_names()
                    .iter()
                    .filter(|n| !seen.contains(*n))
                    .cloned()
                    .collect()
            };
            for n in gone {
                shared.cache.lock().unwrap().remove_node(&n);
            }
            for n in &list {
                on_node(shared, n);
            }
        }
    })
}

/// A handler for a kind kept whole in a cache map: `apply` puts one in, `remove` takes one out.
fn map_handler<K: Resource + Send + 'static>(
    event: Option<ClusterEvent>,
    apply: fn(&mut Cache, &K),
    remove: fn(&mut Cache, &K),
    clear: fn(&mut Cache),
) -> Handler<K> {
    Box::new(move |shared, change| {
        {
            let mut cache = shared.cache.lock().unwrap();
            match &change {
                Change::Apply(k) => apply(&mut cache, k),
                Change::Delete(k) => remove(&mut cache, k),
                Change::Relist(list) => {
                    clear(&mut cache);
                    for k in list {
                        apply(&mut cache, k);
                    }
                }
            }
        }
        if let Some(ev) = event {
            shared.event(ev);
        }
    })
}

fn ns_key<K: Resource>(k: &K) -> (String, String) {
    (k.namespace().unwrap_or_default(), k.name_any())
}

fn map_selector(m: Option<&std::collections::BTreeMap<String, String>>) -> LabelSelector {
    LabelSelector {
        requirements: m
            .into_iter()
            .flatten()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::Equals(v.clone()),
            })
            .collect(),
    }
}

fn put_selector<K: Resource<DynamicType = ()>>(c: &mut Cache, k: &K, sel: LabelSelector) {
    c.workload_selectors.insert(
        format!("{}/{}", K::kind(&()), k.uid().unwrap_or_default()),
        (k.namespace().unwrap_or_default(), sel),
    );
}

fn drop_selector<K: Resource<DynamicType = ()>>(c: &mut Cache, k: &K) {
    c.workload_selectors
        .remove(&format!("{}/{}", K::kind(&()), k.uid().unwrap_or_default()));
}

fn clear_selectors<K: Resource<DynamicType = ()>>(c: &mut Cache) {
    let prefix = format!("{}/", K::kind(&()));
    c.workload_selectors.retain(|k, _| !k.starts_with(&prefix));
}

fn start_informers(shared: &Arc<Shared>) -> Vec<tokio::task::JoinHandle<()>> {
    let client = shared.client.clone();
    let s = || shared.clone();
    let futures = vec![
        informer(s(), Api::<Pod>::all(client.clone()), pods_handler()),
        informer(s(), Api::<Node>::all(client.clone()), nodes_handler()),
        informer(
            s(),
            Api::<Namespace>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::NamespaceLabels),
                |c, n: &Namespace| {
                    c.namespaces.insert(n.name_any(), n.labels().clone());
                },
                |c, n| {
                    c.namespaces.remove(&n.name_any());
                },
                |c| c.namespaces.clear(),
            ),
        ),
        informer(
            s(),
            Api::<PersistentVolumeClaim>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::Volumes),
                |c, k: &PersistentVolumeClaim| {
                    c.claims.insert(ns_key(k), k.clone());
                },
                |c, k| {
                    c.claims.remove(&ns_key(k));
                },
                |c| c.claims.clear(),
            ),
        ),
        informer(
            s(),
            Api::<PersistentVolume>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::Volumes),
                |c, k: &PersistentVolume| {
                    c.volumes.insert(k.name_any(), k.clone());
                },
                |c, k| {
                    c.volumes.remove(&k.name_any());
                },
                |c| c.volumes.clear(),
            ),
        ),
        informer(
            s(),
            Api::<StorageClass>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::Volumes),
                |c, k: &StorageClass| {
                    c.classes.insert(k.name_any(), k.clone());
                },
                |c, k| {
                    c.classes.remove(&k.name_any());
                },
                |c| c.classes.clear(),
            ),
        ),
        informer(
            s(),
            Api::<PodDisruptionBudget>::all(client.clone()),
            map_handler(
                None,
                |c, k: &PodDisruptionBudget| {
                    let status = k.status.clone().unwrap_or_default();
                    let selector = k
                        .spec
                        .as_ref()
                        .and_then(|s| selector_of(s.selector.as_ref()))
                        .unwrap_or_default();
                    c.pdbs.insert(
                        format!("{}/{}", k.namespace().unwrap_or_default(), k.name_any()),
                        Pdb {
                            namespace: k.namespace().unwrap_or_default(),
                            selector,
                            disruptions_allowed: status.disruptions_allowed.unwrap_or(0),
                            disrupted_pods: status
                                .disrupted_pods
                                .unwrap_or_default()
                                .into_keys()
                                .collect(),
                        },
                    );
                },
                |c, k| {
                    c.pdbs.remove(&format!(
                        "{}/{}",
                        k.namespace().unwrap_or_default(),
                        k.name_any()
                    ));
                },
                |c| c.pdbs.clear(),
            ),
        ),
        informer(
            s(),
            Api::<Service>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::WorkloadSelectors),
                |c, k: &Service| {
                    let sel = map_selector(k.spec.as_ref().and_then(|s| s.selector.as_ref()));
                    put_selector(c, k, sel)
                },
                drop_selector::<Service>,
                clear_selectors::<Service>,
            ),
        ),
        informer(
            s(),
            Api::<ReplicationController>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::WorkloadSelectors),
                |c, k: &ReplicationController| {
                    let sel = map_selector(k.spec.as_ref().and_then(|s| s.selector.as_ref()));
                    put_selector(c, k, sel)
                },
                drop_selector::<ReplicationController>,
                clear_selectors::<ReplicationController>,
            ),
        ),
        informer(
            s(),
            Api::<ReplicaSet>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::WorkloadSelectors),
                |c, k: &ReplicaSet| {
                    let sel = selector_of(Some(&k.spec.selector)).unwrap_or_default();
                    put_selector(c, k, sel)
                },
                drop_selector::<ReplicaSet>,
                clear_selectors::<ReplicaSet>,
            ),
        ),
        informer(
            s(),
            Api::<StatefulSet>::all(client.clone()),
            map_handler(
                Some(ClusterEvent::WorkloadSelectors),
                |c, k: &StatefulSet| {
                    let sel = selector_of(Some(&k.spec.selector)).unwrap_or_default();
                    put_selector(c, k, sel)
                },
                drop_selector::<StatefulSet>,
                clear_selectors::<StatefulSet>,
            ),
        ),
    ];
    debug_assert_eq!(futures.len(), INFORMERS);
    futures.into_iter().map(|f| shared.rt.spawn(f)).collect()
}

/// Starts the scheduler's watches and its scheduling thread on the current runtime.
pub fn start(client: Client, config: Config, instance: String) -> Running {
    let queue = Queue::new(config.pod_initial_backoff, config.pod_max_backoff);
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        queue: Mutex::new(queue),
        wake: Condvar::new(),
        stop: AtomicBool::new(false),
        synced: AtomicUsize::new(0),
        events: Recorder::start(client.clone(), instance),
        config,
        client,
        rt: tokio::runtime::Handle::current(),
        stats: Stats::default(),
        conditions: Mutex::new(Default::default()),
        writes: tokio::sync::Semaphore::new(WRITES_IN_FLIGHT),
    });
    let tasks = start_informers(&shared);
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || scheduling_loop(s))
        .expect("spawn the scheduling thread");
    Running {
        shared,
        tasks,
        thread: Some(thread),
    }
}

fn scheduling_loop(shared: Arc<Shared>) {
    let mut algo = Algorithm::default();
    loop {
        let next = {
            let mut q = shared.queue.lock().unwrap();
            loop {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let wake_at = q.flush();
                if shared.synced.load(Ordering::SeqCst) >= INFORMERS {
                    if let Some(p) = q.pop() {
                        break p;
                    }
                }
                let wait = wake_at
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1))
                    .clamp(Duration::from_millis(1), Duration::from_secs(1));
                q = shared.wake.wait_timeout(q, wait).unwrap().0;
            }
        };
        schedule_one(&shared, &mut algo, next.pod);
    }
}

fn schedule_one(shared: &Arc<Shared>, algo: &mut Algorithm, pod: Arc<PodInfo>) {
    let Some(profile) = shared
        .config
        .profiles
        .iter()
        .find(|p| p.scheduler_name == pod.scheduler_name)
    else {
        shared.queue.lock().unwrap().done(&pod.uid);
        return;
    };
    shared.stats.attempts.fetch_add(1, Ordering::Relaxed);
    let mut cache = shared.cache.lock().unwrap();
    if cache.is_known(&pod.uid) {
        drop(cache);
        shared.queue.lock().unwrap().done(&pod.uid);
        return;
    }
    let percentage = profile
        .percentage_of_nodes_to_score
        .or(shared.config.percentage_of_nodes_to_score);
    let ctx = Ctx {
        cache: &cache,
        profile,
    };
    match algo.schedule(&ctx, &pod, percentage) {
        Ok(placement) => {
            let actions = match volumes::prefilter(&cache, &pod) {
                Ok(Some(st)) => cache
                    .node(&placement.node)
                    .and_then(|i| i.node.as_deref())
                    .map(|n| volumes::actions(&cache, &st, &pod, n))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            cache.assume(pod.clone(), &placement.node);
            drop(cache);
            shared.queue.lock().unwrap().done(&pod.uid);
            shared.stats.scheduled.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pod = %pod.key(), node = %placement.node, evaluated = placement.evaluated, feasible = placement.feasible, "scheduled");
            let s = shared.clone();
            shared
                .rt
                .spawn(async move { bind(s, pod, placement.node, actions).await });
        }
        Err(failure) => {
            let (mut fit, state) = *failure;
            let mut candidate = None;
            if profile.preemption && fit.num_all_nodes > 0 {
                match preemption::preempt(&ctx, state.as_ref(), &pod, &fit) {
                    Ok(c) => candidate = Some(c),
                    Err(m) => fit.postfilter = Some(m),
                }
            }
            let mut cleared = Vec::new();
            let pod = match &candidate {
                Some(c) => {
                    // Lower-priority pods nominated to the same node lose their nomination.
                    cleared = cache
                        .nominated_on(&c.node, &pod.uid)
                        .filter(|p| p.priority < pod.priority)
                        .cloned()
                        .collect();
                    for p in &cleared {
                        cache.unnominate(&p.uid);
                    }
                    let mut p = (*pod).clone();
                    p.nominated_node = Some(c.node.clone());
                    let p = Arc::new(p);
                    cache.nominate(p.clone(), &c.node);
                    p
                }
                None => pod,
            };
            drop(cache);
            let message = fit.message();
            {
                let mut q = shared.queue.lock().unwrap();
                for p in &cleared {
                    if let Some(qp) = q.pod(&p.uid) {
                        let mut qp = (*qp).clone();
                        qp.nominated_node = None;
                        q.set_pod(Arc::new(qp));
                    }
                }
                q.set_pod(pod.clone());
                q.failed(&pod.uid, fit.rejectors(), false);
            }
            shared.stats.unschedulable.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pod = %pod.key(), %message, "unschedulable");
            shared.events.record(
                &pod,
                Type::Warning,
                "FailedScheduling",
                "Scheduling",
                message.clone(),
            );
            let s = shared.clone();
            shared.rt.spawn(async move {
                failed(s, pod, message, candidate, cleared).await;
            });
        }
    }
}

fn pods_api(shared: &Shared, ns: &str) -> Api<Pod> {
    Api::namespaced(shared.client.clone(), ns)
}

/// After a failed attempt: the PodScheduled=False condition (and the nominated node), and the
/// evictions preemption chose.
async fn failed(
    shared: Arc<Shared>,
    pod: Arc<PodInfo>,
    message: String,
    candidate: Option<Candidate>,
    cleared: Vec<Arc<PodInfo>>,
) {
    let Ok(_permit) = shared.writes.acquire().await else {
        return;
    };
    let api = pods_api(&shared, &pod.namespace);
    let unchanged = shared
        .conditions
        .lock()
        .unwrap()
        .insert(pod.uid.clone(), message.clone())
        .is_some_and(|m| m == message);
    if !unchanged || candidate.is_some() {
        let mut status = serde_json::json!({"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": Time(Timestamp::now()),
        }]});
        if let Some(c) = &candidate {
            status["nominatedNodeName"] = c.node.clone().into();
        }
        let patch = serde_json::json!({"status": status});
        if let Err(e) = api
            .patch_status(
                &pod.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            tracing::debug!(pod = %pod.key(), error = %e, "pod condition not written");
        }
    }
    for p in cleared {
        let patch = serde_json::json!({"status": {"nominatedNodeName": null}});
        let _ = pods_api(&shared, &p.namespace)
            .patch_status(&p.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await;
    }
    let Some(c) = candidate else {
        return;
    };
    for v in c.victims {
        let vapi = pods_api(&shared, &v.namespace);
        let patch = serde_json::json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{}: preempting to accommodate a higher priority pod", pod.scheduler_name),
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        let _ = vapi
            .patch_status(&v.name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await;
        match vapi.delete(&v.name, &DeleteParams::default()).await {
            Ok(_) => shared.events.record(
                &v,
                Type::Normal,
                "Preempted",
                "Preempting",
                format!("Preempted by pod {} on node {}", pod.uid, c.node),
            ),
            Err(e) => tracing::warn!(victim = %v.key(), error = %e, "preemption: eviction failed"),
        }
    }
}

/// PreBind for volumes: bind chosen volumes, ask provisioners, then wait for the claims to bind.
async fn bind_volumes(
    shared: &Shared,
    pod: &PodInfo,
    node: &str,
    actions: &[volumes::Action],
) -> Result<(), String> {
    for a in actions {
        match a {
            volumes::Action::BindVolume { claim, volume } => {
                // As upstream's binder: the claim's uid in the reference and the volume replaced at the
                // version this scheduler saw, so two pods never reserve one volume.
                let (pv, uid) = {
                    let cache = shared.cache.lock().unwrap();
                    let pv = cache.volumes.get(volume).cloned();
                    let uid = cache
                        .claims
                        .get(&(pod.namespace.clone(), claim.clone()))
                        .and_then(|c| c.metadata.uid.clone());
                    (pv, uid)
                };
                let Some(mut pv) = pv else {
                    return Err(format!("binding volumes: volume {volume:?} is gone"));
                };
                pv.spec.get_or_insert_with(Default::default).claim_ref =
                    Some(k8s_openapi::api::core::v1::ObjectReference {
                        kind: Some("PersistentVolumeClaim".into()),
                        api_version: Some("v1".into()),
                        namespace: Some(pod.namespace.clone()),
                        name: Some(claim.clone()),
                        uid,
                        ..Default::default()
                    });
                pv.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
                let api: Api<PersistentVolume> = Api::all(shared.client.clone());
                api.replace(volume, &kube::api::PostParams::default(), &pv)
                    .await
                    .map_err(|e| format!("binding volumes: {e}"))?;
            }
            volumes::Action::Provision { claim } => {
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(shared.client.clone(), &pod.namespace);
                let patch = serde_json::json!({"metadata": {"annotations": {
                    "volume.kubernetes.io/selected-node": node,
                }}});
                api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| format!("binding volumes: {e}"))?;
            }
        }
    }
    if actions.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + VOLUME_BIND_TIMEOUT;
    loop {
        let bound = {
            let cache = shared.cache.lock().unwrap();
            pod.claims.iter().all(|c| {
                cache
                    .claims
                    .get(&(pod.namespace.clone(), c.clone()))
                    .and_then(|pvc| pvc.spec.as_ref()?.volume_name.clone())
                    .is_some_and(|v| !v.is_empty())
            })
        };
        if bound {
            return Ok(());
        }
        if Instant::now() > deadline || shared.stop.load(Ordering::SeqCst) {
            return Err("binding volumes: context deadline exceeded".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn bind(shared: Arc<Shared>, pod: Arc<PodInfo>, node: String, actions: Vec<volumes::Action>) {
    let result = match bind_volumes(&shared, &pod, &node, &actions).await {
        Err(e) => Err((e, false)),
        Ok(()) => {
            let Ok(_permit) = shared.writes.acquire().await else {
                return;
            };
            let body = serde_json::json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            pods_api(&shared, &pod.namespace)
                .create_subresource::<_, serde_json::Value>(
                    "binding",
                    &pod.name,
                    &PostParams::default(),
                    &body,
                )
                .await
                .map(|_| ())
                .map_err(|e| {
                    let gone = matches!(&e, kube::Error::Api(s) if s.code == 404);
                    (e.to_string(), gone)
                })
        }
    };
    match result {
        Ok(()) => {
            shared.stats.bound.fetch_add(1, Ordering::Relaxed);
            shared.events.record(
                &pod,
                Type::Normal,
                "Scheduled",
                "Binding",
                format!(
                    "Successfully assigned {}/{} to {}",
                    pod.namespace, pod.name, node
                ),
            );
        }
        Err((e, gone)) => {
            shared.stats.bind_errors.fetch_add(1, Ordering::Relaxed);
            shared.cache.lock().unwrap().forget(&pod.uid);
            shared.event(ClusterEvent::AssignedPodDelete);
            if gone || shared.stop.load(Ordering::SeqCst) {
                return;
            }
            tracing::info!(pod = %pod.key(), %node, error = %e, "binding failed");
            shared.events.record(
                &pod,
                Type::Warning,
                "FailedScheduling",
                "Scheduling",
                format!("Binding rejected: {e}"),
            );
            shared.queue.lock().unwrap().retry(pod);
            shared.notify();
        }
    }
}
