//! The pod's containers as the monitor keeps them: create through the runtime library, start, signal, stop,
//! delete, and the exit records written when the reaper collects an init.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use basalt_runtime::{Container, CreateOptions};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

use crate::logs::{CriLog, Stream};
use crate::pin::Pins;
use crate::protocol::{ContainerStatus, CreateRequest, ErrorKind, Response, State};
use crate::stdio::{self, AsyncPipe, Output, Pipes};

/// How long a SIGKILLed process may take to be reaped before the monitor gives up waiting.
const KILL_WAIT: Duration = Duration::from_secs(30);

pub(crate) type Shared = Rc<RefCell<Monitor>>;

/// A failed request: the reply's error kind and a message naming the container or field.
#[derive(Debug)]
pub(crate) struct Fail {
    pub kind: ErrorKind,
    pub message: String,
}

impl Fail {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Fail {
        Fail {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(id: &str) -> Fail {
        Fail::new(ErrorKind::NotFound, format!("container {id:?} not found"))
    }
    pub fn internal(message: impl Into<String>) -> Fail {
        Fail::new(ErrorKind::Internal, message)
    }
    pub fn into_response(self) -> Response {
        Response::Error {
            kind: self.kind,
            message: self.message,
        }
    }
}

impl From<basalt_runtime::Error> for Fail {
    fn from(e: basalt_runtime::Error) -> Fail {
        use basalt_runtime::Error as E;
        let kind = match &e {
            E::NotFound(_) => ErrorKind::NotFound,
            E::Exists(_) => ErrorKind::AlreadyExists,
            E::InvalidId(_) | E::Spec { .. } => ErrorKind::InvalidArgument,
            // A bad spec found inside the container (a missing program, a bad cwd): the request's fault.
            E::Init(m) if m.starts_with("config.json:") => ErrorKind::InvalidArgument,
            E::WrongState { .. } | E::NotRunning(_) => ErrorKind::FailedPrecondition,
            _ => ErrorKind::Internal,
        };
        Fail::new(kind, e.to_string())
    }
}

impl From<basalt_cgroups::Error> for Fail {
    fn from(e: basalt_cgroups::Error) -> Fail {
        basalt_runtime::Error::from(e).into()
    }
}

/// Whose exit a reaped pid is.
pub(crate) enum Waiter {
    Container(String),
    Exec(oneshot::Sender<i32>),
}

pub(crate) struct Monitor {
    pub sandbox_id: String,
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
    pub containers: BTreeMap<String, Ctr>,
    pub waiters: HashMap<i32, Waiter>,
    pub pins: Pins,
}

pub(crate) struct Ctr {
    pub rt: Container,
    pub status: ContainerStatus,
    /// Becomes true when the init has been reaped and its exit recorded.
    pub exited: watch::Sender<bool>,
    pub output: Rc<RefCell<Output>>,
    /// The pipe to the container's stdin, or its pty master when it has a terminal and stdin.
    pub stdin: Option<Rc<AsyncPipe>>,
    /// The pty master, with a terminal.
    pub tty: Option<Rc<AsyncPipe>>,
    pub stdin_once: bool,
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The runtime library forks and then allocates in the child: that is only sound with one thread.
pub(crate) fn debug_assert_single_threaded() {
    debug_assert_eq!(
        std::fs::read_dir("/proc/self/task").map(|d| d.count()).ok(),
        Some(1),
        "the monitor must stay single-threaded when it calls into the runtime"
    );
}

impl Monitor {
    pub fn get(&self, id: &str) -> Result<&Ctr, Fail> {
        self.containers.get(id).ok_or_else(|| Fail::not_found(id))
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Ctr, Fail> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| Fail::not_found(id))
    }

    pub fn running(&self, id: &str, action: &str) -> Result<&Ctr, Fail> {
        let c = self.get(id)?;
        if c.status.state != State::Running {
            return Err(Fail::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "container {id:?} is {}: {action} needs it running",
                    state_name(c.status.state)
                ),
            ));
        }
        Ok(c)
    }

