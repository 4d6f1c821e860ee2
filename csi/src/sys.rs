//! The kernel interfaces the plugin needs and no crate we use wraps: `openat2` confined beneath a directory,
//! project quotas (`quotactl_fd`, the `FS_IOC_FS[GS]ETXATTR` project id), loop devices, ext4 online resize,
//! freezing a filesystem, sparse copies, and reading the mount table.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// `/proc/self/fd/N`: a path that names exactly the file behind `fd` (mount(2) and mke2fs follow it to that
/// inode, never to whatever a path string resolves to later).
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// Opens `rel` beneath the directory `dir` with no symlink anywhere on the way (`openat2` with
/// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): `..`, an absolute path or a planted symlink fail with EXDEV/ELOOP
/// instead of leaving the directory.
pub fn open_beneath(dir: &impl AsRawFd, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(rel)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            mode as u64
        } else {
            0
        },
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: valid C string and open_how of the size passed.
    let fd = cvt(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `mkdirat(dir, name)`; `name` is one component.
pub fn mkdir_at(dir: &impl AsRawFd, name: &str, mode: u32) -> io::Result<()> {
    let c = cstr(Path::new(name))?;
    // SAFETY: valid C string.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) } as libc::c_long).map(drop)
}

// ---- project quotas ----

const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const Q_XGETQSTATV: u32 = ((b'X' as u32) << 8) + 8;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

fn qcmd(cmd: u32, ty: u32) -> libc::c_int {
    ((cmd << 8) | (ty & 0xff)) as libc::c_int
}

fn quotactl_fd(
    fd: &impl AsRawFd,
    cmd: libc::c_int,
    id: u32,
    addr: *mut libc::c_void,
) -> io::Result<()> {
    // SAFETY: `addr` points at a buffer of the size the command expects (checked by the callers).
    cvt(unsafe { libc::syscall(libc::SYS_quotactl_fd, fd.as_raw_fd(), cmd, id, addr) }).map(drop)
}

/// Whether project quota limits are enforced on the filesystem of `dir` (ext4 mounted with `prjquota`, xfs
/// with `pquota`); `Err` says why not.
pub fn project_quota_enforced(dir: &impl AsRawFd) -> Result<(), String> {
    // struct fs_quota_statv; the version byte must be set on input.
    let mut buf = [0u8; 256];
    buf[0] = 1;
    quotactl_fd(
        dir,
        qcmd(Q_XGETQSTATV, PRJQUOTA),
        0,
        buf.as_mut_ptr().cast(),
    )
    .map_err(|e| format!("quotactl(Q_XGETQSTATV): {e}"))?;
    let flags = u16::from_ne_bytes([buf[2], buf[3]]);
    if flags & FS_QUOTA_PDQ_ENFD == 0 {
        return Err(format!(
            "project quotas are not enforced (quota state flags {flags:#x}; mount with prjquota)"
        ));
    }
    Ok(())
}

#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// Sets project `id`'s hard block limit to `bytes` (rounded up to the quota's 1 KiB unit; 0 = no limit).
pub fn set_project_limit(fs: &impl AsRawFd, id: u32, bytes: u64) -> io::Result<()> {
    let mut q = IfDqblk {
        bhardlimit: bytes.div_ceil(1024),
        bsoftlimit: bytes.div_ceil(1024),
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..Default::default()
    };
    quotactl_fd(
        fs,
        qcmd(Q_SETQUOTA, PRJQUOTA),
        id,
        (&mut q as *mut IfDqblk).cast(),
    )
}

/// Bytes and inodes charged to project `id`.
pub fn project_usage(fs: &impl AsRawFd, id: u32) -> io::Result<(u64, u64)> {
    let mut q = IfDqblk::default();
    quotactl_fd(
        fs,
        qcmd(Q_GETQUOTA, PRJQUOTA),
        id,
        (&mut q as *mut IfDqblk).cast(),
    )?;
    Ok((q.curspace, q.curinodes))
}

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// Puts the directory `dir` into project `id`, inherited by everything created beneath it.
pub fn set_project(dir: &impl AsRawFd, id: u32) -> io::Result<()> {
    let mut x = FsXattr::default();
    // SAFETY: ioctls with a struct fsxattr.
    cvt(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x) } as libc::c_long)?;
    x.projid = id;
    x.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: as above.
    cvt(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR, &x) } as libc::c_long).map(drop)
}

