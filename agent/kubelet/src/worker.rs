//! One pod's worker: each pass compares the pod's spec with what the runtime has and takes the next steps
//! (sandbox, init containers in order, sidecars, app containers, restarts with back-off, probes), then
//! computes the pod's status. Everything it needs to resume is in the runtime (labels and annotations), so a
//! restarted kubelet adopts its pods instead of recreating them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_proto::cri;
use k8s_openapi::api::core::v1::{Container, ContainerState, Pod, PodCondition, PodIP, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::backoff::Backoff;
use crate::context::PodContext;
use crate::cri::Cri;
use crate::podconfig::{
    self, ContainerKind, CONTAINER_KIND, CONTAINER_NAME, POD_UID, RESTART_COUNT,
};
use crate::probes::{self, Outcome, ProbeState, Target};
use crate::volumes;
use crate::Settings;

const INIT: ContainerKind = ContainerKind::Init;
const SIDECAR: ContainerKind = ContainerKind::Sidecar;
const APP: ContainerKind = ContainerKind::App;

/// What the worker keeps between passes for one container name.
#[derive(Debug, Default)]
struct Tracked {
    startup: Option<ProbeState>,
    liveness: Option<ProbeState>,
    readiness: Option<ProbeState>,
    /// The container ID the probe states belong to.
    probed_id: String,
    started: bool,
    ready: bool,
    /// Why it is not running, when the kubelet holds it back (CrashLoopBackOff, ErrImagePull, …).
    waiting: Option<(String, String)>,
    /// Set when the kubelet killed it (liveness or startup failure), for the restart decision.
    killed_for: Option<String>,
}

/// The runtime's view of one container, latest attempt.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    attempt: u32,
    status: cri::ContainerStatus,
}

/// One relist of the pod's sandbox, shared by a pass's actions, its container GC and its status.
#[derive(Debug, Default)]
struct Relisted {
    /// The latest attempt per container name.
    seen: HashMap<String, Seen>,
    /// The attempt before the latest, per name (lastState).
    previous: HashMap<String, cri::ContainerStatus>,
    /// Every exited container: (name, attempt, id).
    exited: Vec<(String, u32, String)>,
}

pub struct Worker {
    cri: Cri,
    settings: Arc<Settings>,
    allocator: Arc<crate::userns::Allocator>,
    /// The pod's user namespace once its range is known (`hostUsers: false`).
    userns: Option<cri::UserNamespace>,
    pub pod: Pod,
    sandbox: Option<(String, Vec<String>)>,
    tracked: HashMap<String, Tracked>,
    backoff: Backoff,
    pull_backoff: Backoff,
    pub status: PodStatus,
    started_at: Option<Time>,
    /// The pod failed for good (restartPolicy Never and an init container failed).
    failed: bool,
}

fn ts(ns: i64) -> Option<Time> {
    (ns > 0).then(|| {
        Time(k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128).unwrap_or_default())
    })
}

