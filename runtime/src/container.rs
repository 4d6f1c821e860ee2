//! Container lifecycle as the CLI and the pod monitor see it: create, start, kill, delete, state, list.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use crate::cgroup::{self, Cgroup};
use crate::error::{Error, Result};
use crate::init::{self, InitContext};
use crate::namespaces::Plan;
use crate::spec::Bundle;
use crate::state::{self, State, StateDir, Status};
use crate::sync;

/// How to create a container (the flags of `runc create`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub root: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub systemd_cgroup: bool,
    pub preserve_fds: i32,
    /// Where to send the pty master when `process.terminal` is set.
    pub console_socket: Option<PathBuf>,
    /// With `process.terminal` and no console socket: keep the pty master in [`Container::console`] for the
    /// caller to proxy (`run` in the foreground, as runc does).
    pub keep_console: bool,
    /// Descriptors that become the init's stdin, stdout and stderr instead of the caller's own 0-2 (the pod
    /// monitor hands its pipes over this way). The caller keeps ownership; they are duplicated in the child.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
}

pub struct Container {
    dir: StateDir,
    pub state: State,
    /// The parent's end of the sync channel while this process created the container: after `start` it
    /// reports an exec failure, or EOF once the program runs.
    chan: Option<sync::Channel>,
    /// The pty master, when created with `keep_console`.
    pub console: Option<std::os::fd::OwnedFd>,
}

impl Container {
    /// Clones the init process into its namespaces and cgroup and leaves it waiting on the exec FIFO.
    /// On any failure everything made so far (process, cgroup, state dir) is removed again.
    pub fn create(opts: &CreateOptions) -> Result<Container> {
        let bundle = Bundle::load(&opts.bundle)?;
        let dir = StateDir::create(&opts.root, &opts.id)?;
        let mut cleanup = Cleanup {
            dir: Some(dir),
            cgroup: None,
            pid: None,
            mounts_under: None,
        };
        // On error, `cleanup` undoes everything when it drops.
        let (state, chan, console) = Self::create_inner(opts, bundle, &mut cleanup)?;
        let dir = cleanup.dir.take().expect("state dir");
        cleanup.cgroup = None;
        cleanup.pid = None;
        cleanup.mounts_under = None;
        Ok(Container {
            dir,
            state,
            chan: Some(chan),
            console,
        })
    }

