//! The container's filesystem: mount option parsing (runc's table), each `mounts[]` entry, pivot_root, masked
//! and read-only paths. Runs inside the container's mount namespace, in the init process.

use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use oci_spec::runtime::Mount;

use crate::error::{Error, Result};

/// What a mount's `options` list means for mount(2).
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Options the kernel does not know as flags, handed to the filesystem (`mode=755`, `size=65536k`, …).
    pub data: Vec<String>,
    pub bind: bool,
    /// `rro`: read-only down the whole tree of a recursive bind, submounts included (mount_setattr, Linux
    /// 5.12+), as runc and the CRI's recursive_read_only mean it.
    pub recursive_ro: bool,
}

enum Opt {
    Set(MsFlags),
    Clear(MsFlags),
    Propagate(MsFlags),
}

impl MountOptions {
    fn table(opt: &str) -> Option<Opt> {
        use Opt::*;
        Some(match opt {
            "defaults" => Clear(MsFlags::empty()),
            "ro" => Set(MsFlags::MS_RDONLY),
            "rw" => Clear(MsFlags::MS_RDONLY),
            "suid" => Clear(MsFlags::MS_NOSUID),
            "nosuid" => Set(MsFlags::MS_NOSUID),
            "dev" => Clear(MsFlags::MS_NODEV),
            "nodev" => Set(MsFlags::MS_NODEV),
            "exec" => Clear(MsFlags::MS_NOEXEC),
            "noexec" => Set(MsFlags::MS_NOEXEC),
            "sync" => Set(MsFlags::MS_SYNCHRONOUS),
            "async" => Clear(MsFlags::MS_SYNCHRONOUS),
            "dirsync" => Set(MsFlags::MS_DIRSYNC),
            "remount" => Set(MsFlags::MS_REMOUNT),
            "mand" => Set(MsFlags::MS_MANDLOCK),
            "nomand" => Clear(MsFlags::MS_MANDLOCK),
            "atime" => Clear(MsFlags::MS_NOATIME),
            "noatime" => Set(MsFlags::MS_NOATIME),
            "diratime" => Clear(MsFlags::MS_NODIRATIME),
            "nodiratime" => Set(MsFlags::MS_NODIRATIME),
            "bind" => Set(MsFlags::MS_BIND),
            "rbind" => Set(MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => Set(MsFlags::MS_RELATIME),
            "norelatime" => Clear(MsFlags::MS_RELATIME),
            "strictatime" => Set(MsFlags::MS_STRICTATIME),
            "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
            "private" => Propagate(MsFlags::MS_PRIVATE),
            "rprivate" => Propagate(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => Propagate(MsFlags::MS_SHARED),
            "rshared" => Propagate(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => Propagate(MsFlags::MS_SLAVE),
            "rslave" => Propagate(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => Propagate(MsFlags::MS_UNBINDABLE),
            "runbindable" => Propagate(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            _ => return None,
        })
    }

    /// Whether `opt` is a mount flag we translate (as opposed to filesystem data).
    pub fn known(opt: &str) -> Option<()> {
        Self::table(opt).map(|_| ())
    }

    pub fn parse<'a>(opts: impl IntoIterator<Item = &'a String>) -> MountOptions {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            bind: false,
            recursive_ro: false,
        };
        for opt in opts {
            if opt == "rro" {
                o.recursive_ro = true;
                o.flags |= MsFlags::MS_RDONLY;
                continue;
            }
            match Self::table(opt) {
                Some(Opt::Set(f)) => o.flags |= f,
                Some(Opt::Clear(f)) => o.flags &= !f,
                Some(Opt::Propagate(p)) => o.propagation.push(p),
                None => o.data.push(opt.clone()),
            }
        }
        o.bind = o.flags.contains(MsFlags::MS_BIND);
        o
    }
}

/// Joins `unsafe_path` onto `root`, resolving symlinks as if `root` were `/`, so that a symlink in the image
/// can never send a mount outside the container's root.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_owned()];
    let mut links = 0;
    while let Some(p) = pending.pop() {
        let mut comps: Vec<Component> = p.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    match std::fs::read_link(root.join(&candidate)) {
                        Ok(target) if links < 255 => {
                            links += 1;
                            if target.is_absolute() {
                                resolved = PathBuf::new();
                            }
                            let rest: PathBuf = comps.iter().rev().collect();
                            comps.clear();
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    root.join(resolved)
}

fn sys(what: impl FnOnce() -> String) -> impl FnOnce(nix::Error) -> Error {
    move |e| Error::Sys {
        what: what(),
        source: e,
    }
}

/// Makes `/` of the new mount namespace a slave (or what `rootfsPropagation` says) so nothing we mount leaks
/// back to the host, and turns the rootfs into a mount point that pivot_root accepts.
pub fn prepare_rootfs(rootfs: &Path, propagation: Option<&str>) -> Result<()> {
    let prop = match propagation {
        Some("shared") | Some("rshared") => MsFlags::MS_SHARED,
        Some("private") | Some("rprivate") => MsFlags::MS_PRIVATE,
        Some("unbindable") | Some("runbindable") => MsFlags::MS_UNBINDABLE,
        _ => MsFlags::MS_SLAVE,
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | prop,
        None::<&str>,
    )
    .map_err(sys(|| "making / a slave mount".into()))?;
    // With `/` shared (rootfsPropagation rshared, for bidirectional mounts), the rootfs's own mount would be
    // shared too, and pivot_root refuses a new root whose parent mount is shared (EINVAL). As runc does:
    // the mount the rootfs sits on becomes private, so the bind below is a private copy; the bidirectional
    // volumes are shared mounts of their own under it.
    if let Some(parent) = parent_mount(rootfs)? {
        if parent.shared {
            mount(
                None::<&str>,
                &parent.mount_point,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(sys(|| {
                format!("making {} private", parent.mount_point.display())
            }))?;
        }
    }
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys(|| {
        format!("bind-mounting the rootfs {}", rootfs.display())
    }))
}

/// The mount a path is on, from `/proc/self/mountinfo`.
struct ParentMount {
    mount_point: PathBuf,
    shared: bool,
}

/// The mount `path` lies on (itself, if it is a mount point): the deepest mount point above it.
fn parent_mount(path: &Path) -> Result<Option<ParentMount>> {
    let path = std::fs::canonicalize(path).map_err(Error::io(path))?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("/proc/self/mountinfo"))?;
    let mut best: Option<ParentMount> = None;
    for line in text.lines() {
        // id parent major:minor root mount-point options optional... - fstype source super-options
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(mp) = fields.get(4) else { continue };
        let mp = PathBuf::from(unescape_mountinfo(mp));
        if !path.starts_with(&mp) {
            continue;
        }
        let optional = fields.iter().skip(6).take_while(|f| **f != "-");
        let shared = optional.clone().any(|f| f.starts_with("shared:"));
        // Later lines are mounted on top of earlier ones at the same point: they win.
        if best
            .as_ref()
            .is_none_or(|b| mp.as_os_str().len() >= b.mount_point.as_os_str().len())
        {
            best = Some(ParentMount {
                mount_point: mp,
                shared,
            });
        }
    }
    Ok(best)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts (lazily, deepest first) every mount strictly below `root` in our namespace: what a container
/// without a mount namespace of its own mounted there.
pub fn unmount_under(root: &Path) {
    let Ok(root) = std::fs::canonicalize(root) else {
        return;
    };
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mountinfo(mp)))
        .filter(|mp| mp.starts_with(&root) && *mp != root)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for p in points {
        let _ = umount2(&p, MntFlags::MNT_DETACH);
    }
}

/// Context a mount may need beyond its own entry.
pub struct MountContext<'a> {
    pub new_netns: bool,
    /// v1 hierarchies: (mount name in the container, host directory of the container's cgroup).
    pub cgroup_v1: &'a [(String, PathBuf)],
    pub cgroup_v2: bool,
    /// Idmapped copies of bind-mount sources, made by the parent (see [`open_idmapped`]), by destination.
    pub idmapped: &'a [(PathBuf, std::os::fd::RawFd)],
}

/// For every bind mount with `uidMappings`, a detached copy of its source idmapped with the user namespace
/// at `userns` (the one the container joins), keyed by destination. Made here, as the host's root: only a
/// process privileged over the filesystem may idmap it, which the container's root is not. The init moves
/// each copy into place.
pub fn open_idmapped(
    mounts: &[Mount],
    userns: Option<&Path>,
) -> Result<Vec<(PathBuf, std::os::fd::OwnedFd)>> {
    use std::os::fd::AsFd;
    let mut out = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        if m.uid_mappings().as_ref().is_none_or(|v| v.is_empty())
            && m.gid_mappings().as_ref().is_none_or(|v| v.is_empty())
        {
            continue;
        }
        let field = format!("mounts[{i}].uidMappings");
        let opts = MountOptions::parse(m.options().iter().flatten());
        if !(opts.bind || m.typ().as_deref() == Some("bind")) {
            return Err(Error::spec(
                field,
                "idmapped mounts are supported for bind mounts only",
            ));
        }
        let Some(userns) = userns else {
            return Err(Error::spec(
                field,
                "idmapped mounts need a user namespace joined by path (linux.namespaces[].path)",
            ));
        };
        let ns = std::fs::File::open(userns).map_err(Error::io(userns))?;
        let source = m.source().clone().unwrap_or_default();
        let tree = crate::mount_api::clone_idmapped(
            &source,
            opts.flags.contains(MsFlags::MS_REC),
            ns.as_fd(),
        )
        .map_err(Error::sys(format!(
            "idmapping {} with {}",
            source.display(),
            userns.display()
        )))?;
        out.push((m.destination().clone(), tree));
    }
    Ok(out)
}

/// Moves a detached mount (from [`open_idmapped`]) onto `dest`.
fn move_detached(fd: std::os::fd::RawFd, dest: &Path) -> nix::Result<()> {
    // SAFETY: `fd` is one of the context's idmapped trees, open until the mounts are done.
    let tree = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    crate::mount_api::attach(tree, dest)
}

/// Performs one `mounts[]` entry under `rootfs`.
pub fn mount_entry(rootfs: &Path, m: &Mount, ctx: &MountContext) -> Result<()> {
    let opts = MountOptions::parse(m.options().iter().flatten());
    let dest = secure_join(rootfs, m.destination());
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.bind { "bind" } else { "none" });
    let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let what = || {
        format!(
            "mounting {} ({typ}) at {}",
            source.display(),
            m.destination().display()
        )
    };