    /// Writes the container's status where an agent finds it even without this monitor.
    fn persist(&self, status: &ContainerStatus) {
        let path = crate::paths::status(&self.dir, &status.id);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().expect("status file has a parent"))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(status)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::error!(id = %status.id, error = %e, "persisting the container status");
        }
    }

    pub fn create(&mut self, req: CreateRequest) -> Result<i32, Fail> {
        let id = req.id.clone();
        if self.containers.contains_key(&id) {
            return Err(Fail::new(
                ErrorKind::AlreadyExists,
                format!("container {id:?} already exists"),
            ));
        }
        let terminal = bundle_terminal(&req.bundle)?;
        if terminal != req.tty {
            return Err(Fail::new(
                ErrorKind::InvalidArgument,
                format!(
                    "tty: {} for container {id:?}, but its bundle's process.terminal is {terminal}",
                    req.tty
                ),
            ));
        }
        // A log file this request created goes again if the container cannot be made.
        let new_log = req.log_path.clone().filter(|p| !p.exists());
        let log = CriLog::open(req.log_path.as_deref()).map_err(|e| {
            Fail::new(
                ErrorKind::InvalidArgument,
                format!(
                    "log_path {:?}: {e}",
                    req.log_path.as_deref().unwrap_or(Path::new(""))
                ),
            )
        })?;
        let pipes = if req.tty {
            None
        } else {
            Some(Pipes::new(req.stdin).map_err(|e| Fail::internal(format!("pipes: {e}")))?)
        };
        let opts = CreateOptions {
            root: self.runtime_root.clone(),
            id: id.clone(),
            bundle: req.bundle.clone(),
            keep_console: req.tty,
            stdio: pipes.as_ref().map(Pipes::child_fds),
            ..Default::default()
        };
        debug_assert_single_threaded();
        let mut rt = Container::create(&opts).inspect_err(|_| {
            if let Some(p) = &new_log {
                let _ = std::fs::remove_file(p);
            }
        })?;
        let pid = rt.pid();
        // Registered before anything awaits, so the reaper cannot miss an early exit.
        self.waiters.insert(pid, Waiter::Container(id.clone()));

        let (stdin, tty, output) = match pipes {
            Some(p) => {
                let output = Rc::new(RefCell::new(Output::new(log, 2)));
                tokio::task::spawn_local(stdio::pump(
                    Rc::new(p.stdout),
                    Stream::Stdout,
                    output.clone(),
                ));
                tokio::task::spawn_local(stdio::pump(
                    Rc::new(p.stderr),
                    Stream::Stderr,
                    output.clone(),
                ));
                (p.stdin.map(Rc::new), None, output)
            }
            None => {
                let master = rt
                    .console
                    .take()
                    .ok_or_else(|| Fail::internal(format!("container {id:?}: no pty master")))?;
                let master = Rc::new(
                    AsyncPipe::new(master).map_err(|e| Fail::internal(format!("pty: {e}")))?,
                );
                let output = Rc::new(RefCell::new(Output::new(log, 1)));
                tokio::task::spawn_local(stdio::pump(
                    master.clone(),
                    Stream::Stdout,
                    output.clone(),
                ));
                (req.stdin.then(|| master.clone()), Some(master), output)
            }
        };
        let status = ContainerStatus {
            id: id.clone(),
            state: State::Created,
            pid,
            created_at: now_ns(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            oom_killed: false,
            cgroup_path: rt.state.cgroup_path.clone(),
        };
        self.persist(&status);
        self.containers.insert(
            id.clone(),
            Ctr {
                rt,
                status,
                exited: watch::channel(false).0,
                output,
                stdin,
                tty,
                stdin_once: req.stdin_once,
            },
        );
        tracing::info!(%id, pid, "created");
        Ok(pid)
    }

    pub fn start(&mut self, id: &str) -> Result<(), Fail> {
        let c = self.get_mut(id)?;
        if c.status.state != State::Created {
            return Err(Fail::new(
                ErrorKind::FailedPrecondition,
                format!(
                    "container {id:?} is {}: start needs it created",
                    state_name(c.status.state)
                ),
            ));
        }
        c.rt.start()?;
        c.status.state = State::Running;
        c.status.started_at = now_ns();
        let status = c.status.clone();
        self.persist(&status);
        tracing::info!(%id, "started");
        Ok(())
    }

    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<(), Fail> {
        let sig = Signal::try_from(signal).map_err(|_| {
            Fail::new(
                ErrorKind::InvalidArgument,
                format!("signal {signal} is not a valid signal"),
            )
        })?;
        let c = self.get(id)?;
        if c.status.state == State::Exited {
            return Err(Fail::new(
                ErrorKind::FailedPrecondition,
                format!("container {id:?} has exited: kill needs it created or running"),
            ));
        }
        // Until it is reaped (which only this process does) the init's pid cannot be reused.
        c.rt.kill(sig, all)?;
        Ok(())
    }

    pub fn update(&self, id: &str, resources: serde_json::Value) -> Result<(), Fail> {
        let c = self.get(id)?;
        if c.status.state == State::Exited {
            return Err(Fail::new(
                ErrorKind::FailedPrecondition,
                format!("container {id:?} has exited: update needs it created or running"),
            ));
        }
        let r: oci_spec::runtime::LinuxResources = serde_json::from_value(resources)
            .map_err(|e| Fail::new(ErrorKind::InvalidArgument, format!("resources: {e}")))?;
        basalt_cgroups::Cgroup::new(&c.status.cgroup_path)?.set(&r)?;
        Ok(())
    }

    pub fn reopen_log(&self, id: &str) -> Result<(), Fail> {
        let c = self.get(id)?;
        c.output
            .borrow_mut()
            .log
            .reopen()
            .map_err(|e| Fail::internal(format!("reopening the log of container {id:?}: {e}")))
    }

    /// Collects every exited child and records what it was.
    pub fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return,
                Err(nix::Error::EINTR) | Ok(_) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waitpid");
                    return;
                }
            };
            match self.waiters.remove(&pid.as_raw()) {
                Some(Waiter::Container(id)) => self.record_exit(&id, code),
                Some(Waiter::Exec(tx)) => {
                    let _ = tx.send(code);
                }
                // Orphans of the containers, adopted by us as subreaper.
                None => tracing::debug!(pid = pid.as_raw(), code, "reaped"),
            }
        }
    }

    fn record_exit(&mut self, id: &str, code: i32) {
        let Some(c) = self.containers.get_mut(id) else {
            return;
        };
        c.status.state = State::Exited;
        c.status.exit_code = code;
        c.status.finished_at = now_ns();
        c.status.oom_killed = basalt_cgroups::Cgroup::new(&c.status.cgroup_path)
            .map(|cg| cg.oom_kills() > 0)
            .unwrap_or(false);
        c.exited.send_replace(true);
        let status = c.status.clone();
        self.persist(&status);
        tracing::info!(%id, code, oom_killed = status.oom_killed, "exited");
    }

    /// Removes an exited container's runtime state, cgroup and records.
    fn remove(&mut self, id: &str) -> Result<(), Fail> {
        debug_assert_single_threaded();
        match Container::load(&self.runtime_root, id) {
            Ok(c) => c.delete(true)?,
            Err(basalt_runtime::Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.containers.remove(id);
        let _ = std::fs::remove_dir_all(self.dir.join("containers").join(id));
        tracing::info!(%id, "deleted");
        Ok(())
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Created => "created",
        State::Running => "running",
        State::Exited => "exited",
    }
}

/// `process.terminal` of a bundle, read before the runtime loads it (to check it matches the request).
fn bundle_terminal(bundle: &Path) -> Result<bool, Fail> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| {
        Fail::new(
            ErrorKind::InvalidArgument,
            format!("bundle {}: {e}", path.display()),
        )
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Fail::new(
            ErrorKind::InvalidArgument,
            format!("bundle {}: {e}", path.display()),
        )
    })?;
    Ok(v["process"]["terminal"].as_bool().unwrap_or(false))
}

