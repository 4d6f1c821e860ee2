//! Safe extraction of layer tars (gzip, zstd or uncompressed).
//!
//! Every entry's parent directory is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to
//! the target, and the entry itself is created with `*at` calls that never follow a symlink, so neither `..`, an
//! absolute path, nor a symlink planted by an earlier entry can make us write outside the target. Entries with
//! `..` or absolute paths are rejected outright, as are hardlinks whose target would be outside.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, IoContext, Result};

/// How whiteouts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Into an empty per-layer snapshot that overlayfs will stack: whiteouts become overlay whiteouts (0/0
    /// character devices) and opaque markers the `trusted.overlay.opaque` xattr.
    Snapshot,
    /// Onto a directory already holding the layers below (the copying fallback): whiteouts delete.
    Apply,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// The uncompressed reader for a layer blob, by magic bytes (gzip, zstd, or a plain tar).
pub fn decompress<'a, R: Read + 'a>(r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::with_capacity(1 << 20, r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(r)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
        )
    } else {
        Box::new(r)
    })
}

/// Unpacks the (possibly compressed) layer `blob` into `target`, an existing directory, and returns the digest
/// of the uncompressed tar (the layer's diff ID). `name` is used in errors.
pub fn unpack_layer(blob: impl Read, target: &Path, mode: Mode, name: &str) -> Result<Digest> {
    unpack_layer_full(blob, target, mode, name).map(|(d, _)| d)
}

/// As [`unpack_layer`], also returning the parent directories the tar did not list (created 0755 root:root).
pub(crate) fn unpack_layer_full(
    blob: impl Read,
    target: &Path,
    mode: Mode,
    name: &str,
) -> Result<(Digest, Vec<Vec<u8>>)> {
    let layer_err = |reason: String| Error::Layer {
        digest: name.to_owned(),
        reason,
    };
    let raw = decompress(blob).map_err(|e| layer_err(e.to_string()))?;
    let mut hashing = HashingReader::new(raw);
    let root = open_dir(target)?;
    let mut u = Unpacker {
        root,
        target,
        mode,
        written: HashSet::new(),
        dir_times: Vec::new(),
        implicit_dirs: Default::default(),
    };
    {
        let mut ar = tar::Archive::new(&mut hashing);
        let entries = ar.entries().map_err(|e| layer_err(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| layer_err(format!("reading tar: {e}")))?;
            u.entry(&mut entry)?;
        }
    }
    u.set_dir_times()?;
    // The diff ID covers the whole tar, including the zero blocks after the last entry.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| layer_err(e.to_string()))?;
    let mut implicit: Vec<Vec<u8>> = u.implicit_dirs.into_inner().into_iter().collect();
    implicit.sort();
    Ok((Digest::from_hasher(hashing.hasher), implicit))
}

/// Gives each directory in `implicit` (paths beneath `target`) the mode and owner of the same directory in the
/// topmost of `lowers` (snapshot roots, top first) that has it, as if the layer had been applied on top of them.
/// Where a lower layer has something else there (a symlink), overlayfs will show our directory instead: warn.
pub(crate) fn inherit_dir_attrs(
    target: &Path,
    implicit: &[Vec<u8>],
    lowers: &[&Path],
) -> Result<()> {
    if implicit.is_empty() {
        return Ok(());
    }
    let root = open_dir(target)?;
    let lower_fds = lowers
        .iter()
        .map(|l| open_dir(l))
        .collect::<Result<Vec<_>>>()?;
    for path in implicit {
        for lower in &lower_fds {
            let fd = match openat2_beneath(lower.as_raw_fd(), path, libc::O_PATH | libc::O_NOFOLLOW)
            {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                // Not resolvable beneath that layer (a symlink or whiteout on the way): it hides the rest.
                Err(_) => break,
            };
            // SAFETY: stat is plain old data; fstat fills it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: valid fd and pointer.
            check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })
                .map_err(|e| io_err(target, path, e))?;
            if is_dir(&st) {
                let ours =
                    openat2_beneath(root.as_raw_fd(), path, libc::O_RDONLY | libc::O_DIRECTORY)
                        .map_err(|e| io_err(target, path, e))?;
                // SAFETY: valid fd.
                check(unsafe { libc::fchown(ours.as_raw_fd(), st.st_uid, st.st_gid) })
                    .map_err(|e| io_err(target, path, e))?;
                // SAFETY: valid fd.
                check(unsafe { libc::fchmod(ours.as_raw_fd(), st.st_mode & 0o7777) })
                    .map_err(|e| io_err(target, path, e))?;
            } else if st.st_mode & libc::S_IFMT != libc::S_IFCHR {
                tracing::warn!(
                    path = %String::from_utf8_lossy(path),
                    "a layer writes beneath a path that a lower layer has as a non-directory; the directory hides it"
                );
            }
            break;
        }
    }
    Ok(())
}

