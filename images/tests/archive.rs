//! Air-gapped images: `docker save` and OCI archives in, OCI archives out (readable by skopeo), the air-gap
//! directory imported once, and garbage collection.

mod common;

use std::process::Command;

use basalt_images::{
    export, import_airgap_dir, import_archive, import_archive_with, ImportOptions, Store,
};
use basalt_testsupport::{fixtures, require_tool};
use common::*;

#[test]
fn imports_docker_and_oci_archives_of_every_fixture() {
    let fx = fixtures();
    for f in &fx.all {
        for (kind, path) in [("docker", &f.docker_archive), ("oci", &f.oci_archive)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let recs = import_archive(&store, path, false).unwrap();
            assert_eq!(recs.len(), 1, "{kind} {}", f.name);
            let rec = &recs[0];
            assert_eq!(rec.name, f.image.reference(), "{kind}");
            assert_eq!(rec.config.to_string(), f.image.config.digest);
            let diffs: Vec<String> = rec.diff_ids.iter().map(|d| d.to_string()).collect();
            assert_eq!(diffs, f.image.diff_ids);
            if kind == "oci" {
                assert_matches(rec, f);
                assert_eq!(rec.manifest.to_string(), f.image.manifest.digest);
            }
            assert_blobs_verified(&store);
            if f.name == fixtures::LAYERED {
                check_layered_root(&store, rec, "imported", false);
            }
        }
    }
}

