//! A pull killed with SIGKILL half-way, then run again, completes; no blob with a wrong digest is ever readable.
//!
//! The puller is this test binary itself, re-run with `CRASH_CHILD_*` set so that `crash_child_puller` pulls.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use basalt_images::{pull, Store};
use basalt_testsupport::{fixtures, Fixtures, Registry, RegistryMode};
use common::*;

/// Acts only when re-run by `sigkill_half_way_then_pull_again_completes`.
#[test]
fn crash_child_puller() {
    let (Ok(store), Ok(reference), Ok(host)) = (
        std::env::var("CRASH_CHILD_STORE"),
        std::env::var("CRASH_CHILD_REF"),
        std::env::var("CRASH_CHILD_HOST"),
    ) else {
        return;
    };
    let store = Store::open(store).unwrap();
    // Slowed down so the parent can kill it mid-download every time.
    pull(
        &store,
        &insecure_client(&host),
        &reference.parse().unwrap(),
        &|_| std::thread::sleep(Duration::from_millis(20)),
    )
    .unwrap();
}

fn ingest_bytes(store: &Path) -> u64 {
    std::fs::read_dir(store.join("ingest"))
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn sigkill_half_way_then_pull_again_completes() {
    let fx = Fixtures::build_with_large().unwrap();
    let f = fx.get(fixtures::LARGE);
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push(f, "basalt/large", "latest").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let reference = format!("{}/basalt/large:latest", reg.host());

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_puller",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CRASH_CHILD_STORE", &root)
        .env("CRASH_CHILD_REF", &reference)
        .env("CRASH_CHILD_HOST", reg.host())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingest_bytes(&root) < 4 << 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the puller finished before it could be killed"
        );
        assert!(Instant::now() < deadline, "the puller never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );

    let store = Store::open(&root).unwrap();
    assert!(
        ingest_bytes(&root) > 0,
        "killed half-way: partial downloads remain"
    );
    assert_blobs_verified(&store);
    assert!(
        store.images().unwrap().is_empty(),
        "no record for a half-pulled image"
    );

    let rec = pull(
        &store,
        &insecure_client(&reg.host()),
        &reference.parse().unwrap(),
        &|_| {},
    )
    .unwrap();
    assert_matches(&rec, f);
    assert_blobs_verified(&store);
    assert_eq!(ingest_bytes(&root), 0);
    // The partial downloads were resumed with range requests, not started over.
    assert!(
        reg.log()
            .lines()
            .any(|l| l.contains("/blobs/sha256:") && l.contains("\" 206 ")),
        "no resumed (206) download in the registry log:\n{}",
        reg.log()
    );
    let root_fs = store.mount_root("after-crash", &rec, false).unwrap();
    for i in 0..5 {
        let md = std::fs::metadata(root_fs.rootfs.join(format!("data/random-{i}"))).unwrap();
        assert_eq!(md.len(), 10 << 20);
    }
    store.unmount_root("after-crash").unwrap();
}
