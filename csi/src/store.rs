//! The volumes themselves, beneath the base directory:
//!
//! ```text
//! <base>/index.json                 the index (index.rs)
//! <base>/volumes/<id>/              a filesystem volume: a project-quota directory, or an image's mount point
//! <base>/volumes/<id>.img           the ext4 image of an image-backed volume
//! <base>/volumes/<id>.block         the file behind a raw block volume
//! <base>/snapshots/<id>.tar|.block   a filesystem volume's files, or a copy of a block file
//! ```
//!
//! Every file is opened through `sys::open_beneath` (openat2, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) and every
//! mount is made from the descriptor so opened: a volume ID is only ever one of our 32-hex-digit names, and a
//! symlink planted anywhere beneath the base directory makes the call fail instead of reaching outside it.
//!
//! Capacity is enforced, not just recorded. Where the base directory's filesystem enforces project quotas
//! (ext4 or xfs mounted with `prjquota`), a filesystem volume is a directory in a project of its own whose hard
//! limit is the capacity: no image to format, no loop device, expansion is one quotactl, and free space stays
//! shared. Anywhere else (no quota feature, not mounted with prjquota, tmpfs, an older kernel without
//! quotactl_fd) a volume is an ext4 filesystem in a sparse image file of exactly the capacity, loop-mounted on
//! the volume directory: the kernel's ENOSPC then comes from the volume's own filesystem. (Past an ext4 project
//! quota a writer gets EDQUOT, "Disk quota exceeded", where xfs says ENOSPC: the kernel's choice of code.)
//! Which one a plugin uses is decided once at start and logged with the reason; each volume keeps the kind it
//! was made with.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::index::{Format, Index, Kind, Publish, Snapshot, Source, Volume};
use crate::sys;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// Capacity of a volume whose request names none.
pub const DEFAULT_CAPACITY: u64 = GIB;
/// ext4 with a journal needs room of its own; smaller image volumes are refused rather than unusable.
pub const MIN_IMAGE_CAPACITY: u64 = 16 * MIB;
/// The ext4 block size of image volumes (fixed, so that growing is a block count).
const IMAGE_BLOCK: u64 = 4096;
/// Projects of our volumes start here, far from the small numbers administrators hand out by hand.
const FIRST_PROJECT: u32 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

pub type Result<T> = std::result::Result<T, Error>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| {
        // A symlink or `..` met by openat2: say so, it is what an operator needs to see.
        if matches!(source.raw_os_error(), Some(libc::ELOOP) | Some(libc::EXDEV)) {
            return Error::FailedPrecondition(format!(
                "{what}: refused, a symlink or a path outside the base directory is in the way ({source})"
            ));
        }
        Error::Io { what, source }
    }
}

/// The capacity-enforcing kind new filesystem volumes get.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// Project quotas where the base directory's filesystem enforces them, else image files.
    Auto,
    ProjectQuota,
    Image,
}

/// Whether a volume ID or snapshot ID is one we could have made: 32 lowercase hex digits. Anything else
/// (`..`, `/`, a name) is not ours and never reaches a path.
pub fn is_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: fills the buffer; getrandom(2) with no flags blocks only before the pool is ready.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    assert_eq!(n, 16, "getrandom");
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What CreateVolume asks for, checked by the service.
pub struct NewVolume {
    pub name: String,
    pub capacity: u64,
    pub limit: u64,
    pub block: bool,
    pub source: Option<Source>,
    pub parameters: BTreeMap<String, String>,
}

/// What NodePublishVolume asks for, checked by the service.
pub struct PublishRequest {
    pub target: PathBuf,
    pub readonly: bool,
    pub block: bool,
    pub flags: MsFlags,
    pub group: Option<u32>,
}

pub struct Usage {
    pub bytes_total: u64,
    pub bytes_used: u64,
    pub inodes: Option<(u64, u64)>,
}

pub struct Store {
    pub base: PathBuf,
    base_fd: OwnedFd,
    pub kind: Kind,
    pub kind_reason: String,
    pub index: Index,
    mke2fs: PathBuf,
}

const VOLUMES: &str = "volumes";
const SNAPSHOTS: &str = "snapshots";

