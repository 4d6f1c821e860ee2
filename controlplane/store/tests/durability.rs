//! No acknowledged write is lost when the process that wrote it is SIGKILLed mid-load, and (etcd) the store
//! keeps taking writes while a member of three is killed.
//!
//! The writer is this test binary run again as a child (`writer_child`, which does nothing unless
//! `BASALT_STORE_WRITER` is set): it prints one line per acknowledged write, and the parent kills it without
//! warning partway through, then reopens the store and looks for every acknowledged key.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_store::{EtcdConfig, EtcdStore, SqliteStore, Store};
use basalt_testsupport::EtcdCluster;

const WRITERS: usize = 16;

async fn open(spec: &str) -> Arc<dyn Store> {
    match spec.strip_prefix("sqlite:") {
        Some(path) => Arc::new(SqliteStore::open(std::path::Path::new(path)).unwrap()),
        None => Arc::new(
            EtcdStore::connect(&EtcdConfig::from_endpoint(spec).unwrap())
                .await
                .unwrap(),
        ),
    }
}

/// The child: writes until killed, one line per acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_child() {
    let Ok(spec) = std::env::var("BASALT_STORE_WRITER") else {
        return;
    };
    let store = open(&spec).await;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let key = format!("/d/{w}/{n:06}");
                match store.create(&key, key.as_bytes().to_vec()).await {
                    Ok(kv) => println!("ack {key} {}", kv.mod_revision),
                    // A write refused while a member is down is not acknowledged; the next one is tried.
                    Err(e) => println!("err {key} {e}"),
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

struct Run {
    acked: BTreeMap<String, i64>,
    errors: usize,
    /// Writes acknowledged after `disrupt` ran.
    acked_after_disruption: usize,
}

/// Runs the writer child against `spec`, calls `disrupt` once `before` writes are acknowledged, lets
/// `after` more be acknowledged, then SIGKILLs the child.
fn run_writer(spec: &str, before: usize, after: usize, mut disrupt: impl FnMut()) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "writer_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("BASALT_STORE_WRITER", spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Kept open until the child is dead: closing it first would fail the child's next print instead.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut run = Run {
        acked: BTreeMap::new(),
        errors: 0,
        acked_after_disruption: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut disrupted = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("ack") => {
                let key = parts.next().unwrap().to_string();
                let rev: i64 = parts.next().unwrap().parse().unwrap();
                run.acked.insert(key, rev);
                if disrupted {
                    run.acked_after_disruption += 1;
                }
            }
            Some("err") => run.errors += 1,
            _ => continue,
        }
        if !disrupted && run.acked.len() >= before {
            disrupt();
            disrupted = true;
        }
        if disrupted && run.acked_after_disruption >= after {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writer stalled: {} acknowledged, {} errors",
            run.acked.len(),
            run.errors
        );
    }
    // No warning, no flush: whatever the child had in flight is cut off.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    drop(lines);
    run
}

async fn assert_all_there(store: &dyn Store, run: &Run) {
    let mut missing = Vec::new();
    for (key, rev) in &run.acked {
        match store.get(key).await.unwrap() {
            Some(kv) if kv.value == key.as_bytes() && kv.mod_revision == *rev => {}
            other => missing.push(format!("{key}@{rev}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let max = run.acked.values().max().copied().unwrap_or(0);
    assert!(store.current_revision().await.unwrap() >= max);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkill_under_write_load_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let spec = format!("sqlite:{}", path.display());
    let run = run_writer(&spec, 500, 1500, || {});
    assert!(run.acked.len() >= 2000);
    let store = SqliteStore::open(&path).unwrap();
    assert_all_there(&store, &run).await;
    // Writes continue from the recovered revision.
    let next = store.create("/after", b"x".to_vec()).await.unwrap();
    assert!(next.mod_revision > *run.acked.values().max().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_sigkill_under_write_load_loses_no_acknowledged_write() {
    let cluster = EtcdCluster::start(1).unwrap();
    let run = run_writer(&cluster.datastore_endpoint(), 300, 700, || {});
    let store = open(&cluster.datastore_endpoint()).await;
    assert_all_there(store.as_ref(), &run).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_member_killed_under_load_the_store_keeps_writing() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let endpoint = cluster.datastore_endpoint();
    let mut killed = None;
    let run = run_writer(&endpoint, 300, 700, || {
        // The first member is where the writer's requests go first.
        cluster.kill(0).unwrap();
        killed = Some(Instant::now());
    });
    assert!(killed.is_some());
    assert!(
        run.acked_after_disruption >= 700,
        "writes must go on with two members of three: {} after the kill, {} errors",
        run.acked_after_disruption,
        run.errors
    );
    let store = open(&endpoint).await;
    assert_all_there(store.as_ref(), &run).await;
    // The killed member comes back and catches up.
    cluster.restart(0).unwrap();
    let only_first = EtcdStore::connect(&EtcdConfig {
        endpoints: vec![cluster.endpoints()[0].clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let latest = run.acked.iter().max_by_key(|(_, r)| **r).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if only_first.get(latest.0).await.ok().flatten().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted member did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
