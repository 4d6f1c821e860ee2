//! What the agent remembers of each sandbox and container: one JSON file per object under
//! `<data-dir>/cri/{sandboxes,containers}/<id>.json`, written atomically, loaded at start. Live state
//! (running, exit codes) is not here: it belongs to the pod monitor and is asked for; a container's final
//! status is copied here only when its monitor goes away with the sandbox.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use basalt_proto::cri;
use basalt_shim::protocol::ContainerStatus;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    pub created_at: i64,
    pub state: SandboxState,
    /// The pod monitor's directory (socket, pinned namespaces, exit records).
    pub shim_dir: PathBuf,
    /// The agent's own per-pod files: hostname, resolv.conf, hosts, the shm mount.
    pub pod_dir: PathBuf,
    /// Pinned namespace files by name (`net`, `ipc`, `uts`); a missing name is the host's namespace.
    pub namespaces: BTreeMap<String, PathBuf>,
    /// Pod IPs, first the primary.
    pub ips: Vec<String>,
    /// The CNI network the pod was added to; a DEL is owed while this is set.
    pub cni_network: Option<String>,
    /// `<pod_dir>/shm` is a tmpfs mount of ours.
    pub shm_mounted: bool,
    /// Cgroup parent given by the kubelet (or our default).
    pub cgroup_parent: String,
}

impl SandboxRecord {
    pub fn name(&self) -> String {
        let m = self.config.metadata.clone().unwrap_or_default();
        format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: cri::ContainerConfig,
    pub created_at: i64,
    /// The image as the request named it.
    pub image: String,
    /// The image ID: the config digest, `sha256:…`.
    pub image_id: String,
    /// `name@digest`, what kubelet shows as imageID.
    pub image_ref: String,
    pub log_path: PathBuf,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub user: Option<cri::ContainerUser>,
    /// Set once the monitor that ran the container is gone (sandbox stopped).
    pub final_status: Option<ContainerStatus>,
    /// Image-store roots made for the container's image volumes (`mounts[].image`), removed with it.
    #[serde(default)]
    pub image_roots: Vec<String>,
}

impl ContainerRecord {
    pub fn name(&self) -> String {
        let m = self.config.metadata.clone().unwrap_or_default();
        format!("{}_{}_{}", self.sandbox_id, m.name, m.attempt)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What writing a record must survive.
///
/// Every write is atomic (a temp file renamed into place), so a reader or a restart after SIGKILL sees the old
/// record or the new one. The fsyncs that a power loss asks for (the file, then its directory for the rename)
/// cost about 0.4 ms here, and pod startup writes several records, so they are spent only where a lost record
/// would leave something behind after a reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Survive {
    /// The agent's crash. For records of this boot's processes, namespaces and mounts, which a power loss takes
    /// away with the record; the writable roots a lost record named are removed at start as orphans.
    Crash,
    /// A power loss as well. For what outlives the boot: an IP lease owed a CNI DEL, an exit status.
    PowerLoss,
}

/// The two record tables, in memory and on disk.
pub struct Records {
    dir: PathBuf,
    pub sandboxes: Mutex<HashMap<String, SandboxRecord>>,
    pub containers: Mutex<HashMap<String, ContainerRecord>>,
    /// Serialises operations on one sandbox (and its containers) without blocking other pods.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Records {
    pub fn load(dir: &Path) -> Result<Records, RecordError> {
        let sandboxes = load_dir::<SandboxRecord>(&dir.join("sandboxes"))?;
        let containers = load_dir::<ContainerRecord>(&dir.join("containers"))?;
        Ok(Records {
            dir: dir.to_owned(),
            sandboxes: Mutex::new(sandboxes.into_iter().map(|s| (s.id.clone(), s)).collect()),
            containers: Mutex::new(containers.into_iter().map(|c| (c.id.clone(), c)).collect()),
            locks: Mutex::new(HashMap::new()),
        })
    }

    pub fn lock_for(&self, sandbox_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .unwrap()
            .entry(sandbox_id.to_owned())
            .or_default()
            .clone()
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        self.sandboxes.lock().unwrap().get(id).cloned()
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.containers.lock().unwrap().get(id).cloned()
    }

