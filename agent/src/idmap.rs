//! Container roots for pods in a user namespace. An overlayfs mount cannot itself be idmapped, so (as
//! containerd 2's overlay snapshotter does with `remap-ids`) the root is mounted again over idmapped copies
//! of its lower layers, with the upper and work dirs owned by the pod's root: image files owned by root
//! then belong to the pod's root, and nothing on disk is chowned.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// The lower, upper and work dirs of the overlayfs mounted at `rootfs`, from /proc/self/mountinfo.
fn overlay_dirs(rootfs: &Path) -> Result<(Vec<PathBuf>, PathBuf, PathBuf), String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let target = rootfs.to_string_lossy();
    let line = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&*target))
        .ok_or_else(|| format!("{target} is not mounted"))?;
    let (_, after) = line
        .split_once(" - ")
        .ok_or_else(|| format!("unexpected mountinfo line {line:?}"))?;
    let mut fields = after.split(' ');
    if fields.next() != Some("overlay") {
        return Err(format!(
            "{target} is not an overlayfs mount (a copied root cannot be idmapped)"
        ));
    }
    let opts = fields.nth(1).unwrap_or_default();
    let (mut lower, mut upper, mut work) = (Vec::new(), None, None);
    for o in opts.split(',') {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            lower.extend(v.split(':').map(PathBuf::from));
        } else if let Some(v) = o.strip_prefix("lowerdir+=") {
            lower.push(PathBuf::from(v));
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            upper = Some(PathBuf::from(v));
        } else if let Some(v) = o.strip_prefix("workdir=") {
            work = Some(PathBuf::from(v));
        }
    }
    match (lower.is_empty(), upper, work) {
        (false, Some(u), Some(w)) => Ok((lower, u, w)),
        _ => Err(format!("cannot read the layers of {target} from {opts:?}")),
    }
}

/// An idmapped copy of `source` mounted at `target`.
fn idmapped_copy(source: &Path, target: &Path, userns: &OwnedFd) -> Result<(), String> {
    use std::os::fd::AsFd;
    let tree = basalt_runtime::mount_api::clone_idmapped(source, false, userns.as_fd())
        .map_err(|e| format!("idmapping {}: {e}", source.display()))?;
    basalt_runtime::mount_api::attach(tree.as_fd(), target).map_err(|e| {
        format!(
            "attaching the idmapped {} at {}: {e}",
            source.display(),
            target.display()
        )
    })
}

/// Remounts the overlayfs root at `rootfs` over idmapped lower layers (the user namespace at `userns`),
/// with its upper and work dirs owned by the host ids of the pod's root (`root`: uid, gid).
pub fn idmap_root(rootfs: &Path, userns: &Path, root: (u32, u32)) -> Result<(), String> {
    let (lower, upper, work) = overlay_dirs(rootfs)?;
    let ns: OwnedFd = std::fs::File::open(userns)
        .map_err(|e| format!("{}: {e}", userns.display()))?
        .into();
    let staging = rootfs
        .parent()
        .ok_or("the root has no parent dir")?
        .join("idmapped");
    std::fs::create_dir_all(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
    let mut attached = Vec::new();
    let result = (|| {
        for (i, l) in lower.iter().enumerate() {
            let t = staging.join(i.to_string());
            std::fs::create_dir(&t).map_err(|e| format!("{}: {e}", t.display()))?;
            idmapped_copy(l, &t, &ns)?;
            attached.push(t);
        }
        for d in [&upper, &work] {
            std::os::unix::fs::chown(d, Some(root.0), Some(root.1))
                .map_err(|e| format!("chown {}: {e}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            attached
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            upper.display(),
            work.display()
        );
        if opts.len() >= 4000 {
            return Err(format!("{} layers are too many to idmap", lower.len()));
        }
        umount2(rootfs, MntFlags::empty())
            .map_err(|e| format!("unmounting {}: {e}", rootfs.display()))?;
        mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mounting overlayfs over idmapped layers: {e}"))
    })();
    // The overlay holds its own references to the layers: the staging mounts can go either way.
    for t in &attached {
        let _ = umount2(t, MntFlags::MNT_DETACH);
    }
    // Never a recursive removal here: a mount still attached would let it delete an image layer.
    for i in 0..lower.len() {
        let _ = std::fs::remove_dir(staging.join(i.to_string()));
    }
    let _ = std::fs::remove_dir(&staging);
    result
}
