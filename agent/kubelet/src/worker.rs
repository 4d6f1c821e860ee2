//! One pod's worker: each pass relists the pod's sandbox, takes the next steps [`crate::status`] decides
//! (sandbox, init containers in order, sidecars, app containers, restarts with back-off, probes), then
//! computes the pod's status. Everything it needs to resume is in the runtime (labels and annotations), so a
//! restarted kubelet adopts its pods instead of recreating them.
//!
//! The pass is here; the steps that change the runtime are in [`actions`] (start, restart, kill, terminate)
//! and [`probing`]; [`sandbox`] finds or makes the pod's sandbox, [`relist`] reads what the runtime has.

mod actions;
mod probing;
mod relist;
mod sandbox;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use basalt_proto::cri;
use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::backoff::Backoff;
use crate::context::PodContext;
use crate::cri::Cri;
use crate::events;
use crate::podconfig::ContainerKind;
use crate::status::{self, InitStep, Relisted, RestartPolicy, Step, Tracked};
use crate::{Error, Settings};

/// The pod's ready sandbox, as this worker last saw it.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
    /// The pod's IPs, the primary first.
    ips: Vec<String>,
}

pub struct Worker {
    cri: Cri,
    settings: Arc<Settings>,
    allocator: Arc<crate::userns::Allocator>,
    /// The pod's user namespace once its range is known (`hostUsers: false`).
    userns: Option<cri::UserNamespace>,
    pub pod: Pod,
    sandbox: Option<Sandbox>,
    tracked: HashMap<String, Tracked>,
    backoff: Backoff,
    pull_backoff: Backoff,
    pub status: PodStatus,
    /// The apiserver, in API mode: what configMap, secret and projected volumes are made from.
    pub api: Option<Arc<dyn crate::volumes::ApiSource>>,
    started_at: Option<Time>,
    /// The pod failed for good (restartPolicy Never and an init container failed).
    failed: bool,
    /// Passes in a row that could not get the pod a sandbox (no network yet, RunPodSandbox failing), and
    /// the last such error: the next pass waits longer each time, and the same warning is logged once.
    sandbox_failures: u32,
    last_error: Option<String>,
}

/// The longest wait between passes of a pod that cannot get a sandbox (upstream's pod worker back-off).
const SANDBOX_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(10);

