//! Files that are replaced whole: keys, tokens, kubeconfigs and the node's identity.
//!
//! A reader (or a restart after SIGKILL or power loss) sees the old content or the new, never a torn
//! one: the data goes to a hidden sibling, is synced, renamed over the target, and the directory is
//! synced so the rename itself survives. The mode is set on the sibling before any data is written,
//! so a private key is never readable by others, not even for a moment and whatever the umask.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Readable and writable by the owner alone: keys, tokens, credentials.
pub const PRIVATE: u32 = 0o600;
/// Readable by all: certificates and other public files.
pub const PUBLIC: u32 = 0o644;

/// Replaces `path` with `data`, file mode `mode`. Missing parent directories are made with the
/// default mode: the file's own mode guards it, and a parent may be a whole data directory (a joining
/// agent's key is the first file under `/var/lib/basalt`) that other readers need.
pub fn write(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = sibling(path)?;
    // A sibling left by a crash is removed, never reused: whoever opened it (it may have had a wider
    // mode) would keep reading through that handle, and a symlink put there would be followed.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        // O_EXCL: fails on anything already there, a symlink included.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode asked for.
        f.set_permissions(Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `data`, owner-only.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    write(path, data, PRIVATE)
}

/// `.<name>.tmp` beside `path`: hidden from globs, and on the same filesystem so the rename is atomic.
fn sibling(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_whole_with_the_mode_asked_and_leaves_no_sibling() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/key.pem");
        write_private(&p, b"one").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(mode(&p), 0o600);
        write(&p, b"two", PUBLIC).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o644);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("key.pem")]);
    }

    #[test]
    fn a_stale_sibling_from_a_crash_does_not_widen_the_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("token");
        let stale = d.path().join(".token.tmp");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::set_permissions(&stale, Permissions::from_mode(0o666)).unwrap();
        write_private(&p, b"secret").unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert!(!stale.exists());
    }

    #[test]
    fn a_symlink_left_as_the_sibling_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = d.path().join("elsewhere");
        std::fs::write(&elsewhere, b"untouched").unwrap();
        std::os::unix::fs::symlink(&elsewhere, d.path().join(".key.tmp")).unwrap();
        write_private(&d.path().join("key"), b"secret").unwrap();
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"untouched");
        assert_eq!(std::fs::read(d.path().join("key")).unwrap(), b"secret");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_sibling() {
        let d = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the sibling was written.
        let p = d.path().join("busy");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), b"").unwrap();
        assert!(write_private(&p, b"data").is_err());
        assert!(p.join("x").exists());
        assert!(!d.path().join(".busy.tmp").exists());
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let e = write_private(Path::new("/"), b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