/// Waits until the container's exit is recorded, at most `limit`. True if it was.
async fn wait_exit(mut rx: watch::Receiver<bool>, limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, rx.wait_for(|e| *e)).await,
        Ok(Ok(_))
    )
}

fn exit_watch(m: &Shared, id: &str) -> Result<watch::Receiver<bool>, Fail> {
    Ok(m.borrow().get(id)?.exited.subscribe())
}

/// `signal`, then SIGKILL to the whole cgroup after `timeout`; returns once the exit is recorded.
pub(crate) async fn stop(
    m: &Shared,
    id: &str,
    timeout: Duration,
    signal: Option<i32>,
) -> Result<(), Fail> {
    let rx = exit_watch(m, id)?;
    if *rx.borrow() {
        return Ok(());
    }
    let signal = signal.unwrap_or(libc::SIGTERM);
    if !timeout.is_zero() && signal != libc::SIGKILL {
        m.borrow().kill(id, signal, false)?;
        if wait_exit(rx.clone(), timeout).await {
            return Ok(());
        }
        tracing::info!(%id, ?timeout, "did not stop in time: SIGKILL");
    }
    force_kill(m, id, rx).await
}

async fn force_kill(m: &Shared, id: &str, rx: watch::Receiver<bool>) -> Result<(), Fail> {
    {
        let m = m.borrow();
        let c = m.get(id)?;
        if !*rx.borrow() {
            let _ = kill(Pid::from_raw(c.status.pid), Signal::SIGKILL);
            let _ = c.rt.kill(Signal::SIGKILL, true);
        }
    }
    if wait_exit(rx, KILL_WAIT).await {
        Ok(())
    } else {
        Err(Fail::internal(format!(
            "container {id:?} did not exit within {KILL_WAIT:?} of SIGKILL"
        )))
    }
}

pub(crate) async fn delete(m: &Shared, id: &str) -> Result<(), Fail> {
    let rx = exit_watch(m, id)?;
    if !*rx.borrow() {
        force_kill(m, id, rx).await?;
    }
    m.borrow_mut().remove(id)
}

/// Kills and removes every container and the pinned namespaces, and the monitor's directory.
pub(crate) async fn shutdown(m: &Shared) {
    let ids: Vec<String> = m.borrow().containers.keys().cloned().collect();
    for id in &ids {
        if let Err(e) = delete(m, id).await {
            tracing::error!(%id, error = %e.message, "shutdown: deleting");
        }
    }
    let mut m = m.borrow_mut();
    m.pins.remove();
    let dir = m.dir.clone();
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::error!(dir = %dir.display(), error = %e, "shutdown: removing the directory");
    }
}
