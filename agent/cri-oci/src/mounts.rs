//! `mounts`: the standard filesystems every container gets, the sandbox's /etc/hostname, /etc/hosts,
//! /etc/resolv.conf and /dev/shm, and the CRI's own mounts (host paths and image volumes).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use basalt_proto::cri::{Mount as CriMount, MountPropagation};
use oci_spec::runtime::Mount;

use crate::error::{io_text, Error, Result};
use crate::Sandbox;

pub fn mount(dest: &str, typ: &str, source: impl AsRef<Path>, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_owned()));
    m.set_source(Some(source.as_ref().to_owned()));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// /proc, /dev, /dev/pts, /dev/mqueue, /sys and /sys/fs/cgroup as containerd mounts them; sysfs and cgroups are
/// writable only for a privileged container.
pub fn standard(privileged: bool) -> Vec<Mount> {
    let ro = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", ro]),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", ro],
        ),
    ]
}

/// The sandbox's files: /etc/hostname, /etc/hosts, /etc/resolv.conf (read-only when the rootfs is), and
/// /dev/shm (the host's for an IPC=NODE pod, the sandbox's when it has one, else a private tmpfs).
pub fn sandbox_files(sandbox: &Sandbox, readonly_rootfs: bool, host_ipc: bool) -> Vec<Mount> {
    let rw = if readonly_rootfs { "ro" } else { "rw" };
    let mut out = Vec::new();
    for (dest, src) in [
        ("/etc/hostname", sandbox.hostname_file),
        ("/etc/hosts", sandbox.hosts_file),
        ("/etc/resolv.conf", sandbox.resolv_conf),
    ] {
        if let Some(src) = src {
            out.push(mount(dest, "bind", src, &["rbind", "rprivate", rw]));
        }
    }
    let shm = if host_ipc {
        Some(Path::new("/dev/shm"))
    } else {
        sandbox.shm
    };
    out.push(match shm {
        Some(src) => mount("/dev/shm", "bind", src, &["rbind", "rprivate", "rw"]),
        None => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    });
    out
}

/// `p` without `.`, `..` (clamped at `/`) and trailing slashes, so "/data/" and "/data" are one destination.
pub fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// The directory of an image volume's root that `sub` (relative, no `..`) names; it must exist in the image.
/// Symlinks in the image resolve inside the image's root, never to the host's.
fn image_sub_path(root: &Path, sub: &str, field: &str) -> Result<PathBuf> {
    if sub.is_empty() {
        return Ok(root.to_owned());
    }
    let p = Path::new(sub);
    if p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            field,
            sub,
            "must be a relative path inside the image, without '..'",
        ));
    }
    let mut cur = root.to_owned();
    let mut hops = 0;
    let mut rest: Vec<PathBuf> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            _ => None,
        })
        .rev()
        .collect();
    while let Some(next) = rest.pop() {
        let cand = cur.join(&next);
        match std::fs::symlink_metadata(&cand) {
            Ok(md) if md.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(Error::invalid(field, sub, "too many symbolic links"));
                }
                let target = std::fs::read_link(&cand)
                    .map_err(|e| Error::invalid(field, sub, io_text(&e)))?;
                if target.is_absolute() {
                    cur = root.to_owned();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => rest.push(PathBuf::from(n)),
                        Component::ParentDir => rest.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            Ok(_) if next == Path::new("..") => {
                if cur != root {
                    cur.pop();
                }
            }
            Ok(_) => cur = cand,
            Err(_) if next == Path::new("..") => {
                if cur != root {
                    cur.pop();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(
                    field,
                    sub,
                    "the image has no such path".to_string(),
                ))
            }
            Err(e) => return Err(Error::invalid(field, sub, io_text(&e))),
        }
    }
    Ok(cur)
}

/// The CRI mounts turned into bind mounts, plus the host paths that do not exist yet (containerd creates
/// those as directories before it starts the container; we leave doing so to the caller).
pub struct CriMounts {
    pub mounts: Vec<Mount>,
    pub missing_host_paths: Vec<PathBuf>,
    /// `linux.rootfsPropagation` the mounts need: rshared for a bidirectional one, rslave for host-to-container.
    pub rootfs_propagation: Option<String>,
}

