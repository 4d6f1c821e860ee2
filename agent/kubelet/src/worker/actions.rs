//! The steps that change the runtime: start a container (image, volumes and config first), restart it after
//! back-off, kill it (preStop, then the grace period), and terminate the whole pod.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use basalt_proto::cri;
use k8s_openapi::api::core::v1::Container;

use super::Worker;
use crate::events::{Kind, Reason as Ev};
use crate::podconfig::{self, ContainerKind, POD_UID};
use crate::probes::{Outcome, Target};
use crate::status::{Killed, Observed, PullPolicy, Reason, Relisted, Waiting};
use crate::{volumes, ContainerCall, Error};

impl Worker {
    pub(super) async fn restart(
        &mut self,
        sandbox_id: &str,
        c: &Container,
        kind: ContainerKind,
        prev: &Observed,
    ) -> Result<(), Error> {
        let ran_for =
            Duration::from_nanos((prev.status.finished_at - prev.status.started_at).max(0) as u64);
        let key = format!("{}/{}", self.uid(), c.name);
        if let Some(left) = self.backoff.waiting(&key, Instant::now(), ran_for) {
            let pod = &self.pod.metadata;
            self.event(
                c,
                Kind::Warning,
                Ev::BackOff,
                format!(
                    "Back-off restarting failed container {} in pod {}_{}({})",
                    c.name,
                    pod.name.clone().unwrap_or_default(),
                    pod.namespace.clone().unwrap_or_default(),
                    self.uid()
                ),
            );
            let message = format!(
                "back-off {}s restarting failed container={} pod={}",
                left.as_secs() + 1,
                c.name,
                self.pod.metadata.name.clone().unwrap_or_default()
            );
            self.tracked(&c.name).waiting = Some(Waiting {
                reason: Reason::CrashLoopBackOff,
                message,
            });
            return Ok(());
        }
        self.backoff.restarted(&key, Instant::now());
        // The previous attempt stays (for `logs --previous` and lastState); older ones go with the GC.
        self.start(sandbox_id, c, kind, prev.attempt + 1).await
    }

    async fn ensure_image(&mut self, c: &Container) -> Result<(), Error> {
        let image = c.image.clone().unwrap_or_default();
        let policy = PullPolicy::of(c);
        let present = self.cri.has_image(&image).await;
        match policy {
            PullPolicy::Never if !present => {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.event(c, Kind::Warning, Ev::Failed, format!("Error: {message}"));
                return Err(Error::ImagePull {
                    reason: Reason::ErrImageNeverPull,
                    message,
                });
            }
            PullPolicy::Never | PullPolicy::IfNotPresent if present => {
                let m = format!("Container image {image:?} already present on machine");
                self.event(c, Kind::Normal, Ev::Pulled, m);
                return Ok(());
            }
            _ => {}
        }
        let key = format!("image/{image}");
        if let Some(left) = self
            .pull_backoff
            .waiting(&key, Instant::now(), Duration::ZERO)
        {
            self.event(
                c,
                Kind::Normal,
                Ev::BackOff,
                format!("Back-off pulling image {image:?}"),
            );
            return Err(Error::ImagePull {
                reason: Reason::ImagePullBackOff,
                message: format!("Back-off pulling image {image:?} ({}s)", left.as_secs() + 1),
            });
        }
        self.event(
            c,
            Kind::Normal,
            Ev::Pulling,
            format!("Pulling image {image:?}"),
        );
        let begin = Instant::now();
        match self.cri.pull(&image).await {
            Ok(_) => {
                self.pull_backoff.forget(&key);
                let took = begin.elapsed().as_secs_f64();
                let m = format!("Successfully pulled image {image:?} in {took:.3}s");
                self.event(c, Kind::Normal, Ev::Pulled, m);
                Ok(())
            }
            // With Always, a present image still runs when the registry is unreachable (as kubelet does).
            Err(_) if present => Ok(()),
            Err(e) => {
                self.pull_backoff.restarted(&key, Instant::now());
                let m = format!("Failed to pull image {image:?}: {}", e.message());
                self.event(c, Kind::Warning, Ev::Failed, m);
                self.event(c, Kind::Warning, Ev::Failed, "Error: ErrImagePull".into());
                Err(Error::ImagePull {
                    reason: Reason::ErrImagePull,
                    message: e.message().to_owned(),
                })
            }
        }
    }

