//! `exec`: a new process inside a running container. It joins the init's namespaces and cgroup and takes the
//! same identity rules as the container's own process (capabilities, user, no_new_privs, AppArmor).

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::Process;

use crate::cgroup::Cgroup;
use crate::error::{Error, Result};
use crate::init::Seccomp;
use crate::process;
use crate::state::State;
use crate::sync;

/// Namespaces in the order they are joined: user first (it grants the rights for the rest), mount last.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// How the exec'd process ended, or that it was left running (`--detach`).
pub enum Outcome {
    Exited(u8),
    Detached(i32),
}

/// How a library caller (the pod monitor) wants a process exec'd.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecOptions<'a> {
    /// Where to send the pty master when `process.terminal` is set.
    pub console_socket: Option<&'a std::path::Path>,
    /// Return once the program runs instead of waiting for it; its pid is in [`Outcome::Detached`].
    pub detach: bool,
    /// Descriptors that become the process's stdin, stdout and stderr instead of the caller's own 0-2.
    pub stdio: Option<[RawFd; 3]>,
}

/// What [`exec_with`] hands back: the outcome, and the pty master of a detached terminal process exec'd
/// without a console socket (the caller then owns the terminal).
pub struct Exec {
    pub outcome: Outcome,
    pub console: Option<OwnedFd>,
}

/// Runs `process` in the container whose state is `state`. Must be called from a single-threaded process.
pub fn exec(
    state: &State,
    process: &Process,
    seccomp: Option<&Seccomp>,
    console_socket: Option<&std::path::Path>,
    detach: bool,
) -> Result<Outcome> {
    if process.terminal().unwrap_or(false) && console_socket.is_none() && detach {
        return Err(Error::spec(
            "process.terminal",
            "true with --detach needs --console-socket to hand the terminal to",
        ));
    }
    let opts = ExecOptions {
        console_socket,
        detach,
        stdio: None,
    };
    exec_with(state, process, seccomp, &opts).map(|e| e.outcome)
}

/// [`exec`] for library callers: see [`ExecOptions`]. Must be called from a single-threaded process.
pub fn exec_with(
    state: &State,
    process: &Process,
    seccomp: Option<&Seccomp>,
    opts: &ExecOptions,
) -> Result<Exec> {
    let (console_socket, detach) = (opts.console_socket, opts.detach);
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::spec("process.args", "must name a program to run"));
    }
    // Open every namespace of the init that differs from ours before forking, while /proc is ours.
    let mut joins: Vec<(OwnedFd, CloneFlags, &str)> = Vec::new();
    for (name, flag) in NAMESPACES {
        let theirs = format!("/proc/{}/ns/{name}", state.pid);
        let same = match (
            std::fs::metadata(&theirs),
            std::fs::metadata(format!("/proc/self/ns/{name}")),
        ) {
            (Ok(a), Ok(b)) => {
                std::os::unix::fs::MetadataExt::ino(&a) == std::os::unix::fs::MetadataExt::ino(&b)
            }
            (Err(e), _) => return Err(Error::io(&theirs)(e)),
            _ => true,
        };
        if !same {
            let f = std::fs::File::open(&theirs).map_err(Error::io(&theirs))?;
            joins.push((f.into(), *flag, name));
        }
    }
    // The init's root directory, to chroot into after joining its mount namespace: setns leaves us at
    // the namespace's root mount, which is the container's root only when pivot_root made it so (not when
    // the host itself runs chrooted, as in the test VM).
    let root_path = format!("/proc/{}/root", state.pid);
    let root = std::fs::File::open(&root_path).map_err(Error::io(&root_path))?;
    let (parent_end, child_end) = sync::pair()?;
    // SAFETY: the CLI is single-threaded; the child only joins, forks and execs or exits.
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            drop(parent_end);
            process::reset_signal_dispositions();
            let code = match opts
                .stdio
                .map_or(Ok(()), process::set_stdio)
                .and_then(|()| {
                    intermediate(state, process, seccomp, &joins, &root, &child_end, detach)
                }) {
                Ok(code) => code,
                Err(e) => {
                    let _ = child_end.send(&format!("error:{e}"));
                    1
                }
            };
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            drop(joins);
            // "pid:N" first (the process inside), then EOF once it exec'd, or an error.
            let mut inner_pid = 0;
            let mut proxy = None;
            loop {
                let (m, fd) =
                    crate::tty::recv_with_fd(std::os::fd::AsRawFd::as_raw_fd(&parent_end.0))?;
                if m.is_empty() {
                    break;
                }
                if let Some(master) = fd {
                    match console_socket {
                        Some(socket) => crate::tty::send_to_console_socket(socket, &master)?,
                        None => proxy = Some(master),
                    }
                } else if let Some(p) = m.strip_prefix("pid:") {
                    inner_pid = p.parse().unwrap_or(0);
                } else if let Some(e) = m.strip_prefix("error:") {
                    let _ = waitpid(child, None);
                    return Err(Error::Init(
                        e.strip_prefix("container init: ").unwrap_or(e).to_owned(),
                    ));
                }
            }
            if detach {
                wait_code(child);
                return Ok(Exec {
                    outcome: Outcome::Detached(inner_pid),
                    console: proxy,
                });
            }
            if let Some(master) = proxy {
                crate::tty::proxy(master)?;
            }
            let code = wait_code(child);
            Ok(Exec {
                outcome: Outcome::Exited(code),
                console: None,
            })
        }
    }
}