#[test]
fn exports_an_oci_archive_that_skopeo_reads_and_we_import_again() {
    let fx = fixtures();
    let f = fx.get(fixtures::LAYERED);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("a")).unwrap();
    let rec = import_archive(&store, &f.docker_archive, false)
        .unwrap()
        .remove(0);
    let out = dir.path().join("out.tar");
    export(&store, std::slice::from_ref(&rec.name), &out).unwrap();

    let skopeo = require_tool("skopeo", "skopeo").unwrap();
    let o = Command::new(skopeo)
        .args(["inspect", "--raw"])
        .arg(format!("oci-archive:{}", out.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(basalt_images::Digest::of(&o.stdout), rec.manifest);

    let store2 = Store::open(dir.path().join("b")).unwrap();
    let back = import_archive(&store2, &out, false).unwrap().remove(0);
    assert_eq!(back.name, rec.name);
    assert_eq!(back.manifest, rec.manifest);
    check_layered_root(&store2, &back, "reimported", false);

    // Unknown images are a clear error and leave no file behind.
    let e = export(
        &store,
        &["docker.io/library/nope:latest".into()],
        &dir.path().join("x.tar"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("docker.io/library/nope:latest"), "{e}");
    assert!(!dir.path().join("x.tar").exists());
}

/// `skopeo copy … oci-archive:FILE:latest` writes `org.opencontainers.image.ref.name: latest`, a tag without
/// a repository. As `ctr import` does: never `docker.io/library/latest:latest`; kept under its digest unless
/// `--base-name` gives the repository; `--index-name` names the layout's index; a containerd name wins.
#[test]
fn an_oci_archive_named_only_by_a_tag_is_named_as_containerd_names_it() {
    let fx = fixtures();
    let f = fx.get(fixtures::BUSYBOX);
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("tag-only.tar");
    let skopeo = require_tool("skopeo", "skopeo").unwrap();
    let o = Command::new(skopeo)
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}", f.oci_layout.display()))
        .arg(format!("oci-archive:{}:latest", archive.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let import = |name: &str, opts: ImportOptions| {
        let store = Store::open(dir.path().join(name)).unwrap();
        let recs = import_archive_with(&store, &archive, &opts).unwrap();
        let names: Vec<String> = recs.iter().map(|r| r.name.clone()).collect();
        assert_eq!(store.images().unwrap().len(), recs.len(), "{names:?}");
        (names, recs[0].manifest.clone())
    };
    let (names, manifest) = import("plain", ImportOptions::default());
    assert_eq!(names, [manifest.to_string()], "kept under its digest");
    let (names, _) = import(
        "base",
        ImportOptions {
            base_name: Some("registry.local:5000/team/app".into()),
            ..Default::default()
        },
    );
    assert_eq!(names, ["registry.local:5000/team/app:latest"]);
    let (names, m) = import(
        "index",
        ImportOptions {
            index_name: Some("example.com/whole:v1".into()),
            ..Default::default()
        },
    );
    assert_eq!(names, ["example.com/whole:v1"]);
    assert_eq!(m, manifest, "the host's platform manifest of the index");
    // Our own fixtures carry containerd's annotation: it names the image whatever --base-name says.
    let store = Store::open(dir.path().join("annotated")).unwrap();
    let opts = ImportOptions {
        base_name: Some("ignored.example/x".into()),
        ..Default::default()
    };
    let recs = import_archive_with(&store, &f.oci_archive, &opts).unwrap();
    assert_eq!(recs[0].name, f.image.reference());
    let e = import_archive_with(
        &store,
        &archive,
        &ImportOptions {
            base_name: Some("Not A Repo".into()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("org.opencontainers.image.ref.name") && e.contains("Not A Repo"),
        "{e}"
    );
}

#[test]
fn a_bad_archive_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s")).unwrap();
    let p = dir.path().join("junk.tar");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    b.append_data(&mut h, "hello.txt", &b"hi"[..]).unwrap();
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    let e = import_archive(&store, &p, false).unwrap_err().to_string();
    assert!(
        e.contains("junk.tar") && e.contains("neither an OCI layout"),
        "{e}"
    );
    assert!(store.images().unwrap().is_empty());
}

#[test]
fn imports_the_airgap_directory_once_and_pins_what_it_imports() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let airgap = dir.path().join("airgap");
    std::fs::create_dir(&airgap).unwrap();
    std::fs::copy(
        &fx.get(fixtures::BUSYBOX).docker_archive,
        airgap.join("busybox.tar"),
    )
    .unwrap();
    // gzip-compressed OCI archive, as k3s accepts.
    let gz = {
        let data = std::fs::read(&fx.get(fixtures::NONROOT).oci_archive).unwrap();
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &data).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(airgap.join("nonroot.tar.gz"), gz).unwrap();
    std::fs::write(airgap.join("README.txt"), "not an archive").unwrap();
    std::fs::write(airgap.join("broken.tar"), "not a tar either").unwrap();

    let store = Store::open(dir.path().join("store")).unwrap();
    let first = import_airgap_dir(&store, &airgap).unwrap();
    assert_eq!(first.len(), 3, "{first:?}");
    let broken = first
        .iter()
        .find(|i| i.path.ends_with("broken.tar"))
        .unwrap();
    assert!(
        broken.error.as_ref().unwrap().contains("broken.tar"),
        "{broken:?}"
    );
    let names: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        names,
        [
            "docker.io/basalt/nonroot:latest",
            "docker.io/library/busybox:latest"
        ]
    );
    assert!(store.images().unwrap().iter().all(|r| r.pinned));

    // Second start: nothing imported again (the failed archive is retried).
    store
        .remove_image("docker.io/library/busybox:latest")
        .unwrap();
    let second = import_airgap_dir(&store, &airgap).unwrap();
    let busybox = second
        .iter()
        .find(|i| i.path.ends_with("busybox.tar"))
        .unwrap();
    assert!(busybox.images.is_none(), "{second:?}");
    assert_eq!(store.images().unwrap().len(), 1);

    // A changed archive is imported again.
    std::fs::copy(
        &fx.get(fixtures::LAYERED).docker_archive,
        airgap.join("busybox.tar"),
    )
    .unwrap();
    let third = import_airgap_dir(&store, &airgap).unwrap();
    let again = third
        .iter()
        .find(|i| i.path.ends_with("busybox.tar"))
        .unwrap();
    assert_eq!(
        again.images.as_deref(),
        Some(&["docker.io/basalt/layered:latest".to_owned()][..])
    );
}

#[test]
fn gc_removes_only_unreferenced_content_and_keeps_what_roots_use() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let layered = import_archive(&store, &fx.get(fixtures::LAYERED).oci_archive, false)
        .unwrap()
        .remove(0);
    let busybox = import_archive(&store, &fx.get(fixtures::BUSYBOX).oci_archive, false)
        .unwrap()
        .remove(0);
    let before_blobs = store.blobs().unwrap().len();
    let report = store.gc().unwrap();
    assert!(
        report.blobs.is_empty() && report.snapshots.is_empty(),
        "{report:?}"
    );

    // A root keeps its snapshots after its image name is removed.
    let root = store.mount_root("keeper", &layered, false).unwrap();
    store.remove_image(&layered.name).unwrap();
    let report = store.gc().unwrap();
    let busybox_blobs: std::collections::HashSet<_> = busybox.blobs().collect();
    assert_eq!(report.blobs.len(), before_blobs - busybox_blobs.len());
    assert!(report.snapshots.is_empty());
    assert!(root.rootfs.join("data/keep").exists());
    store.unmount_root("keeper").unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.snapshots.len(), layered.layers.len());
    assert_blobs_verified(&store);
    // busybox is untouched and still mounts.
    store.mount_root("bb", &busybox, false).unwrap();
    store.unmount_root("bb").unwrap();
}

