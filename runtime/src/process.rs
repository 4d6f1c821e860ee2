//! The container process's identity and limits, applied in the init process just before exec: rlimits,
//! oom_score_adj, user and groups, capabilities, no_new_privs, AppArmor, then execve.

use std::collections::HashSet;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimit, Process};

use crate::error::{Error, Result};

/// Applies `rlimits`. Raising a hard limit needs CAP_SYS_RESOURCE; where the host withholds it, the limit is
/// clamped to what we may set and a warning is logged instead of failing the container.
pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<()> {
    for r in rlimits {
        let resource = rlimit_resource(&r.typ().to_string()).ok_or_else(|| {
            Error::spec(
                "process.rlimits[].type",
                format!("{} is not supported here", r.typ()),
            )
        })?;
        let want = libc::rlimit {
            rlim_cur: r.soft(),
            rlim_max: r.hard(),
        };
        // SAFETY: plain syscall on a valid struct.
        if unsafe { libc::setrlimit(resource, &want) } == 0 {
            continue;
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EPERM) {
            return Err(Error::io(format!("setrlimit {}", r.typ()))(err));
        }
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as above.
        unsafe { libc::getrlimit(resource, &mut cur) };
        let clamped = libc::rlimit {
            rlim_cur: r.soft().min(cur.rlim_max),
            rlim_max: r.hard().min(cur.rlim_max),
        };
        tracing::warn!(
            rlimit = %r.typ(), hard = r.hard(), allowed = cur.rlim_max,
            "cannot raise the hard limit without CAP_SYS_RESOURCE; clamping"
        );
        // SAFETY: as above.
        if unsafe { libc::setrlimit(resource, &clamped) } != 0 {
            return Err(Error::io(format!("setrlimit {}", r.typ()))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Writes oom_score_adj. Lowering it below the current value needs CAP_SYS_RESOURCE; without it the value is
/// clamped (as containerd's `restrict_oom_score_adj` does) and a warning logged.
pub fn set_oom_score_adj(value: i32) -> Result<()> {
    let path = "/proc/self/oom_score_adj";
    match std::fs::write(path, value.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) => {
            let current: i32 = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            tracing::warn!(
                requested = value,
                current,
                "cannot lower oom_score_adj without CAP_SYS_RESOURCE; clamping"
            );
            std::fs::write(path, value.max(current).to_string()).map_err(Error::io(path))
        }
        Err(e) => Err(Error::io(path)(e)),
    }
}

fn cap_set(names: Option<&oci_spec::runtime::Capabilities>) -> Result<CapsHashSet> {
    let mut out = HashSet::new();
    for c in names.into_iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match Capability::from_str(&name) {
            Ok(cap) => {
                out.insert(cap);
            }
            // A capability this kernel (or the caps crate) does not know cannot be granted; runc ignores
            // it with a warning too.
            Err(_) => tracing::warn!(capability = %name, "unknown capability ignored"),
        }
    }
    Ok(out)
}

/// Becomes the container's user with exactly the spec's capabilities: bounding set first (needs
/// CAP_SETPCAP), then uid/gid with capabilities kept across the switch, then the other four sets.
pub fn set_identity(p: &Process) -> Result<()> {
    let caps_spec = p.capabilities().as_ref();
    let bounding = cap_set(caps_spec.and_then(|c| c.bounding().as_ref()))?;
    for cap in caps::all() {
        if !bounding.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| Error::Init(format!("dropping {cap} from the bounding set: {e}")))?;
        }
    }
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };

    let user = p.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Some(umask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    // setgroups is refused in a user namespace whose setgroups file says deny; an empty list is then moot.
    if let Err(e) = nix::unistd::setgroups(&groups) {
        if !groups.is_empty() {
            return Err(Error::Sys {
                what: format!("setgroups {groups:?}"),
                source: e,
            });
        }
    }
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid).map_err(Error::sys(format!("setresgid {gid}")))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(Error::sys(format!("setresuid {uid}")))?;

    let set = |which: CapSet, names: Option<&oci_spec::runtime::Capabilities>| -> Result<()> {
        let wanted = cap_set(names)?;
        caps::set(None, which, &wanted)
            .map_err(|e| Error::Init(format!("setting {which:?} capabilities: {e}")))
    };
    // Effective first: the kernel refuses a permitted set that no longer covers the effective one.
    set(
        CapSet::Effective,
        caps_spec.and_then(|c| c.effective().as_ref()),
    )?;
    set(
        CapSet::Permitted,
        caps_spec.and_then(|c| c.permitted().as_ref()),
    )?;
    set(
        CapSet::Inheritable,
        caps_spec.and_then(|c| c.inheritable().as_ref()),
    )?;
    caps::clear(None, CapSet::Ambient).ok();
    // An ambient capability must also be permitted and inheritable; runc skips the others silently and so
    // must we, or runc's own default spec (ambient without inheritable) would not run.
    let permitted = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let inheritable = caps::read(None, CapSet::Inheritable).unwrap_or_default();
    for cap in cap_set(caps_spec.and_then(|c| c.ambient().as_ref()))? {
        if permitted.contains(&cap) && inheritable.contains(&cap) {
            caps::raise(None, CapSet::Ambient, cap)
                .map_err(|e| Error::Init(format!("raising ambient {cap}: {e}")))?;
        } else {
            tracing::debug!(capability = %cap, "ambient capability not raised: not permitted and inheritable");
        }
    }
    Ok(())
}