fn wait_code(pid: Pid) -> u8 {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, c)) => return c as u8,
            Ok(WaitStatus::Signaled(_, s, _)) => return 128u8.wrapping_add(s as u8),
            Err(nix::Error::EINTR) | Ok(_) => continue,
            Err(_) => return 255,
        }
    }
}

/// In the forked child: join cgroup and namespaces, then fork once more so the program is inside the PID
/// namespace (setns on a PID namespace only applies to children). Returns the exit code to leave with.
fn intermediate(
    state: &State,
    process: &Process,
    seccomp: Option<&Seccomp>,
    joins: &[(OwnedFd, CloneFlags, &str)],
    root: &std::fs::File,
    chan: &sync::Channel,
    detach: bool,
) -> Result<i32> {
    Cgroup::new(&state.cgroup_path)?.add_process(std::process::id() as i32)?;
    for (fd, flag, name) in joins {
        setns(fd.as_fd(), *flag).map_err(Error::sys(format!(
            "joining the container's {name} namespace"
        )))?;
    }
    if joins
        .iter()
        .any(|(_, flag, _)| *flag == CloneFlags::CLONE_NEWNS)
    {
        nix::unistd::fchdir(root.as_raw_fd())
            .map_err(Error::sys("fchdir to the container's root"))?;
        nix::unistd::chroot(".").map_err(Error::sys("chroot to the container's root"))?;
    }
    // SAFETY: still single-threaded.
    match unsafe { fork() }.map_err(Error::sys("fork"))? {
        ForkResult::Child => {
            let e = match prepare(process, seccomp, chan) {
                Ok(()) => {
                    let args = process.args().clone().unwrap_or_default();
                    let env = process.env().clone().unwrap_or_default();
                    process::exec(&args, &env)
                }
                Err(e) => e,
            };
            let _ = chan.send(&format!("error:{e}"));
            // SAFETY: as above.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            chan.send(&format!("pid:{}", child.as_raw()))?;
            // Our copy of the channel must not outlive this point: the parent reads EOF as "the program was
            // exec'd" (the grandchild's copy is close-on-exec) and only then proxies a terminal. This process
            // leaves through _exit, so the descriptor is never closed twice.
            // SAFETY: closing a descriptor this process owns and no longer uses.
            unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(&chan.0)) };
            if detach {
                return Ok(0);
            }
            Ok(wait_code(child) as i32)
        }
    }
}

fn prepare(p: &Process, seccomp: Option<&Seccomp>, chan: &sync::Channel) -> Result<()> {
    if p.terminal().unwrap_or(false) {
        let size = p
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let (master, slave, _) = crate::tty::open_pty(size)?;
        crate::tty::send_fd(
            std::os::fd::AsRawFd::as_raw_fd(&chan.0),
            "pty",
            std::os::fd::AsRawFd::as_raw_fd(&master),
        )?;
        drop(master);
        crate::tty::make_controlling(&slave)?;
    }
    let cwd = p.cwd();
    nix::unistd::chdir(cwd.as_path())
        .map_err(|e| Error::spec("process.cwd", format!("{cwd:?}: {e}")))?;
    process::set_rlimits(p.rlimits().as_deref().unwrap_or_default())?;
    if let Some(sched) = p.scheduler() {
        process::set_scheduler(sched)?;
    }
    if let Some(io) = p.io_priority() {
        process::set_io_priority(io)?;
    }
    if let Some(profile) = p.apparmor_profile() {
        if !profile.is_empty() {
            process::set_apparmor(profile)?;
        }
    }
    let args = p.args().clone().unwrap_or_default();
    let env = p.env().clone().unwrap_or_default();
    if process::resolve_program(&args[0], &env).is_none() {
        return Err(Error::spec(
            "process.args[0]",
            format!("{:?}: executable file not found in $PATH", args[0]),
        ));
    }
    // The container's filter applies to exec'd processes too; same ordering rule as in init.
    let nnp = p.no_new_privileges().unwrap_or(false);
    if let (false, Some(s)) = (nnp, seccomp) {
        s.install()?;
    }
    process::set_identity(p)?;
    if nnp {
        process::set_no_new_privs()?;
        if let Some(s) = seccomp {
            s.install()?;
        }
    }
    Ok(())
}