#[test]
fn mounts_images_with_more_layers_than_one_mount_option_page_holds() {
    use basalt_testsupport::{ImageBuilder, LayerBuilder};
    const LAYERS: usize = 40;
    let mut b = ImageBuilder::new("docker.io/basalt/many", "latest");
    for i in 0..LAYERS {
        b = b.layer(
            LayerBuilder::new()
                .dir("layers", 0o755, 0, 0)
                .unwrap()
                .file(
                    &format!("layers/{i}"),
                    0o644,
                    0,
                    0,
                    format!("{i}\n").as_bytes(),
                )
                .unwrap()
                .finish()
                .unwrap(),
        );
    }
    let image = b.build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("many.tar");
    image.write_oci_archive(&archive).unwrap();
    // A long store path: 40 lowerdirs of ~230 bytes each are far past mount(2)'s one page of options.
    let store = Store::open(dir.path().join("x".repeat(150))).unwrap();
    let rec = import_archive(&store, &archive, false).unwrap().remove(0);
    let root = store.mount_root("many", &rec, false).unwrap();
    assert_eq!(root.kind, basalt_images::RootKind::Overlay);
    for i in 0..LAYERS {
        assert_eq!(
            std::fs::read_to_string(root.rootfs.join(format!("layers/{i}"))).unwrap(),
            format!("{i}\n")
        );
    }
    store.unmount_root("many").unwrap();
    assert!(!basalt_images::snapshot::is_mountpoint(&root.rootfs).unwrap());
    assert!(!root.rootfs.exists());
    // The read-only form (an image volume) passes the same layers one by one.
    let root = store.mount_image("many-ro", &rec).unwrap();
    assert_eq!(root.kind, basalt_images::RootKind::ReadOnly);
    assert_eq!(
        std::fs::read_to_string(root.rootfs.join(format!("layers/{}", LAYERS - 1))).unwrap(),
        format!("{}\n", LAYERS - 1)
    );
    store.unmount_root("many-ro").unwrap();
    assert!(!root.rootfs.exists());
}