    if opts.bind || typ == "bind" {
        let src_meta = std::fs::metadata(&source).map_err(Error::io(&source))?;
        ensure_target(&dest, src_meta.is_dir())?;
        let rec = if opts.flags.contains(MsFlags::MS_REC) {
            MsFlags::MS_REC
        } else {
            MsFlags::empty()
        };
        match ctx.idmapped.iter().find(|(d, _)| d == m.destination()) {
            Some((_, fd)) => move_detached(*fd, &dest).map_err(sys(what))?,
            None => mount(
                Some(&source),
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | rec,
                None::<&str>,
            )
            .map_err(sys(what))?,
        }
        // A bind mount ignores flags on creation: ro, nosuid… take effect only on a remount.
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let keep = locked_flags(&dest);
            mount(
                None::<&str>,
                &dest,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | keep,
                None::<&str>,
            )
            .map_err(sys(|| {
                format!("remounting {} with its options", m.destination().display())
            }))?;
        }
        if opts.recursive_ro {
            crate::mount_api::set_recursive_readonly(&dest).map_err(sys(|| {
                format!(
                    "making {} recursively read-only (rro)",
                    m.destination().display()
                )
            }))?;
        }
    } else if typ == "cgroup" || typ == "cgroup2" {
        mount_cgroup(&dest, &opts, ctx)?;
    } else if typ == "sysfs" && !ctx.new_netns {
        // A sysfs mount belongs to a network namespace; without our own we must show the host's, read-only.
        ensure_target(&dest, true)?;
        mount(
            Some("/sys"),
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(what))?;
        mount(
            None::<&str>,
            &dest,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(&dest),
            None::<&str>,
        )
        .map_err(sys(|| "remounting /sys read-only".into()))?;
    } else {
        ensure_target(&dest, true)?;
        let data = opts.data.join(",");
        mount(
            Some(&source),
            &dest,
            Some(typ),
            opts.flags,
            (!data.is_empty()).then_some(data.as_str()),
        )
        .map_err(sys(what))?;
    }
    for p in &opts.propagation {
        mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>).map_err(sys(|| {
            format!("setting propagation of {}", m.destination().display())
        }))?;
    }
    Ok(())
}