fn now() -> Time {
    status::time(now_ns()).expect("the clock is after 1970")
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl Worker {
    pub fn new(
        cri: Cri,
        settings: Arc<Settings>,
        allocator: Arc<crate::userns::Allocator>,
        pod: Pod,
    ) -> Worker {
        Worker {
            cri,
            allocator,
            userns: None,
            backoff: Backoff::new(settings.backoff),
            pull_backoff: Backoff::new(settings.backoff),
            settings,
            pod,
            sandbox: None,
            tracked: HashMap::new(),
            status: PodStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            },
            api: None,
            started_at: None,
            failed: false,
            sandbox_failures: 0,
            last_error: None,
        }
    }

    /// How long until the next pass: the sync period, or, while the pod cannot get a sandbox, a wait that
    /// doubles each time (up to [`SANDBOX_BACKOFF_MAX`]) instead of asking the runtime every period.
    pub fn next_pass_in(&self) -> std::time::Duration {
        let period = self.settings.sync_period;
        if self.sandbox_failures == 0 {
            return period;
        }
        let shift = (self.sandbox_failures - 1).min(16);
        period
            .saturating_mul(1 << shift)
            .min(SANDBOX_BACKOFF_MAX.max(period))
    }

    /// The pod runs in the node's network namespace (`hostNetwork`).
    /// Records an event about container `c` of the pod (API mode; nowhere otherwise).
    fn event(&self, c: &Container, kind: events::Kind, reason: events::Reason, message: String) {
        if let Some(api) = &self.api {
            let init = self
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|i| i.iter().any(|x| x.name == c.name));
            api.record(
                &self.pod,
                events::Event::about(c, init, kind, reason, message),
            );
        }
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap_or_default()
    }

    pub fn pod_dir(&self) -> PathBuf {
        self.settings.pods_root.join(self.uid())
    }

    fn ctx(&self) -> PodContext<'_> {
        PodContext {
            pod: &self.pod,
            node_name: &self.settings.node_name,
            log_root: &self.settings.log_root,
            cgroup_parent: crate::qos::pod_cgroup(&self.settings.cgroup_root, &self.pod),
            pod_ips: self
                .sandbox
                .as_ref()
                .map(|s| s.ips.clone())
                .unwrap_or_default(),
            host_ip: self.settings.host_ip.clone(),
            seccomp_default: self.settings.seccomp_default,
            userns: self.userns.clone(),
        }
    }

    fn tracked(&mut self, name: &str) -> &mut Tracked {
        self.tracked.entry(name.to_owned()).or_default()
    }

    /// One pass: the runtime is relisted once; the actions, the container GC and the status all work from
    /// that relist (the status shows this pass's actions on the next pass, which the PLEG brings soon).
    /// Errors are reported in the status and retried on the next pass. Returns how many dead containers
    /// the GC removed.
    pub async fn sync(&mut self) -> usize {
        let mut relisted = Relisted::default();
        match self.sync_inner(&mut relisted).await {
            Err(e) => {
                let text = e.to_string();
                // The same failure again is no news: said once, then quietly retried.
                if self.last_error.as_deref() != Some(text.as_str()) {
                    tracing::warn!(pod = ?self.pod.metadata.name, "sync: {text}");
                } else {
                    tracing::debug!(pod = ?self.pod.metadata.name, "sync: {text}");
                }
                if e.blocks_sandbox() {
                    self.sandbox_failures = self.sandbox_failures.saturating_add(1);
                } else {
                    self.sandbox_failures = 0;
                }
                self.last_error = Some(text.clone());
                self.status.message = Some(text);
            }
            Ok(()) => {
                self.sandbox_failures = 0;
                self.last_error = None;
            }
        }
        let removed = self.gc(&relisted).await;
        self.status = status::pod_status(status::Inputs {
            pod: &self.pod,
            relisted: &relisted,
            tracked: &self.tracked,
            failed: self.failed,
            sandbox_ips: self.sandbox.as_ref().map(|s| s.ips.as_slice()),
            host_ip: &self.settings.host_ip,
            started_at: self.started_at.clone(),
            // Kept until the next failure replaces it.
            message: self.status.message.take(),
            old_conditions: self.status.conditions.as_deref().unwrap_or_default(),
            now: now(),
        });
        removed
    }

    async fn sync_inner(&mut self, relisted: &mut Relisted) -> Result<(), Error> {
        if self.failed {
            if let Some(s) = self.sandbox.clone() {
                *relisted = self.relist(&s.id).await?;
            }
            return Ok(());
        }
        let sandbox_id = self.ensure_sandbox().await?;
        *relisted = self.relist(&sandbox_id).await?;
        let seen = relisted.seen.clone();
        let spec = self.pod.spec.clone().expect("validated");
        let policy = RestartPolicy::of(&self.pod);

        for c in spec.init_containers.iter().flatten() {
            if status::is_sidecar(c) {
                let kind = ContainerKind::Sidecar;
                self.keep_running(
                    &sandbox_id,
                    c,
                    kind,
                    seen.get(&c.name),
                    RestartPolicy::Always,
                )
                .await?;
                if !self.tracked.get(&c.name).is_some_and(|t| t.started) {
                    return Ok(());
                }
                continue;
            }
            let s = seen.get(&c.name);
            match status::init_step(s, policy) {
                InitStep::Done => continue,
                InitStep::Start => self.start(&sandbox_id, c, ContainerKind::Init, 0).await?,
                InitStep::StartCreated => self.start_existing(&s.expect("seen").id, c).await?,
                InitStep::Restart => {
                    let s = s.expect("seen");
                    self.restart(&sandbox_id, c, ContainerKind::Init, s).await?
                }
                InitStep::FailPod => {
                    self.failed = true;
                    self.stop_running(&seen).await;
                }
                InitStep::Wait => {}
            }
            return Ok(());
        }
        for c in &spec.containers {
            self.keep_running(
                &sandbox_id,
                c,
                ContainerKind::App,
                seen.get(&c.name),
                policy,
            )
            .await?;
        }
        // Sidecars end with the pod: once no app container will run again, stop them.
        if status::apps_done(&spec.containers, &seen, policy) {
            for c in spec.init_containers.iter().flatten().rev() {
                if let Some(s) = seen.get(&c.name).filter(|s| s.running()) {
                    self.kill(&s.id, c, "sidecar stopped with the pod").await;
                }
            }
        }
        Ok(())
    }

    async fn keep_running(
        &mut self,
        sandbox_id: &str,
        c: &k8s_openapi::api::core::v1::Container,
        kind: ContainerKind,
        seen: Option<&status::Observed>,
        policy: RestartPolicy,
    ) -> Result<(), Error> {
        let killed = self
            .tracked
            .get(&c.name)
            .is_some_and(|t| t.killed.is_some());
        match status::running_step(seen, policy, killed) {
            Step::Start => self.start(sandbox_id, c, kind, 0).await,
            Step::Probe => {
                self.probe(seen.expect("seen"), c).await;
                Ok(())
            }
            Step::StartCreated => self.start_existing(&seen.expect("seen").id, c).await,
            step @ (Step::Restart | Step::Leave) => {
                let t = self.tracked(&c.name);
                t.ready = false;
                t.started = false;
                if step == Step::Restart {
                    self.restart(sandbox_id, c, kind, seen.expect("seen")).await
                } else {
                    Ok(())
                }
            }
        }
    }
}
