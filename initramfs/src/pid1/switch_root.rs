//! Moving the unpacked initramfs onto a tmpfs root before anything else runs.
//!
//! The kernel unpacks the initramfs into `rootfs`, the one mount that can never be unmounted or moved, so
//! `pivot_root(2)` fails (EINVAL) for every container started from it. Like LinuxKit, PID 1 copies the tree
//! onto a tmpfs, moves the tmpfs over `/`, chroots into it, empties the old rootfs (its memory is only freed
//! that way) and executes itself again: the same PID 1, now on a root that containers can pivot from.
//!
//! Nothing is deleted before the copy is complete and in place: a copy that fails (a full tmpfs) is thrown away
//! with its tmpfs and the node carries on from the untouched rootfs, showing the error.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// `statfs(2)` type of the kernel's rootfs when it is backed by ramfs (tmpfs-backed rootfs has TMPFS_MAGIC and
/// still cannot be pivoted away from, so both count).
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;
const NEW_ROOT: &str = "/.basalt-root";
/// Set across the re-execution: the new PID 1 never tries to switch again, whatever it detects.
const SWITCHED_ENV: &str = "BASALT_ROOT_SWITCHED";

/// True while `/` is the kernel's rootfs (not yet switched).
fn on_rootfs() -> bool {
    // SAFETY: statfs on a constant path into a local.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c"/".as_ptr(), &mut st) } != 0 {
        return false;
    }
    let magic = st.f_type as i64;
    // A tmpfs we mounted ourselves is a mount point of its own; rootfs is the one mount whose parent is itself.
    (magic == RAMFS_MAGIC || magic == TMPFS_MAGIC) && is_rootfs_mount()
}

/// The root's line in /proc/self/mountinfo names "rootfs" as its source only for the kernel's rootfs; /proc
/// is not mounted yet, so it is mounted for the check and unmounted again.
fn is_rootfs_mount() -> bool {
    let _ = std::fs::create_dir_all("/proc");
    // SAFETY: constant strings.
    let mounted = unsafe {
        libc::mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            0,
            std::ptr::null(),
        )
    } == 0;
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if mounted {
        // SAFETY: constant path.
        unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) };
    }
    info.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && l.contains(" - rootfs ")
    })
}

/// Switches to a tmpfs root and re-executes `/init`; returns (with the reason) only if that could not be done,
/// in which case PID 1 carries on from rootfs and containers will fail to start.
pub fn to_tmpfs(args: &[OsString]) -> Result<(), String> {
    if std::env::var_os(SWITCHED_ENV).is_some() {
        std::env::remove_var(SWITCHED_ENV);
        return Ok(());
    }
    if !on_rootfs() {
        return Ok(());
    }
    std::fs::create_dir_all(NEW_ROOT).map_err(|e| format!("{NEW_ROOT}: {e}"))?;
    let new_root = CString::new(NEW_ROOT).expect("no NUL");
    // Without size= a tmpfs takes at most half the RAM; rootfs had no limit, and pulled images live here when
    // no state disk is configured.
    // SAFETY: valid C strings.
    if unsafe {
        libc::mount(
            c"basalt-root".as_ptr(),
            new_root.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            c"mode=0755,size=90%".as_ptr().cast(),
        )
    } != 0
    {
        return Err(format!(
            "mount tmpfs on {NEW_ROOT}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if let Err(e) = copy_tree(Path::new("/"), Path::new(NEW_ROOT)) {
        // SAFETY: constant path; drops the partial copy with its tmpfs.
        unsafe { libc::umount2(new_root.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(NEW_ROOT);
        return Err(e);
    }
    // SAFETY: constant path; kept to empty the old root once it is out of sight.
    let old_root = unsafe {
        libc::open(
            c"/".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    std::env::set_current_dir(NEW_ROOT).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
    // SAFETY: valid C strings; moving our own tmpfs over / and entering it.
    unsafe {
        if libc::mount(
            c".".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        ) != 0
        {
            let e = std::io::Error::last_os_error();
            let _ = std::env::set_current_dir("/");
            libc::umount2(new_root.as_ptr(), libc::MNT_DETACH);
            libc::close(old_root);
            return Err(format!("move {NEW_ROOT} to /: {e}"));
        }
        if libc::chroot(c".".as_ptr()) != 0 {
            return Err(format!("chroot: {}", std::io::Error::last_os_error()));
        }
    }
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    if old_root >= 0 {
        empty_dir(old_root);
        // SAFETY: our fd.
        unsafe { libc::close(old_root) };
    }
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    std::env::set_var(SWITCHED_ENV, "1");
    // SAFETY: NULL-terminated argv of live C strings; replaces this process image (PID stays 1).
    unsafe { libc::execv(c"/init".as_ptr(), ptrs.as_ptr()) };
    // Still on the complete new root: carrying on from here works, only the re-execution is missing.
    std::env::remove_var(SWITCHED_ENV);
    Err(format!("exec /init: {}", std::io::Error::last_os_error()))
}

/// Removes everything below the directory `dir` without crossing into other mounts (it only ever sees the
/// old rootfs, which nothing else is mounted on at this point of boot).
fn empty_dir(dir: libc::c_int) {
    // SAFETY: `dir` is an open directory fd; fdopendir takes a duplicate so `dir` stays ours.
    let dup = unsafe { libc::fcntl(dir, libc::F_DUPFD_CLOEXEC, 0) };
    let stream = unsafe { libc::fdopendir(dup) };
    if stream.is_null() {
        return;
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: a live directory stream.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    // SAFETY: closes the duplicate with its stream.
    unsafe { libc::closedir(stream) };
    let mut root: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out-pointer.
    if unsafe { libc::fstat(dir, &mut root) } != 0 {
        return;
    }
    for name in names {
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, name and out-pointer.
        if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } != 0
            || st.st_dev != root.st_dev
        {
            continue;
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            // SAFETY: valid fd and name.
            let sub = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if sub >= 0 {
                empty_dir(sub);
                // SAFETY: our fd.
                unsafe { libc::close(sub) };
            }
            // SAFETY: valid fd and name.
            unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) };
        } else {
            // SAFETY: valid fd and name.
            unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
        }
    }
}

/// Copies `from` (a directory) into `to`.
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries.flatten() {
        let src = entry.path();
        if src == Path::new(NEW_ROOT) {
            continue;
        }
        let dst = to.join(entry.file_name());
        let md = std::fs::symlink_metadata(&src).map_err(|e| format!("{}: {e}", src.display()))?;
        let ft = md.file_type();
        let err = |e: std::io::Error| format!("copying {}: {e}", src.display());
        if ft.is_dir() {
            std::fs::create_dir(&dst).map_err(err)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(err)?;
            copy_tree(&src, &dst)?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src).map_err(err)?;
            std::os::unix::fs::symlink(target, &dst).map_err(err)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst).map_err(err)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let path = CString::new(dst.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
            // SAFETY: valid path; recreating the node the kernel put there (e.g. /dev/console).
            unsafe { libc::mknod(path.as_ptr(), md.mode(), md.rdev()) };
        }
    }
    Ok(())
}