fn mount_cgroup(dest: &Path, opts: &MountOptions, ctx: &MountContext) -> Result<()> {
    ensure_target(dest, true)?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    if ctx.cgroup_v2 {
        // Without its own network namespace the container's /sys is an rbind of the host's, which brings the
        // host's whole cgroup2 mount along (writable) at this very place; the kernel also refuses to mount a
        // superblock on a root of itself (EBUSY). Drop the inherited one first.
        // An unmount propagates to the peers of the parent mount: with rootfsPropagation rshared the rbind
        // of /sys is a peer of the host's /sys, and detaching here would detach the host's cgroup2 too.
        // As a slave the container's /sys still receives the host's mount events but sends none back.
        // The parent mount is the nearest ancestor that is a mount root (only those take MS_SLAVE).
        for parent in dest.ancestors().skip(1) {
            let made_slave = mount(
                None::<&str>,
                parent,
                None::<&str>,
                MsFlags::MS_SLAVE,
                None::<&str>,
            );
            if made_slave.is_ok() || parent == Path::new("/") {
                break;
            }
        }
        match nix::mount::umount2(dest, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => {
                return Err(sys(|| {
                    format!("detaching the host's cgroup2 at {}", dest.display())
                })(e))
            }
        }
        return mount(Some("cgroup2"), dest, Some("cgroup2"), flags, None::<&str>)
            .map_err(sys(|| format!("mounting cgroup2 at {}", dest.display())));
    }
    // cgroup v1: a tmpfs holding the container's own directory of each hierarchy, as runc shows it.
    mount(
        Some("tmpfs"),
        dest,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .map_err(sys(|| {
        format!("mounting a tmpfs for cgroups at {}", dest.display())
    }))?;
    for (name, host_dir) in ctx.cgroup_v1 {
        let target = dest.join(name);
        ensure_target(&target, true)?;
        mount(
            Some(host_dir),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(|| format!("binding cgroup {}", host_dir.display())))?;
        if flags.contains(MsFlags::MS_RDONLY) {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | locked_flags(&target),
                None::<&str>,
            )
            .map_err(sys(|| format!("remounting cgroup {} read-only", name)))?;
        }
    }
    // runc leaves the tmpfs itself writable; only the hierarchies are read-only. Same view here.
    Ok(())
}

