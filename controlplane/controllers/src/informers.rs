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

use std::sync::{Arc, Mutex, OnceLock};

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

/// One kind's watch, store and subscribers.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    store: Store<K>,
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
            writer: Mutex::new(Some(writer)),
            subscribers: Mutex::default(),
        }
    }

    /// The store every subscriber reads; ready once the first list is in.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object in the store now, then every one added, changed or deleted (and all of them again
    /// after each relist). Unbounded: a controller's trigger stream only queues keys, so it keeps up.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut subscribers = self.subscribers.lock().unwrap();
        // Under the lock: an event applied before this is in the snapshot, one after is sent to us.
        for o in self.store.state() {
            let _ = tx.send(o);
        }
        subscribers.push(tx);
        tokio_stream_from(rx)
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
                    let stored = self.store.get(&ObjectRef::from_obj(&o));
                    self.send(stored.or_else(|| Some(Arc::new(o))));
                }
                watcher::Event::Delete(o) => self.send([Arc::new(o)]),
                watcher::Event::InitDone => {
                    let gone = std::mem::take(&mut before)
                        .into_iter()
                        .filter(|o| self.store.get(&ObjectRef::from_obj(&**o)).is_none());
                    let now = self.store.state();
                    self.send(gone.chain(now));
                }
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
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