#[test]
fn image_volumes_are_the_snapshots_read_only() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for name in [fixtures::BUSYBOX, fixtures::LAYERED] {
        let rec = import_archive(&store, &fx.get(name).oci_archive, false)
            .unwrap()
            .remove(0);
        let id = format!("vol-{}", rec.layers.len());
        let root = store.mount_image(&id, &rec).unwrap();
        assert_eq!(root.kind, basalt_images::RootKind::ReadOnly, "{name}");
        assert!(root.rootfs.join("bin/busybox").exists(), "{name}");
        if name == fixtures::LAYERED {
            for p in fixtures::LAYERED_ABSENT {
                assert!(root.rootfs.join(p).symlink_metadata().is_err(), "{p}");
            }
        }
        // The kernel refuses writes (no upper directory), and none was made.
        let e = std::fs::write(root.rootfs.join("x"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{name}: {e}");
        let made: Vec<_> = std::fs::read_dir(root.rootfs.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(!made.contains(&"upper".to_owned()), "{made:?}");
        // While mounted, garbage collection keeps its snapshots even with the image name gone.
        store.remove_image(&rec.name).unwrap();
        assert!(store.gc().unwrap().snapshots.is_empty(), "{name}");
        store.unmount_root(&id).unwrap();
        assert!(!basalt_images::snapshot::is_mountpoint(&root.rootfs).unwrap());
        assert!(!root.rootfs.parent().unwrap().exists(), "{name}");
        assert_eq!(store.gc().unwrap().snapshots.len(), rec.layers.len());
    }
}

#[test]
fn finds_images_by_any_name_and_reads_their_runtime_config() {
    let fx = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f = fx.get(fixtures::CONFIGURED);
    let rec = import_archive(&store, &f.oci_archive, false)
        .unwrap()
        .remove(0);
    let config_hex = f.image.config.digest.trim_start_matches("sha256:");
    for name in [
        "basalt/configured",
        "docker.io/basalt/configured:latest",
        &f.image.config.digest,
        config_hex,
        &f.image.manifest.digest,
        &format!("basalt/configured@{}", f.image.manifest.digest),
    ] {
        assert_eq!(store.find_image(name).unwrap().name, rec.name, "{name}");
    }
    for missing in ["busybox", "basalt/configured:v2", &"0".repeat(64)] {
        let e = store.find_image(missing).unwrap_err().to_string();
        assert!(e.contains("not found") && e.contains(missing), "{e}");
    }

    let c = store.image_config(&rec).unwrap();
    assert_eq!((c.os.as_str(), c.architecture.as_str()), ("linux", "amd64"));
    assert_eq!(c.config.entrypoint, ["sh", "-c"]);
    assert_eq!(c.config.cmd, ["echo \"$GREETING\" from $(pwd)"]);
    assert_eq!(c.config.working_dir, "/srv/app");
    assert!(c
        .config
        .env
        .contains(&"GREETING=hello from basalt".to_owned()));
    assert_eq!(c.config.labels["org.basalt.fixture"], "configured");
    assert!(c.config.exposed_ports.contains_key("9090/udp"));
    let nonroot = import_archive(&store, &fx.get(fixtures::NONROOT).docker_archive, false)
        .unwrap()
        .remove(0);
    assert_eq!(
        store.image_config(&nonroot).unwrap().config.user,
        "1000:1000"
    );
}

#[test]
fn directories_a_layer_does_not_list_keep_the_lower_layers_attributes() {
    use basalt_testsupport::{ImageBuilder, LayerBuilder};
    use std::os::unix::fs::MetadataExt;
    let image = ImageBuilder::new("docker.io/basalt/implicit", "latest")
        .layer(
            LayerBuilder::new()
                .dir("scratch", 0o1777, 5, 6)
                .unwrap()
                .dir("scratch/deep", 0o700, 7, 8)
                .unwrap()
                .finish()
                .unwrap(),
        )
        // No entries for `scratch/` or `scratch/deep/`, nor for `fresh/`.
        .layer(
            LayerBuilder::new()
                .file("scratch/deep/x", 0o644, 0, 0, b"x")
                .unwrap()
                .file("fresh/y", 0o644, 0, 0, b"y")
                .unwrap()
                .finish()
                .unwrap(),
        )
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("implicit.tar");
    image.write_oci_archive(&archive).unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let rec = import_archive(&store, &archive, false).unwrap().remove(0);
    for (id, copy) in [("overlay", false), ("copy", true)] {
        let root = store.mount_root(id, &rec, copy).unwrap();
        let md = |p: &str| std::fs::metadata(root.rootfs.join(p)).unwrap();
        let m = md("scratch");
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o1777, 5, 6),
            "{id}"
        );
        let m = md("scratch/deep");
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o700, 7, 8), "{id}");
        assert_eq!(md("fresh").mode() & 0o7777, 0o755, "{id}");
        assert!(root.rootfs.join("scratch/deep/x").exists());
        store.unmount_root(id).unwrap();
    }
}
