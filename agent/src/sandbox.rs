//! Pod sandboxes without a pause container: the pod monitor pins the pod's namespaces, the agent writes the
//! shared files, mounts /dev/shm and runs CNI ADD on the pinned network namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;

use basalt_proto::cri::{self, NamespaceMode, PodSandboxState};
use basalt_shim::protocol::{Request, State as ShimState};
use serde_json::json;
use tonic::Status;

use crate::agent::Agent;
use crate::monitor;
use crate::status;
use crate::store::{new_id, now_ns, SandboxRecord, SandboxState, Survive};

const IFNAME: &str = "eth0";

pub fn namespace_options(config: &cri::PodSandboxConfig) -> cri::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// container id, host id, size.
type IdMap = (u32, u32, u32);
/// The uid and the gid mappings of a user namespace.
type IdMaps = (Vec<IdMap>, Vec<IdMap>);

/// The uid and gid maps of a pod user namespace (`hostUsers: false`), or None for the node's.
fn pod_user_namespace(ns: &cri::NamespaceOption) -> Result<Option<IdMaps>, Status> {
    const F: &str = "config.linux.security_context.namespace_options.userns_options";
    let Some(u) = &ns.userns_options else {
        return Ok(None);
    };
    match NamespaceMode::try_from(u.mode) {
        Ok(NamespaceMode::Node) => return Ok(None),
        Ok(NamespaceMode::Pod) => {}
        _ => {
            return Err(status::invalid(
                &format!("{F}.mode"),
                u.mode.to_string(),
                "a pod's user namespace is its own (POD) or the node's (NODE)",
            ))
        }
    }
    let maps = |field: &str, v: &[cri::IdMapping]| -> Result<Vec<IdMap>, Status> {
        let field = format!("{F}.{field}");
        if v.is_empty() {
            return Err(status::invalid(&field, "[]", "mode POD needs id mappings"));
        }
        let mut out = Vec::new();
        for m in v {
            let text = format!("{}:{}:{}", m.container_id, m.host_id, m.length);
            if m.length == 0
                || m.container_id.checked_add(m.length).is_none()
                || m.host_id.checked_add(m.length).is_none()
            {
                return Err(status::invalid(&field, &text, "not a valid id range"));
            }
            out.push((m.container_id, m.host_id, m.length));
        }
        // The runtime becomes root of the namespace before it sets the container's user.
        if !out.iter().any(|(c, _, _)| *c == 0) {
            return Err(status::invalid(&field, format!("{out:?}"), "must map id 0"));
        }
        Ok(out)
    };
    Ok(Some((maps("uids", &u.uids)?, maps("gids", &u.gids)?)))
}