    /// Creates and starts attempt `attempt` of `c`. A failure the container shows (upstream's waiting
    /// reasons) is recorded for its status.
    pub(super) async fn start(
        &mut self,
        sandbox_id: &str,
        c: &Container,
        kind: ContainerKind,
        attempt: u32,
    ) -> Result<(), Error> {
        let created = self.create(sandbox_id, c, kind, attempt).await;
        match &created {
            Ok(_) => {
                let m = format!("Created container: {}", c.name);
                self.event(c, Kind::Normal, Ev::Created, m);
            }
            // A failed pull has said so already.
            Err(Error::ImagePull { .. }) => {}
            Err(e) => self.event(c, Kind::Warning, Ev::Failed, format!("Error: {e}")),
        }
        let id = self.shown(c, created)?;
        self.start_existing(&id, c).await
    }

    async fn create(
        &mut self,
        sandbox_id: &str,
        c: &Container,
        kind: ContainerKind,
        attempt: u32,
    ) -> Result<String, Error> {
        self.ensure_image(c).await?;
        let ctx = self.ctx();
        let api_data = match &self.api {
            Some(api) if !volumes::needs(&self.pod).is_empty() => Some(
                api.fetch(&self.pod)
                    .await
                    .map_err(|e| volumes::VolumeError {
                        name: "(from the apiserver)".into(),
                        problem: volumes::Problem::Api(e),
                    })?,
            ),
            _ => None,
        };
        let volumes = volumes::setup(&ctx, &self.pod_dir(), api_data.as_ref())?;
        let tlog = self
            .pod_dir()
            .join("containers")
            .join(&c.name)
            .join(attempt.to_string());
        if let Some(p) = tlog.parent() {
            std::fs::create_dir_all(p).map_err(Error::TerminationLog)?;
        }
        std::fs::write(&tlog, b"").map_err(Error::TerminationLog)?;
        let config = podconfig::container_config(&ctx, c, kind, attempt, &volumes, Some(&tlog))?;
        let sandbox_config = podconfig::sandbox_config(&ctx, 0);
        let mut rt = self.cri.runtime.clone();
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        })
        .await
        .map(|r| r.into_inner().container_id)
        .map_err(|status| Error::Container {
            call: ContainerCall::Create,
            container: c.name.clone(),
            status,
        })
    }

    /// Records on `c` the waiting state an error shows, then hands the result on.
    fn shown<T>(&mut self, c: &Container, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(e) = &result {
            if let Some(w) = e.waiting() {
                self.tracked(&c.name).waiting = Some(w);
            }
        }
        result
    }

    pub(super) async fn start_existing(&mut self, id: &str, c: &Container) -> Result<(), Error> {
        let mut rt = self.cri.runtime.clone();
        let started = rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .map_err(|status| Error::Container {
                call: ContainerCall::Start,
                container: c.name.clone(),
                status,
            });
        if let Err(e) = &started {
            self.event(c, Kind::Warning, Ev::Failed, format!("Error: {e}"));
        }
        self.shown(c, started)?;
        self.event(
            c,
            Kind::Normal,
            Ev::Started,
            format!("Started container {}", c.name),
        );
        let t = self.tracked(&c.name);
        t.waiting = None;
        t.killed = None;
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = self.target(id, c);
            if let Outcome::Failure(m) =
                crate::hooks::run(&self.cri, &target, h, Duration::from_secs(30)).await
            {
                tracing::warn!(container = %c.name, "postStart hook failed: {m}");
                self.kill(id, c, "FailedPostStartHook").await;
                self.tracked(&c.name).killed = Some(Killed::PostStartHook);
            }
        }
        Ok(())
    }

    pub(super) fn target(&self, id: &str, c: &Container) -> Target {
        let host_net = self.host_network();
        Target {
            container_id: id.to_owned(),
            pod_ip: if host_net {
                String::new()
            } else {
                self.sandbox
                    .as_ref()
                    .and_then(|s| s.ips.first().cloned())
                    .unwrap_or_default()
            },
            ports: c
                .ports
                .iter()
                .flatten()
                .filter_map(|p| Some((p.name.clone()?, p.container_port)))
                .collect(),
        }
    }

    /// preStop, then StopContainer with what is left of the grace period.
    pub async fn kill(&mut self, id: &str, c: &Container, why: &str) {
        let grace = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0);
        tracing::info!(container = %c.name, "killing: {why}");
        let message = if why.starts_with("Liveness probe failed") {
            format!(
                "Container {} failed liveness probe, will be restarted",
                c.name
            )
        } else if why.starts_with("Startup probe failed") {
            format!(
                "Container {} failed startup probe, will be restarted",
                c.name
            )
        } else {
            format!("Stopping container {}", c.name)
        };
        self.event(c, Kind::Normal, Ev::Killing, message);
        let begin = Instant::now();
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            let target = self.target(id, c);
            if let Outcome::Failure(m) =
                crate::hooks::run(&self.cri, &target, h, Duration::from_secs(grace as u64)).await
            {
                tracing::warn!(container = %c.name, "preStop hook failed: {m}");
            }
        }
        let left = (grace - begin.elapsed().as_secs() as i64).max(2);
        let mut rt = self.cri.runtime.clone();
        let _ = rt
            .stop_container(cri::StopContainerRequest {
                container_id: id.to_owned(),
                timeout: left,
            })
            .await;
    }

    /// Kills every running container of the pod (it has failed for good).
    pub(super) async fn stop_running(&mut self, seen: &HashMap<String, Observed>) {
        let spec = self.pod.spec.clone().expect("validated");
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if let Some(s) = seen.get(&c.name).filter(|s| s.running()) {
                self.kill(&s.id, c, "pod failed").await;
            }
        }
    }

    /// Stops and removes everything of the pod: containers (preStop, grace), sandbox, volumes, logs.
    pub async fn terminate(&mut self) {
        let mut rt = self.cri.runtime.clone();
        let mut label_selector = HashMap::new();
        label_selector.insert(POD_UID.to_owned(), self.uid());
        let sandboxes = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector,
                    ..Default::default()
                }),
            })
            .await
            .map(|r| r.into_inner().items)
            .unwrap_or_default();
        let spec = self.pod.spec.clone().expect("validated");
        for s in &sandboxes {
            if let Ok(Relisted { seen, .. }) = self.relist(&s.id).await {
                // App containers in parallel would be upstream's order; sequential keeps each grace exact
                // for the common single-container pod, then sidecars in reverse.
                let order = spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten().rev());
                for c in order {
                    if let Some(x) = seen.get(&c.name).filter(|x| x.running()) {
                        self.kill(&x.id, c, "pod removed").await;
                    }
                }
            }
            self.cri.stop_and_remove_sandbox(&s.id).await;
        }
        let cgroup = self.ctx().cgroup_parent;
        if let Err(e) = crate::pod_cgroup::remove(&cgroup) {
            tracing::warn!(pod = ?self.pod.metadata.name, "removing the pod cgroup {cgroup}: {e}");
        }
        // Only now that nothing of the pod runs in its range any more; before its directory goes, so that a
        // pod directory gone means its range is free.
        self.allocator.release(&self.uid());
        if let Err(e) = volumes::teardown(&self.pod_dir()) {
            tracing::warn!(pod = ?self.pod.metadata.name, "removing volumes: {e}");
        }
        let _ = std::fs::remove_dir_all(self.ctx().log_dir());
    }
}