/// Every mount under `path` read-only.
/// Flags the kernel will not let a remount clear (nosuid, nodev, noexec of the existing mount).
fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// Creates the mount point: a directory, or an empty file when a file is bind-mounted.
pub fn ensure_target(dest: &Path, dir: bool) -> Result<()> {
    if dir {
        std::fs::create_dir_all(dest).map_err(Error::io(dest))
    } else {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        }
        if dest.exists() {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(dest)
            .map(drop)
            .map_err(Error::io(dest))
    }
}

/// Makes `rootfs` the root: pivot_root, or with `no_pivot` a move mount plus chroot (for ramfs roots).
pub fn switch_root(rootfs: &Path, no_pivot: bool) -> Result<()> {
    nix::unistd::chdir(rootfs).map_err(sys(|| format!("chdir {}", rootfs.display())))?;
    if no_pivot {
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(sys(|| "moving the rootfs to /".into()))?;
        nix::unistd::chroot(".").map_err(sys(|| "chroot".into()))?;
    } else {
        // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the new root.
        // Our cwd is still the new root's directory, and "." does not cross the mount on top of it: from
        // there the rslave below would reach every mount of the new root (bidirectional volumes included,
        // which then never propagate back) instead of the old root's. So, as runc does, step into the old
        // root first, through a descriptor opened before the pivot.
        let old_root = open(
            "/",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(|| "opening the old root".into()))?;
        // SAFETY: open returned a fresh descriptor that we own.
        let old_root = unsafe { std::os::fd::OwnedFd::from_raw_fd(old_root) };
        nix::unistd::pivot_root(".", ".").map_err(sys(|| "pivot_root".into()))?;
        nix::unistd::fchdir(old_root.as_raw_fd())
            .map_err(sys(|| "entering the old root".into()))?;
        drop(old_root);
        mount(
            None::<&str>,
            ".",
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys(|| "making the old root a slave".into()))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(sys(|| "detaching the old root".into()))?;
    }
    nix::unistd::chdir("/").map_err(sys(|| "chdir /".into()))
}

