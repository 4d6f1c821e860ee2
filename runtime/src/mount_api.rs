//! The new mount API, where the old `mount(2)` cannot: idmapped mounts (a detached copy of a mount whose file
//! owners are seen through a user namespace's mapping: `open_tree` + `mount_setattr(MOUNT_ATTR_IDMAP)`, then
//! attached with `move_mount`) and recursive read-only. The runtime idmaps bind mounts of containers that join
//! a user namespace; the agent a pod's root layers.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// The syscalls' errors are errnos, as nix's are, so the runtime's mount code reports both kinds alike.
fn cstring(p: &Path) -> nix::Result<CString> {
    // A path with a NUL byte in it is what the kernel would call an invalid argument.
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| nix::errno::Errno::EINVAL)
}

/// A detached copy of the mount at `source` (with its submounts when `recursive`), idmapped through the user
/// namespace `userns`.
pub fn clone_idmapped(
    source: &Path,
    recursive: bool,
    userns: BorrowedFd<'_>,
) -> nix::Result<OwnedFd> {
    let c = cstring(source)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: a valid C string; the kernel returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: open_tree returned a fresh descriptor that we own.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut at = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        at |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: an empty C string, our descriptor and a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(tree)
}

/// Attaches a detached mount (from [`clone_idmapped`]) at `dest`.
pub fn attach(tree: BorrowedFd<'_>, dest: &Path) -> nix::Result<()> {
    let c = cstring(dest)?;
    // SAFETY: valid C strings and a descriptor of the caller's.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// Makes every mount under `path` read-only (`mount_setattr` with AT_RECURSIVE and MOUNT_ATTR_RDONLY).
pub fn set_recursive_readonly(path: &Path) -> nix::Result<()> {
    let c = cstring(path)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid C string and a mount_attr of the size passed; the kernel only reads them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}