    fn create_inner(
        opts: &CreateOptions,
        bundle: Bundle,
        cleanup: &mut Cleanup,
    ) -> Result<(State, sync::Channel, Option<std::os::fd::OwnedFd>)> {
        let dir = cleanup.dir.as_ref().expect("state dir");
        let spec = &bundle.spec;
        let plan = Plan::from_spec(spec);
        let own_mount_ns = plan.has(LinuxNamespaceType::Mount);
        if !own_mount_ns {
            check_without_mount_namespace(spec, opts.no_pivot)?;
            // The init mounts in our namespace: whatever it got to is undone if creation fails.
            cleanup.mounts_under = Some(bundle.rootfs.clone());
        }
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        match (terminal, &opts.console_socket) {
            (true, None) if !opts.keep_console => {
                return Err(Error::spec(
                    "process.terminal",
                    "true needs --console-socket to hand the pty to",
                ))
            }
            (false, Some(_)) => {
                return Err(Error::spec(
                    "process.terminal",
                    "false, but --console-socket was given",
                ))
            }
            _ => {}
        }
        nix::unistd::mkfifo(&dir.fifo(), Mode::from_bits_truncate(0o622))
            .map_err(Error::sys(format!("mkfifo {}", dir.fifo().display())))?;
        // Writable by the container's user (whoever it is), whatever our umask took away.
        std::fs::set_permissions(
            dir.fifo(),
            std::os::unix::fs::PermissionsExt::from_mode(0o622),
        )
        .map_err(Error::io(dir.fifo()))?;

        let linux = spec.linux().clone().unwrap_or_default();
        let cg_path = cgroup::resolve_path(
            linux.cgroups_path().as_ref().and_then(|p| p.to_str()),
            &opts.id,
            opts.systemd_cgroup,
        )?;
        let cg = Cgroup::create(&cg_path)?;
        let v2 = cgroup::unified();
        let seccomp = init::Seccomp::compile(spec, &opts.id, &opts.root.join(".seccomp-cache"))?;
        let idmapped = crate::mounts::open_idmapped(
            spec.mounts().as_deref().unwrap_or_default(),
            plan.joined_userns(),
        )?;
        let joins = plan.open_for_child()?;
        let ctx = InitContext {
            seccomp,
            cgroup_v1: cg.v1_dirs(),
            cgroup_v2: v2,
            bundle: bundle.clone(),
            plan: plan.clone(),
            fifo: dir.fifo(),
            no_pivot: opts.no_pivot,
            preserve_fds: opts.preserve_fds,
            id: opts.id.clone(),
            stdio: opts.stdio,
            idmapped: idmapped
                .iter()
                .map(|(d, fd)| (d.clone(), fd.as_raw_fd()))
                .collect(),
            joins: joins.iter().map(|(t, f)| (*t, f.as_raw_fd())).collect(),
        };
        cleanup.cgroup = Some(cg);

        let offsets: Vec<(String, i64, u32)> = linux
            .time_offsets()
            .iter()
            .flatten()
            .map(|(clock, o)| {
                (
                    clock.clone(),
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0),
                )
            })
            .collect();
        let children_ns = plan.enter_for_children(&offsets)?;
        let (parent_end, child_end) = sync::pair()?;
        let flags = plan.flags_for_clone();
        // On cgroup v2 the init is born in its cgroup (clone3 with CLONE_INTO_CGROUP, Linux 5.7+, as crun
        // does): moving a process in afterwards costs an RCU grace period in the kernel (~15 ms, the largest
        // single cost of `run`).
        let joined_userns = plan.joined_userns();
        let born_in_cgroup = if v2 && joined_userns.is_none() {
            let cg = cleanup.cgroup.as_ref().expect("cgroup");
            match clone_into_cgroup(flags, &cg.v2_dir()) {
                Ok(Some(pid)) => Some(pid),
                Ok(None) => {
                    let code = init::run(&ctx, &child_end);
                    // SAFETY: in the child: leave without running the parent's destructors.
                    unsafe { libc::_exit(code as i32) }
                }
                // Older kernels: fall back to clone and a move into the cgroup.
                Err(e) => {
                    tracing::debug!("clone3 into the cgroup: {e}; moving the init in after clone");
                    None
                }
            }
        } else {
            None
        };
        let pid = match (born_in_cgroup, joined_userns) {
            (Some(pid), _) => pid,
            (None, Some(userns)) => clone_in_userns(userns, flags, || {
                let code = init::run(&ctx, &child_end);
                // SAFETY: in the child: leave without running the parent's destructors.
                unsafe { libc::_exit(code as i32) }
            })?,
            (None, None) => {
                let mut stack = vec![0u8; 1 << 20];
                // SAFETY: the CLI is single-threaded when it clones; the child only runs `init::run`, which
                // ends in execve or _exit, and never returns into the parent's frames.
                unsafe {
                    nix::sched::clone(
                        Box::new(|| {
                            let code = init::run(&ctx, &child_end);
                            libc::_exit(code as i32)
                        }),
                        &mut stack,
                        flags,
                        Some(libc::SIGCHLD),
                    )
                }
                .map_err(Error::sys("clone"))?
            }
        };
        drop(children_ns);
        drop(child_end);
        cleanup.pid = Some(pid.as_raw());

        if plan.new_userns() {
            plan.write_id_maps(pid.as_raw())?;
        }
        let cg = cleanup.cgroup.as_mut().expect("cgroup");
        if born_in_cgroup.is_some() {
            cg.set_resources(linux.resources().as_ref())?;
        } else {
            cg.apply(pid.as_raw(), linux.resources().as_ref())?;
        }
        let creating = crate::hooks::state(spec, &opts.id, pid.as_raw(), &bundle.dir, "creating");
        #[allow(deprecated)]
        for phase in [
            crate::hooks::Phase::Prestart,
            crate::hooks::Phase::CreateRuntime,
        ] {
            crate::hooks::run(spec, phase, &creating)?;
        }
        parent_end.send(&format!("go {}", pid.as_raw()))?;
        let mut console = None;
        loop {
            let (m, fd) = crate::tty::recv_with_fd(parent_end.0.as_raw_fd())?;
            match (m.as_str(), fd) {
                ("pty", Some(master)) => match &opts.console_socket {
                    Some(socket) => crate::tty::send_to_console_socket(socket, &master)?,
                    None => console = Some(master),
                },
                ("ready", _) => break,
                ("", _) => return Err(Error::Init("init exited before it was ready".into())),
                (m, _) => {
                    let m = m.strip_prefix("error:").unwrap_or(m);
                    return Err(Error::Init(
                        m.strip_prefix("container init: ").unwrap_or(m).to_owned(),
                    ));
                }
            }
        }

