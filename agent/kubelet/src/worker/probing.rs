//! A running container's probes, each on its own period: startup first, then liveness (a failure kills
//! it), then readiness.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;

use super::{now_ns, Worker};
use crate::probes::{self, ProbeState};
use crate::status::{Killed, Observed, Tracked};

impl Worker {
    pub(super) async fn probe(&mut self, s: &Observed, c: &Container) {
        let started_ns = s.status.started_at;
        let target = self.target(&s.id, c);
        let started_at =
            Instant::now() - Duration::from_nanos((now_ns() - started_ns).max(0) as u64);
        let t = self.tracked(&c.name);
        if t.probed_id != s.id {
            *t = Tracked {
                probed_id: s.id.clone(),
                startup: c
                    .startup_probe
                    .as_ref()
                    .map(|p| ProbeState::new(p, started_at)),
                liveness: c
                    .liveness_probe
                    .as_ref()
                    .map(|p| ProbeState::new(p, started_at)),
                readiness: c
                    .readiness_probe
                    .as_ref()
                    .map(|p| ProbeState::new(p, started_at)),
                started: c.startup_probe.is_none(),
                ready: false,
                waiting: None,
                killed: None,
            };
        }
        let now_i = Instant::now();
        // Startup first: liveness and readiness wait until it succeeded.
        if let (Some(p), Some(st)) = (&c.startup_probe, t.startup.as_mut()) {
            if st.result != Some(true) {
                if now_i >= st.next {
                    let o = probes::run_probe(&self.cri, &target, p).await;
                    let t = self.tracked.get_mut(&c.name).unwrap();
                    let st = t.startup.as_mut().unwrap();
                    st.record(p, o, now_i);
                    match st.result {
                        Some(true) => t.started = true,
                        Some(false) => {
                            let m = format!("Startup probe failed: {}", st.last_message);
                            t.killed = Some(Killed::Startup(m.clone()));
                            self.kill(&s.id, c, &m).await;
                        }
                        None => {}
                    }
                }
                return;
            }
        }
        if let Some(p) = &c.liveness_probe {
            let due = self.tracked[&c.name]
                .liveness
                .as_ref()
                .is_some_and(|st| now_i >= st.next);
            if due {
                let o = probes::run_probe(&self.cri, &target, p).await;
                let t = self.tracked.get_mut(&c.name).unwrap();
                let st = t.liveness.as_mut().unwrap();
                st.record(p, o, now_i);
                if st.result == Some(false) {
                    let m = format!("Liveness probe failed: {}", st.last_message);
                    t.killed = Some(Killed::Liveness(m.clone()));
                    t.ready = false;
                    self.kill(&s.id, c, &m).await;
                    return;
                }
            }
        }
        match &c.readiness_probe {
            None => self.tracked.get_mut(&c.name).unwrap().ready = true,
            Some(p) => {
                let due = self.tracked[&c.name]
                    .readiness
                    .as_ref()
                    .is_some_and(|st| now_i >= st.next);
                if due {
                    let o = probes::run_probe(&self.cri, &target, p).await;
                    let t = self.tracked.get_mut(&c.name).unwrap();
                    let st = t.readiness.as_mut().unwrap();
                    st.record(p, o, now_i);
                    t.ready = st.result == Some(true);
                }
            }
        }
    }
}
