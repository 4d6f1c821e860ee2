//! GetContainerEvents: created/started/stopped/deleted as the agent causes them, plus exits the monitors
//! report on their own (noticed by a one-second relist while anyone listens).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use basalt_proto::cri::{self, ContainerEventType};
use basalt_shim::protocol::State as ShimState;
use tokio::sync::broadcast;
use tokio_stream::Stream;
use tonic::Status;

use crate::monitor;
use crate::store::{now_ns, Records, SandboxState};

/// What GetContainerEvents streams.
pub type EventStream =
    Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<cri::ContainerEventResponse>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            tx: broadcast::channel(1024).0,
        }
    }

    /// GetContainerEvents: every event from now on. A subscriber too slow to keep up has missed events: its
    /// stream ends with an error rather than carry on with a gap, so that it relists (kubelet's PLEG does)
    /// instead of trusting stale state.
    pub fn stream(&self) -> EventStream {
        let rx = self.tx.subscribe();
        Box::pin(tokio_stream::StreamExt::map(
            tokio_stream::wrappers::BroadcastStream::new(rx),
            |e| {
                e.map_err(
                    |tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)| {
                        Status::aborted(format!("{n} container events were missed; relist"))
                    },
                )
            },
        ))
    }

    /// The event `kind` of container `id` (whose pod is `_sandbox_id`, which the CRI event does not carry).
    pub fn container(&self, id: &str, _sandbox_id: &str, kind: ContainerEventType) {
        // Nobody listening is the normal case: sending then fails, harmlessly.
        let _ = self.tx.send(cri::ContainerEventResponse {
            container_id: id.to_owned(),
            container_event_type: kind as i32,
            created_at: now_ns(),
            ..Default::default()
        });
    }
}

/// Emits a STOPPED event when a container exits by itself.
pub fn watch_exits(records: Arc<Records>, events: Events) {
    tokio::spawn(async move {
        let mut last: HashMap<String, ShimState> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if events.tx.receiver_count() == 0 {
                last.clear();
                continue;
            }
            let sandboxes: Vec<_> = records
                .sandboxes
                .lock()
                .unwrap()
                .values()
                .filter(|s| s.state == SandboxState::Ready)
                .cloned()
                .collect();
            for s in sandboxes {
                let Ok(list) = monitor::list(&s.shim_dir).await else {
                    continue;
                };
                for c in list {
                    let before = last.insert(c.id.clone(), c.state);
                    if c.state == ShimState::Exited
                        && before.is_some_and(|b| b != ShimState::Exited)
                    {
                        events.container(&c.id, &s.id, ContainerEventType::ContainerStoppedEvent);
                    }
                }
            }
        }
    });
}