fn now() -> Time {
    ts(now_ns()).expect("the clock is after 1970")
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
            started_at: None,
            failed: false,
        }
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
                .map(|s| s.1.clone())
                .unwrap_or_default(),
            host_ip: self.settings.host_ip.clone(),
            seccomp_default: self.settings.seccomp_default,
            userns: self.userns.clone(),
        }
    }

    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// One pass: the runtime is relisted once; the actions, the container GC and the status all work from
    /// that relist (the status shows this pass's actions on the next pass, which the PLEG brings soon).
    /// Errors are reported in the status and retried on the next pass. Returns how many dead containers
    /// the GC removed.
    pub async fn sync(&mut self) -> usize {
        let mut relisted = Relisted::default();
        if let Err(e) = self.sync_inner(&mut relisted).await {
            tracing::warn!(pod = ?self.pod.metadata.name, "sync: {e}");
            self.status.message = Some(e);
        }
        let removed = self.gc(&relisted).await;
        self.compute_status(&relisted);
        removed
    }

    async fn sync_inner(&mut self, relisted: &mut Relisted) -> Result<(), String> {
        if self.failed {
            if let Some((id, _)) = self.sandbox.clone() {
                *relisted = self.relist(&id).await?;
            }
            return Ok(());
        }
        let sandbox_id = self.ensure_sandbox().await?;
        *relisted = self.relist(&sandbox_id).await?;
        let seen = relisted.seen.clone();
        let spec = self.pod.spec.clone().expect("validated");
        let policy = self.restart_policy().to_owned();

        for c in spec.init_containers.iter().flatten() {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            if sidecar {
                self.keep_running(&sandbox_id, c, SIDECAR, seen.get(&c.name), "Always")
                    .await?;
                if !self.tracked.get(&c.name).is_some_and(|t| t.started) {
                    return Ok(());
                }
                continue;
            }
            match seen.get(&c.name) {
                None => {
                    self.start(&sandbox_id, c, INIT, 0).await?;
                    return Ok(());
                }
                Some(s) if s.status.state == cri::ContainerState::ContainerExited as i32 => {
                    if s.status.exit_code == 0 {
                        continue;
                    }
                    if policy == "Never" {
                        self.failed = true;
                        self.stop_running(&seen).await;
                        return Ok(());
                    }
                    self.restart(&sandbox_id, c, INIT, s).await?;
                    return Ok(());
                }
                Some(s) if s.status.state == cri::ContainerState::ContainerCreated as i32 => {
                    self.start_existing(&s.id, c).await?;
                    return Ok(());
                }
                Some(_) => return Ok(()),
            }
        }
        for c in &spec.containers {
            self.keep_running(&sandbox_id, c, APP, seen.get(&c.name), &policy)
                .await?;
        }
        // Sidecars end with the pod: once no app container will run again, stop them.
        let apps_done = spec.containers.iter().all(|c| {
            seen.get(&c.name).is_some_and(|s| {
                s.status.state == cri::ContainerState::ContainerExited as i32
                    && !should_restart(&policy, s.status.exit_code)
            })
        });
        if apps_done {
            for c in spec.init_containers.iter().flatten().rev() {
                if let Some(s) = seen.get(&c.name) {
                    if s.status.state == cri::ContainerState::ContainerRunning as i32 {
                        self.kill(&s.id, c, "sidecar stopped with the pod").await;
                    }
                }
            }
        }
        Ok(())
    }

    /// The ready sandbox of this pod, creating it (and removing dead ones) as needed.
    async fn ensure_sandbox(&mut self) -> Result<String, String> {
        let mut rt = self.cri.runtime.clone();
        let list = self
            .cri
            .pod_sandboxes(&self.uid())
            .await
            .map_err(|e| format!("ListPodSandbox: {}", e.message()))?;
        self.userns = self.user_namespace().await?;
        let ready = crate::cri::newest_ready(&list);
        if let Some(s) = ready {
            if self.sandbox.as_ref().map(|x| &x.0) != Some(&s.id) {
                let ips = sandbox_ips(&mut rt, &s.id).await;
                self.sandbox = Some((s.id.clone(), ips));
            }
            return Ok(s.id.clone());
        }
        let attempt = list
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        for old in &list {
            let _ = rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: old.id.clone(),
                })
                .await;
            let _ = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: old.id.clone(),
                })
                .await;
        }
        self.tracked.clear();
        let pod_dir = self.pod_dir();
        std::fs::create_dir_all(&pod_dir).map_err(|e| format!("{}: {e}", pod_dir.display()))?;
        let cgroup = self.ctx().cgroup_parent;
        crate::pod_cgroup::ensure(&cgroup, &self.pod)
            .map_err(|e| format!("pod cgroup {cgroup}: {e}"))?;
        let config = podconfig::sandbox_config(&self.ctx(), attempt);
        std::fs::create_dir_all(&config.log_directory)
            .map_err(|e| format!("{}: {e}", config.log_directory))?;
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
            .into_inner()
            .pod_sandbox_id;
        let ips = sandbox_ips(&mut rt, &id).await;
        self.sandbox = Some((id.clone(), ips));
        self.started_at.get_or_insert_with(now);
        Ok(id)
    }

    /// For `hostUsers: false`: the pod's id range, kept from before or allocated now. Upstream's rules: no
    /// host namespace besides, and a runtime that says it supports user namespaces.
    async fn user_namespace(&self) -> Result<Option<cri::UserNamespace>, String> {
        let spec = self.pod.spec.as_ref().expect("validated");
        if spec.host_users != Some(false) {
            return Ok(None);
        }
        for (field, host) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if host == Some(true) {
                return Err(format!(
                    "spec.hostUsers false: spec.{field} true is not allowed with it"
                ));
            }
        }
        // Known from an earlier pass: every pass comes here, and the range never changes while the pod exists.
        if self.userns.is_some() {
            return Ok(self.userns.clone());
        }
        let status = self
            .cri
            .runtime
            .clone()
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(|e| format!("runtime Status: {}", e.message()))?
            .into_inner();
        let supported = status
            .runtime_handlers
            .iter()
            .any(|h| h.name.is_empty() && h.features.as_ref().is_some_and(|f| f.user_namespaces));
        if !supported {
            return Err(
                "spec.hostUsers false: the runtime's default handler does not support \
                        user namespaces"
                    .into(),
            );
        }
        self.allocator
            .allocate(&self.uid())
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// The sandbox's containers: the latest and the previous attempt per name with full status, and every
    /// exited one.
    async fn relist(&mut self, sandbox_id: &str) -> Result<Relisted, String> {
        let mut rt = self.cri.runtime.clone();
        let list = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox_id.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(|e| format!("ListContainers: {}", e.message()))?
            .into_inner()
            .containers;
        let mut out = Relisted::default();
        // Per name: (attempt, id) of the latest and the one before.
        let mut latest: HashMap<String, [Option<(u32, String)>; 2]> = HashMap::new();
        for c in &list {
            let Some(name) = c.labels.get(CONTAINER_NAME) else {
                continue;
            };
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            if c.state == cri::ContainerState::ContainerExited as i32 {
                out.exited.push((name.clone(), attempt, c.id.clone()));
            }
            let slot = latest.entry(name.clone()).or_default();
            let cand = Some((attempt, c.id.clone()));
            if slot[0].as_ref().is_none_or(|l| attempt > l.0) {
                slot[1] = std::mem::replace(&mut slot[0], cand);
            } else if slot[1].as_ref().is_none_or(|l| attempt > l.0) {
                slot[1] = cand;
            }
        }
        for (name, [last, prev]) in latest {
            let Some((attempt, id)) = last else { continue };
            if let Some(status) = container_status(&mut rt, &id).await {
                out.seen.insert(
                    name.clone(),
                    Seen {
                        id,
                        attempt,
                        status,
                    },
                );
            }
            if let Some((_, id)) = prev {
                if let Some(status) = container_status(&mut rt, &id).await {
                    out.previous.insert(name, status);
                }
            }
        }
        Ok(out)
    }

    /// Container GC: per container name, exited attempts beyond `max_dead_per_container` (newest kept) are
    /// removed; the latest attempt of every name is kept whatever its state, for status and restarts.
    async fn gc(&mut self, relisted: &Relisted) -> usize {
        let keep = self.settings.max_dead_per_container as usize;
        let mut by_name: HashMap<&str, Vec<(u32, &str)>> = HashMap::new();
        for (name, attempt, id) in &relisted.exited {
            by_name
                .entry(name.as_str())
                .or_default()
                .push((*attempt, id.as_str()));
        }
        let mut rt = self.cri.runtime.clone();
        let mut removed = 0;
        for (name, mut dead) in by_name {
            dead.sort_by_key(|d| std::cmp::Reverse(d.0));
            let latest = relisted.seen.get(name).map(|s| s.id.as_str());
            for (_, id) in dead.into_iter().skip(keep) {
                if Some(id) == latest {
                    continue;
                }
                match rt
                    .remove_container(cri::RemoveContainerRequest {
                        container_id: id.to_owned(),
                    })
                    .await
                {
                    Ok(_) => removed += 1,
                    Err(e) => tracing::warn!(container = %id, "container GC: {}", e.message()),
                }
            }
        }
        removed
    }

    async fn keep_running(
        &mut self,
        sandbox_id: &str,
        c: &Container,
        kind: ContainerKind,
        seen: Option<&Seen>,
        policy: &str,
    ) -> Result<(), String> {
        match seen {
            None => self.start(sandbox_id, c, kind, 0).await,
            Some(s) if s.status.state == cri::ContainerState::ContainerRunning as i32 => {
                self.probe(s, c).await;
                Ok(())
            }
            Some(s) if s.status.state == cri::ContainerState::ContainerCreated as i32 => {
                self.start_existing(&s.id, c).await
            }
            Some(s) => {
                let t = self.tracked.entry(c.name.clone()).or_default();
                t.ready = false;
                t.started = false;
                if should_restart(policy, s.status.exit_code)
                    || t.killed_for.is_some() && policy != "Never"
                {
                    self.restart(sandbox_id, c, kind, s).await
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn restart(
        &mut self,
        sandbox_id: &str,
        c: &Container,
        kind: ContainerKind,
        prev: &Seen,
    ) -> Result<(), String> {
        let ran_for =
            Duration::from_nanos((prev.status.finished_at - prev.status.started_at).max(0) as u64);
        let key = format!("{}/{}", self.uid(), c.name);
        if let Some(left) = self.backoff.waiting(&key, Instant::now(), ran_for) {
            let t = self.tracked.entry(c.name.clone()).or_default();
            t.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={}",
                    left.as_secs() + 1,
                    c.name,
                    self.pod.metadata.name.clone().unwrap_or_default()
                ),
            ));
            return Ok(());
        }
        self.backoff.restarted(&key, Instant::now());
        // The previous attempt stays (for `logs --previous` and lastState); older ones go with the GC.
        self.start(sandbox_id, c, kind, prev.attempt + 1).await
    }

    async fn ensure_image(&mut self, c: &Container) -> Result<(), (String, String)> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tag_latest = match image.rsplit_once(':') {
                Some((_, tag)) if !tag.contains('/') => tag == "latest",
                _ => !image.contains('@'),
            };
            if tag_latest { "Always" } else { "IfNotPresent" }.into()
        });
        let mut images = self.cri.images.clone();
        let present = images
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image.is_some())
            .unwrap_or(false);
        match policy.as_str() {
            "Never" if !present => {
                return Err((
                    "ErrImageNeverPull".into(),
                    format!("Container image {image:?} is not present with pull policy of Never"),
                ))
            }
            "Never" => return Ok(()),
            "IfNotPresent" if present => return Ok(()),
            _ => {}
        }
        let key = format!("image/{image}");
        if let Some(left) = self
            .pull_backoff
            .waiting(&key, Instant::now(), Duration::ZERO)
        {
            return Err((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image {image:?} ({}s)", left.as_secs() + 1),
            ));
        }
        match images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: image.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
        {
            Ok(_) => {
                self.pull_backoff.forget(&key);
                Ok(())
            }
            // With Always, a present image still runs when the registry is unreachable (as kubelet does).
            Err(_) if present => Ok(()),
            Err(e) => {
                self.pull_backoff.restarted(&key, Instant::now());
                Err(("ErrImagePull".into(), e.message().to_owned()))
            }
        }
    }

    async fn start(
        &mut self,
        sandbox_id: &str,
        c: &Container,
        kind: ContainerKind,
        attempt: u32,
    ) -> Result<(), String> {
        if let Err((reason, message)) = self.ensure_image(c).await {
            self.tracked.entry(c.name.clone()).or_default().waiting =
                Some((reason, message.clone()));
            return Err(message);
        }
        let ctx = self.ctx();
        let volumes = volumes::setup(&ctx, &self.pod_dir()).map_err(|e| e.to_string());
        let volumes = match volumes {
            Ok(v) => v,
            Err(m) => {
                self.tracked.entry(c.name.clone()).or_default().waiting =
                    Some(("CreateContainerConfigError".into(), m.clone()));
                return Err(m);
            }
        };
        let tlog = self
            .pod_dir()
            .join("containers")
            .join(&c.name)
            .join(attempt.to_string());
        if let Some(p) = tlog.parent() {
            std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        std::fs::write(&tlog, b"").map_err(|e| e.to_string())?;
        let config =
            match podconfig::container_config(&ctx, c, kind, attempt, &volumes, Some(&tlog)) {
                Ok(c) => c,
                Err(e) => {
                    let m = e.to_string();
                    self.tracked.entry(c.name.clone()).or_default().waiting =
                        Some(("CreateContainerConfigError".into(), m.clone()));
                    return Err(m);
                }
            };
        let sandbox_config = podconfig::sandbox_config(&ctx, 0);
        let mut rt = self.cri.runtime.clone();
        let id = match rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_owned(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
        {
            Ok(r) => r.into_inner().container_id,
            Err(e) => {
                self.tracked.entry(c.name.clone()).or_default().waiting =
                    Some(("CreateContainerError".into(), e.message().to_owned()));
                return Err(format!("CreateContainer {}: {}", c.name, e.message()));
            }
        };
        self.start_existing(&id, c).await
    }

    async fn start_existing(&mut self, id: &str, c: &Container) -> Result<(), String> {
        let mut rt = self.cri.runtime.clone();
        if let Err(e) = rt
            .start_container(cri::StartContainerRequest {
                container_id: id.to_owned(),
            })
            .await
        {
            self.tracked.entry(c.name.clone()).or_default().waiting =
                Some(("RunContainerError".into(), e.message().to_owned()));
            return Err(format!("StartContainer {}: {}", c.name, e.message()));
        }
        let t = self.tracked.entry(c.name.clone()).or_default();
        t.waiting = None;
        t.killed_for = None;
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = self.target(id, c);
            if let Outcome::Failure(m) =
                crate::hooks::run(&self.cri, &target, h, Duration::from_secs(30)).await
            {
                tracing::warn!(container = %c.name, "postStart hook failed: {m}");
                self.kill(id, c, "FailedPostStartHook").await;
                let t = self.tracked.entry(c.name.clone()).or_default();
                t.killed_for = Some("FailedPostStartHook".into());
            }
        }
        Ok(())
    }

    fn target(&self, id: &str, c: &Container) -> Target {
        let host_net = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        Target {
            container_id: id.to_owned(),
            pod_ip: if host_net {
                String::new()
            } else {
                self.sandbox
                    .as_ref()
                    .and_then(|s| s.1.first().cloned())
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

    async fn probe(&mut self, s: &Seen, c: &Container) {
        let started_ns = s.status.started_at;
        let target = self.target(&s.id, c);
        let started_at =
            Instant::now() - Duration::from_nanos((now_ns() - started_ns).max(0) as u64);
        let t = self.tracked.entry(c.name.clone()).or_default();
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
                killed_for: None,
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
                            t.killed_for = Some(m.clone());
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
                    t.killed_for = Some(m.clone());
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

    async fn stop_running(&mut self, seen: &HashMap<String, Seen>) {
        let spec = self.pod.spec.clone().expect("validated");
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            if let Some(s) = seen.get(&c.name) {
                if s.status.state == cri::ContainerState::ContainerRunning as i32 {
                    self.kill(&s.id, c, "pod failed").await;
                }
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
                    if let Some(x) = seen.get(&c.name) {
                        if x.status.state == cri::ContainerState::ContainerRunning as i32 {
                            self.kill(&x.id, c, "pod removed").await;
                        }
                    }
                }
            }
            let _ = rt
                .stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await;
            let _ = rt
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: s.id.clone(),
                })
                .await;
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

    fn compute_status(&mut self, relisted: &Relisted) {
        let spec = self.pod.spec.clone().expect("validated");
        let policy = self.restart_policy().to_owned();
        let seen = &relisted.seen;
        let previous = &relisted.previous;
        let status_for = |c: &Container,
                          tracked: Option<&Tracked>|
         -> k8s_openapi::api::core::v1::ContainerStatus {
            let s = seen.get(&c.name);
            let mut cs = k8s_openapi::api::core::v1::ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                restart_count: s.map(|s| s.attempt as i32).unwrap_or(0),
                ..Default::default()
            };
            let running =
                s.is_some_and(|s| s.status.state == cri::ContainerState::ContainerRunning as i32);
            cs.ready = running && tracked.is_some_and(|t| t.ready);
            cs.started = Some(running && tracked.is_none_or(|t| t.started));
            if let Some(s) = s {
                cs.container_id = Some(format!("{}://{}", self_runtime_name(), s.id));
                cs.image_id = s.status.image_ref.clone();
                cs.state = Some(state_of(&s.status, &self.settings));
            }
            if let Some((reason, message)) = tracked.and_then(|t| t.waiting.clone()) {
                if !running {
                    cs.state = Some(ContainerState {
                        waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                            reason: Some(reason),
                            message: Some(message),
                        }),
                        ..Default::default()
                    });
                    if let Some(s) = s {
                        cs.last_state = Some(state_of(&s.status, &self.settings));
                    }
                }
            }
            if cs.state.is_none() {
                cs.state = Some(ContainerState {
                    waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: None,
                    }),
                    ..Default::default()
                });
            }
            if cs.last_state.is_none() {
                if let Some(p) = previous.get(&c.name) {
                    cs.last_state = Some(state_of(p, &self.settings));
                }
            }
            cs
        };
        let init_statuses: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| status_for(c, self.tracked.get(&c.name)))
            .collect();
        let app_statuses: Vec<_> = spec
            .containers
            .iter()
            .map(|c| status_for(c, self.tracked.get(&c.name)))
            .collect();
        let init_done = spec.init_containers.iter().flatten().all(|c| {
            let s = seen.get(&c.name);
            if c.restart_policy.as_deref() == Some("Always") {
                self.tracked.get(&c.name).is_some_and(|t| t.started)
            } else {
                s.is_some_and(|s| {
                    s.status.state == cri::ContainerState::ContainerExited as i32
                        && s.status.exit_code == 0
                })
            }
        });
        let phase = if self.failed {
            "Failed"
        } else if !init_done {
            "Pending"
        } else {
            phase(&policy, &app_statuses)
        };
        let all_ready = app_statuses.iter().all(|c| c.ready);
        let sandbox_ready = self.sandbox.is_some();
        let t = now();
        let cond = |type_: &str, ok: bool, reason: Option<&str>| PodCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            last_transition_time: Some(t.clone()),
            reason: reason.map(str::to_owned),
            ..Default::default()
        };
        let conditions = vec![
            cond("PodReadyToStartContainers", sandbox_ready, None),
            cond(
                "Initialized",
                init_done,
                (!init_done).then_some("ContainersNotInitialized"),
            ),
            cond(
                "Ready",
                all_ready && phase == "Running",
                (!all_ready).then_some("ContainersNotReady"),
            ),
            cond(
                "ContainersReady",
                all_ready,
                (!all_ready).then_some("ContainersNotReady"),
            ),
            cond("PodScheduled", true, None),
        ];
        // Keep transition times of conditions whose status did not change.
        let old = self.status.conditions.clone().unwrap_or_default();
        let conditions = conditions
            .into_iter()
            .map(|mut c| {
                if let Some(o) = old
                    .iter()
                    .find(|o| o.type_ == c.type_ && o.status == c.status)
                {
                    c.last_transition_time = o.last_transition_time.clone();
                }
                c
            })
            .collect();
        let ips = self
            .sandbox
            .as_ref()
            .map(|s| s.1.clone())
            .unwrap_or_default();
        let message = self.status.message.take();
        self.status = PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            container_statuses: Some(app_statuses),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            host_ip: Some(self.settings.host_ip.clone()),
            pod_ip: ips.first().cloned(),
            pod_ips: Some(ips.into_iter().map(|ip| PodIP { ip }).collect()),
            qos_class: Some(crate::qos::qos_class(&self.pod).as_str().into()),
            start_time: self.started_at.clone(),
            message,
            ..Default::default()
        };
    }
}

