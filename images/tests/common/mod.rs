//! Shared by the integration tests: the fixtures and small helpers.
#![allow(dead_code)]

use std::path::Path;

use basalt_images::hosts::Hosts;
use basalt_images::{Client, ImageRecord, Store};
use basalt_testsupport::{fixtures, Fixture, Fixtures};

/// The small fixtures, in a temp dir removed when the value drops (a `static` would never drop it).
pub fn fixtures() -> Fixtures {
    Fixtures::build().expect("building fixtures")
}

pub fn insecure_client(host: &str) -> Client {
    let mut h = Hosts::default();
    h.insecure.insert(host.to_owned());
    Client::new(h)
}

/// The record matches the fixture: same config and layers.
pub fn assert_matches(rec: &ImageRecord, f: &Fixture) {
    assert_eq!(rec.config.to_string(), f.image.config.digest, "{}", f.name);
    let layers: Vec<String> = rec.layers.iter().map(|l| l.digest.to_string()).collect();
    let want: Vec<String> = f.image.layers.iter().map(|l| l.digest.clone()).collect();
    assert_eq!(layers, want, "{}", f.name);
    let diffs: Vec<String> = rec.diff_ids.iter().map(|d| d.to_string()).collect();
    assert_eq!(diffs, f.image.diff_ids, "{}", f.name);
}

/// Mounts a root of the layered image, checks whiteouts, opaque dirs and ownership, unmounts, and checks that
/// nothing is left mounted or on disk.
pub fn check_layered_root(store: &Store, rec: &ImageRecord, id: &str, force_copy: bool) {
    use std::os::unix::fs::MetadataExt;
    let root = store.mount_root(id, rec, force_copy).expect("mount root");
    let kind = if force_copy {
        basalt_images::RootKind::Copy
    } else {
        basalt_images::RootKind::Overlay
    };
    assert_eq!(root.kind, kind);
    for p in fixtures::LAYERED_PRESENT {
        assert!(
            root.rootfs.join(p).symlink_metadata().is_ok(),
            "{p} missing in {:?} root",
            root.kind
        );
    }
    for p in fixtures::LAYERED_ABSENT {
        assert!(
            root.rootfs.join(p).symlink_metadata().is_err(),
            "{p} should be gone in {:?} root",
            root.kind
        );
    }
    let (p, uid, gid, mode) = fixtures::LAYERED_OWNED;
    let md = std::fs::metadata(root.rootfs.join(p)).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (uid, gid, mode));
    // Hardlinked applets share the busybox inode.
    let bb = std::fs::metadata(root.rootfs.join("bin/busybox")).unwrap();
    let sh = std::fs::metadata(root.rootfs.join("bin/sh")).unwrap();
    assert_eq!(bb.ino(), sh.ino());
    assert_eq!(
        std::fs::read_link(root.rootfs.join("usr/bin/env")).unwrap(),
        Path::new("/bin/env")
    );
    // Writes go to the container's upper dir, not to the shared snapshot.
    std::fs::write(root.rootfs.join("data/keep"), "changed").unwrap();
    let rootfs = root.rootfs.clone();
    store.unmount_root(id).expect("unmount");
    assert!(!basalt_images::snapshot::is_mountpoint(&rootfs).unwrap());
    assert!(!rootfs.exists(), "{} left behind", rootfs.display());
    let again = store.mount_root(id, rec, force_copy).unwrap();
    assert_eq!(
        std::fs::read_to_string(again.rootfs.join("data/keep")).unwrap(),
        "kept\n"
    );
    store.unmount_root(id).unwrap();
}

/// Every blob in the store hashes to its name.
pub fn assert_blobs_verified(store: &Store) {
    for d in store.blobs().unwrap() {
        let data = std::fs::read(store.blob_path(&d)).unwrap();
        assert_eq!(
            basalt_images::Digest::of(&data),
            d,
            "blob with a wrong digest is readable"
        );
    }
}
