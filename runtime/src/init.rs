//! The container's init process, from clone(2) to execve: runs inside the new namespaces and reports to the
//! parent over the sync channel, so every failure reaches the caller as an error message.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::LinuxNamespaceType;

use crate::devices;
use crate::error::{Error, Result};
use crate::mounts::{self, MountContext};
use crate::namespaces::Plan;
use crate::process;
use crate::spec::Bundle;
use crate::sync::Channel;

/// Everything the init process needs, prepared by the parent before clone.
pub struct InitContext {
    pub bundle: Bundle,
    pub plan: Plan,
    pub fifo: PathBuf,
    pub no_pivot: bool,
    pub cgroup_v1: Vec<(String, PathBuf)>,
    pub cgroup_v2: bool,
    pub preserve_fds: i32,
    pub id: String,
    /// `linux.seccomp`, compiled by the parent (so a bad profile fails before anything runs).
    pub seccomp: Option<Seccomp>,
    /// Descriptors (in the parent's table, which the clone copied) to become stdin, stdout and stderr.
    pub stdio: Option<[std::os::fd::RawFd; 3]>,
    /// Idmapped bind-mount sources by destination (descriptors the parent holds until the init is ready).
    pub idmapped: Vec<(PathBuf, std::os::fd::RawFd)>,
    /// Namespaces to join (opened by the parent, which holds them until the init is ready).
    pub joins: Vec<(LinuxNamespaceType, std::os::fd::RawFd)>,
}

/// A compiled filter and how to install it.
#[derive(Clone)]
pub struct Seccomp {
    pub program: Vec<basalt_seccomp::SockFilter>,
    pub flags: u32,
    pub listener_path: Option<PathBuf>,
    pub listener_metadata: String,
    pub container_id: String,
}