impl Store {
    /// Opens (making it if needed) the base directory, reads the index and brings the disk in line with it:
    /// what a create or delete cut short left is removed, image volumes are mounted again after a reboot, and
    /// publishes whose mount is gone (a reboot) are forgotten.
    pub fn open(base: &Path, backend: Backend) -> std::result::Result<Store, String> {
        std::fs::create_dir_all(base)
            .map_err(|e| format!("base directory {}: {e}", base.display()))?;
        let meta =
            std::fs::symlink_metadata(base).map_err(|e| format!("{}: {e}", base.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "base directory {} is not a directory (a symlink?)",
                base.display()
            ));
        }
        let base = base
            .canonicalize()
            .map_err(|e| format!("base directory {}: {e}", base.display()))?;
        let base_fd: OwnedFd = File::open(&base)
            .map_err(|e| format!("base directory {}: {e}", base.display()))?
            .into();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("base directory {}: {e}", base.display()))?;
        for d in [VOLUMES, SNAPSHOTS] {
            match sys::mkdir_at(&base_fd, d, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("{}/{d}: {e}", base.display())),
            }
            sys::open_beneath(
                &base_fd,
                Path::new(d),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| {
                format!(
                    "{}/{d}: {e} (must be a directory, not a symlink)",
                    base.display()
                )
            })?;
        }
        let quota = sys::project_quota_enforced(&base_fd);
        let (kind, kind_reason) = match (backend, quota) {
            (Backend::Image, _) => (Kind::Image, "image files, as configured".to_owned()),
            (Backend::Auto | Backend::ProjectQuota, Ok(())) => (
                Kind::ProjectQuota { project: 0 },
                "project quotas: the base directory's filesystem enforces them".to_owned(),
            ),
            (Backend::ProjectQuota, Err(why)) => {
                return Err(format!(
                    "volume-backend project-quota on {}: {why}",
                    base.display()
                ))
            }
            (Backend::Auto, Err(why)) => (
                Kind::Image,
                format!("ext4 image files: no project quotas here ({why})"),
            ),
        };
        let mke2fs = [
            "/sbin/mke2fs",
            "/usr/sbin/mke2fs",
            "/sbin/mkfs.ext4",
            "/usr/sbin/mkfs.ext4",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("mke2fs"));
        let index = Index::load(&base_fd, &base)?;
        let mut store = Store {
            base,
            base_fd,
            kind,
            kind_reason,
            index,
            mke2fs,
        };
        store.recover();
        Ok(store)
    }

    fn recover(&mut self) {
        // Leftovers of a create cut short before its index entry, or a delete cut short after it.
        for dir in [VOLUMES, SNAPSHOTS] {
            let Ok(entries) = std::fs::read_dir(self.base.join(dir)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let stem = name.split('.').next().unwrap_or_default();
                let known = if dir == VOLUMES {
                    self.index.volumes.contains_key(stem)
                } else {
                    self.index.snapshots.contains_key(stem)
                };
                if !known {
                    tracing::info!(path = %e.path().display(), "removing what an interrupted call left");
                    self.remove_entry(&e.path());
                }
            }
        }
        let ids: Vec<String> = self.index.volumes.keys().cloned().collect();
        let mut changed = false;
        for id in ids {
            let v = self.index.volumes[&id].clone();
            if v.kind == Kind::Image {
                if let Err(e) = self.mount_image(&id) {
                    tracing::error!(volume = %id, error = %e, "mounting the volume's image");
                }
            }
            let kept: Vec<Publish> = v
                .publishes
                .iter()
                .filter(|p| sys::is_mount_point(&p.target))
                .cloned()
                .collect();
            if kept.len() != v.publishes.len() {
                changed = true;
                if kept.is_empty() && v.kind.is_block() {
                    self.detach_block(&id);
                }
                self.index.volumes.get_mut(&id).expect("listed").publishes = kept;
            }
        }
        if changed {
            if let Err(e) = self.index.save(&self.base_fd) {
                tracing::error!(error = %e, "saving the index");
            }
        }
    }

    /// Removes one entry of `volumes/` or `snapshots/` without following a symlink: a mount on it is undone
    /// (never through a symlink), loop devices on a file are detached, a symlink itself is unlinked.
    fn remove_entry(&self, path: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return;
        };
        if meta.file_type().is_symlink() {
            let _ = std::fs::remove_file(path);
            return;
        }
        if meta.is_dir() {
            while sys::is_mount_point(path) {
                if let Err(e) = nix::mount::umount2(path, MntFlags::UMOUNT_NOFOLLOW) {
                    tracing::error!(path = %path.display(), error = %e, "unmounting");
                    return;
                }
            }
            if let Err(e) = std::fs::remove_dir_all(path) {
                tracing::error!(path = %path.display(), error = %e, "removing");
            }
        } else {
            for dev in sys::loops_backed_by(meta.dev(), meta.ino()) {
                let _ = sys::loop_detach(&dev);
            }
            let _ = std::fs::remove_file(path);
        }
    }

    fn save(&self) -> Result<()> {
        self.index
            .save(&self.base_fd)
            .map_err(io_err("writing the volume index"))
    }

    fn dir(&self, rel: &str) -> Result<OwnedFd> {
        sys::open_beneath(
            &self.base_fd,
            Path::new(rel),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .map_err(io_err(format!("{}/{rel}", self.base.display())))
    }

    fn file(&self, rel: &str, flags: i32) -> Result<File> {
        sys::open_beneath(&self.base_fd, Path::new(rel), flags, 0o600)
            .map(File::from)
            .map_err(io_err(format!("{}/{rel}", self.base.display())))
    }

    pub fn volume(&self, id: &str) -> Result<&Volume> {
        self.index
            .volumes
            .get(id)
            .filter(|_| is_id(id))
            .ok_or_else(|| Error::NotFound(format!("volume {id:?} not found")))
    }

    pub fn snapshot(&self, id: &str) -> Result<&Snapshot> {
        self.index
            .snapshots
            .get(id)
            .filter(|_| is_id(id))
            .ok_or_else(|| Error::NotFound(format!("snapshot {id:?} not found")))
    }

    /// Free bytes for new volumes on the base directory's filesystem.
    pub fn available(&self) -> Result<u64> {
        let s = sys::statvfs(&self.base_fd).map_err(io_err("statvfs of the base directory"))?;
        Ok(s.f_bavail * s.f_frsize)
    }

    pub fn create_volume(&mut self, req: NewVolume) -> Result<(String, Volume)> {
        // A name seen before: the same volume if it satisfies this request, else the name is taken. Checked
        // first, so that a repeated call still answers after its source was deleted.
        if let Some((id, v)) = self.index.volume_by_name(&req.name) {
            let fits = v.capacity >= req.capacity && (req.limit == 0 || v.capacity <= req.limit);
            if fits
                && v.kind.is_block() == req.block
                && v.source == req.source
                && v.parameters == req.parameters
            {
                return Ok((id.clone(), v.clone()));
            }
            return Err(Error::AlreadyExists(format!(
                "volume name {:?} exists as {id} with capacity {}, {}, source {:?}",
                req.name,
                v.capacity,
                v.kind.name(),
                v.source
            )));
        }
        // The source decides the least capacity, and whether it is block or filesystem.
        let (src_format, src_capacity) = match &req.source {
            None => (None, 0),
            Some(Source::Snapshot(s)) => {
                let s = self.snapshot(s)?;
                (Some(s.format), s.source_capacity)
            }
            Some(Source::Volume(v)) => {
                let v = self.volume(v)?;
                let f = if v.kind.is_block() {
                    Format::Block
                } else {
                    Format::Tar
                };
                (Some(f), v.capacity)
            }
        };
        if let Some(f) = src_format {
            if (f == Format::Block) != req.block {
                let kind = |block| if block { "block" } else { "filesystem" };
                return Err(Error::InvalidArgument(format!(
                    "volume_content_source: a {} source cannot fill a {} volume",
                    kind(f == Format::Block),
                    kind(req.block)
                )));
            }
        }
        // A filesystem volume made from a source gets this plugin's kind and the source's files (a tar archive):
        // growing a copied ext4 image would need CAP_SYS_RESOURCE, unpacking never does.
        let kind = if req.block { Kind::Block } else { self.kind };
        let min = if kind == Kind::Image {
            MIN_IMAGE_CAPACITY
        } else {
            MIB
        };
        let mut capacity = match (req.capacity, req.limit) {
            (0, 0) if src_capacity > 0 => src_capacity,
            (0, 0) => DEFAULT_CAPACITY,
            (c, _) => c.max(min).max(src_capacity),
        };
        capacity = capacity.div_ceil(IMAGE_BLOCK) * IMAGE_BLOCK;
        if req.limit > 0 && capacity > req.limit {
            if req.capacity == 0 && src_capacity <= req.limit && min <= req.limit {
                capacity = req.limit / IMAGE_BLOCK * IMAGE_BLOCK;
            } else {
                return Err(Error::OutOfRange(format!(
                    "capacity_range.limit_bytes {}: below the {capacity} bytes this volume needs (minimum {min}, \
                     source {src_capacity})",
                    req.limit
                )));
            }
        }
        let available = self.available()?;
        if capacity > available {
            return Err(Error::OutOfRange(format!(
                "capacity {capacity} bytes: the base directory's filesystem has {available} bytes free"
            )));
        }
        let id = new_id();
        let kind = match kind {
            Kind::ProjectQuota { .. } => Kind::ProjectQuota {
                project: self.free_project(),
            },
            k => k,
        };
        let volume = Volume {
            name: req.name,
            capacity,
            kind,
            source: req.source,
            parameters: req.parameters,
            publishes: Vec::new(),
        };
        if let Err(e) = self.make(&id, &volume) {
            self.remove_data(&id, kind);
            return Err(e);
        }
        self.index.volumes.insert(id.clone(), volume.clone());
        if let Err(e) = self.save() {
            self.index.volumes.remove(&id);
            self.remove_data(&id, kind);
            return Err(e);
        }
        tracing::info!(volume = %id, name = %volume.name, capacity, kind = kind.name(), "volume created");
        Ok((id, volume))
    }

    fn free_project(&self) -> u32 {
        let used: std::collections::BTreeSet<u32> = self
            .index
            .volumes
            .values()
            .filter_map(|v| match v.kind {
                Kind::ProjectQuota { project } => Some(project),
                _ => None,
            })
            .collect();
        (FIRST_PROJECT..)
            .find(|p| !used.contains(p))
            .expect("a free project id")
    }

    /// Makes the volume's data (not yet in the index).
    fn make(&self, id: &str, v: &Volume) -> Result<()> {
        let volumes = self.dir(VOLUMES)?;
        match v.kind {
            Kind::ProjectQuota { project } => {
                sys::mkdir_at(&volumes, id, 0o777)
                    .map_err(io_err(format!("creating volume {id}")))?;
                let dir = self.dir(&format!("{VOLUMES}/{id}"))?;
                // 0777 as local-path-provisioner and the reference hostpath driver make theirs: a pod running
                // as any user can write; with an fsGroup (volume_mount_group) publishing narrows it.
                std::fs::set_permissions(
                    sys::fd_path(&dir),
                    std::fs::Permissions::from_mode(0o777),
                )
                .map_err(io_err("chmod of the volume"))?;
                sys::set_project(&dir, project)
                    .map_err(io_err(format!("project {project} on volume {id}")))?;
                sys::set_project_limit(&self.base_fd, project, v.capacity)
                    .map_err(io_err(format!("quota limit of project {project}")))?;
                if let Some(src) = &v.source {
                    self.fill_dir(&dir, src)?;
                }
            }
            Kind::Image => {
                let img = self.file(
                    &format!("{VOLUMES}/{id}.img"),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                )?;
                img.set_len(v.capacity)
                    .map_err(io_err("sizing the image"))?;
                {
                    let (dev, _hold) =
                        sys::loop_attach(&img, true).map_err(io_err("attaching a loop device"))?;
                    self.mkfs(&dev)?;
                }
                sys::mkdir_at(&volumes, id, 0o700)
                    .map_err(io_err(format!("creating volume {id}")))?;
                self.mount_image(id)?;
                let dir = self.dir(&format!("{VOLUMES}/{id}"))?;
                std::fs::set_permissions(
                    sys::fd_path(&dir),
                    std::fs::Permissions::from_mode(0o777),
                )
                .map_err(io_err("chmod of the volume"))?;
                if let Some(src) = &v.source {
                    self.fill_dir(&dir, src)?;
                }
            }
            Kind::Block => {
                let f = self.file(
                    &format!("{VOLUMES}/{id}.block"),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                )?;
                match &v.source {
                    Some(Source::Snapshot(s)) => {
                        let snap = self.file(&format!("{SNAPSHOTS}/{s}.block"), libc::O_RDONLY)?;
                        sys::copy_sparse(&snap, &f).map_err(io_err("copying the snapshot"))?;
                    }
                    Some(Source::Volume(src)) => {
                        let s = self.file(&format!("{VOLUMES}/{src}.block"), libc::O_RDONLY)?;
                        sys::copy_sparse(&s, &f).map_err(io_err("copying the source volume"))?;
                    }
                    None => {}
                }
                f.set_len(v.capacity)
                    .map_err(io_err("sizing the block file"))?;
                f.sync_all().map_err(io_err("syncing the block file"))?;
            }
        }
        Ok(())
    }

    fn mkfs(&self, dev: &Path) -> Result<()> {
        let out = std::process::Command::new(&self.mke2fs)
            .args([
                "-t",
                "ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-b",
                "4096",
                "-E",
                "nodiscard,lazy_itable_init=1",
            ])
            .arg(dev)
            .output()
            .map_err(io_err(format!("running {}", self.mke2fs.display())))?;
        if !out.status.success() {
            return Err(Error::Io {
                what: format!("{} {}", self.mke2fs.display(), dev.display()),
                source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            });
        }
        Ok(())
    }

    /// The directory of filesystem volume `id`, where its data is: for an image volume its filesystem is
    /// mounted first if it is not (never the empty directory beneath, which has no capacity limit).
    fn data_dir(&self, id: &str) -> Result<OwnedFd> {
        if self
            .index
            .volumes
            .get(id)
            .is_some_and(|v| v.kind == Kind::Image)
        {
            self.mount_image(id)?;
        }
        self.dir(&format!("{VOLUMES}/{id}"))
    }

    /// Mounts an image volume's filesystem on its directory unless it already is.
    fn mount_image(&self, id: &str) -> Result<()> {
        if sys::is_mount_point(&self.base.join(VOLUMES).join(id)) {
            return Ok(());
        }
        let img = self.file(&format!("{VOLUMES}/{id}.img"), libc::O_RDWR)?;
        let dir = self.dir(&format!("{VOLUMES}/{id}"))?;
        // Autoclear: the loop device goes away with the mount, nothing to track.
        let (dev, _hold) =
            sys::loop_attach(&img, true).map_err(io_err("attaching a loop device"))?;
        nix::mount::mount(
            Some(&dev),
            &sys::fd_path(&dir),
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOATIME,
            None::<&str>,
        )
        .map_err(|e| io_err(format!("mounting {} on volume {id}", dev.display()))(e.into()))
    }

    /// Fills a fresh volume directory from a tar snapshot or another volume's directory.
    fn fill_dir(&self, dir: &OwnedFd, src: &Source) -> Result<()> {
        let archive = match src {
            Source::Snapshot(s) => {
                let snap = self.snapshot(s)?;
                if snap.format != Format::Tar {
                    return Err(Error::InvalidArgument(format!(
                        "volume_content_source: snapshot {s} is a {:?} copy and cannot fill a filesystem volume",
                        snap.format
                    )));
                }
                self.file(&format!("{SNAPSHOTS}/{s}.tar"), libc::O_RDONLY)?
            }
            Source::Volume(v) => {
                let t = tempfile::tempfile_in(self.base.join(SNAPSHOTS))
                    .map_err(io_err("a temporary archive"))?;
                let src = self.data_dir(v)?;
                self.archive(&src, &t)?;
                t
            }
        };
        (&archive).rewind_to_start()?;
        let mut a = tar::Archive::new(io::BufReader::new(&archive));
        a.set_preserve_permissions(true);
        a.set_preserve_ownerships(true);
        a.set_overwrite(true);
        a.unpack(sys::fd_path(dir))
            .map_err(io_err("unpacking into the new volume"))
    }

    /// Writes a tar archive of the directory `src` (symlinks kept as symlinks, never followed) to `out`.
    fn archive(&self, src: &OwnedFd, out: &File) -> Result<()> {
        let mut b = tar::Builder::new(io::BufWriter::new(out));
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        b.append_dir_all(".", sys::fd_path(src))
            .map_err(io_err("archiving the volume"))?;
        b.into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .and_then(|f| f.sync_all())
            .map_err(io_err("writing the archive"))
    }

    /// Undoes `make` (and is what DeleteVolume does to the data): unmount, detach, remove.
    fn remove_data(&self, id: &str, kind: Kind) {
        let volumes = self.base.join(VOLUMES);
        match kind {
            Kind::ProjectQuota { project } => {
                self.remove_entry(&volumes.join(id));
                if let Err(e) = sys::set_project_limit(&self.base_fd, project, 0) {
                    tracing::warn!(project, error = %e, "clearing the quota limit");
                }
            }
            Kind::Image => {
                self.remove_entry(&volumes.join(id));
                self.remove_entry(&volumes.join(format!("{id}.img")));
            }
            Kind::Block => {
                self.detach_block(id);
                self.remove_entry(&volumes.join(format!("{id}.block")));
            }
        }
    }

    fn detach_block(&self, id: &str) {
        if let Ok(meta) =
            std::fs::symlink_metadata(self.base.join(VOLUMES).join(format!("{id}.block")))
        {
            for dev in sys::loops_backed_by(meta.dev(), meta.ino()) {
                if let Err(e) = sys::loop_detach(&dev) {
                    tracing::warn!(dev = %dev.display(), error = %e, "detaching");
                }
            }
        }
    }

    /// Idempotent: a volume that is not there is deleted.
    pub fn delete_volume(&mut self, id: &str) -> Result<()> {
        let Ok(v) = self.volume(id) else {
            return Ok(());
        };
        if let Some(p) = v.publishes.first() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is published at {}; unpublish it first",
                p.target.display()
            )));
        }
        let v = self.index.volumes.remove(id).expect("checked");
        if let Err(e) = self.save() {
            self.index.volumes.insert(id.to_owned(), v);
            return Err(e);
        }
        // After the index: a crash here leaves data that no entry names, removed at the next start.
        self.remove_data(id, v.kind);
        tracing::info!(volume = %id, name = %v.name, "volume deleted");
        Ok(())
    }

    /// Grows a volume to at least `bytes`; returns the capacity it has.
    pub fn expand(&mut self, id: &str, bytes: u64, limit: u64) -> Result<u64> {
        let v = self.volume(id)?.clone();
        let want = bytes.div_ceil(IMAGE_BLOCK) * IMAGE_BLOCK;
        if want <= v.capacity {
            return Ok(v.capacity);
        }
        if limit > 0 && want > limit {
            return Err(Error::OutOfRange(format!(
                "capacity_range: {want} bytes (rounded to {IMAGE_BLOCK}) exceeds limit_bytes {limit}"
            )));
        }
        let grow = want - v.capacity;
        let available = self.available()?;
        if grow > available {
            return Err(Error::OutOfRange(format!(
                "growing volume {id} by {grow} bytes: the base directory's filesystem has {available} bytes free"
            )));
        }
        match v.kind {
            Kind::ProjectQuota { project } => sys::set_project_limit(&self.base_fd, project, want)
                .map_err(io_err(format!("quota limit of project {project}")))?,
            Kind::Image => self.grow_image(id, &v, want)?,
            Kind::Block => {
                let f = self.file(&format!("{VOLUMES}/{id}.block"), libc::O_RDWR)?;
                f.set_len(want).map_err(io_err("growing the block file"))?;
                let meta = f.metadata().map_err(io_err("stat of the block file"))?;
                for dev in sys::loops_backed_by(meta.dev(), meta.ino()) {
                    sys::loop_set_capacity(&dev).map_err(io_err("resizing the loop device"))?;
                }
            }
        }
        self.index.volumes.get_mut(id).expect("checked").capacity = want;
        self.save()?;
        tracing::info!(volume = %id, capacity = want, "volume expanded");
        Ok(want)
    }

    /// Grows an image volume's file and its ext4 filesystem. Online (EXT4_IOC_RESIZE_FS on the mounted
    /// filesystem) needs CAP_SYS_RESOURCE; without it an unpublished volume is grown offline with resize2fs
    /// (unmounted for that moment), and a published one is refused with the reason.
    fn grow_image(&self, id: &str, v: &Volume, want: u64) -> Result<()> {
        let online = sys::has_cap_sys_resource();
        if !online && !v.publishes.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is published: growing an image volume online needs CAP_SYS_RESOURCE, which this \
                 plugin lacks (expansion is OFFLINE here); unpublish it first"
            )));
        }
        let img = self.file(&format!("{VOLUMES}/{id}.img"), libc::O_RDWR)?;
        img.set_len(want).map_err(io_err("growing the image"))?;
        let grown = if online {
            (|| {
                let meta = img.metadata().map_err(io_err("stat of the image"))?;
                for dev in sys::loops_backed_by(meta.dev(), meta.ino()) {
                    sys::loop_set_capacity(&dev).map_err(io_err("resizing the loop device"))?;
                }
                let dir = self.dir(&format!("{VOLUMES}/{id}"))?;
                sys::ext4_resize(&dir, want / IMAGE_BLOCK).map_err(io_err("growing the filesystem"))
            })()
        } else {
            self.resize_offline(id, &img)
        };
        if grown.is_err() {
            let _ = img.set_len(v.capacity);
        }
        grown
    }

    fn resize_offline(&self, id: &str, img: &File) -> Result<()> {
        let path = self.base.join(VOLUMES).join(id);
        while sys::is_mount_point(&path) {
            nix::mount::umount2(&path, MntFlags::UMOUNT_NOFOLLOW)
                .map_err(|e| io_err(format!("unmounting volume {id}"))(e.into()))?;
        }
        let resize2fs = ["/sbin/resize2fs", "/usr/sbin/resize2fs"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("resize2fs"));
        // The image's own descriptor, inherited: resize2fs works on exactly the file we checked.
        let (dev, _hold) =
            sys::loop_attach(img, true).map_err(io_err("attaching a loop device"))?;
        let out = std::process::Command::new(&resize2fs)
            .arg("-f")
            .arg(&dev)
            .output();
        drop(_hold);
        let mounted = self.mount_image(id);
        let out = out.map_err(io_err(format!("running {}", resize2fs.display())))?;
        if !out.status.success() {
            return Err(Error::Io {
                what: format!("{} {}", resize2fs.display(), dev.display()),
                source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            });
        }
        mounted
    }

    /// The least capacity a new filesystem volume gets.
    pub fn min_capacity(&self) -> u64 {
        if self.kind == Kind::Image {
            MIN_IMAGE_CAPACITY
        } else {
            MIB
        }
    }

    /// Whether a published filesystem volume can grow (PluginCapability VolumeExpansion ONLINE).
    pub fn online_expansion(&self) -> bool {
        self.kind != Kind::Image || sys::has_cap_sys_resource()
    }

    pub fn publish(&mut self, id: &str, req: PublishRequest) -> Result<()> {
        let v = self.volume(id)?.clone();
        if v.kind.is_block() != req.block {
            return Err(Error::InvalidArgument(format!(
                "volume_capability: volume {id} is a {} volume",
                if v.kind.is_block() {
                    "block"
                } else {
                    "filesystem"
                }
            )));
        }
        let recorded = self.index.volumes.iter().find_map(|(vid, vol)| {
            vol.publishes
                .iter()
                .find(|p| p.target == req.target)
                .map(|p| (vid, p))
        });
        match recorded {
            Some((vid, p)) if vid == id && p.readonly == req.readonly => {
                if sys::is_mount_point(&req.target) {
                    return Ok(());
                }
                // Recorded before the mount, then cut short: mount now.
            }
            Some((vid, p)) => {
                return Err(Error::AlreadyExists(format!(
                    "target_path {} is already published (volume {vid}, readonly {})",
                    req.target.display(),
                    p.readonly
                )))
            }
            None if sys::is_mount_point(&req.target) => {
                return Err(Error::AlreadyExists(format!(
                    "target_path {} is a mount point the plugin did not make",
                    req.target.display()
                )))
            }
            None => {
                // Recorded first: a crash after the mount leaves a publish we know of and can undo.
                self.index
                    .volumes
                    .get_mut(id)
                    .expect("checked")
                    .publishes
                    .push(Publish {
                        target: req.target.clone(),
                        readonly: req.readonly,
                    });
                if let Err(e) = self.save() {
                    self.forget_publish(id, &req.target);
                    return Err(e);
                }
            }
        }
        let r = self.mount_target(id, &v, &req);
        if r.is_err() {
            self.forget_publish(id, &req.target);
            let _ = self.save();
        }
        r
    }

    fn forget_publish(&mut self, id: &str, target: &Path) {
        if let Some(v) = self.index.volumes.get_mut(id) {
            v.publishes.retain(|p| p.target != target);
        }
    }

    fn mount_target(&self, id: &str, v: &Volume, req: &PublishRequest) -> Result<()> {
        let t = &req.target;
        let source: PathBuf;
        let _hold: OwnedFd;
        if v.kind.is_block() {
            if let Some(parent) = t.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io_err(format!("creating {}", parent.display())))?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(t)
                .map_err(io_err(format!("creating {}", t.display())))?;
            let f = self.file(&format!("{VOLUMES}/{id}.block"), libc::O_RDWR)?;
            let meta = f.metadata().map_err(io_err("stat of the block file"))?;
            source = match sys::loops_backed_by(meta.dev(), meta.ino())
                .into_iter()
                .next()
            {
                Some(dev) => dev,
                None => {
                    sys::loop_attach(&f, false)
                        .map_err(io_err("attaching a loop device"))?
                        .0
                }
            };
        } else {
            std::fs::create_dir_all(t).map_err(io_err(format!("creating {}", t.display())))?;
            let dir = self.data_dir(id)?;
            if let Some(gid) = req.group {
                // fsGroup: the group owns the volume's root and what is created in it (setgid).
                nix::unistd::chown(
                    &sys::fd_path(&dir),
                    None,
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .map_err(|e| io_err("chown of the volume to volume_mount_group")(e.into()))?;
                std::fs::set_permissions(
                    sys::fd_path(&dir),
                    std::fs::Permissions::from_mode(0o2775),
                )
                .map_err(io_err("chmod of the volume"))?;
            }
            source = sys::fd_path(&dir);
            _hold = dir;
        }
        nix::mount::mount(
            Some(&source),
            t,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io_err(format!("bind mount on {}", t.display()))(e.into()))?;
        let mut flags = req.flags;
        if req.readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        if !flags.is_empty() {
            // Flags other than MS_BIND are ignored by the bind itself: they take a remount.
            if let Err(e) = nix::mount::mount(
                None::<&str>,
                t,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                None::<&str>,
            ) {
                let _ = nix::mount::umount2(t, MntFlags::UMOUNT_NOFOLLOW);
                return Err(io_err(format!(
                    "remounting {} with the mount flags",
                    t.display()
                ))(e.into()));
            }
        }
        Ok(())
    }

    pub fn unpublish(&mut self, id: &str, target: &Path) -> Result<()> {
        let v = self.volume(id)?.clone();
        if !v.publishes.iter().any(|p| p.target == target) {
            // Not published there (any more): done, as the spec wants a repeated call to succeed.
            return Ok(());
        }
        while sys::is_mount_point(target) {
            nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW)
                .map_err(|e| io_err(format!("unmounting {}", target.display()))(e.into()))?;
        }
        // The spec: the SP deletes the file or directory it created at the target path.
        let removed = if v.kind.is_block() {
            std::fs::remove_file(target)
        } else {
            std::fs::remove_dir(target)
        };
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {}", target.display()))(e)),
        }
        self.forget_publish(id, target);
        if v.kind.is_block() && self.index.volumes[id].publishes.is_empty() {
            self.detach_block(id);
        }
        self.save()
    }

    pub fn usage(&self, id: &str, path: &Path) -> Result<Usage> {
        let v = self.volume(id)?;
        if !v.publishes.iter().any(|p| p.target == path) {
            return Err(Error::NotFound(format!(
                "volume_path {}: volume {id} is not published there",
                path.display()
            )));
        }
        if !path.exists() {
            return Err(Error::NotFound(format!(
                "volume_path {} does not exist",
                path.display()
            )));
        }
        match v.kind {
            Kind::Block => Ok(Usage {
                bytes_total: v.capacity,
                bytes_used: 0,
                inodes: None,
            }),
            Kind::Image => {
                let s = sys::statvfs(&self.data_dir(id)?).map_err(io_err("statvfs"))?;
                let total = s.f_blocks * s.f_frsize;
                Ok(Usage {
                    bytes_total: total,
                    bytes_used: total - s.f_bfree * s.f_frsize,
                    inodes: Some((s.f_files, s.f_files - s.f_ffree)),
                })
            }
            Kind::ProjectQuota { project } => {
                let (bytes, inodes) =
                    sys::project_usage(&self.base_fd, project).map_err(io_err("quota usage"))?;
                let s = sys::statvfs(&self.base_fd).map_err(io_err("statvfs"))?;
                Ok(Usage {
                    bytes_total: v.capacity,
                    bytes_used: bytes,
                    inodes: Some((s.f_files, inodes)),
                })
            }
        }
    }

    /// Why a volume is not healthy, if it is not.
    pub fn condition(&self, id: &str) -> Option<String> {
        let v = self.index.volumes.get(id)?;
        let check = || -> Result<()> {
            match v.kind {
                Kind::Block => self
                    .file(&format!("{VOLUMES}/{id}.block"), libc::O_RDONLY)
                    .map(drop),
                Kind::ProjectQuota { .. } => self.dir(&format!("{VOLUMES}/{id}")).map(drop),
                Kind::Image => {
                    self.dir(&format!("{VOLUMES}/{id}"))?;
                    if !sys::is_mount_point(&self.base.join(VOLUMES).join(id)) {
                        return Err(Error::FailedPrecondition(
                            "its filesystem image is not mounted".into(),
                        ));
                    }
                    Ok(())
                }
            }
        };
        check().err().map(|e| e.to_string())
    }

    pub fn create_snapshot(&mut self, source: &str, name: &str) -> Result<(String, Snapshot)> {
        if let Some((id, s)) = self.index.snapshot_by_name(name) {
            if s.source_volume == source {
                return Ok((id.clone(), s.clone()));
            }
            return Err(Error::AlreadyExists(format!(
                "snapshot name {name:?} exists as {id} of volume {}",
                s.source_volume
            )));
        }
        let v = self.volume(source)?.clone();
        let format = if v.kind.is_block() {
            Format::Block
        } else {
            Format::Tar
        };
        let id = new_id();
        let rel = format!("{SNAPSHOTS}/{id}.{}", format.extension());
        let out = self.file(&rel, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)?;
        let made = (|| -> Result<u64> {
            match format {
                Format::Tar => {
                    let dir = self.data_dir(source)?;
                    // What the pod wrote and the kernel still holds reaches the volume first.
                    // SAFETY: syncfs on an open descriptor.
                    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
                    self.archive(&dir, &out)?
                }
                Format::Block => {
                    let f = self.file(&format!("{VOLUMES}/{source}.block"), libc::O_RDONLY)?;
                    sys::copy_sparse(&f, &out).map_err(io_err("copying the block file"))?;
                }
            }
            out.sync_all().map_err(io_err("syncing the snapshot"))?;
            Ok(out
                .metadata()
                .map_err(io_err("stat of the snapshot"))?
                .len())
        })();
        let size = match made {
            Ok(s) => s,
            Err(e) => {
                self.remove_entry(&self.base.join(&rel));
                return Err(e);
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let snap = Snapshot {
            name: name.to_owned(),
            source_volume: source.to_owned(),
            format,
            size,
            source_capacity: v.capacity,
            created_secs: now.as_secs() as i64,
            created_nanos: now.subsec_nanos() as i32,
        };
        self.index.snapshots.insert(id.clone(), snap.clone());
        if let Err(e) = self.save() {
            self.index.snapshots.remove(&id);
            self.remove_entry(&self.base.join(&rel));
            return Err(e);
        }
        tracing::info!(snapshot = %id, volume = %source, size, "snapshot created");
        Ok((id, snap))
    }

    /// Idempotent: a snapshot that is not there is deleted.
    pub fn delete_snapshot(&mut self, id: &str) -> Result<()> {
        let Ok(s) = self.snapshot(id) else {
            return Ok(());
        };
        let ext = s.format.extension();
        let s = self.index.snapshots.remove(id).expect("checked");
        if let Err(e) = self.save() {
            self.index.snapshots.insert(id.to_owned(), s);
            return Err(e);
        }
        self.remove_entry(&self.base.join(SNAPSHOTS).join(format!("{id}.{ext}")));
        tracing::info!(snapshot = %id, "snapshot deleted");
        Ok(())
    }
}

/// A target or staging path as the CO gives it: absolute, without `..`, normalised (no `.`, no trailing `/`).
pub fn clean_target(field: &str, p: &str) -> Result<PathBuf> {
    if p.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    let path = Path::new(p);
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::InvalidArgument(format!(
            "{field} {p:?}: must be an absolute path without . or .. components"
        )));
    }
    Ok(path.components().collect())
}

trait Rewind {
    fn rewind_to_start(self) -> Result<()>;
}

impl Rewind for &File {
    fn rewind_to_start(self) -> Result<()> {
        use std::io::Seek;
        let mut f = self;
        f.seek(io::SeekFrom::Start(0))
            .map(drop)
            .map_err(io_err("rewinding the archive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_ids_are_ids() {
        assert!(is_id(&new_id()));
        for bad in [
            "",
            "..",
            "../../etc",
            "0123456789abcdef0123456789abcdeF",
            "a/b",
            &"a".repeat(33),
        ] {
            assert!(!is_id(bad), "{bad}");
        }
    }

    #[test]
    fn targets_must_be_absolute_and_plain() {
        assert_eq!(clean_target("t", "/a/b/").unwrap(), PathBuf::from("/a/b"));
        for bad in ["", "a/b", "/a/../b", "./a"] {
            assert!(
                matches!(clean_target("t", bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }
}