        let start_time = state::proc_start_time(pid.as_raw())
            .map(|(t, _)| t)
            .unwrap_or(0);
        let state = State {
            oci_version: spec.version().clone(),
            id: opts.id.clone(),
            pid: pid.as_raw(),
            status: Status::Created,
            bundle: bundle.dir.clone(),
            rootfs: bundle.rootfs.clone(),
            created: state::now_rfc3339(),
            owner: String::new(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            init_start_time: start_time,
            cgroup_path: cg_path,
            hooks: spec.hooks().clone(),
            mounts_in_caller_ns: !own_mount_ns,
        };
        dir.write(&state)?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid.as_raw())?;
        }
        Ok((state, parent_end, console))
    }

    pub fn load(root: &Path, id: &str) -> Result<Container> {
        let dir = StateDir::open(root, id)?;
        let mut state = dir.read()?;
        state.status = current_status(&dir, &state);
        Ok(Container {
            dir,
            state,
            chan: None,
            console: None,
        })
    }

    pub fn list(root: &Path) -> Result<Vec<State>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(root)(e)),
        };
        for e in entries.flatten() {
            if let Some(id) = e.file_name().to_str() {
                if let Ok(c) = Container::load(root, id) {
                    out.push(c.state);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// Lets the init process exec the container's program.
    pub fn start(&mut self) -> Result<()> {
        if self.state.status != Status::Created {
            return Err(self.wrong("start", "created"));
        }
        let fifo = self.dir.fifo();
        // Non-blocking, then poll: a blocking open would hang forever if the init died before opening its end.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .map_err(Error::io(&fifo))?;
        loop {
            let mut fds = [nix::poll::PollFd::new(
                f.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)) {
                Ok(0) | Err(nix::Error::EINTR) => {}
                Ok(_) => {
                    let mut buf = [0u8; 1];
                    match std::io::Read::read(&mut &f, &mut buf) {
                        Ok(1) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        // EOF: the writer went away without a byte.
                        _ => return Err(self.init_died()),
                    }
                }
                Err(e) => return Err(Error::sys("polling the exec FIFO")(e)),
            }
            if !state::init_alive(&self.state) {
                return Err(self.init_died());
            }
        }
        let _ = std::fs::remove_file(&fifo);
        // If we created it, the init tells us whether execve worked: EOF means it did.
        if let Some(chan) = self.chan.take() {
            if let Some(m) = chan.recv()? {
                let m = m.strip_prefix("error:").unwrap_or(&m);
                return Err(Error::Init(
                    m.strip_prefix("container init: ").unwrap_or(m).to_owned(),
                ));
            }
        }
        self.state.status = Status::Running;
        if let Some(h) = &self.state.hooks {
            let hooks = crate::hooks::of_hooks(h, crate::hooks::Phase::Poststart);
            crate::hooks::run_logged(
                &hooks,
                crate::hooks::Phase::Poststart,
                &self.state.for_hook("running"),
            );
        }
        Ok(())
    }

    /// Signals the init, or with `all` every process in the container's cgroup. As runc's: `--all` works on a
    /// stopped container too, where it reaches what the init left behind (containerd's shim kills those
    /// children after the init exits, and waits on it), and succeeds when the cgroup is already gone.
    pub fn kill(&self, signal: Signal, all: bool) -> Result<()> {
        if all {
            let cg = Cgroup::new(&self.state.cgroup_path)?;
            if self.state.status == Status::Stopped && !cg.exists() {
                return Ok(());
            }
            for pid in cg.pids() {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            // A frozen process cannot act on a signal; thaw so SIGKILL/SIGTERM take effect.
            if self.state.status == Status::Paused {
                cg.freeze(false)?;
            }
            return Ok(());
        }
        if self.state.status == Status::Stopped {
            // Never the pid of a stopped container: it may be someone else's by now.
            return Err(Error::NotRunning(self.state.id.clone()));
        }
        kill(Pid::from_raw(self.state.pid), signal)
            .map_err(Error::sys(format!("kill {} {signal}", self.state.pid)))
    }

    pub fn pause(&mut self, frozen: bool) -> Result<()> {
        let (needs, want) = if frozen {
            ("running", Status::Running)
        } else {
            ("paused", Status::Paused)
        };
        if self.state.status != want {
            return Err(self.wrong(if frozen { "pause" } else { "resume" }, needs));
        }
        Ok(Cgroup::new(&self.state.cgroup_path)?.freeze(frozen)?)
    }

    /// Removes a stopped container (or, with `force`, kills it first): its processes, cgroup and state dir.
    pub fn delete(self, force: bool) -> Result<()> {
        if self.state.status != Status::Stopped {
            if !force {
                return Err(self.wrong("delete", "stopped (or --force)"));
            }
            let mut cg = Cgroup::new(&self.state.cgroup_path)?;
            if self.state.status == Status::Paused {
                let _ = cg.freeze(false);
            }
            let _ = kill(Pid::from_raw(self.state.pid), Signal::SIGKILL);
            for pid in cg.pids() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            wait_gone(&self.state, Duration::from_secs(10));
            cg.destroy()?;
        } else {
            let mut cg = Cgroup::new(&self.state.cgroup_path)?;
            // Processes the init left behind (without a pid namespace) die with the container.
            for pid in cg.pids() {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            cg.destroy()?;
        }
        let poststop = self
            .state
            .hooks
            .as_ref()
            .map(|h| crate::hooks::of_hooks(h, crate::hooks::Phase::Poststop))
            .unwrap_or_default();
        let stopped = self.state.for_hook("stopped");
        if self.state.mounts_in_caller_ns {
            crate::mounts::unmount_under(&self.state.rootfs);
        }
        self.dir.remove()?;
        crate::hooks::run_logged(&poststop, crate::hooks::Phase::Poststop, &stopped);
        Ok(())
    }

    /// The init's own last word if we still hold the channel, else a generic error.
    fn init_died(&mut self) -> Error {
        if let Some(Ok(Some(m))) = self.chan.take().map(|c| c.recv()) {
            let m = m.strip_prefix("error:").unwrap_or(&m);
            return Error::Init(m.strip_prefix("container init: ").unwrap_or(m).to_owned());
        }
        Error::Init("the container's init exited before start".into())
    }

    fn wrong(&self, action: &'static str, needs: &'static str) -> Error {
        Error::WrongState {
            id: self.state.id.clone(),
            status: self.state.status,
            action,
            needs,
        }
    }

    pub fn pid(&self) -> i32 {
        self.state.pid
    }
}

/// A namespace type not listed is the runtime's own (runtime spec): without a mount namespace the mounts are
/// made in the caller's, under the rootfs. What would change the caller's own mounts beyond that (masked
/// and read-only paths, a read-only root remount, --no-pivot's move of the root) is refused, naming the
/// field, as runc refuses it.
fn check_without_mount_namespace(spec: &oci_spec::runtime::Spec, no_pivot: bool) -> Result<()> {
    let linux = spec.linux().clone().unwrap_or_default();
    let why = "needs a mount namespace of the container's own (linux.namespaces lists none)";
    if linux.masked_paths().as_ref().is_some_and(|p| !p.is_empty()) {
        return Err(Error::spec("linux.maskedPaths", why));
    }
    if linux
        .readonly_paths()
        .as_ref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(Error::spec("linux.readonlyPaths", why));
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        return Err(Error::spec("root.readonly", why));
    }
    if no_pivot {
        return Err(Error::spec("--no-pivot", why));
    }
    Ok(())
}

fn current_status(dir: &StateDir, state: &State) -> Status {
    if !state::init_alive(state) {
        return Status::Stopped;
    }
    if dir.fifo().exists() {
        return Status::Created;
    }
    if is_frozen(&state.cgroup_path) {
        return Status::Paused;
    }
    Status::Running
}

fn is_frozen(cgroup_path: &str) -> bool {
    let rel = cgroup_path.trim_start_matches('/');
    if cgroup::unified() {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(rel).join("cgroup.freeze"))
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
    } else {
        std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/freezer")
                .join(rel)
                .join("freezer.state"),
        )
        .map(|s| s.trim() == "FROZEN")
        .unwrap_or(false)
    }
}

/// Waits (bounded) for the init to be gone after SIGKILL; it may be someone else's child, so poll /proc.
fn wait_gone(state: &State, limit: Duration) {
    let deadline = Instant::now() + limit;
    while state::init_alive(state) && Instant::now() < deadline {
        // Reap it if it is ours (foreground `run`), otherwise its parent will.
        let _ = nix::sys::wait::waitpid(
            Pid::from_raw(state.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

/// Undoes a half-made container when creation fails.
struct Cleanup {
    dir: Option<StateDir>,
    cgroup: Option<Cgroup>,
    pid: Option<i32>,
    /// A rootfs the init mounted under in our own namespace (a config without a mount namespace).
    mounts_under: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        }
        if let Some(rootfs) = &self.mounts_under {
            crate::mounts::unmount_under(rootfs);
        }
        if let Some(cg) = &mut self.cgroup {
            let _ = cg.destroy();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.remove();
        }
    }
}

/// Clones `child` into new namespaces (`flags`) that belong to the existing user namespace at `userns`,
/// as runc's nsexec does: an intermediate process joins the user namespace first and clones from inside it,
/// with `CLONE_PARENT` so that the init is still our child (we reap it). We stay in our own user namespace,
/// so cgroups and the state directory are still written as the host's root.
fn clone_in_userns(
    userns: &Path,
    flags: nix::sched::CloneFlags,
    child: impl FnMut() -> isize,
) -> Result<Pid> {
    use nix::sched::CloneFlags;
    use nix::unistd::{ForkResult, Gid, Uid};
    let ns = std::fs::File::open(userns).map_err(Error::io(userns))?;
    let (ours, theirs) = sync::pair()?;
    // SAFETY: the callers are single-threaded when they create a container (as for clone below); the
    // intermediate only joins, clones and leaves through _exit.
    match unsafe { nix::unistd::fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(ours);
            let mut child = child;
            let r = (|| -> Result<Pid> {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWUSER).map_err(|e| {
                    Error::Sys {
                        what: format!("joining the user namespace at {}", userns.display()),
                        source: e,
                    }
                })?;
                // Root of the joined namespace (setns keeps our host ids, which it does not map).
                nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
                    .map_err(Error::sys("setresgid 0 in the joined user namespace"))?;
                nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
                    .map_err(Error::sys("setresuid 0 in the joined user namespace"))?;
                let mut stack = vec![0u8; 1 << 20];
                // SAFETY: single-threaded; the child runs `child`, which ends in execve or _exit.
                unsafe {
                    nix::sched::clone(
                        Box::new(&mut child),
                        &mut stack,
                        flags | CloneFlags::CLONE_PARENT,
                        Some(libc::SIGCHLD),
                    )
                }
                .map_err(Error::sys("clone in the joined user namespace"))
            })();
            // The pid clone gave us is in our PID namespace, which may be the pod's: the parent learns its
            // own view of it from a pidfd.
            let sent = r.and_then(|pid| {
                // SAFETY: plain syscall; a new descriptor or -1.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
                if fd < 0 {
                    return Err(Error::io("pidfd_open")(std::io::Error::last_os_error()));
                }
                crate::tty::send_fd(theirs.0.as_raw_fd(), "pidfd", fd as i32)
            });
            if let Err(e) = sent {
                let _ = theirs.send(&format!("error:{e}"));
            }
            // SAFETY: leaving the forked intermediate without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child: mid } => {
            drop(theirs);
            // The init inherited the other end too (until it execs), so no EOF comes: the intermediate's
            // one message is queued once it has exited.
            let _ = nix::sys::wait::waitpid(mid, None);
            let (msg, fd) = crate::tty::recv_with_fd(ours.0.as_raw_fd())?;
            let Some(pidfd) = fd else {
                let e = msg.strip_prefix("error:").unwrap_or(&msg);
                return Err(Error::Init(format!(
                    "cloning in the joined user namespace: {e}"
                )));
            };
            let info = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
            let text = std::fs::read_to_string(&info).map_err(Error::io(&info))?;
            text.lines()
                .find_map(|l| l.strip_prefix("Pid:"))
                .and_then(|v| v.trim().parse().ok())
                .filter(|p: &i32| *p > 0)
                .map(Pid::from_raw)
                .ok_or_else(|| Error::Init(format!("no pid in {info}: {text:?}")))
        }
    }
}

/// clone3 with the given namespace flags and `CLONE_INTO_CGROUP` into the cgroup directory `dir`, fork-like
/// (the child continues on a copy of our stack). `Ok(None)` in the child, `Ok(Some(pid))` in the parent; an
/// error when the kernel lacks clone3 or the flag, before any child exists.
fn clone_into_cgroup(flags: nix::sched::CloneFlags, dir: &Path) -> std::io::Result<Option<Pid>> {
    #[repr(C)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let cgroup = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let mut args = CloneArgs {
        flags: flags.bits() as u32 as u64 | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.as_raw_fd() as u64,
    };
    // SAFETY: like fork: the CLI is single-threaded when it clones, and the child (which gets a copy of our
    // memory, without CLONE_VM) only runs `init::run` and leaves through execve or _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ => Err(std::io::Error::last_os_error()),
    }
}