impl Agent {
    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, Status> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| status::invalid("config.metadata", "", "is required"))?;
        for (field, v) in [
            ("name", &meta.name),
            ("namespace", &meta.namespace),
            ("uid", &meta.uid),
        ] {
            if v.is_empty() {
                return Err(status::invalid(
                    &format!("config.metadata.{field}"),
                    v,
                    "must not be empty",
                ));
            }
        }
        if !runtime_handler.is_empty() && runtime_handler != "basalt" && runtime_handler != "runc" {
            return Err(status::invalid(
                "runtime_handler",
                &runtime_handler,
                "unknown (this runtime has the default handler only)",
            ));
        }
        let ns = namespace_options(&config);
        let idmap = pod_user_namespace(&ns)?;
        let id = new_id();
        let lock = self.records.lock_for(&id);
        let _guard = lock.lock().await;
        let name = format!(
            "{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        if let Some(other) = self
            .records
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .find(|s| s.name() == name)
        {
            return Err(Status::already_exists(format!(
                "sandbox name {name:?} is reserved by {}",
                other.id
            )));
        }

        let host_net = ns.network == NamespaceMode::Node as i32;
        use basalt_shim::Namespace;
        let mut pin = Vec::new();
        if idmap.is_some() {
            pin.push(Namespace::User);
        }
        if !host_net {
            pin.extend([Namespace::Net, Namespace::Uts]);
        }
        if ns.ipc != NamespaceMode::Node as i32 {
            pin.push(Namespace::Ipc);
        }
        if ns.pid == NamespaceMode::Pod as i32 {
            pin.push(Namespace::Pid);
        }
        let sysctls: Vec<(String, String)> = config
            .linux
            .as_ref()
            .map(|l| {
                l.sysctls
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        // Refused before anything is made.
        for (k, v) in &sysctls {
            if let Err(why) = basalt_shim::pin::sysctl_namespace(k) {
                return Err(status::invalid(
                    &format!("config.linux.sysctls[{k:?}]"),
                    v,
                    &why.to_string(),
                ));
            }
        }
        let cgroup_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| self.args.cgroup_parent.clone());

        let mut rec = SandboxRecord {
            id: id.clone(),
            config: config.clone(),
            runtime_handler,
            created_at: now_ns(),
            state: SandboxState::Ready,
            shim_dir: self.shim_dir(&id),
            pod_dir: self.pod_dir(&id),
            namespaces: BTreeMap::new(),
            ips: Vec::new(),
            cni_network: None,
            shm_mounted: false,
            cgroup_parent,
        };
        // Recorded before anything is made, so that a crash half-way leaves a NOTREADY sandbox that
        // StopPodSandbox/RemovePodSandbox clean up, never an invisible leftover.
        rec.state = SandboxState::NotReady;
        self.records
            .put_sandbox(&rec, Survive::Crash)
            .map_err(|e| status::internal("recording the sandbox", e))?;
        match self
            .setup_sandbox(&mut rec, pin, sysctls, host_net, idmap.unwrap_or_default())
            .await
        {
            Ok(()) => {
                rec.state = SandboxState::Ready;
                self.records
                    .put_sandbox(&rec, Survive::Crash)
                    .map_err(|e| status::internal("recording the sandbox", e))?;
                Ok(id)
            }
            Err(e) => {
                if let Err(c) = self.teardown_sandbox(&mut rec).await {
                    tracing::error!(sandbox = %id, "cleaning up after a failed RunPodSandbox: {c}");
                } else {
                    let _ = self.records.remove_sandbox(&id);
                }
                Err(e)
            }
        }
    }

    async fn setup_sandbox(
        &self,
        rec: &mut SandboxRecord,
        pin: Vec<basalt_shim::Namespace>,
        sysctls: Vec<(String, String)>,
        host_net: bool,
        (uid_map, gid_map): IdMaps,
    ) -> Result<(), Status> {
        let pod_dir = rec.pod_dir.clone();
        std::fs::create_dir_all(&pod_dir)
            .map_err(|e| status::internal("creating the pod dir", e))?;
        crate::files::write_pod_files(&pod_dir, &rec.config, host_net).map_err(|e| {
            status::internal("writing the pod's hostname, hosts and resolv.conf", e)
        })?;
        if let Some(root) = crate::container::pod_root_host_ids(&rec.config) {
            crate::files::give_pod_files_to(&pod_dir, root).map_err(|e| {
                status::internal("giving the pod's files to its user namespace's root", e)
            })?;
        }
        let hostname =
            (!host_net && !rec.config.hostname.is_empty()).then(|| rec.config.hostname.clone());
        // The agent makes the pod's network namespace itself, so that CNI ADD runs while the monitor starts
        // (the monitor's start is a few ms of every pod's). A pod user namespace must own its network
        // namespace, and only the monitor makes that.
        let (mut pin, mut sysctls) = (pin, sysctls);
        let own_netns = !host_net && !pin.contains(&basalt_shim::Namespace::User);
        if own_netns {
            pin.retain(|n| *n != basalt_shim::Namespace::Net);
            let (net_sysctls, rest): (Vec<_>, Vec<_>) = sysctls.into_iter().partition(|(k, _)| {
                basalt_shim::pin::sysctl_namespace(k) == Ok(basalt_shim::Namespace::Net)
            });
            sysctls = rest;
            let path = netns_pin(&pod_dir);
            let pinned = path.clone();
            tokio::task::spawn_blocking(move || {
                basalt_shim::pin::pin_network(&pinned, &net_sysctls)
            })
            .await
            .map_err(status::from_join)?
            .map_err(|e| Status::invalid_argument(format!("the pod's network namespace: {e}")))?;
            rec.namespaces.insert("net".into(), path);
        }
        let spawning = monitor::spawn(monitor::Spawn {
            sandbox_id: rec.id.clone(),
            dir: rec.shim_dir.clone(),
            runtime_root: self.runtime_root.clone(),
            pin: pin.clone(),
            hostname,
            sysctls,
            uid_map,
            gid_map,
        });
        // Moved as soon as it runs: see `monitor::Joins` for why early.
        let sandbox_id = rec.id.clone();
        let spawn = async {
            let (pid, namespaces) = spawning.await?;
            self.monitor_joins
                .start(&sandbox_id, &self.args.monitor_cgroup, pid);
            Ok::<_, Status>(namespaces)
        };
        let namespaces = if own_netns {
            let (spawned, added) = tokio::join!(spawn, self.cni_add(rec));
            // Whichever failed, the caller's teardown undoes both.
            let spawned = spawned?;
            added?;
            spawned
        } else {
            spawn.await?
        };
        rec.namespaces.extend(namespaces);
        if pin.contains(&basalt_shim::Namespace::Ipc) {
            crate::files::mount_shm(&pod_dir.join("shm"))
                .map_err(|e| status::internal("mounting the pod's /dev/shm", e))?;
            rec.shm_mounted = true;
        }
        if host_net {
            self.records
                .put_sandbox(rec, Survive::Crash)
                .map_err(|e| status::internal("recording the sandbox", e))?;
        } else if !own_netns {
            // Its record of the owed DEL records the namespaces too.
            self.cni_add(rec).await?;
        }
        Ok(())
    }

    fn network(&self) -> Result<basalt_cni::caller::NetworkConfigList, Status> {
        let nets = basalt_cni::caller::load_dir(&self.args.cni_conf_dir)
            .map_err(|e| Status::failed_precondition(format!("CNI config: {e}")))?;
        nets.into_iter().next().ok_or_else(|| {
            Status::failed_precondition(format!(
                "no CNI network config in {} (network not ready)",
                self.args.cni_conf_dir.display()
            ))
        })
    }

    fn runtime_conf(&self, rec: &SandboxRecord) -> basalt_cni::caller::RuntimeConf {
        let meta = rec.config.metadata.clone().unwrap_or_default();
        let mut rt = basalt_cni::caller::RuntimeConf {
            container_id: rec.id.clone(),
            netns: rec.namespaces.get("net").cloned().unwrap_or_default(),
            ifname: IFNAME.into(),
            ..Default::default()
        }
        .with_pod(&meta.namespace, &meta.name, &rec.id, &meta.uid);
        let ports: Vec<_> = rec
            .config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let proto = cri::Protocol::try_from(p.protocol)
                    .unwrap_or(cri::Protocol::Tcp)
                    .as_str_name()
                    .to_lowercase();
                let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto});
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect();
        if !ports.is_empty() {
            rt.capability_args
                .insert("portMappings".into(), json!(ports));
        }
        rt
    }

    async fn cni_add(&self, rec: &mut SandboxRecord) -> Result<(), Status> {
        let net = self.network()?;
        let rt = self.runtime_conf(rec);
        rec.cni_network = Some(net.name.clone());
        // Owed a DEL from here on, even if ADD fails half-way.
        self.records
            .put_sandbox(rec, Survive::PowerLoss)
            .map_err(|e| status::internal("recording the sandbox", e))?;
        let cni = self.cni.clone();
        let result = tokio::task::spawn_blocking(move || cni.add(&net, &rt))
            .await
            .map_err(status::from_join)?
            .map_err(|e| Status::unknown(format!("CNI ADD: {e}")))?;
        rec.ips = result
            .get("ips")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.get("address")?.as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_owned())
            .collect();
        Ok(())
    }

    async fn cni_del(&self, rec: &mut SandboxRecord) -> Result<(), Status> {
        let Some(name) = rec.cni_network.clone() else {
            return Ok(());
        };
        let net = match basalt_cni::caller::load_dir(&self.args.cni_conf_dir)
            .ok()
            .and_then(|nets| nets.into_iter().find(|n| n.name == name))
        {
            Some(n) => n,
            None => {
                tracing::warn!(sandbox = %rec.id, network = %name, "CNI network config gone; skipping DEL");
                rec.cni_network = None;
                return Ok(());
            }
        };
        let rt = self.runtime_conf(rec);
        let cni = self.cni.clone();
        tokio::task::spawn_blocking(move || cni.del(&net, &rt))
            .await
            .map_err(status::from_join)?
            .map_err(|e| Status::unknown(format!("CNI DEL: {e}")))?;
        rec.cni_network = None;
        rec.ips.clear();
        Ok(())
    }

    /// Stops everything of a sandbox but its records: containers, network, monitor, namespaces, shm.
    /// Idempotent; each step is recorded as done so that a crash in between resumes.
    async fn teardown_sandbox(&self, rec: &mut SandboxRecord) -> Result<(), Status> {
        // Containers' last statuses move into their records before the monitor goes.
        if rec.shim_dir.join("shim.sock").exists() {
            for c in self.records.containers_of(&rec.id) {
                let _ = monitor::call(
                    &rec.shim_dir,
                    Request::Stop {
                        id: c.id.clone(),
                        timeout_secs: 0,
                        signal: None,
                    },
                )
                .await;
            }
            if let Ok(list) = monitor::list(&rec.shim_dir).await {
                for s in list {
                    if let Some(mut c) = self.records.container(&s.id) {
                        c.final_status = Some(s);
                        let _ = self.records.put_container(&c, Survive::PowerLoss);
                    }
                }
            }
        }
        self.cni_del(rec).await?;
        self.records
            .put_sandbox(rec, Survive::PowerLoss)
            .map_err(|e| status::internal("recording the sandbox", e))?;
        if rec.shim_dir.exists() {
            let shut_down = monitor::call(&rec.shim_dir, Request::Shutdown)
                .await
                .is_ok();
            for mut c in self.records.containers_of(&rec.id) {
                if shut_down {
                    // Containers the monitor never reported get their exit records from disk.
                    if c.final_status.is_none() {
                        c.final_status = monitor::exit_record(&rec.shim_dir, &c.id);
                        let _ = self.records.put_container(&c, Survive::PowerLoss);
                    }
                    continue;
                }
                // The monitor died: its containers may still run, with runtime state and cgroups of their own.
                // The runtime library kills and removes them as `runc delete --force` would.
                let (root, id) = (self.runtime_root.clone(), c.id.clone());
                let deleted = tokio::task::spawn_blocking(move || {
                    match basalt_runtime::Container::load(&root, &id) {
                        Ok(container) => container.delete(true),
                        // No state: never created, or already gone.
                        Err(_) => Ok(()),
                    }
                })
                .await
                .map_err(status::from_join)?;
                if let Err(e) = deleted {
                    return Err(status::internal(
                        &format!("removing container {} of a dead monitor", c.id),
                        e,
                    ));
                }
                if c.final_status.is_none() {
                    c.final_status = monitor::exit_record(&rec.shim_dir, &c.id).or_else(|| {
                        Some(basalt_shim::protocol::ContainerStatus {
                            id: c.id.clone(),
                            state: basalt_shim::protocol::State::Exited,
                            pid: 0,
                            created_at: c.created_at,
                            started_at: 0,
                            finished_at: now_ns(),
                            // As kubelet reports a container whose runtime lost track of it.
                            exit_code: 255,
                            oom_killed: false,
                            cgroup_path: String::new(),
                        })
                    });
                    let _ = self.records.put_container(&c, Survive::PowerLoss);
                }
            }
            monitor::cleanup(rec.shim_dir.clone()).await?;
        }
        if rec.shm_mounted {
            crate::files::unmount_shm(&rec.pod_dir.join("shm"))
                .map_err(|e| status::internal("unmounting the pod's /dev/shm", e))?;
            rec.shm_mounted = false;
        }
        // Whether or not a record names it: a crash may have come between making it and recording it.
        let netns = netns_pin(&rec.pod_dir);
        basalt_shim::pin::unpin_network(&netns)
            .map_err(|e| status::internal("unmounting the pod's network namespace", e))?;
        if rec.namespaces.get("net") == Some(&netns) {
            rec.namespaces.remove("net");
        }
        rec.state = SandboxState::NotReady;
        Ok(())
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        // Kubernetes 1.33: stopping an unknown sandbox is not an error.
        let Some(rec) = self.records.find_sandbox(id) else {
            return Ok(());
        };
        let lock = self.records.lock_for(&rec.id);
        let _guard = lock.lock().await;
        let mut rec = self.records.sandbox(&rec.id).unwrap_or(rec);
        let result = self.teardown_sandbox(&mut rec).await;
        self.records
            .put_sandbox(&rec, Survive::PowerLoss)
            .map_err(|e| status::internal("recording the sandbox", e))?;
        for c in self.records.containers_of(&rec.id) {
            self.events.container(
                &c.id,
                &rec.id,
                cri::ContainerEventType::ContainerStoppedEvent,
            );
        }
        result
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let Some(rec) = self.records.find_sandbox(id) else {
            return Ok(());
        };
        self.stop_pod_sandbox(&rec.id).await?;
        let lock = self.records.lock_for(&rec.id);
        let guard = lock.lock().await;
        for c in self.records.containers_of(&rec.id) {
            self.remove_container_files(&c).await?;
            self.records
                .remove_container(&c.id)
                .map_err(|e| status::internal("removing the container record", e))?;
            self.events.container(
                &c.id,
                &rec.id,
                cri::ContainerEventType::ContainerDeletedEvent,
            );
        }
        match std::fs::remove_dir_all(&rec.pod_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(status::internal("removing the pod dir", e)),
        }
        self.records
            .remove_sandbox(&rec.id)
            .map_err(|e| status::internal("removing the sandbox record", e))?;
        drop(guard);
        Ok(())
    }

    /// A sandbox is ready while its monitor answers; one whose monitor died is NOTREADY.
    pub async fn sandbox_state(&self, rec: &SandboxRecord) -> PodSandboxState {
        if rec.state != SandboxState::Ready {
            return PodSandboxState::SandboxNotready;
        }
        match monitor::call(&rec.shim_dir, Request::Ping).await {
            Ok(_) => PodSandboxState::SandboxReady,
            Err(_) => PodSandboxState::SandboxNotready,
        }
    }

    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        let rec = self
            .records
            .find_sandbox(id)
            .ok_or_else(|| status::not_found("pod sandbox", id))?;
        let state = self.sandbox_state(&rec).await;
        let status = self.sandbox_status_of(&rec, state);
        let mut info = std::collections::HashMap::new();
        if verbose {
            let pid = std::fs::read_to_string(rec.shim_dir.join("shim.pid")).unwrap_or_default();
            info.insert(
                "info".to_owned(),
                json!({
                    "pid": pid.trim().parse::<i64>().unwrap_or(0),
                    "monitorDir": rec.shim_dir,
                    "namespaces": rec.namespaces,
                    "cgroupParent": rec.cgroup_parent,
                    "cniNetwork": rec.cni_network,
                    "runtimeHandler": rec.runtime_handler,
                    "config": rec.config,
                })
                .to_string(),
            );
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            ..Default::default()
        })
    }

    pub fn sandbox_status_of(
        &self,
        rec: &SandboxRecord,
        state: PodSandboxState,
    ) -> cri::PodSandboxStatus {
        let mut ips = rec.ips.iter();
        cri::PodSandboxStatus {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            state: state as i32,
            created_at: rec.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: ips.next().cloned().unwrap_or_default(),
                additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(namespace_options(&rec.config)),
                }),
            }),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
            runtime_handler: rec.runtime_handler.clone(),
        }
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, Status> {
        let recs = self.records.all_sandboxes();
        let mut out = Vec::new();
        for rec in recs {
            if let Some(f) = &filter {
                if !f.id.is_empty() && !rec.id.starts_with(&f.id) {
                    continue;
                }
                if !labels_match(&rec.config.labels, &f.label_selector) {
                    continue;
                }
            }
            let state = self.sandbox_state(&rec).await;
            if let Some(want) = filter.as_ref().and_then(|f| f.state.as_ref()) {
                if want.state != state as i32 {
                    continue;
                }
            }
            out.push(cri::PodSandbox {
                id: rec.id.clone(),
                metadata: rec.config.metadata.clone(),
                state: state as i32,
                created_at: rec.created_at,
                labels: rec.config.labels.clone(),
                annotations: rec.config.annotations.clone(),
                runtime_handler: rec.runtime_handler.clone(),
            });
        }
        Ok(out)
    }

    /// The network namespace file of a ready sandbox (for port forwarding and stats).
    pub fn netns_of(&self, sandbox_id: &str) -> Option<PathBuf> {
        self.records
            .sandbox(sandbox_id)?
            .namespaces
            .get("net")
            .cloned()
    }
}

pub fn labels_match(
    labels: &std::collections::HashMap<String, String>,
    selector: &std::collections::HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Monitor state → CRI container state.
pub fn container_state(s: ShimState) -> cri::ContainerState {
    match s {
        ShimState::Created => cri::ContainerState::ContainerCreated,
        ShimState::Running => cri::ContainerState::ContainerRunning,
        ShimState::Exited => cri::ContainerState::ContainerExited,
    }
}

/// Where the agent pins a pod's network namespace (when the monitor does not: see `setup_sandbox`).
fn netns_pin(pod_dir: &std::path::Path) -> PathBuf {
    pod_dir.join("netns")
}
