//! Snapshots: each layer unpacked once into `snapshots/<chainID>/fs` and shared by every image that has the same
//! layers below it; container roots as an overlayfs mount of a snapshot chain plus the container's own upper and
//! work directories, or a copy where overlayfs is unavailable.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::index::ImageRecord;
use crate::lock::FileLock;
use crate::store::{sync_dir, write_atomic, Store};
use crate::unpack::{inherit_dir_attrs, unpack_layer, unpack_layer_full, Mode};

/// Chain IDs per the OCI image spec: the identity of a layer together with everything below it.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A layer unpacked into a temp dir, not yet published; holds the snapshot's lock.
pub(crate) struct PendingSnapshot {
    _lock: FileLock,
    tmp: PathBuf,
    implicit: Vec<Vec<u8>>,
}

impl Drop for PendingSnapshot {
    /// A pending snapshot that was not published (a failed pull) leaves nothing behind; after publishing, the
    /// temp path no longer exists.
    fn drop(&mut self) {
        if self.tmp.exists() {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// How a container root was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    Overlay,
    Copy,
    /// The image's snapshots themselves under an overlayfs with no upper directory, which the kernel keeps
    /// read-only: an image volume.
    ReadOnly,
}

/// A mounted (or copied) container root filesystem.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRoot {
    pub id: String,
    pub rootfs: PathBuf,
    pub kind: RootKind,
    /// The snapshots it stands on (kept by garbage collection while the root exists).
    pub chain: Vec<Digest>,
}

impl Store {
    pub(crate) fn snapshot_dir(&self, chain_id: &Digest) -> PathBuf {
        self.dir("snapshots").join(chain_id.hex())
    }

    /// Unpacks every layer of `image` not yet unpacked. A per-snapshot lock makes concurrent callers unpack each
    /// layer once; a snapshot appears under its name only when complete (unpacked into a temp dir, synced,
    /// renamed), so a kill half-way leaves only a temp dir that garbage collection removes.
    pub fn prepare_snapshots(&self, image: &ImageRecord) -> Result<Vec<Digest>> {
        let chain = self.chain_of(image)?;
        for i in 0..chain.len() {
            self.commit_snapshot(image, &chain, i, None)?;
        }
        Ok(chain)
    }

    pub(crate) fn chain_of(&self, image: &ImageRecord) -> Result<Vec<Digest>> {
        let chain = chain_ids(&image.diff_ids);
        if chain.len() != image.layers.len() {
            return Err(Error::Manifest {
                digest: image.manifest.to_string(),
                reason: format!(
                    "{} layers but {} diff_ids in the config",
                    image.layers.len(),
                    chain.len()
                ),
            });
        }
        Ok(chain)
    }

