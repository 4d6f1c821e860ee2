//! Two separate processes pulling the same image at once download each layer once: the per-blob lock is a
//! `flock`, shared across processes, not only threads. The pullers are this test binary re-run with
//! `PROC_CHILD_*` set.

mod common;

use std::process::{Command, Stdio};

use basalt_images::{pull, Store};
use basalt_testsupport::{fixtures, Registry, RegistryMode};
use common::*;

/// Acts only when re-run by `two_processes_download_each_layer_once`.
#[test]
fn proc_child_puller() {
    let (Ok(store), Ok(reference), Ok(host)) = (
        std::env::var("PROC_CHILD_STORE"),
        std::env::var("PROC_CHILD_REF"),
        std::env::var("PROC_CHILD_HOST"),
    ) else {
        return;
    };
    let store = Store::open(store).unwrap();
    pull(
        &store,
        &insecure_client(&host),
        &reference.parse().unwrap(),
        &|_| {},
    )
    .unwrap();
}

#[test]
fn two_processes_download_each_layer_once() {
    let fx = fixtures();
    let f = fx.get(fixtures::LAYERED);
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push(f, "basalt/layered", "latest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/basalt/layered:latest", reg.host());
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "proc_child_puller", "--test-threads=1"])
            .env("PROC_CHILD_STORE", dir.path())
            .env("PROC_CHILD_REF", &reference)
            .env("PROC_CHILD_HOST", reg.host())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    let store = Store::open(dir.path()).unwrap();
    assert_matches(&store.image(&reference).unwrap(), f);
    assert_blobs_verified(&store);
    let log = reg.log();
    for l in &f.image.layers {
        let needle = format!("\"GET /v2/basalt/layered/blobs/{} ", l.digest);
        let n = log.lines().filter(|line| line.contains(&needle)).count();
        assert_eq!(n, 1, "layer {} fetched {n} times:\n{log}", l.digest);
    }
}
