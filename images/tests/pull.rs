//! Pulls every fixture from a real local registry: plain HTTP, TLS with the test CA and basic auth, and through
//! a mirror entry for docker.io; then mounts container roots and checks their files.

mod common;

use std::collections::BTreeSet;

use basalt_images::hosts::{Hosts, RegistriesConfig};
use basalt_images::{pull, Client, Reference, Store};
use basalt_testsupport::{fixtures, Registry, RegistryMode};
use common::*;

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

#[test]
fn pulls_every_fixture_over_plain_http_and_mounts_roots() {
    let fx = fixtures();
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push_all(&fx.all).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let client = insecure_client(&reg.host());
    for f in &fx.all {
        let r = reference(&format!(
            "{}/{}:{}",
            reg.host(),
            f.image.path_in_registry(),
            f.image.tag
        ));
        let seen = std::sync::Mutex::new(BTreeSet::new());
        let rec = pull(&store, &client, &r, &|p| {
            assert!(p.done <= p.total);
            if p.done == p.total {
                seen.lock().unwrap().insert(p.layer.to_string());
            }
        })
        .unwrap();
        assert_matches(&rec, f);
        assert_eq!(rec.name, r.to_string());
        // Progress reported every layer to completion.
        let want: BTreeSet<String> = f.image.layers.iter().map(|l| l.digest.clone()).collect();
        assert_eq!(*seen.lock().unwrap(), want);
        assert_eq!(store.image(&rec.name).unwrap(), rec);
    }
    assert_blobs_verified(&store);
    let layered = store
        .image(&format!("{}/basalt/layered:latest", reg.host()))
        .unwrap();
    check_layered_root(&store, &layered, "c1", false);
    check_layered_root(&store, &layered, "c2", true);
    // Shared base layer: busybox and nonroot have the same first layer, unpacked once.
    let snaps = store.snapshots().unwrap();
    let first: BTreeSet<_> = fx.all.iter().map(|f| f.image.diff_ids[0].clone()).collect();
    assert!(snaps.len() < fx.all.iter().map(|f| f.image.layers.len()).sum::<usize>());
    for d in first {
        assert!(snaps.iter().any(|s| s.to_string() == d));
    }
}

#[test]
fn pulls_over_tls_with_the_test_ca_and_basic_auth() {
    let fx = fixtures();
    let reg = Registry::start(RegistryMode::TlsAuth).unwrap();
    reg.push_all(&fx.all).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, reg.ca_pem().unwrap()).unwrap();
    let (user, password) = reg.credentials().unwrap();
    let yaml = format!(
        "configs:\n  \"{}\":\n    auth: {{username: {user}, password: {password}}}\n    tls: {{ca_file: {}}}\n",
        reg.host(),
        ca.display()
    );
    let config = RegistriesConfig::parse(&yaml, "registries.yaml".as_ref()).unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    let client = Client::new(Hosts {
        config: config.clone(),
        ..Default::default()
    });
    for f in &fx.all {
        let r = reference(&format!(
            "{}/{}:{}",
            reg.host(),
            f.image.path_in_registry(),
            f.image.tag
        ));
        let rec = pull(&store, &client, &r, &|_| {}).unwrap();
        assert_matches(&rec, f);
    }
    let layered = store
        .image(&format!("{}/basalt/layered:latest", reg.host()))
        .unwrap();
    check_layered_root(&store, &layered, "tls", false);

    // Without credentials: a clear error, and nothing recorded.
    let store2 = Store::open(dir.path().join("store2")).unwrap();
    let mut no_auth = config.clone();
    no_auth.configs.values_mut().for_each(|c| c.auth = None);
    let e = pull(
        &store2,
        &Client::new(Hosts {
            config: no_auth,
            ..Default::default()
        }),
        &reference(&format!("{}/library/busybox:latest", reg.host())),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("has no credentials"), "{e}");
    // Without the CA: the certificate is refused.
    let e = pull(
        &store2,
        &Client::new(Hosts::default()),
        &reference(&format!("{}/library/busybox:latest", reg.host())),
        &|_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert!(store2.images().unwrap().is_empty());

    // insecure_skip_verify instead of the CA, and the credentials in Docker's base64 `auth` form.
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    let yaml = format!(
        "configs:\n  \"{}\":\n    auth: {{auth: {auth}}}\n    tls: {{insecure_skip_verify: true}}\n",
        reg.host()
    );
    let client = Client::new(Hosts {
        config: RegistriesConfig::parse(&yaml, "registries.yaml".as_ref()).unwrap(),
        ..Default::default()
    });
    let r = reference(&format!("{}/library/busybox:latest", reg.host()));
    assert_matches(
        &pull(&store2, &client, &r, &|_| {}).unwrap(),
        fx.get(fixtures::BUSYBOX),
    );
}

