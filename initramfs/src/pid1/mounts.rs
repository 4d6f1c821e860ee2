//! The pseudo filesystems every node needs, and unmounting at shutdown.

use std::ffi::CString;

use super::log;

/// (source, target, fstype, flags, data)
const MOUNTS: &[(&str, &str, &str, libc::c_ulong, &str)] = &[
    ("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", NOSUID_NODEV_NOEXEC, ""),
    ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    ),
    ("shm", "/dev/shm", "tmpfs", NOSUID_NODEV, "mode=1777"),
    (
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC,
        "nsdelegate",
    ),
    ("run", "/run", "tmpfs", NOSUID_NODEV, "mode=0755"),
    ("tmp", "/tmp", "tmpfs", NOSUID_NODEV, "mode=1777"),
];

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;
const NOSUID_NODEV_NOEXEC: libc::c_ulong = NOSUID_NODEV | libc::MS_NOEXEC;

pub fn mount(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (src, tgt, fs, data) = (c(src), c(target), c(fstype), c(data));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Mounts everything in [`MOUNTS`]; a failure is shown and the rest still mounted.
pub fn mount_all() {
    let mut done = Vec::new();
    for &(src, target, fstype, flags, data) in MOUNTS {
        let _ = std::fs::create_dir_all(target);
        match mount(src, target, fstype, flags, data) {
            Ok(()) => done.push(target),
            Err(e) => log::error(format!("mount {fstype} on {target}: {e}")),
        }
        if target == "/dev" {
            // The console and kernel log can be opened now that /dev is real.
            log::open_sinks(None);
        }
    }
    log::info(format!("mounted {}", done.join(" ")));
    enable_controllers();
}

/// Lets child cgroups use every controller the kernel offers (pods get cpu, memory, io, pids limits).
fn enable_controllers() {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let Ok(list) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    let mut enabled = Vec::new();
    for c in list.split_whitespace() {
        match std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}")) {
            Ok(()) => enabled.push(c),
            Err(e) => log::error(format!("cgroup controller {c}: {e}")),
        }
    }
    log::info(format!(
        "cgroup2 controllers for children: {}",
        enabled.join(" ")
    ));
}

/// Unmounts what holds data (the state disk, pod volumes), deepest first, lazily for anything still busy.
pub fn unmount_for_shutdown() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    // Only filesystems that hold data; RAM and kernel filesystems vanish anyway (and /run holds our log).
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (target, fstype) = (f.nth(1)?, f.next()?);
            let virtual_fs = matches!(
                fstype,
                "rootfs"
                    | "tmpfs"
                    | "devtmpfs"
                    | "proc"
                    | "sysfs"
                    | "cgroup2"
                    | "devpts"
                    | "securityfs"
                    | "debugfs"
                    | "tracefs"
                    | "bpf"
                    | "mqueue"
                    | "hugetlbfs"
                    | "configfs"
                    | "pstore"
            );
            (!virtual_fs && target != "/").then_some(target)
        })
        .collect();
    // Deepest first.
    targets.reverse();
    for t in targets {
        let Ok(c) = CString::new(t) else { continue };
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: as above; a lazy detach still flushes the filesystem once the last user is gone.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            log::error(format!("umount {t}: {e}; detached"));
        }
    }
}
