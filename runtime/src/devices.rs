//! Device nodes in the container's /dev: the defaults every container gets, `linux.devices`, and the standard
//! symlinks. In a user namespace mknod is not allowed, so the host's node is bind-mounted instead, as runc does.

use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::error::{Error, Result};
use crate::mounts::{ensure_target, secure_join};

/// A device node to create.
#[derive(Debug, Clone)]
pub struct Device {
    pub path: String,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The nodes runc creates in every container.
pub fn defaults() -> Vec<Device> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| Device {
        path: path.to_owned(),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Device {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    Device {
        path: d.path().to_string_lossy().into_owned(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666),
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

/// Creates `devices` under `rootfs`; with `bind` (user namespaces) binds the host's nodes instead.
pub fn create(rootfs: &Path, devices: &[Device], bind: bool) -> Result<()> {
    let old = nix::sys::stat::umask(Mode::empty());
    let r = devices.iter().try_for_each(|d| create_one(rootfs, d, bind));
    nix::sys::stat::umask(old);
    r
}

fn create_one(rootfs: &Path, d: &Device, bind: bool) -> Result<()> {
    let dest = secure_join(rootfs, Path::new(&d.path));
    if bind {
        ensure_target(&dest, false)?;
        return mount(
            Some(d.path.as_str()),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::Sys {
            what: format!("binding device {}", d.path),
            source: e,
        });
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    }
    let _ = std::fs::remove_file(&dest);
    mknod(
        &dest,
        d.kind,
        Mode::from_bits_truncate(d.mode),
        makedev(d.major, d.minor),
    )
    .map_err(|e| Error::Sys {
        what: format!("mknod {}", d.path),
        source: e,
    })?;
    nix::unistd::chown(&dest, Some(d.uid.into()), Some(d.gid.into())).map_err(|e| Error::Sys {
        what: format!("chown {}", d.path),
        source: e,
    })
}

/// /dev/fd, /dev/std{in,out,err} and /dev/ptmx, as runc makes them.
pub fn symlinks(rootfs: &Path) -> Result<()> {
    for (link, target) in [
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        let p = rootfs.join(link);
        match symlink(target, &p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(p)(e)),
        }
    }
    let ptmx = rootfs.join("dev/ptmx");
    if rootfs.join("dev/pts").is_dir() {
        let _ = std::fs::remove_file(&ptmx);
        symlink("pts/ptmx", &ptmx).map_err(Error::io(ptmx))?;
    }
    Ok(())
}
