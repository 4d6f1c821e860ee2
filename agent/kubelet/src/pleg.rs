//! The pod lifecycle event generator: wakes a pod's worker as soon as one of its containers changes, so an
//! exit is acted on without waiting for the sync period. It follows the runtime's GetContainerEvents stream;
//! a runtime without it (containerd 1.6 answers Unimplemented) or a broken stream falls back to relisting
//! every second, as upstream's generic PLEG does, and the stream is tried again later.
//!
//! It must never decide anything itself: it only wakes workers, which look at the runtime on their own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_proto::cri;
use tokio_stream::StreamExt;

use crate::cri::Cri;
use crate::podconfig::POD_UID;
use crate::Metrics;

/// How often the fallback relists.
pub const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// How long the fallback runs before the event stream is tried again (after a failure other than
/// Unimplemented).
const RETRY_STREAM: Duration = Duration::from_secs(30);

/// Which path the PLEG is on, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Events,
    Relist,
}

/// What the PLEG needs of the pod manager (the [`crate::Kubelet`]).
pub trait Pods: Send + Sync + 'static {
    fn cri(&self) -> &Cri;
    fn metrics(&self) -> &Metrics;
    /// Runs the worker of the pod `uid` now.
    fn wake(&self, uid: &str);
    fn set_mode(&self, mode: Mode);
}

/// Runs until the process ends.
pub async fn run(kubelet: Arc<impl Pods>) {
    let mut relist = Relist::default();
    loop {
        let fallback_until = match follow_events(&*kubelet).await {
            // The runtime will never have it: relist for good.
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                tracing::info!("the runtime has no GetContainerEvents; relisting every second");
                None
            }
            // Events were missed (we were too slow): one relist covers them, then follow the stream again.
            Err(s) if s.code() == tonic::Code::Aborted => {
                tracing::info!("GetContainerEvents: {}", s.message());
                Some(Instant::now())
            }
            Err(s) => {
                tracing::warn!("GetContainerEvents: {}; relisting meanwhile", s.message());
                Some(Instant::now() + RETRY_STREAM)
            }
            Ok(()) => {
                tracing::warn!("GetContainerEvents ended; relisting meanwhile");
                Some(Instant::now() + RETRY_STREAM)
            }
        };
        kubelet.set_mode(Mode::Relist);
        // Whatever changed while no stream was followed.
        relist.pass(&*kubelet).await;
        loop {
            tokio::time::sleep(RELIST_PERIOD).await;
            relist.pass(&*kubelet).await;
            if fallback_until.is_some_and(|t| Instant::now() >= t) {
                break;
            }
        }
    }
}

/// Follows the event stream until it fails or ends.
async fn follow_events(kubelet: &impl Pods) -> Result<(), tonic::Status> {
    let mut rt = kubelet.cri().runtime.clone();
    let mut stream = rt
        .get_container_events(cri::GetEventsRequest {})
        .await?
        .into_inner();
    kubelet.set_mode(Mode::Events);
    // Events name containers; the pod comes from the container's labels, looked up once per container.
    let mut owner: HashMap<String, String> = HashMap::new();
    while let Some(ev) = stream.next().await {
        let ev = ev?;
        kubelet
            .metrics()
            .pleg_events
            .fetch_add(1, Ordering::Relaxed);
        let uid = match ev
            .pod_sandbox_status
            .as_ref()
            .and_then(|s| s.metadata.as_ref())
            .map(|m| m.uid.clone())
            .filter(|u| !u.is_empty())
        {
            Some(u) => Some(u),
            None => match owner.get(&ev.container_id) {
                Some(u) => Some(u.clone()),
                None => pod_of(&mut rt, &ev.container_id).await,
            },
        };
        if ev.container_event_type == cri::ContainerEventType::ContainerDeletedEvent as i32 {
            owner.remove(&ev.container_id);
        } else if let Some(u) = &uid {
            owner.insert(ev.container_id.clone(), u.clone());
        }
        if let Some(u) = uid {
            kubelet.wake(&u);
        }
    }
    Ok(())
}

async fn pod_of(
    rt: &mut basalt_proto::RuntimeServiceClient<tonic::transport::Channel>,
    container_id: &str,
) -> Option<String> {
    rt.list_containers(cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            id: container_id.to_owned(),
            ..Default::default()
        }),
    })
    .await
    .ok()?
    .into_inner()
    .containers
    .into_iter()
    .find_map(|c| c.labels.get(POD_UID).cloned())
}

/// The generic PLEG: the previous relist's (state, pod) per container, to tell what changed.
#[derive(Default)]
struct Relist {
    last: Option<HashMap<String, (i32, String)>>,
}

impl Relist {
    async fn pass(&mut self, kubelet: &impl Pods) {
        let mut rt = kubelet.cri().runtime.clone();
        let Ok(list) = rt
            .list_containers(cri::ListContainersRequest { filter: None })
            .await
        else {
            return;
        };
        kubelet
            .metrics()
            .pleg_relists
            .fetch_add(1, Ordering::Relaxed);
        let now: HashMap<String, (i32, String)> = list
            .into_inner()
            .containers
            .into_iter()
            .filter_map(|c| {
                let uid = c.labels.get(POD_UID)?.clone();
                Some((c.id, (c.state, uid)))
            })
            .collect();
        if let Some(last) = &self.last {
            let mut changed: Vec<&String> = Vec::new();
            for (id, (state, uid)) in &now {
                if last.get(id).map(|l| l.0) != Some(*state) {
                    changed.push(uid);
                }
            }
            for (id, (_, uid)) in last {
                if !now.contains_key(id) {
                    changed.push(uid);
                }
            }
            changed.sort();
            changed.dedup();
            for uid in changed {
                kubelet.wake(uid);
            }
        }
        self.last = Some(now);
    }
}
