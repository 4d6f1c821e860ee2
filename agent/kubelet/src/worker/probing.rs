//! A running container's probes, each on its own period: startup first, then liveness (a failure kills
//! it), then readiness.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};

use super::{now_ns, Worker};
use crate::events::{Kind, Reason};
use crate::probes::{self, ProbeState, Target};
use crate::status::{Killed, Observed, Probes, Tracked};

impl Worker {
    pub(super) async fn probe(&mut self, s: &Observed, c: &Container) {
        let started_ns = s.status.started_at;
        let target = self.target(&s.id, c);
        let started_at =
            Instant::now() - Duration::from_nanos((now_ns() - started_ns).max(0) as u64);
        let t = self.tracked(&c.name);
        if t.probes.id != s.id {
            let state = |p: &Option<Probe>| p.as_ref().map(|p| ProbeState::new(p, started_at));
            *t = Tracked {
                probes: Probes {
                    id: s.id.clone(),
                    startup: state(&c.startup_probe),
                    liveness: state(&c.liveness_probe),
                    readiness: state(&c.readiness_probe),
                },
                started: c.startup_probe.is_none(),
                ..Tracked::default()
            };
        }
        let now_i = Instant::now();
        // Startup first: liveness and readiness wait until it succeeded.
        if let (Some(p), Some(st)) = (&c.startup_probe, t.probes.startup.as_ref()) {
            if st.result != Some(true) {
                let due = self.run_if_due(&c.name, |p| &mut p.startup, p, &target, now_i);
                match due.await {
                    Some((Some(true), _)) => self.tracked(&c.name).started = true,
                    Some((Some(false), why)) => {
                        let m = format!("Startup probe failed: {why}");
                        self.event(c, Kind::Warning, Reason::Unhealthy, m.clone());
                        self.tracked(&c.name).killed = Some(Killed::Startup(m.clone()));
                        self.kill(&s.id, c, &m).await;
                    }
                    _ => {}
                }
                return;
            }
        }
        if let Some(p) = &c.liveness_probe {
            let due = self.run_if_due(&c.name, |p| &mut p.liveness, p, &target, now_i);
            if let Some((Some(false), why)) = due.await {
                let m = format!("Liveness probe failed: {why}");
                self.event(c, Kind::Warning, Reason::Unhealthy, m.clone());
                let t = self.tracked(&c.name);
                t.killed = Some(Killed::Liveness(m.clone()));
                t.ready = false;
                self.kill(&s.id, c, &m).await;
                return;
            }
        }
        match &c.readiness_probe {
            None => self.tracked(&c.name).ready = true,
            Some(p) => {
                let due = self.run_if_due(&c.name, |p| &mut p.readiness, p, &target, now_i);
                if let Some((result, why)) = due.await {
                    if result == Some(false) {
                        let m = format!("Readiness probe failed: {why}");
                        self.event(c, Kind::Warning, Reason::Unhealthy, m);
                    }
                    self.tracked(&c.name).ready = result == Some(true);
                }
            }
        }
    }

    /// Runs the probe `p` of container `name` if it is due (its state is `which` of its probes) and records
    /// the outcome: the verdict after thresholds and the last failure's message; None when it was not due.
    async fn run_if_due(
        &mut self,
        name: &str,
        which: fn(&mut Probes) -> &mut Option<ProbeState>,
        p: &Probe,
        target: &Target,
        now: Instant,
    ) -> Option<(Option<bool>, String)> {
        let due = which(&mut self.tracked(name).probes)
            .as_ref()
            .is_some_and(|st| now >= st.next);
        if !due {
            return None;
        }
        let outcome = probes::run_probe(&self.cri, target, p).await;
        let st = which(&mut self.tracked(name).probes).as_mut()?;
        st.record(p, outcome, now);
        Some((st.result, st.last_message.clone()))
    }
}