    /// Unpacks layer `i` of `image` into a temp dir, unless its snapshot exists or (when `wait` is false)
    /// someone else is making it. Layers in snapshot form do not depend on each other until they are committed,
    /// so a pull unpacks each as soon as it is downloaded, concurrently.
    pub(crate) fn unpack_snapshot(
        &self,
        image: &ImageRecord,
        chain: &[Digest],
        i: usize,
        wait: bool,
    ) -> Result<Option<PendingSnapshot>> {
        let id = &chain[i];
        let dir = self.snapshot_dir(id);
        if dir.is_dir() {
            return Ok(None);
        }
        let lock_path = self.dir("locks").join(format!("snapshot-{}", id.hex()));
        let lock = if wait {
            FileLock::exclusive(&lock_path)?
        } else {
            match FileLock::try_exclusive(&lock_path)? {
                Some(l) => l,
                None => return Ok(None),
            }
        };
        if dir.is_dir() {
            return Ok(None);
        }
        let tmp = self
            .dir("snapshots")
            .join(format!(".tmp-{}-{}", id.hex(), std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        let fs_dir = tmp.join("fs");
        fs::create_dir_all(&fs_dir).at(&fs_dir)?;
        let layer = &image.layers[i];
        let res = self.open_blob(&layer.digest).and_then(|blob| {
            unpack_layer_full(blob, &fs_dir, Mode::Snapshot, &layer.digest.to_string())
        });
        let (diff_id, implicit) = match res {
            Ok(d) => d,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        if diff_id != image.diff_ids[i] {
            let _ = fs::remove_dir_all(&tmp);
            return Err(Error::Layer {
                digest: layer.digest.to_string(),
                reason: format!(
                    "uncompressed content is {diff_id}, the config says {}",
                    image.diff_ids[i]
                ),
            });
        }
        Ok(Some(PendingSnapshot {
            _lock: lock,
            tmp,
            implicit,
        }))
    }

    /// Publishes snapshot `i` (unpacking it first if `pending` is None and it does not exist). Called in
    /// ascending order, so the snapshots below exist: directories the layer did not list take their attributes
    /// from them. Waits only for lower snapshots while holding only higher ones, so concurrent pulls cannot
    /// deadlock.
    pub(crate) fn commit_snapshot(
        &self,
        image: &ImageRecord,
        chain: &[Digest],
        i: usize,
        pending: Option<PendingSnapshot>,
    ) -> Result<()> {
        let pending = match pending {
            Some(p) => p,
            None => match self.unpack_snapshot(image, chain, i, true)? {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        let fs_dir = pending.tmp.join("fs");
        let result = (|| {
            let lowers: Vec<PathBuf> = chain[..i]
                .iter()
                .rev()
                .map(|c| self.snapshot_dir(c).join("fs"))
                .collect();
            let lowers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
            inherit_dir_attrs(&fs_dir, &pending.implicit, &lowers)?;
            syncfs(&fs_dir)?;
            let dir = self.snapshot_dir(&chain[i]);
            fs::rename(&pending.tmp, &dir).at(&dir)?;
            sync_dir(&self.dir("snapshots"))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&pending.tmp);
        }
        result
    }

    /// Snapshot directories present (complete ones only).
    pub fn snapshots(&self) -> Result<Vec<Digest>> {
        crate::store::digests_in(&self.dir("snapshots"))
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !id.starts_with('.');
        if !ok {
            return Err(Error::Mount {
                id: id.to_owned(),
                reason: "container ids are letters, digits, '-', '_' or '.' (not leading)".into(),
            });
        }
        Ok(self.dir("containers").join(id))
    }

    /// Makes the root filesystem of container `id` from `image`: an overlayfs mount of the image's snapshots
    /// with the container's own upper and work dirs, or (when overlayfs cannot be mounted, or `force_copy`) a
    /// copy made by applying every layer in order. On error nothing is left mounted or on disk.
    pub fn mount_root(
        &self,
        id: &str,
        image: &ImageRecord,
        force_copy: bool,
    ) -> Result<ContainerRoot> {
        self.make_root(id, image, RootKind::Overlay, |dir, chain, _| {
            if force_copy {
                return Err(Error::Mount {
                    id: id.to_owned(),
                    reason: "copy requested".into(),
                });
            }
            self.mount_overlay(id, dir, chain)
        })
    }

    /// Mounts `image` read-only at `containers/<id>/rootfs` for an image volume: its snapshots as the lower
    /// layers of an overlayfs without an upper directory, so nothing (not even a remount inside the container)
    /// can write to them; or a copy where overlayfs cannot be mounted. On error nothing is left mounted or on
    /// disk; [`Store::unmount_root`] removes it.
    pub fn mount_image(&self, id: &str, image: &ImageRecord) -> Result<ContainerRoot> {
        self.make_root(id, image, RootKind::ReadOnly, |dir, chain, rootfs| {
            // Without an upper directory overlayfs wants two lower layers: an empty one at the bottom makes a
            // one-layer image mountable the same way.
            let empty = dir.join("empty");
            fs::create_dir_all(&empty).at(&empty)?;
            let mut lower: Vec<String> = chain
                .iter()
                .rev()
                .map(|c| self.snapshot_dir(c).join("fs").display().to_string())
                .collect();
            lower.push(empty.display().to_string());
            let opts = format!("lowerdir={}", lower.join(":"));
            let fits = opts.len() < 4000 && !lower.iter().any(|l| l.contains([':', ',']));
            let mounted = if fits {
                mount_classic(rootfs, &opts, libc::MS_RDONLY)
            } else {
                mount_layer_by_layer(rootfs, &lower, None)
            };
            mounted.map_err(|e| Error::Mount {
                id: id.to_owned(),
                reason: format!("read-only overlay: {e}"),
            })
        })
    }

    /// A root of `kind` at `containers/<id>/rootfs`, made by `mount(dir, chain, rootfs)`, or by copying the
    /// layers when that fails. Recorded before mounting, so garbage collection never takes snapshots from under
    /// a live root; on error nothing is left mounted or on disk.
    fn make_root(
        &self,
        id: &str,
        image: &ImageRecord,
        kind: RootKind,
        mount: impl FnOnce(&Path, &[Digest], &Path) -> Result<()>,
    ) -> Result<ContainerRoot> {
        let dir = self.container_dir(id)?;
        if dir.exists() {
            return Err(Error::Mount {
                id: id.to_owned(),
                reason: format!("already exists at {}", dir.display()),
            });
        }
        let chain = self.prepare_snapshots(image)?;
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(&rootfs).at(&rootfs)?;
        let mut root = ContainerRoot {
            id: id.to_owned(),
            rootfs: rootfs.clone(),
            kind,
            chain: chain.clone(),
        };
        let record = |root: &ContainerRoot| {
            write_atomic(
                &dir.join("root.json"),
                &serde_json::to_vec(root).expect("serialises"),
            )
        };
        let result = (|| {
            record(&root)?;
            if let Err(e) = mount(&dir, &chain, &rootfs) {
                tracing::info!(container = id, error = %e, "overlayfs unavailable, copying the layers");
                root.kind = RootKind::Copy;
                record(&root)?;
                for l in &image.layers {
                    let blob = self.open_blob(&l.digest)?;
                    unpack_layer(blob, &rootfs, Mode::Apply, &l.digest.to_string())?;
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(root),
            Err(e) => {
                let _ = self.unmount_root(id);
                Err(e)
            }
        }
    }

    fn mount_overlay(&self, id: &str, dir: &Path, chain: &[Digest]) -> Result<()> {
        let upper = dir.join("upper");
        let work = dir.join("work");
        fs::create_dir_all(&upper).at(&upper)?;
        fs::create_dir_all(&work).at(&work)?;
        // overlayfs lists the top layer first.
        let lower: Vec<String> = chain
            .iter()
            .rev()
            .map(|c| self.snapshot_dir(c).join("fs").display().to_string())
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        let target = dir.join("rootfs");
        // mount(2) takes at most a page of options and splits paths at ':' and ','; past that, the mount API's
        // `lowerdir+` (Linux 6.8) passes one layer at a time.
        let fits = opts.len() < 4000 && !lower.iter().any(|l| l.contains([':', ',']));
        let r = if fits {
            mount_classic(&target, &opts, 0)
        } else {
            mount_layer_by_layer(&target, &lower, Some((upper.as_path(), work.as_path())))
        };
        if let Err(e) = r {
            let _ = fs::remove_dir_all(&upper);
            let _ = fs::remove_dir_all(&work);
            return Err(Error::Mount {
                id: id.to_owned(),
                reason: format!(
                    "mounting overlayfs ({} layers) on {}: {e}",
                    lower.len(),
                    target.display()
                ),
            });
        }
        Ok(())
    }

    /// Unmounts and removes the root of container `id`; a root that is already gone is fine.
    pub fn unmount_root(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id)?;
        let rootfs = dir.join("rootfs");
        if is_mountpoint(&rootfs)? {
            let c = CString::new(rootfs.as_os_str().as_bytes()).expect("no NUL in paths");
            // SAFETY: valid C string.
            if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(Error::Mount {
                    id: id.to_owned(),
                    reason: format!("unmounting {}: {e}", rootfs.display()),
                });
            }
        }
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&dir),
            _ => Ok(()),
        }
    }

    /// Roots that exist now.
    pub fn container_roots(&self) -> Result<Vec<ContainerRoot>> {
        let dir = self.dir("containers");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).at(&dir)? {
            let p = e.at(&dir)?.path().join("root.json");
            if let Ok(b) = fs::read(&p) {
                if let Ok(r) = serde_json::from_slice(&b) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}

/// Whether `path` is a mount point, from /proc/self/mountinfo (field 5 is the mount point, octal-escaped).
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    let info = fs::read_to_string("/proc/self/mountinfo").at("/proc/self/mountinfo")?;
    let want = path.display().to_string();
    Ok(info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|m| unescape_mountinfo(m) == want)
    }))
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn cstring(s: impl AsRef<std::ffi::OsStr>) -> CString {
    CString::new(s.as_ref().as_bytes()).expect("no NUL in paths")
}

fn mount_classic(target: &Path, opts: &str, flags: libc::c_ulong) -> std::io::Result<()> {
    let (t, o) = (cstring(target), cstring(opts));
    // SAFETY: valid C strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            t.as_ptr(),
            c"overlay".as_ptr(),
            flags,
            o.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// fsopen/fsconfig/fsmount/move_mount, one `lowerdir+` per layer (top first); read-only without `upper`.
fn mount_layer_by_layer(
    target: &Path,
    lower: &[String],
    upper: Option<(&Path, &Path)>,
) -> std::io::Result<()> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let fd = |r: libc::c_long| -> std::io::Result<std::os::fd::OwnedFd> {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: r is a new fd returned by the kernel.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(r as libc::c_int) })
        }
    };
    use std::os::fd::AsRawFd;
    // SAFETY: valid C string; the fd is owned by `fs_fd`.
    let fs_fd =
        fd(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })?;
    let set = |key: &CString, value: &CString| -> std::io::Result<()> {
        // SAFETY: valid fd and C strings.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs_fd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    let lower_key = cstring("lowerdir+");
    for l in lower {
        set(&lower_key, &cstring(l))?;
    }
    if let Some((upper, work)) = upper {
        set(&cstring("upperdir"), &cstring(upper))?;
        set(&cstring("workdir"), &cstring(work))?;
    }
    // SAFETY: valid fd; null key and value for a command.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs_fd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: valid fd.
    let mnt =
        fd(unsafe { libc::syscall(libc::SYS_fsmount, fs_fd.as_raw_fd(), FSMOUNT_CLOEXEC, 0) })?;
    let t = cstring(target);
    // SAFETY: valid fds and C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn syncfs(dir: &Path) -> Result<()> {
    let f = fs::File::open(dir).at(dir)?;
    // SAFETY: valid fd.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
        return Err(std::io::Error::last_os_error()).at(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