/// Hides `paths` (inside the new root): files under /dev/null, directories under an empty read-only tmpfs.
pub fn mask_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(p)(e)),
        };
        let r = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None::<&str>,
            )
        } else {
            mount(
                Some("/dev/null"),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        r.map_err(sys(|| format!("masking {p}")))?;
    }
    Ok(())
}

/// Makes `paths` (inside the new root) read-only bind mounts of themselves.
pub fn readonly_paths(paths: &[String]) -> Result<()> {
    for p in paths {
        match mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            Ok(()) => {}
            Err(nix::Error::ENOENT) => continue,
            Err(e) => {
                return Err(Error::Sys {
                    what: format!("binding {p}"),
                    source: e,
                })
            }
        }
        let keep = locked_flags(Path::new(p));
        mount(
            None::<&str>,
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | keep,
            None::<&str>,
        )
        .map_err(sys(|| format!("making {p} read-only")))?;
    }
    Ok(())
}

/// `root.readonly`: the new `/` becomes read-only (mounts under it keep their own flags).
pub fn readonly_root() -> Result<()> {
    let keep = locked_flags(Path::new("/"));
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep,
        None::<&str>,
    )
    .map_err(sys(|| "remounting / read-only".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let opts: Vec<String> = [
            "nosuid",
            "strictatime",
            "mode=755",
            "size=65536k",
            "rprivate",
            "ro",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = MountOptions::parse(&opts);
        assert!(o
            .flags
            .contains(MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | MsFlags::MS_RDONLY));
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
        assert!(!o.bind);
        let o = MountOptions::parse(&["rbind".to_string(), "ro".to_string(), "rw".to_string()]);
        assert!(
            o.bind && o.flags.contains(MsFlags::MS_REC) && !o.flags.contains(MsFlags::MS_RDONLY)
        );
    }

    #[test]
    fn secure_join_stays_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", r.join("a/b/up")).unwrap();
        assert_eq!(
            secure_join(r, Path::new("/abs/passwd")),
            r.join("etc/passwd")
        );
        assert_eq!(secure_join(r, Path::new("/a/b/up/etc")), r.join("etc"));
        assert_eq!(secure_join(r, Path::new("/../../x")), r.join("x"));
        assert_eq!(secure_join(r, Path::new("/a/b/c")), r.join("a/b/c"));
    }
}
