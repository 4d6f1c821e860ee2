//! Shared informers, as kube-controller-manager's `SharedInformerFactory`: one watch and one store per
//! kind, read by every loop that needs the kind and fanned out to each as a stream of changed objects.
//! Without it each loop reflected every pod of the cluster itself, six copies of the largest kind.
//!
//! kube-rs's own shared stream (`ReflectHandle`) is not used: it drops deletions, and a ReplicaSet must
//! wake when its pod is deleted. Here a deletion reaches subscribers with the object's last state, and
//! so does an object that vanished while the watch was down (seen missing from the relist), the way
//! client-go's `DeletedFinalStateUnknown` does.
//!
//! The watches run with the manager's own credentials (`system:kube-controller-manager` may list and
//! watch everything), as upstream's informers do; each loop still writes with its own service account.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{
    Endpoints, Node, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// Objects by namespace and name, kept beside an informer's store (upstream's namespace indexer).
type ByNamespace<K> = RwLock<HashMap<String, HashMap<String, Arc<K>>>>;

/// An informer's store with its namespace index: a loop that needs one namespace's pods reads them
/// without walking (and cloning a handle to) every pod of the cluster. Reads as the store otherwise.
pub struct Indexed<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    by_namespace: Arc<ByNamespace<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Indexed<K> {
    fn clone(&self) -> Self {
        Indexed {
            store: self.store.clone(),
            by_namespace: self.by_namespace.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> std::ops::Deref for Indexed<K> {
    type Target = Store<K>;
    fn deref(&self) -> &Store<K> {
        &self.store
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Indexed<K> {
    /// The objects of namespace `ns`, in no particular order.
    pub fn in_namespace(&self, ns: &str) -> Vec<Arc<K>> {
        self.by_namespace
            .read()
            .unwrap()
            .get(ns)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

fn index_key<K: Resource<DynamicType = ()>>(o: &K) -> (String, String) {
    (
        o.meta().namespace.clone().unwrap_or_default(),
        o.meta().name.clone().unwrap_or_default(),
    )
}

/// One kind's watch, store and subscribers.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    store: Store<K>,
    by_namespace: Arc<ByNamespace<K>>,
    /// True once the index holds the first list: the store is ready a moment earlier (kube-rs marks
    /// it as it applies the list), and a loop must not claim pods from an empty index.
    indexed: tokio::sync::watch::Sender<bool>,
    writer: Mutex<Option<Writer<K>>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    fn new(api: Api<K>) -> Self {
        let writer = Writer::default();
        Informer {
            api,
            store: writer.as_reader(),
            by_namespace: Arc::default(),
            indexed: tokio::sync::watch::Sender::new(false),
            writer: Mutex::new(Some(writer)),
            subscribers: Mutex::default(),
        }
    }

    /// The store every subscriber reads; ready once the first list is in.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The store with its namespace index.
    pub fn indexed(&self) -> Indexed<K> {
        Indexed {
            store: self.store.clone(),
            by_namespace: self.by_namespace.clone(),
        }
    }

    /// Every object in the store now, then every one added, changed or deleted (and all of them again
    /// after each relist). Unbounded: a controller's trigger stream only queues keys, so it keeps up.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut subscribers = self.subscribers.lock().unwrap();
        // Under the lock: an event applied before this is in the snapshot, one after is sent to us.
        for o in self.store.state() {
            let _ = tx.send(o);
        }
        subscribers.push(tx);
        let mut reported = 1000;
        futures_util::stream::poll_fn(move |cx| {
            let next = rx.poll_recv(cx);
            // A loop that reads its changes slower than they come holds every version queued. (Seen
            // as the loop reads: one that stopped reading altogether is not caught here.)
            let queued = rx.len();
            if queued >= reported {
                tracing::warn!(kind = %K::kind(&()), queued, "a controller is behind its informer");
                reported *= 10;
            } else if queued == 0 {
                reported = 1000;
            }
            next
        })
    }

    fn send(&self, objects: impl IntoIterator<Item = Arc<K>>) {
        let mut subscribers = self.subscribers.lock().unwrap();
        for o in objects {
            subscribers.retain(|s| s.send(o.clone()).is_ok());
        }
    }

    /// Watches until the future is dropped; a second call returns at once (the writer is taken).
    async fn run(self: Arc<Self>) {
        let Some(mut writer) = self.writer.lock().unwrap().take() else {
            return;
        };
        let mut events = watcher(self.api.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        // The store before a relist, to find the objects it no longer holds.
        let mut before: Vec<Arc<K>> = Vec::new();
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(kind = %K::kind(&()), error = %e, "informer watch");
                    continue;
                }
            };
            if matches!(event, watcher::Event::Init) {
                before = self.store.state();
            }
            writer.apply_watcher_event(&event);
            match event {
                watcher::Event::Apply(o) => {
                    let stored = self
                        .store
                        .get(&ObjectRef::from_obj(&o))
                        .unwrap_or_else(|| Arc::new(o));
                    let (ns, name) = index_key(&*stored);
                    self.by_namespace
                        .write()
                        .unwrap()
                        .entry(ns)
                        .or_default()
                        .insert(name, stored.clone());
                    self.send([stored]);
                }
                watcher::Event::Delete(o) => {
                    let (ns, name) = index_key(&o);
                    let mut index = self.by_namespace.write().unwrap();
                    if let Some(m) = index.get_mut(&ns) {
                        m.remove(&name);
                        if m.is_empty() {
                            index.remove(&ns);
                        }
                    }
                    drop(index);
                    self.send([Arc::new(o)]);
                }
                watcher::Event::InitDone => {
                    let gone = std::mem::take(&mut before)
                        .into_iter()
                        .filter(|o| self.store.get(&ObjectRef::from_obj(&**o)).is_none());
                    let now = self.store.state();
                    let mut index: HashMap<String, HashMap<String, Arc<K>>> = HashMap::new();
                    for o in &now {
                        let (ns, name) = index_key(&**o);
                        index.entry(ns).or_default().insert(name, o.clone());
                    }
                    *self.by_namespace.write().unwrap() = index;
                    self.indexed.send_replace(true);
                    self.send(gone.chain(now));
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
    }
}

/// The informers the selected loops asked for, each watched once [`Informers::start`] runs.
macro_rules! informers {
    ($($name:ident: $kind:ty),* $(,)?) => {
        pub struct Informers {
            client: Client,
            $($name: OnceLock<Arc<Informer<$kind>>>,)*
        }

        impl Informers {
            pub fn new(client: Client) -> Self {
                Informers { client, $($name: OnceLock::new(),)* }
            }

            $(
                pub fn $name(&self) -> Arc<Informer<$kind>> {
                    self.$name
                        .get_or_init(|| Arc::new(Informer::new(Api::all(self.client.clone()))))
                        .clone()
                }
            )*

            /// Once every informer asked for has its first list in (upstream's `WaitForCacheSync`).
            /// Awaited here, once, before the loops start: kube-rs's readiness signal wakes only the last
            /// of several concurrent waiters, so a shared store must be ready before the loops and
            /// controllers that wait on it run.
            pub async fn synced(&self) {
                $(
                    if let Some(i) = self.$name.get() {
                        let _ = i.store.wait_until_ready().await;
                        let _ = i.indexed.subscribe().wait_for(|done| *done).await;
                    }
                )*
            }

            /// Starts the watch of every informer asked for so far, each in `tasks`.
            pub fn start(&self, tasks: &mut tokio::task::JoinSet<()>) {
                $(
                    if let Some(i) = self.$name.get() {
                        tasks.spawn(i.clone().run());
                    }
                )*
            }
        }
    };
}

informers! {
    pods: Pod,
    nodes: Node,
    jobs: Job,
    replicasets: ReplicaSet,
    daemonsets: DaemonSet,
    revisions: ControllerRevision,
    services: Service,
    endpoints: Endpoints,
    endpointslices: EndpointSlice,
    budgets: PodDisruptionBudget,
    csrs: CertificateSigningRequest,
    claims: PersistentVolumeClaim,
    volumes: PersistentVolume,
    classes: StorageClass,
    quotas: ResourceQuota,
}
