//! Talking to pod monitors: start one for a new sandbox, send it a request, clean up after a dead one.
//! One short connection per request: after an agent restart there is nothing to re-establish.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use basalt_shim::client::ClientError;
use basalt_shim::protocol::{ContainerStatus, Request, Response};
use tokio::sync::watch;
use tonic::Status;

use crate::status;

/// What a new monitor is told.
pub struct Spawn {
    pub sandbox_id: String,
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
    pub pin: Vec<basalt_shim::Namespace>,
    pub hostname: Option<String>,
    pub sysctls: Vec<(String, String)>,
    /// With `Namespace::User` pinned: its uid and gid mappings (container id, host id, size).
    pub uid_map: Vec<(u32, u32, u32)>,
    pub gid_map: Vec<(u32, u32, u32)>,
}

/// Starts the monitor and waits until its namespaces are pinned and it listens.
pub async fn spawn(s: Spawn) -> Result<(i32, BTreeMap<String, PathBuf>), Status> {
    let program =
        std::env::current_exe().map_err(|e| status::internal("finding our own binary", e))?;
    let sock = socket(&s.dir);
    // sockaddr_un holds 108 bytes including the terminating NUL.
    if sock.as_os_str().len() > 107 {
        return Err(Status::failed_precondition(format!(
            "run-dir {:?} is too long: the pod monitor's socket {} would not fit a unix socket address (107 bytes)",
            s.dir.parent().and_then(|p| p.parent()).unwrap_or(&s.dir),
            sock.display()
        )));
    }
    if let Some(parent) = s.dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| status::internal("creating the monitors' dir", e))?;
    }
    tokio::task::spawn_blocking(move || {
        let opts = basalt_shim::SpawnOptions {
            program,
            pin: s.pin,
            hostname: s.hostname,
            sysctls: s.sysctls,
            uid_map: s.uid_map,
            gid_map: s.gid_map,
            ..basalt_shim::SpawnOptions::new(s.sandbox_id, s.dir, s.runtime_root)
        };
        basalt_shim::spawn(&opts)
    })
    .await
    .map_err(status::from_join)?
    .map(|sp| (sp.pid, sp.namespaces.into_iter().collect()))
    .map_err(|e| Status::invalid_argument(format!("starting the pod monitor: {e}")))
}

/// How long CreateContainer waits for its monitor's move: about a hundred times what it takes.
const JOIN_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Monitors on their way into the monitors' cgroup (`agent.monitor-cgroup`; empty: they stay in the agent's),
/// by sandbox id.
///
/// Why a move started as soon as a monitor runs and not waited for by RunPodSandbox: on cgroup v1 the first
/// move into any cgroup after a quiet spell waits for an RCU grace period (measured at 10–15 ms on the
/// development VM), while a move within about one grace period of another does not wait. Started alongside the
/// sandbox's CNI ADD, this move pays that wait for the container's own move into its cgroup a few milliseconds
/// later, and CreateContainer prepares the root filesystem and the spec meanwhile. CreateContainer waits for it
/// (up to [`JOIN_PATIENCE`]) before the monitor makes anything, so the move is not left half done. Pure
/// cgroup v2 hosts clone containers straight into their cgroup and wait for nothing.
#[derive(Default)]
pub struct Joins(Arc<Mutex<HashMap<String, watch::Receiver<()>>>>);

impl Joins {
    /// Starts moving the monitor `pid` of `sandbox_id` on a blocking thread. A failure is logged, not
    /// returned: the pod works the same from the agent's cgroup.
    pub fn start(&self, sandbox_id: &str, cgroup: &str, pid: i32) {
        if cgroup.is_empty() {
            return;
        }
        // Dropped when the move is over, which wakes the waiters.
        let (done, waiting) = watch::channel(());
        self.lock().insert(sandbox_id.to_owned(), waiting);
        let (joins, id, cgroup) = (self.0.clone(), sandbox_id.to_owned(), cgroup.to_owned());
        tokio::task::spawn_blocking(move || {
            let joined =
                basalt_cgroups::Cgroup::create(&cgroup).and_then(|mut cg| cg.add_process(pid));
            if let Err(e) = joined {
                tracing::warn!(pid, %cgroup, "moving the pod monitor into its cgroup: {e}");
            }
            joins.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            drop(done);
        });
    }

    /// Returns once the move of `sandbox_id`'s monitor is over (at once when none is under way), or after
    /// [`JOIN_PATIENCE`]: a move the kernel holds up must not hold the pod up with it.
    pub async fn wait(&self, sandbox_id: &str) {
        let waiting = self.lock().get(sandbox_id).cloned();
        if let Some(mut waiting) = waiting {
            // Err: the sender is gone, which is what it signals.
            if tokio::time::timeout(JOIN_PATIENCE, waiting.changed())
                .await
                .is_err()
            {
                tracing::warn!(
                    sandbox = %sandbox_id,
                    "the pod monitor's move into its cgroup takes over {JOIN_PATIENCE:?}; going on without it"
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<()>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub fn socket(dir: &Path) -> PathBuf {
    basalt_shim::paths::socket(dir)
}

/// Sends one request; an error answer becomes the matching gRPC status.
pub async fn call(dir: &Path, req: Request) -> Result<Response, Status> {
    let sock = socket(dir);
    let mut client = basalt_shim::client::Client::connect(&sock)
        .await
        .map_err(|e| Status::unavailable(format!("pod monitor at {}: {e}", sock.display())))?;
    match client.call(req).await {
        Ok(Response::Error { kind, message }) | Err(ClientError::Remote { kind, message }) => {
            Err(status::from_shim(kind, message))
        }
        Ok(r) => Ok(r),
        Err(e) => Err(Status::unavailable(format!(
            "pod monitor at {}: {e}",
            sock.display()
        ))),
    }
}

pub async fn list(dir: &Path) -> Result<Vec<ContainerStatus>, Status> {
    match call(dir, Request::List).await? {
        Response::List { containers } => Ok(containers),
        r => Err(unexpected(r)),
    }
}

pub async fn status_of(dir: &Path, id: &str) -> Result<ContainerStatus, Status> {
    match call(dir, Request::Status { id: id.into() }).await? {
        Response::Status(s) => Ok(s),
        r => Err(unexpected(r)),
    }
}

/// The exit record a monitor left on disk for `id` (readable even when the monitor is gone).
pub fn exit_record(dir: &Path, id: &str) -> Option<ContainerStatus> {
    let bytes = std::fs::read(basalt_shim::paths::status(dir, id)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn unexpected(r: Response) -> Status {
    Status::internal(format!("pod monitor answered unexpectedly: {r:?}"))
}

/// Removes what a monitor leaves behind when it died instead of shutting down.
pub async fn cleanup(dir: PathBuf) -> Result<(), Status> {
    tokio::task::spawn_blocking(move || basalt_shim::cleanup(&dir))
        .await
        .map_err(status::from_join)?
        .map_err(|e| status::internal("cleaning up the pod monitor", e))
}