struct Unpacker<'a> {
    root: OwnedFd,
    target: &'a Path,
    mode: Mode,
    /// Paths this layer wrote: an opaque marker in Apply mode hides everything else in its directory.
    written: HashSet<Vec<u8>>,
    /// Directory mtimes, set at the end: entries written into a directory change its mtime.
    dir_times: Vec<(Vec<u8>, i64)>,
    /// Parent directories the tar did not list, created with default attributes.
    implicit_dirs: std::cell::RefCell<HashSet<Vec<u8>>>,
}

fn unsafe_entry(entry: &[u8], reason: impl Into<String>) -> Error {
    Error::UnsafeEntry {
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason: reason.into(),
    }
}

/// The normal components of a tar path; `..` and absolute paths are refused.
fn components(raw: &[u8]) -> Result<Vec<&[u8]>> {
    if raw.starts_with(b"/") {
        return Err(unsafe_entry(raw, "absolute path"));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(unsafe_entry(raw, "path contains `..`")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn cstr(b: &[u8]) -> CString {
    CString::new(b).expect("entries with NUL bytes are refused up front")
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes());
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).at(path);
    }
    // SAFETY: fd was just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn io_err(target: &Path, entry: &[u8], e: std::io::Error) -> Error {
    Error::Io {
        path: target.join(OsStr::from_bytes(entry)),
        source: e,
    }
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn check(ret: libc::c_int) -> std::io::Result<()> {
    if ret < 0 {
        Err(last_err())
    } else {
        Ok(())
    }
}

/// `openat2(dirfd, path, RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS)`.
fn openat2_beneath(dirfd: RawFd, path: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let c = cstr(path);
    // SAFETY: open_how is plain old data; zero is a valid value for every field.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: valid pointers for the duration of the call; the fd is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: fd was just returned by openat2.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = last_err();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)`, or None if it does not exist.
fn lstat_at(dirfd: RawFd, name: &CStr) -> std::io::Result<Option<libc::stat>> {
    // SAFETY: stat is plain old data; fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    let r = unsafe { libc::fstatat(dirfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = last_err();
    if e.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(e)
    }
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Removes `name` in `dirfd` whatever it is, without following symlinks.
fn remove_at(dirfd: RawFd, name: &CStr) -> std::io::Result<()> {
    let Some(st) = lstat_at(dirfd, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        // remove_dir_all does not follow symlinks inside the tree; the /proc path names our own directory fd.
        let p = format!(
            "/proc/self/fd/{dirfd}/{}",
            String::from_utf8_lossy(name.to_bytes())
        );
        std::fs::remove_dir_all(p)
    } else {
        // SAFETY: valid C string.
        check(unsafe { libc::unlinkat(dirfd, name.as_ptr(), 0) })
    }
}

impl Unpacker<'_> {
    fn io_err(&self, entry: &[u8], e: std::io::Error) -> Error {
        io_err(self.target, entry, e)
    }

    /// Opens (creating as needed) the directory `comps` beneath the root, refusing any path that leaves it.
    fn parent_dir(&self, entry: &[u8], comps: &[&[u8]]) -> Result<OwnedFd> {
        let root = self.root.as_raw_fd();
        if comps.is_empty() {
            return openat2_beneath(root, b".", libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| self.io_err(entry, e));
        }
        let joined = comps.join(&b'/');
        match openat2_beneath(root, &joined, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.resolve_err(entry, e)),
        }
        // Tars may omit parent directories: create the missing ones one by one, each checked beneath the root.
        let mut dir = openat2_beneath(root, b".", libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| self.io_err(entry, e))?;
        for (depth, c) in comps.iter().enumerate() {
            let name = cstr(c);
            let next = match openat2_beneath(dir.as_raw_fd(), c, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // SAFETY: valid C string.
                    let r = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) };
                    if r < 0 && last_err().raw_os_error() != Some(libc::EEXIST) {
                        return Err(self.io_err(entry, last_err()));
                    }
                    self.implicit_dirs
                        .borrow_mut()
                        .insert(comps[..=depth].join(&b'/'));
                    openat2_beneath(dir.as_raw_fd(), c, libc::O_PATH | libc::O_DIRECTORY)
                        .map_err(|e| self.resolve_err(entry, e))?
                }
                Err(e) => return Err(self.resolve_err(entry, e)),
            };
            dir = next;
        }
        Ok(dir)
    }

    fn resolve_err(&self, entry: &[u8], e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => {
                unsafe_entry(entry, "a symlink in its path leads outside the target")
            }
            Some(libc::ENOTDIR) => {
                unsafe_entry(entry, "a parent path component is not a directory")
            }
            _ => self.io_err(entry, e),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName
        ) {
            return Ok(());
        }
        let link_has_nul = entry.link_name_bytes().is_some_and(|l| l.contains(&0));
        if raw.contains(&0) || link_has_nul {
            return Err(unsafe_entry(&raw, "NUL byte in a path"));
        }
        let comps = components(&raw)?;
        let Some((name, parents)) = comps.split_last() else {
            return Ok(()); // the root itself: keep the target's own attributes
        };
        let dir = self.parent_dir(&raw, parents)?;
        let dfd = dir.as_raw_fd();
        let target = self.target;
        let ioe = |e| io_err(target, &raw, e);

        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(&raw, parents, dfd, name);
        }
        let cname = cstr(name);
        self.written.insert(comps.join(&b'/'));

        let h = entry.header().clone();
        let mode = h.mode().map_err(ioe)? & 0o7777;
        let uid = h.uid().map_err(ioe)? as libc::uid_t;
        let gid = h.gid().map_err(ioe)? as libc::gid_t;
        let mtime = h.mtime().unwrap_or(0) as i64;
        let xattrs = xattrs(entry);

        match kind {
            tar::EntryType::Directory => {
                match lstat_at(dfd, &cname).map_err(ioe)? {
                    Some(st) if is_dir(&st) => {}
                    Some(_) => {
                        remove_at(dfd, &cname).map_err(ioe)?;
                        self.mkdir(dfd, &cname, &raw)?;
                    }
                    None => self.mkdir(dfd, &cname, &raw)?,
                }
                let fd = openat_nofollow(dfd, &cname, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(ioe)?;
                set_owner_mode_xattrs(fd.as_raw_fd(), uid, gid, mode, &xattrs).map_err(ioe)?;
                self.dir_times.push((raw.clone(), mtime));
                self.implicit_dirs.borrow_mut().remove(&comps.join(&b'/'));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                remove_at(dfd, &cname).map_err(ioe)?;
                let fd =
                    openat_nofollow(dfd, &cname, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL)
                        .map_err(ioe)?;
                let mut f = File::from(fd);
                copy_big(entry, &mut f).map_err(ioe)?;
                set_owner_mode_xattrs(f.as_raw_fd(), uid, gid, mode, &xattrs).map_err(ioe)?;
                let ts = [timespec(mtime), timespec(mtime)];
                // SAFETY: valid fd and array of two timespecs.
                check(unsafe { libc::futimens(f.as_raw_fd(), ts.as_ptr()) }).map_err(ioe)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&raw, "symlink without a target"))?;
                remove_at(dfd, &cname).map_err(ioe)?;
                let t = cstr(&target);
                // SAFETY: valid C strings.
                check(unsafe { libc::symlinkat(t.as_ptr(), dfd, cname.as_ptr()) }).map_err(ioe)?;
                // SAFETY: valid C string; AT_SYMLINK_NOFOLLOW changes the link itself.
                check(unsafe {
                    libc::fchownat(dfd, cname.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
                })
                .map_err(ioe)?;
                let ts = [timespec(mtime), timespec(mtime)];
                // SAFETY: as above.
                check(unsafe {
                    libc::utimensat(dfd, cname.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
                })
                .map_err(ioe)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry(&raw, "hardlink without a target"))?
                    .into_owned();
                let tcomps = components(&target).map_err(|_| {
                    unsafe_entry(
                        &raw,
                        format!(
                            "hardlink target {:?} is outside the target",
                            String::from_utf8_lossy(&target)
                        ),
                    )
                })?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err(unsafe_entry(&raw, "hardlink to the root directory"));
                };
                if tcomps == comps {
                    return Ok(());
                }
                let tdir = self.parent_dir(&raw, tparents)?;
                let tc = cstr(tname);
                remove_at(dfd, &cname).map_err(ioe)?;
                // SAFETY: valid fds and C strings; flags 0 links a symlink itself rather than what it points to.
                check(unsafe {
                    libc::linkat(tdir.as_raw_fd(), tc.as_ptr(), dfd, cname.as_ptr(), 0)
                })
                .map_err(ioe)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                remove_at(dfd, &cname).map_err(ioe)?;
                // SAFETY: valid C string.
                check(unsafe {
                    libc::mknodat(dfd, cname.as_ptr(), fmt | mode, libc::makedev(major, minor))
                })
                .map_err(ioe)?;
                // SAFETY: valid C string; the node was just created by us, not a symlink.
                check(unsafe {
                    libc::fchownat(dfd, cname.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW)
                })
                .map_err(ioe)?;
                // SAFETY: as above; mknod's mode went through the umask.
                check(unsafe { libc::fchmodat(dfd, cname.as_ptr(), mode, 0) }).map_err(ioe)?;
            }
            other => {
                tracing::warn!(entry = %String::from_utf8_lossy(&raw), kind = ?other, "skipping unsupported tar entry");
            }
        }
        Ok(())
    }

    fn set_dir_times(&self) -> Result<()> {
        for (raw, mtime) in self.dir_times.iter().rev() {
            let comps = components(raw)?;
            let Some((name, parents)) = comps.split_last() else {
                continue;
            };
            let dir = self.parent_dir(raw, parents)?;
            let ts = [timespec(*mtime), timespec(*mtime)];
            let c = cstr(name);
            // SAFETY: valid fd, C string and two timespecs; the directory itself, never a symlink, is changed.
            check(unsafe {
                libc::utimensat(
                    dir.as_raw_fd(),
                    c.as_ptr(),
                    ts.as_ptr(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })
            .map_err(|e| self.io_err(raw, e))?;
        }
        Ok(())
    }

    fn mkdir(&self, dfd: RawFd, name: &CStr, raw: &[u8]) -> Result<()> {
        // SAFETY: valid C string.
        check(unsafe { libc::mkdirat(dfd, name.as_ptr(), 0o700) }).map_err(|e| self.io_err(raw, e))
    }

    fn whiteout(&mut self, raw: &[u8], parents: &[&[u8]], dfd: RawFd, name: &[u8]) -> Result<()> {
        let ioe = |e| self.io_err(raw, e);
        if name == OPAQUE {
            match self.mode {
                Mode::Snapshot => {
                    let fd = openat2_beneath(dfd, b".", libc::O_RDONLY | libc::O_DIRECTORY)
                        .map_err(ioe)?;
                    set_xattr(fd.as_raw_fd(), b"trusted.overlay.opaque", b"y").map_err(ioe)?;
                }
                Mode::Apply => {
                    let prefix = parents.join(&b'/');
                    let fd = openat2_beneath(dfd, b".", libc::O_RDONLY | libc::O_DIRECTORY)
                        .map_err(ioe)?;
                    let list = std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                        .map_err(ioe)?;
                    for child in list {
                        let child = child.map_err(ioe)?.file_name();
                        let mut p = prefix.clone();
                        if !p.is_empty() {
                            p.push(b'/');
                        }
                        p.extend_from_slice(child.as_bytes());
                        if !self.written.contains(&p) {
                            remove_at(dfd, &cstr(child.as_bytes())).map_err(ioe)?;
                        }
                    }
                }
            }
            return Ok(());
        }
        let victim = &name[WHITEOUT_PREFIX.len()..];
        if victim.is_empty()
            || victim.starts_with(WHITEOUT_PREFIX)
            || victim == b".."
            || victim == b"."
        {
            // `.wh..wh.*` are AUFS internals (hardlink dirs); nothing to apply.
            return Ok(());
        }
        let cv = cstr(victim);
        remove_at(dfd, &cv).map_err(ioe)?;
        if self.mode == Mode::Snapshot {
            // SAFETY: valid C string; a 0/0 character device is overlayfs's whiteout.
            check(unsafe { libc::mknodat(dfd, cv.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) })
                .map_err(ioe)?;
        }
        Ok(())
    }
}

fn openat_nofollow(dfd: RawFd, name: &CStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    // SAFETY: valid C string; the fd is owned below.
    let fd = unsafe {
        libc::openat(
            dfd,
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn timespec(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    }
}

fn xattrs<R: Read>(entry: &mut tar::Entry<R>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                out.push((name.to_vec(), ext.value_bytes().to_vec()));
            }
        }
    }
    out
}

fn set_xattr(fd: RawFd, name: &[u8], value: &[u8]) -> std::io::Result<()> {
    let n = cstr(name);
    // SAFETY: valid fd, C string and buffer.
    check(unsafe { libc::fsetxattr(fd, n.as_ptr(), value.as_ptr().cast(), value.len(), 0) })
}

/// Ownership first: chown clears set-id bits, so the mode comes after it.
fn set_owner_mode_xattrs(
    fd: RawFd,
    uid: libc::uid_t,
    gid: libc::gid_t,
    mode: u32,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> std::io::Result<()> {
    // SAFETY: valid fd.
    check(unsafe { libc::fchown(fd, uid, gid) })?;
    // SAFETY: valid fd.
    check(unsafe { libc::fchmod(fd, mode) })?;
    for (k, v) in xattrs {
        set_xattr(fd, k, v)?;
    }
    Ok(())
}

fn copy_big(r: &mut impl Read, w: &mut File) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        std::io::Write::write_all(w, &buf[..n])?;
    }
}
