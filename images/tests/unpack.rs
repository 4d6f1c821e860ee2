//! Layer extraction: malicious tars are rejected with nothing written outside the target; every entry kind,
//! ownership, modes, xattrs and whiteouts come out right; gzip, zstd and plain layers.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use basalt_images::unpack::{unpack_layer, Mode};
use basalt_images::{Digest, Error};

/// One tar entry, its name written raw into the header so `..` and absolute paths get through.
enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn raw_header(kind: tar::EntryType, name: &str, link: Option<&str>, size: u64) -> tar::Header {
    let mut h = tar::Header::new_old();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        old.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    h
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            E::File(n, d) => (
                raw_header(tar::EntryType::Regular, n, None, d.len() as u64),
                d,
            ),
            E::Dir(n) => (raw_header(tar::EntryType::Directory, n, None, 0), &[]),
            E::Symlink(n, t) => (raw_header(tar::EntryType::Symlink, n, Some(t), 0), &[]),
            E::Hardlink(n, t) => (raw_header(tar::EntryType::Link, n, Some(t), 0), &[]),
        };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// `outside/` and `target/` side by side; a poisoned archive must leave `outside/` exactly as it was.
fn attempt(entries: &[E], expect_in_error: &str) {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    let target = dir.path().join("outside/../target");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(dir.path().join("target")).unwrap();
    std::fs::write(outside.join("secret"), "secret").unwrap();
    let tar = tar_of(entries);
    for mode in [Mode::Snapshot, Mode::Apply] {
        let e = unpack_layer(&tar[..], &target, mode, "evil-layer").unwrap_err();
        assert!(matches!(e, Error::UnsafeEntry { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(expect_in_error), "{msg}");
        let listing: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(listing.len(), 2, "{listing:?}");
        let outside_listing: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            outside_listing,
            vec!["secret"],
            "something was written outside"
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "secret"
        );
        assert_eq!(
            std::fs::metadata(outside.join("secret")).unwrap().nlink(),
            1
        );
    }
}

#[test]
fn rejects_path_traversal() {
    attempt(&[E::File("../outside/evil", b"x")], "\"../outside/evil\"");
    attempt(
        &[E::File("a/../../outside/evil", b"x")],
        "path contains `..`",
    );
}

#[test]
fn rejects_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("abs-evil");
    attempt(&[E::File(abs.to_str().unwrap(), b"x")], "absolute path");
    assert!(!abs.exists());
}

#[test]
fn rejects_symlink_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    // An absolute symlink, then a file through it.
    attempt(
        &[
            E::Symlink("link", victim.to_str().unwrap()),
            E::File("link/file", b"x"),
        ],
        "symlink in its path leads outside",
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
    // A relative one climbing out.
    attempt(
        &[E::Symlink("up", "../outside"), E::File("up/evil", b"x")],
        "\"up/evil\"",
    );
    // A directory entry through it.
    attempt(
        &[E::Symlink("up", "../outside"), E::Dir("up/newdir/")],
        "symlink in its path leads outside",
    );
}

#[test]
fn rejects_hardlink_escapes() {
    attempt(&[E::Hardlink("hl", "../../etc/passwd")], "hardlink target");
    attempt(&[E::Hardlink("hl", "../outside/secret")], "hardlink target");
    attempt(&[E::Hardlink("hl", "/etc/passwd")], "hardlink target");
    // Through a symlink to outside.
    attempt(
        &[E::Symlink("s", "../outside"), E::Hardlink("hl", "s/secret")],
        "symlink in its path leads outside",
    );
}

#[test]
fn symlinks_inside_the_root_are_followed_beneath_it() {
    let dir = tempfile::tempdir().unwrap();
    let tar = tar_of(&[
        E::Dir("usr/"),
        E::Dir("usr/lib/"),
        E::Symlink("lib", "usr/lib"),
        E::File("lib/libx.so", b"lib"),
        E::Symlink("abs", "/etc/passwd"),
    ]);
    unpack_layer(&tar[..], dir.path(), Mode::Apply, "ok").unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("usr/lib/libx.so")).unwrap(),
        b"lib"
    );
    // Absolute symlinks are stored as they are (they resolve inside the container).
    assert_eq!(
        std::fs::read_link(dir.path().join("abs")).unwrap(),
        Path::new("/etc/passwd")
    );
}

