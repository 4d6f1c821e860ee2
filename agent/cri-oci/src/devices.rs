//! `linux.devices` and the device cgroup rules: the CRI's devices for a normal container, every device of the
//! host for a privileged one.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use basalt_proto::cri::Device as CriDevice;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::error::{io_text, Error, Result};

/// Nodes every container may use, as runc allows them: null, zero, full, random, urandom, tty, the pty master
/// and the ptys. The runtime creates the nodes; the rules are here so that the spec says what it allows.
const DEFAULT_RULES: [(i64, Option<i64>); 8] = [
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// Linux `dev_t` to (major, minor), glibc's encoding.
fn major_minor(rdev: u64) -> (i64, i64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as i64, minor as i64)
}

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(typ);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_owned()));
    r
}

/// The node at `host` (following symlinks) as `container`, or None when it is not a device.
fn device(host: &Path, container: &Path) -> std::io::Result<Option<LinuxDevice>> {
    let md = std::fs::metadata(host)?;
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Ok(None);
    };
    let (major, minor) = major_minor(md.rdev());
    let mut d = LinuxDevice::default();
    d.set_path(container.to_owned());
    d.set_typ(typ);
    d.set_major(major);
    d.set_minor(minor);
    d.set_file_mode(Some(md.mode() & 0o7777));
    d.set_uid(Some(md.uid()));
    d.set_gid(Some(md.gid()));
    Ok(Some(d))
}

/// Devices below `dir` (recursively, without following symlinked directories), skipping what runc skips:
/// the pty, shm, mqueue and fd trees and the console, which the runtime sets up itself.
fn walk(dir: &Path, container: &Path, out: &mut Vec<LinuxDevice>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let Ok(ft) = e.file_type() else { continue };
        let (host, cont) = (e.path(), container.join(&name));
        if ft.is_dir() {
            let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
            if !skip.iter().any(|s| name == *s) {
                walk(&host, &cont, out)?;
            }
        } else if (ft.is_char_device() || ft.is_block_device())
            && name != "console"
            && name != "ptmx"
        {
            // A node that vanished meanwhile is not an error.
            if let Ok(Some(d)) = device(&host, &cont) {
                out.push(d);
            }
        }
    }
    Ok(())
}

/// `linux.devices` and `linux.resources.devices` for a container.
pub fn devices(
    cri: &[CriDevice],
    privileged: bool,
    host_dev: &Path,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut devs = Vec::new();
    let mut rules = Vec::new();
    if privileged {
        walk(host_dev, Path::new("/dev"), &mut devs).map_err(|e| {
            Error::precondition(format!(
                "listing host devices in {}: {}",
                host_dev.display(),
                io_text(&e)
            ))
        })?;
        rules.push(rule(true, None, None, None, "rwm"));
        return Ok((devs, rules));
    }
    rules.push(rule(false, None, None, None, "rwm"));
    for (major, minor) in DEFAULT_RULES {
        rules.push(rule(
            true,
            Some(LinuxDeviceType::C),
            Some(major),
            minor,
            "rwm",
        ));
    }
    for (i, d) in cri.iter().enumerate() {
        let f = |n: &str| format!("devices[{i}].{n}");
        if !d.host_path.starts_with('/') {
            return Err(Error::invalid(
                f("host_path"),
                &d.host_path,
                "not an absolute path",
            ));
        }
        if !d.container_path.starts_with('/') {
            return Err(Error::invalid(
                f("container_path"),
                &d.container_path,
                "not an absolute path",
            ));
        }
        let access = if d.permissions.is_empty() {
            "rwm"
        } else {
            d.permissions.as_str()
        };
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(Error::invalid(
                f("permissions"),
                &d.permissions,
                "only r, w and m are allowed",
            ));
        }
        let host = Path::new(&d.host_path);
        let container = PathBuf::from(&d.container_path);
        let md = std::fs::metadata(host)
            .map_err(|e| Error::invalid(f("host_path"), &d.host_path, io_text(&e)))?;
        let mut found = Vec::new();
        if md.is_dir() {
            // containerd passes a directory's devices through (e.g. /dev/snd).
            walk(host, &container, &mut found)
                .map_err(|e| Error::invalid(f("host_path"), &d.host_path, io_text(&e)))?;
        } else {
            match device(host, &container) {
                Ok(Some(dev)) => found.push(dev),
                Ok(None) => {
                    return Err(Error::invalid(
                        f("host_path"),
                        &d.host_path,
                        "not a device node",
                    ))
                }
                Err(e) => return Err(Error::invalid(f("host_path"), &d.host_path, io_text(&e))),
            }
        }
        for dev in found {
            rules.push(rule(
                true,
                Some(dev.typ()),
                Some(dev.major()),
                Some(dev.minor()),
                access,
            ));
            devs.push(dev);
        }
    }
    Ok((devs, rules))
}
