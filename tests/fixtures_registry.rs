//! Fixture images and the local registry: every fixture is pushed with skopeo and read back over HTTP.

use basalt_testsupport::fixtures::{self, Fixtures};
use basalt_testsupport::image::sha256_digest;
use basalt_testsupport::{Registry, RegistryMode};
use serde_json::Value;

#[test]
fn fixtures_are_valid_reproducible_oci_layouts() {
    let a = Fixtures::build().unwrap();
    let b = Fixtures::build().unwrap();
    assert_eq!(a.all.len(), 4);
    for (fa, fb) in a.all.iter().zip(&b.all) {
        assert_eq!(
            fa.image.manifest.digest, fb.image.manifest.digest,
            "{} not reproducible",
            fa.name
        );
        // Every blob's file name is the sha256 of its content.
        for entry in std::fs::read_dir(fa.oci_layout.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let data = std::fs::read(entry.path()).unwrap();
            assert_eq!(
                sha256_digest(&data),
                format!("sha256:{}", entry.file_name().to_str().unwrap())
            );
        }
        let index: Value =
            serde_json::from_slice(&std::fs::read(fa.oci_layout.join("index.json")).unwrap())
                .unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            fa.image.manifest.digest.as_str()
        );
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            fa.image.reference().as_str()
        );
    }
    let config: Value =
        serde_json::from_slice(&a.get(fixtures::NONROOT).image.config.bytes).unwrap();
    assert_eq!(config["config"]["User"], "1000:1000");
    let config: Value =
        serde_json::from_slice(&a.get(fixtures::CONFIGURED).image.config.bytes).unwrap();
    assert_eq!(config["config"]["WorkingDir"], "/srv/app");
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object());
    assert_eq!(
        config["config"]["Labels"]["org.basalt.fixture"],
        "configured"
    );
    assert_eq!(a.get(fixtures::LAYERED).image.layers.len(), 3);
}

#[test]
fn docker_archive_lists_config_tags_and_layers() {
    let fx = Fixtures::build().unwrap();
    let f = fx.get(fixtures::BUSYBOX);
    let mut archive = tar::Archive::new(std::fs::File::open(&f.docker_archive).unwrap());
    let mut manifest = None;
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if path == "manifest.json" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            manifest = Some(serde_json::from_str::<Value>(&s).unwrap());
        }
        names.push(path);
    }
    let manifest = manifest.expect("manifest.json in the archive");
    assert_eq!(manifest[0]["RepoTags"][0], "busybox:latest");
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        assert!(
            names.contains(&layer.as_str().unwrap().to_owned()),
            "{layer} missing"
        );
    }
    assert!(names.contains(&manifest[0]["Config"].as_str().unwrap().to_owned()));
}

fn push_and_read_back(mode: RegistryMode) {
    let fx = Fixtures::build_with_large().unwrap();
    let reg = Registry::start(mode).unwrap();
    reg.push_all(&fx.all).unwrap();
    for f in &fx.all {
        let got = reg
            .fetch_manifest(f.image.path_in_registry(), &f.image.tag)
            .unwrap();
        // skopeo copies an OCI manifest unchanged: the registry must serve our exact bytes.
        assert_eq!(got.digest, f.image.manifest.digest, "{}", f.name);
        assert_eq!(
            sha256_digest(&got.body),
            f.image.manifest.digest,
            "{}",
            f.name
        );
        assert!(
            got.content_type.contains("oci.image.manifest"),
            "{}",
            got.content_type
        );
        let by_digest = reg
            .fetch_manifest(f.image.path_in_registry(), &f.image.manifest.digest)
            .unwrap();
        assert_eq!(by_digest.body, got.body);
        // The config blob reads back byte for byte.
        let (code, _, body) = reg
            .get(
                &format!(
                    "/v2/{}/blobs/{}",
                    f.image.path_in_registry(),
                    f.image.config.digest
                ),
                None,
            )
            .unwrap();
        assert_eq!(code, 200);
        assert_eq!(body, f.image.config.bytes);
    }
    // A docker-save archive is accepted too; skopeo turns it into a Docker schema2 manifest.
    let bb = fx.get(fixtures::BUSYBOX);
    reg.push_docker_archive(&bb.docker_archive, "archived/busybox", "v1")
        .unwrap();
    let got = reg.fetch_manifest("archived/busybox", "v1").unwrap();
    assert_eq!(
        got.content_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let m: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), bb.image.layers.len());
}

#[test]
fn every_fixture_round_trips_through_a_plain_registry() {
    push_and_read_back(RegistryMode::Plain);
}

#[test]
fn every_fixture_round_trips_through_a_tls_registry_with_basic_auth() {
    push_and_read_back(RegistryMode::TlsAuth);
}

#[test]
fn tls_registry_refuses_anonymous_reads() {
    let fx = Fixtures::build().unwrap();
    let reg = Registry::start(RegistryMode::TlsAuth).unwrap();
    reg.push(fx.get(fixtures::BUSYBOX), "library/busybox", "latest")
        .unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(reg.ca_dir().unwrap())
        .arg(format!("docker://{}/library/busybox:latest", reg.host()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "anonymous read was allowed");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
}

#[test]
fn registry_process_is_gone_after_drop() {
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    let host = reg.host();
    drop(reg);
    assert!(
        std::net::TcpStream::connect(&host).is_err(),
        "registry still listening on {host} after drop"
    );
}