/// `process.scheduler` through sched_setattr(2), which covers every policy including SCHED_DEADLINE.
pub fn set_scheduler(s: &oci_spec::runtime::Scheduler) -> Result<()> {
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    let name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let policy = match name(serde_json::to_value(s.policy()).unwrap_or_default()).as_str() {
        "SCHED_OTHER" => 0,
        "SCHED_FIFO" => 1,
        "SCHED_RR" => 2,
        "SCHED_BATCH" => 3,
        "SCHED_ISO" => 4,
        "SCHED_IDLE" => 5,
        "SCHED_DEADLINE" => 6,
        other => {
            return Err(Error::spec(
                "process.scheduler.policy",
                format!("{other:?} is not supported"),
            ))
        }
    };
    let mut flags = 0u64;
    for f in s.flags().iter().flatten() {
        flags |= match name(serde_json::to_value(f).unwrap_or_default()).as_str() {
            "SCHED_FLAG_RESET_ON_FORK" => 0x01,
            "SCHED_FLAG_RECLAIM" => 0x02,
            "SCHED_FLAG_DL_OVERRUN" => 0x04,
            "SCHED_FLAG_KEEP_POLICY" => 0x08,
            "SCHED_FLAG_KEEP_PARAMS" => 0x10,
            "SCHED_FLAG_UTIL_CLAMP_MIN" => 0x20,
            "SCHED_FLAG_UTIL_CLAMP_MAX" => 0x40,
            other => {
                return Err(Error::spec(
                    "process.scheduler.flags",
                    format!("{other:?} is not supported"),
                ))
            }
        };
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr on ourselves with a correctly sized struct.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::spec(
            "process.scheduler",
            format!("sched_setattr: {e}"),
        ));
    }
    Ok(())
}

/// `process.ioPriority` through ioprio_set(2).
pub fn set_io_priority(p: &oci_spec::runtime::LinuxIOPriority) -> Result<()> {
    let class = match serde_json::to_value(p.class())
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .as_deref()
    {
        Some("IOPRIO_CLASS_RT") => 1i64,
        Some("IOPRIO_CLASS_BE") => 2,
        Some("IOPRIO_CLASS_IDLE") => 3,
        other => {
            return Err(Error::spec(
                "process.ioPriority.class",
                format!("{other:?} is not supported"),
            ))
        }
    };
    if !(0..8).contains(&p.priority()) {
        return Err(Error::spec(
            "process.ioPriority.priority",
            format!("{} is not in 0..=7", p.priority()),
        ));
    }
    const IOPRIO_WHO_PROCESS: i64 = 1;
    // SAFETY: plain syscall with integer arguments.
    if unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0,
            (class << 13) | p.priority(),
        )
    } != 0
    {
        let e = std::io::Error::last_os_error();
        return Err(Error::spec(
            "process.ioPriority",
            format!("ioprio_set: {e}"),
        ));
    }
    Ok(())
}

pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: prctl with constant arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::io("prctl(PR_SET_NO_NEW_PRIVS)")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Applies an AppArmor profile on exec; a clear error when AppArmor is off, since silently running
/// unconfined would be a security surprise.
pub fn set_apparmor(profile: &str) -> Result<()> {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false);
    if !enabled {
        return Err(Error::spec(
            "process.apparmorProfile",
            format!("{profile:?} requested but AppArmor is not enabled on this host"),
        ));
    }
    let attr = if Path::new("/proc/self/attr/apparmor/exec").exists() {
        "/proc/self/attr/apparmor/exec"
    } else {
        "/proc/self/attr/exec"
    };
    std::fs::write(attr, format!("exec {profile}")).map_err(Error::io(attr))
}

/// Puts back the default action of the signals a Rust caller ignores (SIGPIPE: std ignores it at startup),
/// since an ignored signal stays ignored across execve and the container's program expects the default.
pub fn reset_signal_dispositions() {
    // SAFETY: installing the default disposition is always valid.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Makes `fds` this process's stdin, stdout and stderr. Each is first copied above 2 (close-on-exec), so a
/// source that is itself one of 0-2 is not overwritten before it is used; the copies vanish at execve.
pub fn set_stdio(fds: [std::os::fd::RawFd; 3]) -> Result<()> {
    let mut copies = [0; 3];
    for (copy, fd) in copies.iter_mut().zip(fds) {
        // SAFETY: fcntl on a descriptor number; failure is reported.
        *copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if *copy < 0 {
            return Err(Error::io(format!("duplicating stdio descriptor {fd}"))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    for (target, copy) in copies.into_iter().enumerate() {
        nix::unistd::dup2(copy, target as i32).map_err(Error::sys("dup2 onto stdio"))?;
        // SAFETY: closing the temporary copy made above.
        unsafe { libc::close(copy) };
    }
    Ok(())
}

/// Finds `prog` on the container's PATH (from its env), as execvp would.
pub fn resolve_program(prog: &str, env: &[String]) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').map(|d| Path::new(d).join(prog)).find(|p| {
        std::fs::metadata(p)
            .map(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

/// Replaces this process with the container's program. Returns only on failure.
pub fn exec(args: &[String], env: &[String]) -> Error {
    let Some(program) = resolve_program(&args[0], env) else {
        return Error::spec(
            "process.args[0]",
            format!("{:?}: executable file not found in $PATH", args[0]),
        );
    };
    let to_c = |v: &[String]| {
        v.iter()
            .map(|s| CString::new(s.as_bytes()).unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let prog = CString::new(program.as_os_str().to_string_lossy().as_bytes()).unwrap_or_default();
    match nix::unistd::execve(&prog, &to_c(args), &to_c(env)) {
        Ok(never) => match never {},
        Err(e) => Error::Sys {
            what: format!("exec {}", program.display()),
            source: e,
        },
    }
}