async fn container_status(
    rt: &mut basalt_proto::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Option<cri::ContainerStatus> {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    })
    .await
    .ok()?
    .into_inner()
    .status
}

fn self_runtime_name() -> &'static str {
    "cri"
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Upstream's phase rules for app containers.
fn phase(policy: &str, statuses: &[k8s_openapi::api::core::v1::ContainerStatus]) -> &'static str {
    let (mut running, mut waiting, mut succeeded, mut failed) = (0, 0, 0, 0);
    for s in statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            if t.exit_code == 0 {
                succeeded += 1;
            } else {
                failed += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            // Waiting to restart after having run: still a running pod.
            running += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if failed > 0 && policy == "Never" {
        "Failed"
    } else if policy == "Always" {
        "Running"
    } else if failed > 0 {
        // OnFailure restarts failed containers.
        "Running"
    } else {
        let _ = succeeded;
        "Succeeded"
    }
}

fn state_of(s: &cri::ContainerStatus, settings: &Settings) -> ContainerState {
    let _ = settings;
    match cri::ContainerState::try_from(s.state).unwrap_or(cri::ContainerState::ContainerUnknown) {
        cri::ContainerState::ContainerRunning => ContainerState {
            running: Some(k8s_openapi::api::core::v1::ContainerStateRunning {
                started_at: ts(s.started_at),
            }),
            ..Default::default()
        },
        cri::ContainerState::ContainerExited => ContainerState {
            terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                exit_code: s.exit_code,
                reason: Some(s.reason.clone()).filter(|r| !r.is_empty()),
                message: termination_message(s),
                started_at: ts(s.started_at),
                finished_at: ts(s.finished_at),
                container_id: Some(format!("{}://{}", self_runtime_name(), s.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        _ => ContainerState {
            waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

/// The container's termination message: the file it wrote at terminationMessagePath (mounted from the pod
/// dir), capped at 4 KiB as upstream; with FallbackToLogsOnError an empty file on failure means the log tail.
fn termination_message(s: &cri::ContainerStatus) -> Option<String> {
    let host = s
        .mounts
        .iter()
        .find(|m| {
            Some(&m.container_path) == s.annotations.get(podconfig::TERMINATION_MESSAGE_PATH)
        })?
        .host_path
        .clone();
    let text = std::fs::read(&host).ok()?;
    let text = String::from_utf8_lossy(&text[..text.len().min(4096)]).into_owned();
    if !text.is_empty() {
        return Some(text);
    }
    let fallback = s
        .annotations
        .get(podconfig::TERMINATION_MESSAGE_POLICY)
        .is_some_and(|p| p == "FallbackToLogsOnError");
    if s.exit_code != 0 && fallback && !s.log_path.is_empty() {
        let log = std::fs::read_to_string(&s.log_path).ok()?;
        let lines: Vec<&str> = log.lines().collect();
        let tail: Vec<&str> = lines[lines.len().saturating_sub(80)..]
            .iter()
            .map(|l| l.splitn(4, ' ').nth(3).unwrap_or(""))
            .collect();
        let t = tail.join("\n");
        // The last 2 KiB, cut at a character boundary.
        let mut start = t.len().saturating_sub(2048);
        while !t.is_char_boundary(start) {
            start += 1;
        }
        return Some(t[start..].to_owned());
    }
    None
}

async fn sandbox_ips(
    rt: &mut basalt_proto::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<String> {
    let Ok(r) = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        })
        .await
    else {
        return Vec::new();
    };
    let Some(net) = r.into_inner().status.and_then(|s| s.network) else {
        return Vec::new();
    };
    std::iter::once(net.ip)
        .filter(|ip| !ip.is_empty())
        .chain(net.additional_ips.into_iter().map(|p| p.ip))
        .collect()
}

#[allow(dead_code)]
fn _kinds() -> [&'static str; 2] {
    [RESTART_COUNT, CONTAINER_KIND]
}
