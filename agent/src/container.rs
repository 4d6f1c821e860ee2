//! Containers: the agent prepares the root filesystem and the OCI bundle, the pod monitor creates and runs
//! the container and keeps its status.

use std::path::{Path, PathBuf};

use basalt_proto::cri::{self, ContainerEventType, ContainerState};
use basalt_shim::protocol::{
    ContainerStatus, CreateRequest, Request, Response, State as ShimState,
};
use tonic::Status;

use crate::agent::Agent;
use crate::monitor;
use crate::sandbox::{container_state, labels_match};
use crate::status;
use crate::store::{new_id, now_ns, ContainerRecord, SandboxRecord, SandboxState, Survive};

/// Output ExecSync keeps per stream; kubelet itself caps probe output far below this.
const EXEC_SYNC_MAX_OUTPUT: usize = 16 << 20;

impl Agent {
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> Result<String, Status> {
        let sandbox = self
            .records
            .find_sandbox(sandbox_id)
            .ok_or_else(|| status::not_found("pod sandbox", sandbox_id))?;
        let lock = self.records.lock_for(&sandbox.id);
        let _guard = lock.lock().await;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| status::invalid("config.metadata", "", "is required"))?;
        if meta.name.is_empty() {
            return Err(status::invalid(
                "config.metadata.name",
                "",
                "must not be empty",
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(status::invalid(
                "config.image.image",
                "",
                "must name an image",
            ));
        }
        let name = format!("{}_{}_{}", sandbox.id, meta.name, meta.attempt);
        if let Some(other) = self
            .records
            .containers_of(&sandbox.id)
            .into_iter()
            .find(|c| c.name() == name)
        {
            return Err(Status::already_exists(format!(
                "container name {:?} (attempt {}) is reserved by {}",
                meta.name, meta.attempt, other.id
            )));
        }
        let store = self.images.clone();
        let lookup = image_name.clone();
        let (image, image_config) = tokio::task::spawn_blocking(move || {
            let rec = store.find_image(&lookup)?;
            let cfg = store.image_config(&rec)?;
            Ok::<_, basalt_images::Error>((rec, cfg))
        })
        .await
        .map_err(status::from_join)?
        .map_err(|e| match e {
            basalt_images::Error::ImageNotFound { .. } => Status::not_found(format!(
                "config.image.image {image_name:?}: image not found (pull it first)"
            )),
            e => status::from_image(e),
        })?;
        let _ = sandbox_config;

        let id = new_id();
        let mut made = Made::default();
        match self
            .create_inner(
                &id,
                &sandbox,
                &config,
                &image,
                &image_config,
                &image_name,
                &mut made,
            )
            .await
        {
            Ok(rec) => {
                self.records
                    .put_container(&rec, Survive::Crash)
                    .map_err(|e| status::internal("recording the container", e))?;
                self.events
                    .container(&id, &sandbox.id, ContainerEventType::ContainerCreatedEvent);
                Ok(id)
            }
            Err(e) => {
                self.undo(&id, &sandbox, made).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_inner(
        &self,
        id: &str,
        sandbox: &SandboxRecord,
        config: &cri::ContainerConfig,
        image: &basalt_images::ImageRecord,
        image_config: &basalt_images::ImageConfig,
        image_name: &str,
        made: &mut Made,
    ) -> Result<ContainerRecord, Status> {
        let store = self.images.clone();
        let (cid, img) = (id.to_owned(), image.clone());
        made.root = true;
        let root = tokio::task::spawn_blocking(move || store.mount_root(&cid, &img, false))
            .await
            .map_err(status::from_join)?
            .map_err(|e| status::internal("preparing the root filesystem", e))?;
        if let Some(userns) = sandbox.namespaces.get("user") {
            let root_ids = pod_root_host_ids(&sandbox.config).ok_or_else(|| {
                Status::failed_precondition(format!(
                    "sandbox {} has a user namespace but no mapping of id 0",
                    sandbox.id
                ))
            })?;
            let (rootfs, userns) = (root.rootfs.clone(), userns.clone());
            tokio::task::spawn_blocking(move || {
                crate::idmap::idmap_root(&rootfs, &userns, root_ids)
            })
            .await
            .map_err(status::from_join)?
            .map_err(|e| {
                status::internal(
                    "idmapping the root filesystem for the pod's user namespace",
                    e,
                )
            })?;
        }

        // A TARGET pid namespace is the target container's: found through its init's pid.
        let target = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .filter(|n| n.pid == cri::NamespaceMode::Target as i32)
            .map(|n| n.target_id.clone());
        let target_ns = match target {
            Some(t) => {
                let st = monitor::status_of(&sandbox.shim_dir, &t)
                    .await
                    .map_err(|_| {
                        status::invalid(
                            "config.linux.security_context.namespace_options.target_id",
                            &t,
                            "no container of that id in this pod",
                        )
                    })?;
                if st.state != ShimState::Running {
                    return Err(status::invalid(
                        "config.linux.security_context.namespace_options.target_id",
                        &t,
                        "the target container is not running",
                    ));
                }
                Some(PathBuf::from(format!("/proc/{}/ns/pid", st.pid)))
            }
            None => None,
        };
        // Image volumes: each image's snapshots mounted read-only (no upper directory), once per container.
        let mut image_mounts = std::collections::HashMap::new();
        for (i, m) in config.mounts.iter().enumerate() {
            let Some(name) = m
                .image
                .as_ref()
                .map(|s| s.image.clone())
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            if image_mounts.contains_key(&name) {
                continue;
            }
            let root_id = format!("{id}-image{i}");
            let store = self.images.clone();
            let (lookup, rid) = (name.clone(), root_id.clone());
            made.image_roots.push(root_id);
            let root = tokio::task::spawn_blocking(move || {
                let rec = store.find_image(&lookup)?;
                store.mount_image(&rid, &rec)
            })
            .await
            .map_err(status::from_join)?
            .map_err(|e| match e {
                basalt_images::Error::ImageNotFound { .. } => Status::not_found(format!(
                    "mounts[{i}].image.image {name:?}: image not found (pull it first)"
                )),
                e => status::internal(&format!("mounts[{i}].image {name:?}"), e),
            })?;
            image_mounts.insert(name, root.rootfs);
        }
        let mut request = basalt_cri_oci::Container::new(id, config);
        request.target_pid_ns = target_ns.as_deref();
        request.image_mounts = image_mounts;
        let generated = crate::spec::generate(self, sandbox, &request, image_config, &root.rootfs)?;
        let bundle = self.bundle_dir(id);
        std::fs::create_dir_all(&bundle).map_err(|e| status::internal("creating the bundle", e))?;
        made.bundle = true;
        let spec_json = serde_json::to_vec_pretty(&generated.spec)
            .map_err(|e| status::internal("serialising config.json", e))?;
        std::fs::write(bundle.join("config.json"), spec_json)
            .map_err(|e| status::internal("writing config.json", e))?;

        let log_path = match (&sandbox.config.log_directory, &config.log_path) {
            (dir, rel) if !dir.is_empty() && !rel.is_empty() => Some(Path::new(dir).join(rel)),
            _ => None,
        };
        if let Some(p) = log_path.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(p)
                .map_err(|e| status::invalid("log_path", p, &format!("cannot create: {e}")))?;
        }
        self.monitor_joins.wait(&sandbox.id).await;
        made.monitor = true;
        monitor::call(
            &sandbox.shim_dir,
            Request::Create(CreateRequest {
                id: id.to_owned(),
                bundle: bundle.clone(),
                log_path: log_path.clone(),
                tty: config.tty,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
            }),
        )
        .await?;
        Ok(ContainerRecord {
            id: id.to_owned(),
            sandbox_id: sandbox.id.clone(),
            config: config.clone(),
            created_at: now_ns(),
            image: image_name.to_owned(),
            image_id: image.config.to_string(),
            image_ref: repo_digest(image),
            log_path: log_path.unwrap_or_default(),
            bundle,
            rootfs: root.rootfs,
            user: Some(generated.user),
            final_status: None,
            image_roots: made.image_roots.clone(),
        })
    }

    /// Removes what a failed CreateContainer made, newest first.
    async fn undo(&self, id: &str, sandbox: &SandboxRecord, made: Made) {
        if made.monitor {
            let _ = monitor::call(&sandbox.shim_dir, Request::Delete { id: id.into() }).await;
        }
        if made.bundle {
            let _ = std::fs::remove_dir_all(self.bundle_dir(id));
        }
        let mut roots = made.image_roots;
        if made.root {
            roots.push(id.to_owned());
        }
        let store = self.images.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for r in roots {
                let _ = store.unmount_root(&r);
            }
        })
        .await;
    }

    fn container_in_ready_sandbox(
        &self,
        id: &str,
    ) -> Result<(ContainerRecord, SandboxRecord), Status> {
        let c = self
            .records
            .find_container(id)
            .ok_or_else(|| status::not_found("container", id))?;
        let s = self
            .records
            .sandbox(&c.sandbox_id)
            .ok_or_else(|| status::not_found("pod sandbox", &c.sandbox_id))?;
        Ok((c, s))
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Status> {
        let (c, s) = self.container_in_ready_sandbox(id)?;
        if c.final_status.is_some() || s.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "container {} cannot start: its pod sandbox is stopped",
                c.id
            )));
        }
        monitor::call(&s.shim_dir, Request::Start { id: c.id.clone() }).await?;
        self.events
            .container(&c.id, &s.id, ContainerEventType::ContainerStartedEvent);
        Ok(())
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        // Kubernetes 1.33: stopping an unknown container is not an error.
        let Some(c) = self.records.find_container(id) else {
            return Ok(());
        };
        if c.final_status.is_some() {
            return Ok(());
        }
        let Some(s) = self.records.sandbox(&c.sandbox_id) else {
            return Ok(());
        };
        let signal = self.stop_signal(&c);
        match monitor::call(
            &s.shim_dir,
            Request::Stop {
                id: c.id.clone(),
                timeout_secs: timeout.max(0),
                signal,
            },
        )
        .await
        {
            Ok(_) => {}
            // Gone from the monitor already (or the monitor is gone): nothing left to stop.
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => return Err(e),
        }
        self.events
            .container(&c.id, &s.id, ContainerEventType::ContainerStoppedEvent);
        Ok(())
    }

    /// The image's STOPSIGNAL, as numbers the monitor sends.
    fn stop_signal(&self, c: &ContainerRecord) -> Option<i32> {
        let cfg = std::fs::read(c.bundle.join("config.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&cfg).ok()?;
        let sig = v["annotations"]["io.basalt.stop-signal"].as_str()?;
        parse_signal(sig)
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let Some(c) = self.records.find_container(id) else {
            return Ok(());
        };
        let lock = self.records.lock_for(&c.sandbox_id);
        let _guard = lock.lock().await;
        self.remove_container_files(&c).await?;
        self.records
            .remove_container(&c.id)
            .map_err(|e| status::internal("removing the container record", e))?;
        self.events.container(
            &c.id,
            &c.sandbox_id,
            ContainerEventType::ContainerDeletedEvent,
        );
        Ok(())
    }

    /// The container's runtime state (via its monitor), root filesystem and bundle. Idempotent.
    pub async fn remove_container_files(&self, c: &ContainerRecord) -> Result<(), Status> {
        if let Some(s) = self.records.sandbox(&c.sandbox_id) {
            if c.final_status.is_none() && s.shim_dir.join("shim.sock").exists() {
                match monitor::call(&s.shim_dir, Request::Delete { id: c.id.clone() }).await {
                    Ok(_) => {}
                    Err(e) if e.code() == tonic::Code::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let store = self.images.clone();
        let roots: Vec<String> = std::iter::once(c.id.clone())
            .chain(c.image_roots.iter().cloned())
            .collect();
        tokio::task::spawn_blocking(move || roots.iter().try_for_each(|r| store.unmount_root(r)))
            .await
            .map_err(status::from_join)?
            .map_err(|e| status::internal("removing the root filesystem", e))?;
        match std::fs::remove_dir_all(&c.bundle) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(status::internal("removing the bundle", e)),
        }
    }

    /// The live status from the monitor, or the last one recorded when the monitor is gone.
    pub async fn live_status(&self, c: &ContainerRecord) -> Option<ContainerStatus> {
        if let Some(s) = &c.final_status {
            return Some(s.clone());
        }
        let sandbox = self.records.sandbox(&c.sandbox_id)?;
        match monitor::status_of(&sandbox.shim_dir, &c.id).await {
            Ok(s) => Some(s),
            Err(_) => monitor::exit_record(&sandbox.shim_dir, &c.id),
        }
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        let c = self
            .records
            .find_container(id)
            .ok_or_else(|| status::not_found("container", id))?;
        let live = self.live_status(&c).await;
        let status = status_of(&c, live.as_ref());
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert(
                "info".to_owned(),
                serde_json::json!({
                    "sandboxID": c.sandbox_id,
                    "pid": live.as_ref().map(|s| s.pid).unwrap_or(0),
                    "bundle": c.bundle,
                    "rootfs": c.rootfs,
                    "cgroupPath": live.as_ref().map(|s| s.cgroup_path.clone()).unwrap_or_default(),
                    "config": c.config,
                })
                .to_string(),
            );
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, Status> {
        let mut recs: Vec<ContainerRecord> = self
            .records
            .containers
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        recs.sort_by_key(|c| c.created_at);
        if let Some(f) = &filter {
            recs.retain(|c| {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id))
                    && labels_match(&c.config.labels, &f.label_selector)
            });
        }
        // One List per monitor rather than one Status per container.
        let mut live = std::collections::HashMap::new();
        let sandboxes: std::collections::BTreeSet<String> = recs
            .iter()
            .filter(|c| c.final_status.is_none())
            .map(|c| c.sandbox_id.clone())
            .collect();
        for sid in sandboxes {
            if let Some(s) = self.records.sandbox(&sid) {
                if let Ok(list) = monitor::list(&s.shim_dir).await {
                    live.extend(list.into_iter().map(|st| (st.id.clone(), st)));
                }
            }
        }
        let mut out = Vec::new();
        for c in recs {
            let st = c
                .final_status
                .clone()
                .or_else(|| live.remove(&c.id))
                .or_else(|| {
                    let s = self.records.sandbox(&c.sandbox_id)?;
                    monitor::exit_record(&s.shim_dir, &c.id)
                });
            let state = cri_state(st.as_ref());
            if let Some(want) = filter.as_ref().and_then(|f| f.state.as_ref()) {
                if want.state != state as i32 {
                    continue;
                }
            }
            out.push(cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(cri::ImageSpec {
                    image: c.image.clone(),
                    ..Default::default()
                }),
                image_ref: c.image_ref.clone(),
                state: state as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.image_id.clone(),
            });
        }
        Ok(out)
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse, Status> {
        if cmd.is_empty() {
            return Err(status::invalid("cmd", "[]", "must name a program to run"));
        }
        let (c, s) = self.container_in_ready_sandbox(id)?;
        match monitor::call(
            &s.shim_dir,
            Request::ExecSync {
                id: c.id.clone(),
                cmd,
                timeout_secs: timeout.max(0),
                max_output_bytes: EXEC_SYNC_MAX_OUTPUT,
            },
        )
        .await?
        {
            Response::ExecSync {
                stdout,
                stderr,
                exit_code,
            } => Ok(cri::ExecSyncResponse {
                stdout,
                stderr,
                exit_code,
            }),
            r => Err(monitor::unexpected(r)),
        }
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Status> {
        let (c, s) = self.container_in_ready_sandbox(id)?;
        let live = self.live_status(&c).await;
        if live.map(|l| l.state) != Some(ShimState::Running) {
            return Err(Status::failed_precondition(format!(
                "container {} is not running",
                c.id
            )));
        }
        monitor::call(&s.shim_dir, Request::ReopenLog { id: c.id }).await?;
        Ok(())
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> Result<(), Status> {
        let (c, s) = self.container_in_ready_sandbox(id)?;
        let Some(linux) = linux else {
            return Ok(());
        };
        let resources = crate::spec::resources_json(&linux);
        monitor::call(
            &s.shim_dir,
            Request::Update {
                id: c.id.clone(),
                resources,
            },
        )
        .await?;
        let mut c = c;
        let l = c.config.linux.get_or_insert_with(Default::default);
        l.resources = Some(linux);
        self.records
            .put_container(&c, Survive::PowerLoss)
            .map_err(|e| status::internal("recording the container", e))?;
        Ok(())
    }
}

#[derive(Default)]
struct Made {
    root: bool,
    bundle: bool,
    monitor: bool,
    image_roots: Vec<String>,
}

pub fn cri_state(st: Option<&ContainerStatus>) -> ContainerState {
    match st {
        Some(s) => container_state(s.state),
        None => ContainerState::ContainerUnknown,
    }
}

/// `name@digest`, the form kubelet reports as a container's imageID.
pub fn repo_digest(image: &basalt_images::ImageRecord) -> String {
    let repo = image
        .name
        .split('@')
        .next()
        .map(|n| match n.rfind(':') {
            Some(i) if !n[i..].contains('/') => &n[..i],
            _ => n,
        })
        .unwrap_or(&image.name);
    format!("{repo}@{}", image.digest)
}

pub fn status_of(c: &ContainerRecord, live: Option<&ContainerStatus>) -> cri::ContainerStatus {
    let state = cri_state(live);
    let (reason, message) = match live {
        Some(s) if s.state == ShimState::Exited => {
            if s.oom_killed {
                ("OOMKilled", String::new())
            } else if s.exit_code == 0 {
                ("Completed", String::new())
            } else {
                ("Error", String::new())
            }
        }
        None => (
            "Unknown",
            "the pod monitor holding this container is gone".to_owned(),
        ),
        _ => ("", String::new()),
    };
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: state as i32,
        created_at: c.created_at,
        started_at: live.map(|s| s.started_at).unwrap_or(0),
        finished_at: live.map(|s| s.finished_at).unwrap_or(0),
        exit_code: live.map(|s| s.exit_code).unwrap_or(0),
        image: Some(cri::ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        image_ref: c.image_ref.clone(),
        reason: reason.into(),
        message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.to_string_lossy().into_owned(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| cri::ContainerResources {
                linux: Some(r),
                ..Default::default()
            }),
        image_id: c.image_id.clone(),
        user: c.user.clone(),
    }
}

pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim_start_matches("SIG");
    let sig: nix::sys::signal::Signal = format!("SIG{name}").parse().ok()?;
    Some(sig as i32)
}

/// The host uid and gid of the root of the pod's user namespace.
pub(crate) fn pod_root_host_ids(config: &cri::PodSandboxConfig) -> Option<(u32, u32)> {
    let u = crate::sandbox::namespace_options(config).userns_options?;
    let host = |maps: &[cri::IdMapping]| {
        maps.iter()
            .find(|m| m.container_id == 0 && m.length > 0)
            .map(|m| m.host_id)
    };
    Some((host(&u.uids)?, host(&u.gids)?))
}
