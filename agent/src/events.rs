//! GetContainerEvents: created/started/stopped/deleted as the agent causes them, plus exits the monitors
//! report on their own (noticed by a one-second relist while anyone listens).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_proto::cri::{self, ContainerEventType};
use basalt_shim::protocol::State as ShimState;
use tokio::sync::broadcast;

use crate::agent::Agent;
use crate::store::{now_ns, SandboxState};

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

    pub fn subscribe(&self) -> broadcast::Receiver<cri::ContainerEventResponse> {
        self.tx.subscribe()
    }

    pub fn container(&self, id: &str, sandbox_id: &str, kind: ContainerEventType) {
        let _ = sandbox_id;
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
pub fn watch_exits(agent: Arc<Agent>) {
    tokio::spawn(async move {
        let mut last: HashMap<String, ShimState> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if agent.events.tx.receiver_count() == 0 {
                last.clear();
                continue;
            }
            let sandboxes: Vec<_> = agent
                .records
                .sandboxes
                .lock()
                .unwrap()
                .values()
                .filter(|s| s.state == SandboxState::Ready)
                .cloned()
                .collect();
            for s in sandboxes {
                let Ok(list) = crate::monitor::list(&s.shim_dir).await else {
                    continue;
                };
                for c in list {
                    let before = last.insert(c.id.clone(), c.state);
                    if c.state == ShimState::Exited
                        && before.is_some_and(|b| b != ShimState::Exited)
                    {
                        agent.events.container(
                            &c.id,
                            &s.id,
                            ContainerEventType::ContainerStoppedEvent,
                        );
                    }
                }
            }
        }
    });
}
