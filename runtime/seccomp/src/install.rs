//! Handing a compiled program to the kernel with seccomp(2).

use std::os::fd::{FromRawFd, OwnedFd};

use crate::bpf::SockFilter;
use crate::error::{Error, Result};
use crate::profile::SECCOMP_FILTER_FLAG_NEW_LISTENER;

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;

#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

/// Installs `program` on the calling thread (all threads with TSYNC). The caller must have set
/// no_new_privs or hold CAP_SYS_ADMIN. Returns the user-notification fd when `flags` asks for a listener.
pub fn install(program: &[SockFilter], flags: u32) -> Result<Option<OwnedFd>> {
    let len = libc::c_ushort::try_from(program.len())
        .ok()
        .filter(|&l| l > 0 && (l as usize) <= crate::bpf::MAX_INSNS)
        .ok_or(Error::TooLarge(program.len()))?;
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the filter.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_uint,
            &prog as *const SockFprog,
        )
    };
    if rc < 0 {
        return Err(Error::sys("seccomp(SECCOMP_SET_MODE_FILTER)"));
    }
    if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER the kernel returns a fresh fd that nothing else owns.
        Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as i32) }))
    } else {
        Ok(None)
    }
}

/// Sets no_new_privs, which an unprivileged process needs before [`install`].
pub fn set_no_new_privs() -> Result<()> {
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::sys("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    Ok(())
}
