//! ExecSync: output, exit code, output cap and timeout, against real processes.

mod common;

use std::time::Duration;

use basalt_streaming::{exec_sync, ExecSyncError};
use common::{pids_with_arg, sh, wait_gone, HostBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collects_output_and_exit_code() {
    let b = HostBackend::default();
    let out = exec_sync(&b, "ctr", sh("echo out; echo err >&2; exit 4"), None, 1024)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_without_blocking_the_process() {
    let b = HostBackend::default();
    // Far more than a pipe buffer: the process only exits if the excess is drained.
    let out = exec_sync(
        &b,
        "ctr",
        sh("yes | head -c 1000000; echo done >&2"),
        Some(Duration::from_secs(30)),
        1000,
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), 1000);
    assert_eq!(out.stderr, b"done\n");
    assert!(out.truncated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_process() {
    let b = HostBackend::default();
    let marker = (200_000 + std::process::id()).to_string();
    let cmd = vec![common::BUSYBOX.to_string(), "sleep".into(), marker.clone()];
    let e = exec_sync(&b, "ctr", cmd, Some(Duration::from_millis(300)), 1024)
        .await
        .unwrap_err();
    assert!(matches!(e, ExecSyncError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("timed out after 300ms"), "{e}");
    for pid in pids_with_arg(&marker) {
        tokio::task::spawn_blocking(move || wait_gone(pid))
            .await
            .unwrap();
    }
    assert!(pids_with_arg(&marker).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_errors_name_the_container() {
    let b = HostBackend::default();
    let e = exec_sync(&b, "nope", sh("true"), None, 10)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}