/// A layer with every entry kind, built with the tar crate's normal API.
fn rich_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let mut add = |b: &mut tar::Builder<Vec<u8>>,
                   kind,
                   path: &str,
                   mode,
                   uid,
                   link: Option<&str>,
                   data: &[u8]| {
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        match link {
            Some(l) => b.append_link(&mut h, path, l).unwrap(),
            None => b.append_data(&mut h, path, data).unwrap(),
        }
    };
    add(
        &mut b,
        tar::EntryType::Directory,
        "etc/",
        0o755,
        0,
        None,
        b"",
    );
    b.append_pax_extensions([("SCHILY.xattr.user.basalt", &b"yes"[..])])
        .unwrap();
    add(
        &mut b,
        tar::EntryType::Regular,
        "etc/conf",
        0o4750,
        1000,
        None,
        b"conf\n",
    );
    add(
        &mut b,
        tar::EntryType::Symlink,
        "etc/link",
        0o777,
        7,
        Some("conf"),
        b"",
    );
    add(
        &mut b,
        tar::EntryType::Link,
        "etc/hard",
        0o644,
        0,
        Some("etc/conf"),
        b"",
    );
    add(
        &mut b,
        tar::EntryType::Fifo,
        "etc/fifo",
        0o600,
        0,
        None,
        b"",
    );
    let mut dev = tar::Header::new_gnu();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_mode(0o666);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_size(0);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_mtime(0);
    b.append_data(&mut dev, "dev-null", &[][..]).unwrap();
    b.into_inner().unwrap()
}

fn check_rich(root: &Path) {
    // Set after the files inside it were written.
    assert_eq!(
        std::fs::metadata(root.join("etc")).unwrap().mtime(),
        1_700_000_000
    );
    let conf = std::fs::metadata(root.join("etc/conf")).unwrap();
    assert_eq!(
        (conf.uid(), conf.gid(), conf.mode() & 0o7777),
        (1000, 1001, 0o4750)
    );
    assert_eq!(conf.mtime(), 1_700_000_000);
    assert_eq!(
        xattr_get(&root.join("etc/conf"), "user.basalt").as_deref(),
        Some(&b"yes"[..])
    );
    let link = std::fs::symlink_metadata(root.join("etc/link")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!((link.uid(), link.gid()), (7, 8));
    assert_eq!(
        std::fs::metadata(root.join("etc/hard")).unwrap().ino(),
        conf.ino()
    );
    assert!(std::fs::metadata(root.join("etc/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let dev = std::fs::metadata(root.join("dev-null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    assert_eq!(dev.mode() & 0o7777, 0o666);
}

fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn keeps_ownership_modes_xattrs_links_and_devices_for_every_compression() {
    let tar = rich_layer();
    let diff_id = Digest::of(&tar);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &tar).unwrap();
        e.finish().unwrap()
    };
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    for (name, blob) in [("plain", &tar), ("gzip", &gz), ("zstd", &zst)] {
        let dir = tempfile::tempdir().unwrap();
        let got = unpack_layer(&blob[..], dir.path(), Mode::Snapshot, name).unwrap();
        assert_eq!(got, diff_id, "{name}: diff ID of the uncompressed tar");
        check_rich(dir.path());
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts_in_snapshots_and_deletions_when_applied() {
    let lower = tar_of(&[
        E::Dir("d/"),
        E::File("d/gone", b"1"),
        E::File("d/kept", b"1"),
        E::Dir("o/"),
        E::File("o/old", b"1"),
    ]);
    let upper = tar_of(&[
        E::File("d/.wh.gone", b""),
        E::Dir("o/"),
        E::File("o/new", b"2"),
        E::File("o/.wh..wh..opq", b""),
    ]);
    let snap = tempfile::tempdir().unwrap();
    unpack_layer(&upper[..], snap.path(), Mode::Snapshot, "upper").unwrap();
    let wh = std::fs::symlink_metadata(snap.path().join("d/gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr_get(&snap.path().join("o"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert!(snap.path().join("o/new").exists());

    let applied = tempfile::tempdir().unwrap();
    unpack_layer(&lower[..], applied.path(), Mode::Apply, "lower").unwrap();
    unpack_layer(&upper[..], applied.path(), Mode::Apply, "upper").unwrap();
    assert!(!applied.path().join("d/gone").exists());
    assert!(applied.path().join("d/kept").exists());
    assert!(!applied.path().join("o/old").exists());
    assert!(
        applied.path().join("o/new").exists(),
        "opaque marker after the entry kept it"
    );
}

#[test]
fn a_corrupt_layer_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut gz = vec![0x1f, 0x8b, 8, 0];
    gz.extend_from_slice(&[0xff; 64]);
    let e = unpack_layer(&gz[..], dir.path(), Mode::Apply, "sha256:broken").unwrap_err();
    assert!(e.to_string().contains("sha256:broken"), "{e}");
}

#[test]
fn rejects_nul_bytes_in_paths() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"a\0b"[..])]).unwrap();
    let h = raw_header(tar::EntryType::Regular, "placeholder", None, 0);
    b.append(&h, &[][..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let e = unpack_layer(&tar[..], dir.path(), Mode::Apply, "nul").unwrap_err();
    assert!(e.to_string().contains("NUL byte"), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
