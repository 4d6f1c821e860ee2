//! RunPodSandbox, without a pause container: the pod monitor pins the pod's namespaces, the agent writes the
//! shared files, mounts /dev/shm and runs CNI ADD on the pod's network namespace.

use std::collections::BTreeMap;

use basalt_proto::cri::{self, NamespaceMode};
use basalt_shim::Namespace;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::{new_id, now_ns, SandboxRecord, SandboxState, Survive};
use crate::view::{namespace_options, pod_root_host_ids};
use crate::{files, monitor, network, sandbox_stop, status};

/// container id, host id, size.
type IdMap = (u32, u32, u32);
/// The uid and the gid mappings of a user namespace.
type IdMaps = (Vec<IdMap>, Vec<IdMap>);

impl Call for cri::RunPodSandboxRequest {
    type Reply = cri::RunPodSandboxResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let config = status::required(self.config, "config")?;
        let runtime_handler = self.runtime_handler;
        let meta = status::required(config.metadata.clone(), "config.metadata")?;
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
        let lock = agent.records.lock_for(&id);
        let _guard = lock.lock().await;
        let name = format!(
            "{}_{}_{}_{}",
            meta.name, meta.namespace, meta.uid, meta.attempt
        );
        if let Some(other) = agent
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
            .unwrap_or_else(|| agent.args.cgroup_parent.clone());

        let mut rec = SandboxRecord {
            id: id.clone(),
            config: config.clone(),
            runtime_handler,
            created_at: now_ns(),
            state: SandboxState::Ready,
            shim_dir: agent.shim_dir(&id),
            pod_dir: agent.pod_dir(&id),
            namespaces: BTreeMap::new(),
            ips: Vec::new(),
            cni_network: None,
            shm_mounted: false,
            cgroup_parent,
        };
        // Recorded before anything is made, so that a crash half-way leaves a NOTREADY sandbox that
        // StopPodSandbox/RemovePodSandbox clean up, never an invisible leftover.
        rec.state = SandboxState::NotReady;
        agent
            .records
            .put_sandbox(&rec, Survive::Crash)
            .map_err(|e| status::internal("recording the sandbox", e))?;
        match setup(
            agent,
            &mut rec,
            pin,
            sysctls,
            host_net,
            idmap.unwrap_or_default(),
        )
        .await
        {
            Ok(()) => {
                rec.state = SandboxState::Ready;
                agent
                    .records
                    .put_sandbox(&rec, Survive::Crash)
                    .map_err(|e| status::internal("recording the sandbox", e))?;
                Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
            }
            Err(e) => {
                if let Err(c) = sandbox_stop::teardown(agent, &mut rec).await {
                    tracing::error!(sandbox = %id, "cleaning up after a failed RunPodSandbox: {c}");
                } else {
                    let _ = agent.records.remove_sandbox(&id);
                }
                Err(e)
            }
        }
    }
}

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

/// Makes what the sandbox has: its files, its namespaces (through the monitor), its network. On error the
/// caller tears down whatever was made, as recorded in `rec`.
async fn setup(
    agent: &Agent,
    rec: &mut SandboxRecord,
    pin: Vec<Namespace>,
    sysctls: Vec<(String, String)>,
    host_net: bool,
    (uid_map, gid_map): IdMaps,
) -> Result<(), Status> {
    let pod_dir = rec.pod_dir.clone();
    std::fs::create_dir_all(&pod_dir).map_err(|e| status::internal("creating the pod dir", e))?;
    files::write_pod_files(&pod_dir, &rec.config, host_net)
        .map_err(|e| status::internal("writing the pod's hostname, hosts and resolv.conf", e))?;
    if let Some(root) = pod_root_host_ids(&rec.config) {
        files::give_pod_files_to(&pod_dir, root).map_err(|e| {
            status::internal("giving the pod's files to its user namespace's root", e)
        })?;
    }
    let hostname =
        (!host_net && !rec.config.hostname.is_empty()).then(|| rec.config.hostname.clone());
    // The agent makes the pod's network namespace itself, so that CNI ADD runs while the monitor starts
    // (the monitor's start is a few ms of every pod's). A pod user namespace must own its network
    // namespace, and only the monitor makes that.
    let (mut pin, mut sysctls) = (pin, sysctls);
    let own_netns = !host_net && !pin.contains(&Namespace::User);
    if own_netns {
        pin.retain(|n| *n != Namespace::Net);
        let (net_sysctls, rest): (Vec<_>, Vec<_>) = sysctls
            .into_iter()
            .partition(|(k, _)| basalt_shim::pin::sysctl_namespace(k) == Ok(Namespace::Net));
        sysctls = rest;
        let path = network::netns_pin(&pod_dir);
        let pinned = path.clone();
        tokio::task::spawn_blocking(move || basalt_shim::pin::pin_network(&pinned, &net_sysctls))
            .await
            .map_err(status::from_join)?
            .map_err(|e| Status::invalid_argument(format!("the pod's network namespace: {e}")))?;
        rec.namespaces.insert("net".into(), path);
    }
    let spawning = monitor::spawn(monitor::Spawn {
        sandbox_id: rec.id.clone(),
        dir: rec.shim_dir.clone(),
        runtime_root: agent.runtime_root.clone(),
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
        agent
            .monitor_joins
            .start(&sandbox_id, &agent.args.monitor_cgroup, pid);
        Ok::<_, Status>(namespaces)
    };
    let namespaces = if own_netns {
        let (spawned, added) = tokio::join!(spawn, network::add(agent, rec));
        // Whichever failed, the caller's teardown undoes both.
        let spawned = spawned?;
        added?;
        spawned
    } else {
        spawn.await?
    };
    rec.namespaces.extend(namespaces);
    if pin.contains(&Namespace::Ipc) {
        files::mount_shm(&pod_dir.join("shm"))
            .map_err(|e| status::internal("mounting the pod's /dev/shm", e))?;
        rec.shm_mounted = true;
    }
    if host_net {
        agent
            .records
            .put_sandbox(rec, Survive::Crash)
            .map_err(|e| status::internal("recording the sandbox", e))?;
    } else if !own_netns {
        // Its record of the owed DEL records the namespaces too.
        network::add(agent, rec).await?;
    }
    Ok(())
}