impl Seccomp {
    pub fn compile(
        spec: &oci_spec::runtime::Spec,
        id: &str,
        cache_dir: &Path,
    ) -> Result<Option<Seccomp>> {
        let Some(oci) = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) else {
            return Ok(None);
        };
        let (profile, program) = basalt_seccomp::compile_cached(oci, cache_dir)
            .map_err(|e| Error::spec("linux.seccomp", e.to_string()))?;
        Ok(Some(Seccomp {
            program,
            flags: profile.filter_flags,
            listener_path: profile.listener_path.clone(),
            listener_metadata: profile.listener_metadata.clone().unwrap_or_default(),
            container_id: id.to_owned(),
        }))
    }

    /// Loads the filter; a notify listener goes to `listenerPath` with the container's state.
    pub fn install(&self) -> Result<()> {
        let fd = basalt_seccomp::install(&self.program, self.flags)
            .map_err(|e| Error::Init(format!("seccomp: {e}")))?;
        if let (Some(fd), Some(path)) = (fd, &self.listener_path) {
            let state = serde_json::json!({"ociVersion": "1.2.0", "id": self.container_id, "status": "creating",
                "pid": std::process::id()});
            basalt_seccomp::notify::send_listener_fd(
                path,
                std::os::fd::AsFd::as_fd(&fd),
                std::process::id() as i32,
                &self.listener_metadata,
                &state,
            )
            .map_err(|e| Error::Init(format!("seccomp listener {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// Entry point in the cloned child. Never returns on success (the process becomes the container's program).
pub fn run(ctx: &InitContext, chan: &Channel) -> isize {
    let err = match setup(ctx, chan) {
        Ok(e) => e,
        Err(e) => e,
    };
    let _ = chan.send(&format!("error:{err}"));
    1
}

/// Does the whole setup; the Ok value is the error execve returned, since success never comes back.
fn setup(ctx: &InitContext, chan: &Channel) -> Result<Error> {
    process::reset_signal_dispositions();
    if let Some(fds) = ctx.stdio {
        process::set_stdio(fds)?;
    }
    // "go <pid>": our pid as the host sees it, for the state that hooks receive.
    let host_pid: i32 = match chan.recv()? {
        Some(m) if m.starts_with("go ") => m[3..].parse().unwrap_or(0),
        other => {
            return Err(Error::Init(format!(
                "unexpected message from parent: {other:?}"
            )))
        }
    };
    let hook_state = |status: &str| {
        crate::hooks::state(&ctx.bundle.spec, &ctx.id, host_pid, &ctx.bundle.dir, status)
    };
    let spec = &ctx.bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::spec("process", "missing"))?;
    let linux = spec.linux().clone().unwrap_or_default();

    if ctx.plan.new_userns() {
        // Mapped now by the parent: become root of the new user namespace.
        nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .map_err(Error::sys("setresgid 0 in the user namespace"))?;
        nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .map_err(Error::sys("setresuid 0 in the user namespace"))?;
    }
    crate::namespaces::join_in_child(&ctx.joins)?;
    if ctx.plan.clone_flags.contains(CloneFlags::CLONE_NEWCGROUP) {
        // After the parent moved us into our cgroup, so that it becomes the namespace's root.
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(Error::sys("unshare cgroup namespace"))?;
    }

    // The filesystem. Without a mount namespace of the container's own (a namespace type not listed is the
    // runtime's, per the runtime spec) its mounts are made in the caller's, under the rootfs, and the
    // process is chrooted there, as runc does; `delete` takes those mounts away again (runc leaves them).
    let own_mounts = ctx.plan.has(LinuxNamespaceType::Mount);
    // Held as O_PATH across pivot_root: the FIFO lives in the state dir, outside the new root.
    let fifo = open(&ctx.fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(Error::sys(format!("opening {}", ctx.fifo.display())))?;
    // SAFETY: open returned a fresh descriptor that we own.
    let fifo = unsafe { OwnedFd::from_raw_fd(fifo) };
    build_rootfs(ctx, &linux, own_mounts)?;
    crate::hooks::run(
        spec,
        crate::hooks::Phase::CreateContainer,
        &hook_state("creating"),
    )?;
    if own_mounts {
        mounts::switch_root(&ctx.bundle.rootfs, ctx.no_pivot)?;
    } else {
        // Never pivot_root in the caller's namespace: that would move every process's root there.
        nix::unistd::chroot(&ctx.bundle.rootfs).map_err(Error::sys(format!(
            "chroot {}",
            ctx.bundle.rootfs.display()
        )))?;
        nix::unistd::chdir("/").map_err(Error::sys("chdir /"))?;
    }

    if process.terminal().unwrap_or(false) {
        // The pty comes from the container's own devpts; the master goes to the parent, which passes it on
        // to the console socket; the slave becomes /dev/console and our stdio.
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let (master, slave, slave_path) = crate::tty::open_pty(size)?;
        // Never over the host's own /dev/console.
        if own_mounts {
            let console = Path::new("/dev/console");
            mounts::ensure_target(console, false)?;
            nix::mount::mount(
                Some(slave_path.as_str()),
                console,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(Error::sys("binding the pty onto /dev/console"))?;
        }
        crate::tty::send_fd(chan.0.as_raw_fd(), "pty", master.as_raw_fd())?;
        drop(master);
        crate::tty::make_controlling(&slave)?;
    }

    if ctx.plan.has(LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(Error::sys(format!("sethostname {h:?}")))?;
        }
        if let Some(d) = spec.domainname() {
            // SAFETY: valid pointer and length.
            if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
                return Err(Error::io(format!("setdomainname {d:?}"))(
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|e| {
            Error::spec(format!("linux.sysctl[{key:?}]"), format!("{value:?}: {e}"))
        })?;
    }
    if own_mounts {
        mounts::readonly_paths(linux.readonly_paths().as_deref().unwrap_or_default())?;
        mounts::mask_paths(linux.masked_paths().as_deref().unwrap_or_default())?;
        if spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false)
        {
            mounts::readonly_root()?;
        }
    }

    // The process.
    process::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    if let Some(adj) = process.oom_score_adj() {
        process::set_oom_score_adj(adj)?;
    }
    if let Some(sched) = process.scheduler() {
        process::set_scheduler(sched)?;
    }
    if let Some(io) = process.io_priority() {
        process::set_io_priority(io)?;
    }
    if let Some(profile) = process.apparmor_profile() {
        if !profile.is_empty() {
            process::set_apparmor(profile)?;
        }
    }
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it before dropping capabilities
    // (as runc does); with it, as late as possible, so the filter only has to allow execve.
    if !nnp {
        if let Some(s) = &ctx.seccomp {
            s.install()?;
        }
    }
    process::set_identity(process)?;
    if nnp {
        process::set_no_new_privs()?;
    }
    nix::unistd::chdir(process.cwd())
        .map_err(|e| Error::spec("process.cwd", format!("{:?}: {e}", process.cwd())))?;
    close_extra_fds(3 + ctx.preserve_fds)?;

    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    // Look the program up now, so a missing one fails `create` (as runc does), not silently after `start`.
    if process::resolve_program(&args[0], &env).is_none() {
        return Err(Error::spec(
            "process.args[0]",
            format!("{:?}: executable file not found in $PATH", args[0]),
        ));
    }

    chan.send("ready")?;
    // Blocks until `start` opens the FIFO for reading.
    let reopen = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let w = open(
        reopen.as_str(),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(Error::sys("opening the exec FIFO"))?;
    // SAFETY: fresh descriptor from open.
    let w = unsafe { OwnedFd::from_raw_fd(w) };
    nix::unistd::write(&w, b"0").map_err(Error::sys("writing the exec FIFO"))?;
    drop(w);
    drop(fifo);
    crate::hooks::run(
        spec,
        crate::hooks::Phase::StartContainer,
        &hook_state("created"),
    )?;
    if nnp {
        if let Some(s) = &ctx.seccomp {
            s.install()?;
        }
    }
    Ok(process::exec(&args, &env))
}

/// The container's root filesystem: propagation (in a mount namespace of its own only: in the caller's it
/// would change the host's), `mounts`, device nodes.
fn build_rootfs(ctx: &InitContext, linux: &oci_spec::runtime::Linux, own_ns: bool) -> Result<()> {
    let spec = &ctx.bundle.spec;
    let rootfs = &ctx.bundle.rootfs;
    if own_ns {
        mounts::prepare_rootfs(rootfs, linux.rootfs_propagation().as_deref())?;
    }
    let mctx = MountContext {
        new_netns: ctx.plan.has(LinuxNamespaceType::Network),
        cgroup_v1: &ctx.cgroup_v1,
        cgroup_v2: ctx.cgroup_v2,
        idmapped: &ctx.idmapped,
    };
    let mut dev_is_tmpfs = false;
    for m in spec.mounts().iter().flatten() {
        mounts::mount_entry(rootfs, m, &mctx)?;
        if m.destination() == Path::new("/dev") && m.typ().as_deref() == Some("tmpfs") {
            dev_is_tmpfs = true;
        }
    }
    let bind_devices = ctx.plan.has(LinuxNamespaceType::User);
    if dev_is_tmpfs {
        devices::create(rootfs, &devices::defaults(), bind_devices)?;
    }
    let extra: Vec<_> = linux
        .devices()
        .iter()
        .flatten()
        .map(devices::from_spec)
        .collect();
    devices::create(rootfs, &extra, bind_devices)?;
    if dev_is_tmpfs {
        devices::symlinks(rootfs)?;
    }
    Ok(())
}

/// Marks every descriptor from `from` up close-on-exec, so only stdio and `--preserve-fds` reach the program.
fn close_extra_fds(from: i32) -> Result<()> {
    let dir = std::fs::read_dir("/proc/self/fd").map_err(Error::io("/proc/self/fd"))?;
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            std::str::from_utf8(OsStr::new(&e.file_name()).as_bytes())
                .ok()?
                .parse()
                .ok()
        })
        .filter(|fd| *fd >= from)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; an already-closed one just fails.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}