#[test]
fn pulls_docker_io_names_through_a_mirror_with_rewrites() {
    let fx = fixtures();
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push_all(&fx.all).unwrap();
    // `v1` exists only under the rewritten path; `latest` under both.
    for tag in ["latest", "v1"] {
        reg.push(fx.get(fixtures::CONFIGURED), "mirrored/configured", tag)
            .unwrap();
    }
    let yaml = format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"http://{}\"]\n    rewrite:\n      \"^basalt/configured$\": \"mirrored/configured\"\n",
        reg.host()
    );
    let hosts = Hosts {
        config: RegistriesConfig::parse(&yaml, "registries.yaml".as_ref()).unwrap(),
        // Never fall back to the real Docker Hub from a test.
        disable_default_endpoint: true,
        ..Default::default()
    };
    let client = Client::new(hosts);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for f in &fx.all {
        // The fixture's own reference: docker.io/library/busybox:latest and so on.
        let r = reference(&f.image.reference());
        let rec = pull(&store, &client, &r, &|_| {}).unwrap();
        assert_matches(&rec, f);
    }
    let rec = pull(&store, &client, &reference("basalt/configured:v1"), &|_| {}).unwrap();
    assert_eq!(rec.name, "docker.io/basalt/configured:v1");
    assert_matches(&rec, fx.get(fixtures::CONFIGURED));
    let layered = store.image("docker.io/basalt/layered:latest").unwrap();
    check_layered_root(&store, &layered, "mirror-layered", false);
    let busybox = store.image("docker.io/library/busybox:latest").unwrap();
    let root = store.mount_root("mirror", &busybox, false).unwrap();
    assert!(root.rootfs.join("bin/sh").exists());
    store.unmount_root("mirror").unwrap();
    assert!(!root.rootfs.exists());

    // Unknown tag: the error names the endpoint and the answer.
    let e = pull(&store, &client, &reference("busybox:nope"), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains(&reg.host()) && e.contains("404"), "{e}");
}

#[test]
fn two_concurrent_pulls_download_each_layer_once() {
    let fx = fixtures();
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    let f = fx.get(fixtures::LAYERED);
    reg.push(f, "basalt/layered", "latest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = reference(&format!("{}/basalt/layered:latest", reg.host()));
    std::thread::scope(|s| {
        let a = s.spawn(|| pull(&store, &insecure_client(&reg.host()), &r, &|_| {}));
        let b = s.spawn(|| pull(&store, &insecure_client(&reg.host()), &r, &|_| {}));
        assert_matches(&a.join().unwrap().unwrap(), f);
        assert_matches(&b.join().unwrap().unwrap(), f);
    });
    let log = reg.log();
    for l in &f.image.layers {
        let needle = format!("\"GET /v2/basalt/layered/blobs/{} ", l.digest);
        let n = log.lines().filter(|line| line.contains(&needle)).count();
        assert_eq!(n, 1, "layer {} fetched {n} times:\n{log}", l.digest);
    }
}

#[test]
fn pulls_the_platform_manifest_of_an_image_index() {
    use basalt_images::manifest::Platform;
    let fx = fixtures();
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push(fx.get(fixtures::BUSYBOX), "multi/app", "amd")
        .unwrap();
    reg.push(fx.get(fixtures::NONROOT), "multi/app", "arm")
        .unwrap();
    let amd = reg.fetch_manifest("multi/app", "amd").unwrap();
    let arm = reg.fetch_manifest("multi/app", "arm").unwrap();
    let entry = |m: &basalt_testsupport::registry::FetchedManifest, arch: &str| {
        serde_json::json!({
            "mediaType": m.content_type, "digest": m.digest, "size": m.body.len(),
            "platform": {"architecture": arch, "os": "linux"},
        })
    };
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry(&arm, "arm64"), entry(&amd, "amd64")],
    }))
    .unwrap();
    let resp = ureq::put(format!(
        "http://{}/v2/multi/app/manifests/latest",
        reg.host()
    ))
    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
    .send(&index[..])
    .unwrap();
    assert_eq!(resp.status().as_u16(), 201);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let client = insecure_client(&reg.host());
    let r = reference(&format!("{}/multi/app:latest", reg.host()));
    let platform = |arch: &str| Platform {
        architecture: arch.into(),
        os: "linux".into(),
        variant: None,
    };
    let rec = basalt_images::pull::pull_platform(&store, &client, &r, &platform("amd64"), &|_| {})
        .unwrap();
    assert_eq!(rec.digest, basalt_images::Digest::of(&index));
    assert_eq!(rec.manifest.to_string(), amd.digest);
    assert_matches(&rec, fx.get(fixtures::BUSYBOX));
    let rec = basalt_images::pull::pull_platform(&store, &client, &r, &platform("arm64"), &|_| {})
        .unwrap();
    assert_eq!(rec.manifest.to_string(), arm.digest);
    assert_matches(&rec, fx.get(fixtures::NONROOT));
    let e = basalt_images::pull::pull_platform(&store, &client, &r, &platform("s390x"), &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linux/s390x") && e.contains("linux/amd64"),
        "{e}"
    );
}