pub fn cri_mounts(
    mounts: &[CriMount],
    image_mounts: &HashMap<String, PathBuf>,
    create_missing: bool,
    pod_idmap: Option<&PodIdMap>,
) -> Result<CriMounts> {
    let mut out: Vec<(usize, Mount)> = Vec::new();
    let mut missing = Vec::new();
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    let (mut shared, mut slave) = (false, false);
    for (i, m) in mounts.iter().enumerate() {
        let f = |name: &str| format!("mounts[{i}].{name}");
        if !m.container_path.starts_with('/') {
            return Err(Error::invalid(
                f("container_path"),
                &m.container_path,
                "not an absolute path",
            ));
        }
        let dest = clean(&m.container_path);
        if let Some(j) = seen.insert(dest.clone(), i) {
            return Err(Error::invalid(
                f("container_path"),
                &m.container_path,
                format!("mounts[{j}] already mounts this path"),
            ));
        }
        let own_map = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
        if own_map && pod_idmap.is_none() {
            return Err(Error::invalid(
                f("uidMappings"),
                format!("{:?}", m.uid_mappings),
                "ID-mapped mounts need a pod user namespace (userns_options mode POD)",
            ));
        }
        if let (true, Some(pod)) = (own_map, pod_idmap) {
            // The runtime idmaps with the pod's user namespace itself: other mappings cannot be honoured.
            if m.uid_mappings != pod.uids || m.gid_mappings != pod.gids {
                return Err(Error::invalid(
                    f("uidMappings"),
                    format!("{:?}", m.uid_mappings),
                    "must equal the pod's userns_options mappings",
                ));
            }
        }
        let propagation = MountPropagation::try_from(m.propagation).map_err(|_| {
            Error::invalid(f("propagation"), m.propagation, "unknown propagation mode")
        })?;
        if m.recursive_read_only {
            if !m.readonly {
                return Err(Error::invalid(
                    f("recursive_read_only"),
                    true,
                    format!("needs {} to be true", f("readonly")),
                ));
            }
            if propagation != MountPropagation::PropagationPrivate {
                return Err(Error::invalid(
                    f("recursive_read_only"),
                    true,
                    format!(
                        "needs {} to be PROPAGATION_PRIVATE, not {}",
                        f("propagation"),
                        propagation.as_str_name()
                    ),
                ));
            }
        }
        let image = m
            .image
            .as_ref()
            .map(|s| s.image.as_str())
            .filter(|s| !s.is_empty());
        let (source, readonly) = match image {
            Some(img) => {
                if !m.host_path.is_empty() {
                    return Err(Error::invalid(
                        f("host_path"),
                        &m.host_path,
                        format!("must be empty when {} is set", f("image")),
                    ));
                }
                // Image volumes are read-only by definition (KEP 4639): a request for a writable one is
                // a mistake to report, not a flag to ignore.
                if !m.readonly {
                    return Err(Error::invalid(
                        f("readonly"),
                        false,
                        format!(
                            "an image volume ({} set) is read-only: must be true",
                            f("image")
                        ),
                    ));
                }
                let root = image_mounts.get(img).ok_or_else(|| {
                    Error::not_found(f("image.image"), img, "image is not available for mounting")
                })?;
                (
                    image_sub_path(root, &m.image_sub_path, &f("image_sub_path"))?,
                    true,
                )
            }
            None => {
                if !m.host_path.starts_with('/') {
                    return Err(Error::invalid(
                        f("host_path"),
                        &m.host_path,
                        "not an absolute path",
                    ));
                }
                // The CRI: a symlink is followed and its destination mounted.
                match std::fs::canonicalize(&m.host_path) {
                    Ok(p) => (p, m.readonly),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        if !create_missing || std::fs::symlink_metadata(&m.host_path).is_ok() {
                            return Err(Error::invalid(f("host_path"), &m.host_path, io_text(&e)));
                        }
                        let p = clean(&m.host_path);
                        missing.push(p.clone());
                        (p, m.readonly)
                    }
                    Err(e) => {
                        return Err(Error::invalid(f("host_path"), &m.host_path, io_text(&e)))
                    }
                }
            }
        };
        let prop = match propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => {
                slave = true;
                "rslave"
            }
            MountPropagation::PropagationBidirectional => {
                shared = true;
                "rshared"
            }
        };
        let mut opts = vec!["rbind", prop, if readonly { "ro" } else { "rw" }];
        if m.recursive_read_only {
            // Read-only all the way down (mount_setattr with AT_RECURSIVE), as runc ≥ 1.1 and crun take it.
            opts.push("rro");
        }
        let mut mnt = mount(&dest.to_string_lossy(), "bind", source, &opts);
        if let (Some(pod), None) = (pod_idmap, image) {
            // In a pod user namespace a host directory is idmapped with the pod's mappings (as containerd 2
            // with runc 1.2 does): the pod's root acts on it as the host's root would, and what it creates
            // is owned on disk by the ids it has outside.
            mnt.set_uid_mappings(Some(pod.uids.iter().map(oci_id_map).collect()));
            mnt.set_gid_mappings(Some(pod.gids.iter().map(oci_id_map).collect()));
        }
        out.push((i, mnt));
    }
    // Parents before children, so that /a/b is not hidden by a later /a; otherwise the kubelet's order.
    out.sort_by_key(|(i, m)| (m.destination().components().count(), *i));
    Ok(CriMounts {
        mounts: out.into_iter().map(|(_, m)| m).collect(),
        missing_host_paths: missing,
        rootfs_propagation: if shared {
            Some("rshared".into())
        } else if slave {
            Some("rslave".into())
        } else {
            None
        },
    })
}

/// The id mappings of a pod's user namespace.
#[derive(Debug, Clone)]
pub struct PodIdMap {
    pub uids: Vec<basalt_proto::cri::IdMapping>,
    pub gids: Vec<basalt_proto::cri::IdMapping>,
}

pub fn oci_id_map(m: &basalt_proto::cri::IdMapping) -> oci_spec::runtime::LinuxIdMapping {
    oci_spec::runtime::LinuxIdMappingBuilder::default()
        .container_id(m.container_id)
        .host_id(m.host_id)
        .size(m.length)
        .build()
        .expect("every field is set")
}

/// Standard and sandbox mounts the CRI's own replace: the same destination, or anything under a CRI /dev.
pub fn overridden(m: &Mount, cri: &[Mount]) -> bool {
    let dest = m.destination();
    cri.iter().any(|c| {
        let cd = c.destination();
        cd == dest || (cd == Path::new("/dev") && dest.starts_with("/dev"))
    })
}