// ---- loop devices ----

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_SET_CAPACITY: libc::c_ulong = 0x4C07;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `backing` to a free loop device; returns its path and an open handle. With `autoclear` the device
/// detaches itself when its last user (the handle, then a mount of it) is gone.
pub fn loop_attach(backing: &File, autoclear: bool) -> io::Result<(PathBuf, File)> {
    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    for _ in 0..16 {
        // SAFETY: plain ioctl.
        let n = cvt(unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) } as libc::c_long)?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        // SAFETY: an all-zero loop_config is valid input.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.flags = if autoclear { LO_FLAGS_AUTOCLEAR } else { 0 };
        // SAFETY: ioctl with a loop_config.
        match cvt(unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) } as libc::c_long) {
            Ok(_) => return Ok((path, dev)),
            // Another process took the device between GET_FREE and CONFIGURE: ask again.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("no free loop device after 16 attempts"))
}

/// Detaches the loop device at `dev`.
pub fn loop_detach(dev: &Path) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().read(true).open(dev)?;
    // SAFETY: plain ioctl.
    match cvt(unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) } as libc::c_long) {
        Ok(_) => Ok(()),
        // Not attached any more.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes the loop device at `dev` see its backing file's new size.
pub fn loop_set_capacity(dev: &Path) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().read(true).open(dev)?;
    // SAFETY: plain ioctl.
    cvt(unsafe { libc::ioctl(f.as_raw_fd(), LOOP_SET_CAPACITY, 0) } as libc::c_long).map(drop)
}

/// Loop devices whose backing file is the inode (`dev`, `ino`), asked of each device (LOOP_GET_STATUS64):
/// the file name in /sys can be stale or ambiguous, the inode cannot.
pub fn loops_backed_by(dev: u64, ino: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") || !e.path().join("loop").exists() {
            continue;
        }
        let path = PathBuf::from(format!("/dev/{name}"));
        let Ok(f) = File::open(&path) else { continue };
        // SAFETY: an all-zero loop_info64 is a valid output buffer.
        let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
        // SAFETY: ioctl with a loop_info64.
        if unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64, &mut info) } == 0
            && info.device == dev
            && info.inode == ino
        {
            out.push(path);
        }
    }
    out
}

// ---- filesystems ----

const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Grows the mounted ext4 filesystem at `mountpoint` to `blocks` of its block size (online).
pub fn ext4_resize(mountpoint: &impl AsRawFd, blocks: u64) -> io::Result<()> {
    // SAFETY: ioctl with a u64.
    cvt(unsafe { libc::ioctl(mountpoint.as_raw_fd(), EXT4_IOC_RESIZE_FS, &blocks) } as libc::c_long)
        .map(drop)
}

/// Copies `src` into the empty file `dst`: a reflink where the filesystem shares blocks (xfs, btrfs), else
/// the data extents only (SEEK_DATA/SEEK_HOLE), so a sparse 10 GiB image with 1 MiB written costs 1 MiB.
pub fn copy_sparse(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: ioctl with a file descriptor argument.
    if unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = src.metadata()?.len() as i64;
    let mut pos: i64 = 0;
    while pos < len {
        // SAFETY: lseek on an open file.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { len } else { hole };
        let (mut off_in, mut off_out) = (data, data);
        while off_in < hole {
            // SAFETY: valid descriptors and offsets.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    (hole - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
        }
        pos = hole;
    }
    dst.set_len(len as u64)
}

/// Whether this process may exceed resource limits (CAP_SYS_RESOURCE, effective): online ext4 growth needs it.
pub fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_owned();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// statvfs of the file behind `fd`.
pub fn statvfs(fd: &impl AsRawFd) -> io::Result<libc::statvfs> {
    // SAFETY: statvfs is plain old data; all zeroes is a valid value.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the call's duration and `s` is a valid out-pointer.
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut s) } as libc::c_long)?;
    Ok(s)
}

/// Mount points in this mount namespace (from /proc/self/mountinfo, octal escapes undone), with their
/// filesystem types and sources.
pub fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let point = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?.to_owned();
            let source = post.next().unwrap_or_default().to_owned();
            Some((PathBuf::from(unescape(point)), fstype, unescape(&source)))
        })
        .collect()
}

pub fn is_mount_point(p: &Path) -> bool {
    mounts().iter().any(|(m, _, _)| m == p)
}

fn unescape(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c"), "/a b\tc");
        assert_eq!(unescape(r"/plain\"), r"/plain\");
    }

    #[test]
    fn open_beneath_refuses_dotdot_absolute_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("in")).unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("in/link")).unwrap();
        let base = File::open(d.path().join("in")).unwrap();
        for bad in ["../x", "/etc/passwd", "link", "link/passwd"] {
            let e = open_beneath(&base, Path::new(bad), libc::O_RDONLY, 0).unwrap_err();
            assert!(
                matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::ELOOP)),
                "{bad}: {e}"
            );
        }
        std::fs::write(d.path().join("in/ok"), "x").unwrap();
        open_beneath(&base, Path::new("ok"), libc::O_RDONLY, 0).unwrap();
    }
}