    /// The sandbox `id` names: the full ID or an unambiguous prefix (crictl's short IDs).
    pub fn find_sandbox(&self, id: &str) -> Option<SandboxRecord> {
        let map = self.sandboxes.lock().unwrap();
        find_prefix(&map, id).cloned()
    }

    pub fn find_container(&self, id: &str) -> Option<ContainerRecord> {
        let map = self.containers.lock().unwrap();
        find_prefix(&map, id).cloned()
    }

    /// Every sandbox, oldest first.
    pub fn all_sandboxes(&self) -> Vec<SandboxRecord> {
        let mut v: Vec<_> = self.sandboxes.lock().unwrap().values().cloned().collect();
        v.sort_by_key(|s| s.created_at);
        v
    }

    pub fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        let mut v: Vec<_> = self
            .containers
            .lock()
            .unwrap()
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .cloned()
            .collect();
        v.sort_by_key(|c| c.created_at);
        v
    }

    pub fn put_sandbox(&self, rec: &SandboxRecord, survive: Survive) -> Result<(), RecordError> {
        self.put("sandboxes", &self.sandboxes, &rec.id, rec, survive)
    }

    pub fn put_container(
        &self,
        rec: &ContainerRecord,
        survive: Survive,
    ) -> Result<(), RecordError> {
        self.put("containers", &self.containers, &rec.id, rec, survive)
    }

    /// Writes the record to disk, then into the table: a reader never sees a record that a crash would lose.
    fn put<T: Serialize + Clone>(
        &self,
        table: &str,
        map: &Mutex<HashMap<String, T>>,
        id: &str,
        rec: &T,
        survive: Survive,
    ) -> Result<(), RecordError> {
        write_json(&self.dir.join(table), id, rec, survive)?;
        map.lock().unwrap().insert(id.to_owned(), rec.clone());
        Ok(())
    }

    pub fn remove_sandbox(&self, id: &str) -> Result<(), RecordError> {
        remove_json(&self.dir.join("sandboxes"), id)?;
        self.sandboxes.lock().unwrap().remove(id);
        self.locks.lock().unwrap().remove(id);
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<(), RecordError> {
        remove_json(&self.dir.join("containers"), id)?;
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }
}

fn find_prefix<'a, T>(map: &'a HashMap<String, T>, id: &str) -> Option<&'a T> {
    if id.is_empty() {
        return None;
    }
    if let Some(v) = map.get(id) {
        return Some(v);
    }
    let mut hits = map.iter().filter(|(k, _)| k.starts_with(id));
    match (hits.next(), hits.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

fn load_dir<T: DeserializeOwned>(dir: &Path) -> Result<Vec<T>, RecordError> {
    let io = |source| RecordError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io)? {
        let path = e.map_err(io)?.path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {}
            // A temp file from a write that a SIGKILL interrupted: the rename never happened.
            Some("tmp") => {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            _ => continue,
        }
        let bytes = std::fs::read(&path).map_err(|source| RecordError::Io {
            path: path.clone(),
            source,
        })?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => out.push(v),
            // One unreadable record must not take every other pod down with it.
            Err(e) => tracing::error!(path = %path.display(), "skipping unreadable record: {e}"),
        }
    }
    Ok(out)
}

fn write_json<T: Serialize>(
    dir: &Path,
    id: &str,
    value: &T,
    survive: Survive,
) -> Result<(), RecordError> {
    let path = dir.join(format!("{id}.json"));
    let tmp = dir.join(format!("{id}.tmp"));
    let io = |source| RecordError::Io {
        path: path.clone(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| RecordError::Json {
        path: path.clone(),
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    if survive == Survive::PowerLoss {
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, &path).map_err(io)?;
    if survive == Survive::PowerLoss {
        // The rename is an entry of the directory: durable only once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn remove_json(dir: &Path, id: &str) -> Result<(), RecordError> {
    let path = dir.join(format!("{id}.json"));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RecordError::Io { path, source }),
    }
}

/// A new random 64-hex-digit ID, as containerd and CRI-O make them.
pub fn new_id() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("getrandom(2)");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
