//! CreateContainer: the agent prepares the root filesystem (idmapped for a pod user namespace), the image
//! volumes and the OCI bundle; the pod monitor creates the container. A failure undoes what was made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use basalt_proto::cri::{self, ContainerEventType};
use basalt_shim::protocol::{CreateRequest, Request, State as ShimState};
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::store::{new_id, now_ns, ContainerRecord, SandboxRecord, SandboxState, Survive};
use crate::view::{pod_root_host_ids, repo_digest};
use crate::{idmap, monitor, spec, status};

impl Call for cri::CreateContainerRequest {
    type Reply = cri::CreateContainerResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let config = status::required(self.config, "config")?;
        let sandbox = agent.sandbox(&self.pod_sandbox_id)?;
        let lock = agent.records.lock_for(&sandbox.id);
        let _guard = lock.lock().await;
        if sandbox.state != SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                sandbox.id
            )));
        }
        let meta = status::required(config.metadata.clone(), "config.metadata")?;
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
        if let Some(other) = agent
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
        let store = agent.images.clone();
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

        let id = new_id();
        let plan = Plan {
            id: &id,
            sandbox: &sandbox,
            config: &config,
            image: &image,
            image_config: &image_config,
            image_name: &image_name,
        };
        let mut made = Made::default();
        match make(agent, &plan, &mut made).await {
            Ok(rec) => {
                agent
                    .records
                    .put_container(&rec, Survive::Crash)
                    .map_err(|e| status::internal("recording the container", e))?;
                agent
                    .events
                    .container(&id, &sandbox.id, ContainerEventType::ContainerCreatedEvent);
                Ok(cri::CreateContainerResponse { container_id: id })
            }
            Err(e) => {
                undo(agent, &id, &sandbox, made).await;
                Err(e)
            }
        }
    }
}

/// What one CreateContainer makes a container of.
struct Plan<'a> {
    id: &'a str,
    sandbox: &'a SandboxRecord,
    config: &'a cri::ContainerConfig,
    image: &'a basalt_images::ImageRecord,
    image_config: &'a basalt_images::ImageConfig,
    /// The image as the request named it.
    image_name: &'a str,
}

/// What a CreateContainer has made so far, for [`undo`].
#[derive(Default)]
struct Made {
    root: bool,
    bundle: bool,
    monitor: bool,
    image_roots: Vec<String>,
}

async fn make(agent: &Agent, p: &Plan<'_>, made: &mut Made) -> Result<ContainerRecord, Status> {
    let (id, sandbox, config) = (p.id, p.sandbox, p.config);
    let store = agent.images.clone();
    let (cid, img) = (id.to_owned(), p.image.clone());
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
        tokio::task::spawn_blocking(move || idmap::idmap_root(&rootfs, &userns, root_ids))
            .await
            .map_err(status::from_join)?
            .map_err(|e| {
                status::internal(
                    "idmapping the root filesystem for the pod's user namespace",
                    e,
                )
            })?;
    }
    let target_ns = target_pid_namespace(sandbox, config).await?;
    let (image_mounts, image_refs) = mount_image_volumes(agent, id, config, made).await?;
    let mut request = basalt_cri_oci::Container::new(id, config);
    request.target_pid_ns = target_ns.as_deref();
    request.image_mounts = image_mounts;
    let generated = spec::generate(
        &agent.data_dir,
        sandbox,
        &request,
        p.image_config,
        &root.rootfs,
    )?;
    let bundle = agent.bundle_dir(id);
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
    agent.monitor_joins.wait(&sandbox.id).await;
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
    // ContainerStatus shows each image volume with the digest it was resolved to (`image_ref`).
    let mut config = config.clone();
    for m in &mut config.mounts {
        if let Some(spec) = m.image.as_mut() {
            if let Some(r) = image_refs.get(&spec.image) {
                spec.image_ref = r.clone();
            }
        }
    }
    Ok(ContainerRecord {
        id: id.to_owned(),
        sandbox_id: sandbox.id.clone(),
        config,
        created_at: now_ns(),
        image: p.image_name.to_owned(),
        image_id: p.image.config.to_string(),
        image_ref: repo_digest(p.image),
        log_path: log_path.unwrap_or_default(),
        bundle,
        rootfs: root.rootfs,
        user: Some(generated.user),
        final_status: None,
        image_roots: made.image_roots.clone(),
    })
}

/// A TARGET pid namespace is the target container's: found through its init's pid.
async fn target_pid_namespace(
    sandbox: &SandboxRecord,
    config: &cri::ContainerConfig,
) -> Result<Option<PathBuf>, Status> {
    const FIELD: &str = "config.linux.security_context.namespace_options.target_id";
    let target = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .filter(|n| n.pid == cri::NamespaceMode::Target as i32)
        .map(|n| n.target_id.clone());
    let Some(t) = target else {
        return Ok(None);
    };
    let st = monitor::status_of(&sandbox.shim_dir, &t)
        .await
        .map_err(|_| status::invalid(FIELD, &t, "no container of that id in this pod"))?;
    if st.state != ShimState::Running {
        return Err(status::invalid(
            FIELD,
            &t,
            "the target container is not running",
        ));
    }
    Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", st.pid))))
}

/// Image volumes: each image's snapshots mounted read-only (no upper directory), once per container. Returns
/// the roots, and the `name@digest` each image was resolved to, by the name the request gave.
async fn mount_image_volumes(
    agent: &Agent,
    id: &str,
    config: &cri::ContainerConfig,
    made: &mut Made,
) -> Result<(HashMap<String, PathBuf>, HashMap<String, String>), Status> {
    let mut image_mounts = HashMap::new();
    let mut refs = HashMap::new();
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
        let store = agent.images.clone();
        let (lookup, rid) = (name.clone(), root_id.clone());
        made.image_roots.push(root_id);
        let (root, rec) = tokio::task::spawn_blocking(move || {
            let rec = store.find_image(&lookup)?;
            store.mount_image(&rid, &rec).map(|root| (root, rec))
        })
        .await
        .map_err(status::from_join)?
        .map_err(|e| match e {
            basalt_images::Error::ImageNotFound { .. } => Status::not_found(format!(
                "mounts[{i}].image.image {name:?}: image not found (pull it first)"
            )),
            e => status::internal(&format!("mounts[{i}].image {name:?}"), e),
        })?;
        refs.insert(name.clone(), repo_digest(&rec));
        image_mounts.insert(name, root.rootfs);
    }
    Ok((image_mounts, refs))
}

/// Removes what a failed CreateContainer made, newest first.
async fn undo(agent: &Agent, id: &str, sandbox: &SandboxRecord, made: Made) {
    if made.monitor {
        let _ = monitor::call(&sandbox.shim_dir, Request::Delete { id: id.into() }).await;
    }
    if made.bundle {
        let _ = std::fs::remove_dir_all(agent.bundle_dir(id));
    }
    let mut roots = made.image_roots;
    if made.root {
        roots.push(id.to_owned());
    }
    let store = agent.images.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for r in roots {
            let _ = store.unmount_root(&r);
        }
    })
    .await;
}
