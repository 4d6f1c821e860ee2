//! Exec, attach and port-forward over SPDY/3.1 with the minimal client of `basalt_testsupport::spdy` (like
//! client-go's spdystream: one stream per channel, zlib-compressed header blocks with the SPDY/3 dictionary).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_streaming::{AttachTarget, ExecTarget, Server};
use basalt_testsupport::spdy::{connect, Got, Seen};
use common::{alive, sh, HostBackend};

async fn server() -> (Server, Arc<HostBackend>) {
    let backend = Arc::new(HostBackend::default());
    let server = Server::start("127.0.0.1:0".parse().unwrap(), backend.clone())
        .await
        .unwrap();
    (server, backend)
}

fn text(m: &HashMap<u32, Vec<u8>>, id: u32) -> String {
    String::from_utf8_lossy(m.get(&id).map(Vec::as_slice).unwrap_or(b"")).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_v4_reports_output_and_exit_code() {
    let (server, _b) = server().await;
    let url = server
        .get_exec(ExecTarget {
            container_id: "ctr".into(),
            cmd: sh("read l; echo got:$l; echo oops >&2; exit 5"),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: true,
        })
        .unwrap();
    let (mut c, proto) = connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
        .await
        .unwrap();
    assert_eq!(proto, "v4.channel.k8s.io");
    let error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let stderr = c.open(&[("streamtype", "stderr")]).await;
    c.send(stdin, b"spdy\n", true).await;
    let Seen {
        data,
        resets,
        fins,
        replies,
    } = c.collect().await;
    assert!(resets.is_empty(), "{resets:?}");
    assert_eq!(
        replies,
        vec![error, stdin, stdout, stderr],
        "every stream is answered with SYN_REPLY"
    );
    assert_eq!(text(&data, stdout), "got:spdy\n");
    assert_eq!(text(&data, stderr), "oops\n");
    let status: serde_json::Value = serde_json::from_slice(&data[&error]).unwrap();
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "5");
    for id in [error, stdout, stderr] {
        assert!(fins.contains(&id), "stream {id} not finished: {fins:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_over_spdy_with_tty_and_resize() {
    let (server, _b) = server().await;
    let url = server
        .get_exec(ExecTarget {
            container_id: "ctr".into(),
            // The resize and stdin are separate streams with no order between them (as client-go sends
            // them): the shell waits, boundedly, for the size to arrive rather than racing it.
            cmd: sh(
                "read x; i=0; until s=$(stty size 2>/dev/null) && [ \"$s\" != '0 0' ] || [ $i -ge 100 ]; do i=$((i+1)); sleep 0.05; done; echo \"size $s\"",
            ),
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let (mut c, _) = connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let resize = c.open(&[("streamtype", "resize")]).await;
    // Split across frames on purpose: the resize stream is a JSON stream, not one message per frame.
    c.send(resize, br#"{"Width":101,"He"#, false).await;
    c.send(resize, br#"ight":33}"#, false).await;
    c.send(stdin, b"go\n", false).await;
    let Seen { data, .. } = c.collect().await;
    assert!(
        text(&data, stdout).contains("size 33 101"),
        "{:?}",
        text(&data, stdout)
    );
    assert_eq!(text(&data, error), r#"{"metadata":{},"status":"Success"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_over_spdy() {
    let (server, backend) = server().await;
    let pid = backend.start_container("app", &sh("while read l; do echo got:$l; done"), false);
    let url = server
        .get_attach(AttachTarget {
            container_id: "app".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let (mut c, _) = connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let error = c.open(&[("streamtype", "error")]).await;
    let stdin = c.open(&[("streamtype", "stdin")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    c.send(stdin, b"one\n", false).await;
    c.read_until(stdout, "got:one").await;
    c.send(stdin, b"", true).await;
    let Seen { data, .. } = c.collect().await;
    assert_eq!(text(&data, error), r#"{"metadata":{},"status":"Success"}"#);
    assert!(alive(pid));
    backend.stop_container("app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_streams_are_reset_and_bad_protocols_refused() {
    let (server, _b) = server().await;
    let t = || ExecTarget {
        container_id: "ctr".into(),
        cmd: sh("echo hi"),
        tty: false,
        stdin: false,
        stdout: true,
        stderr: false,
    };
    let (mut c, _) = connect(&server.get_exec(t()).unwrap(), &["v4.channel.k8s.io"])
        .await
        .unwrap();
    let bogus = c.open(&[("streamtype", "stderr")]).await;
    let error = c.open(&[("streamtype", "error")]).await;
    let stdout = c.open(&[("streamtype", "stdout")]).await;
    let Seen { data, resets, .. } = c.collect().await;
    assert_eq!(resets, vec![bogus]);
    assert_eq!(text(&data, stdout), "hi\n");
    assert_eq!(text(&data, error), r#"{"metadata":{},"status":"Success"}"#);

    let Err((status, body)) = connect(&server.get_exec(t()).unwrap(), &["v9.channel.k8s.io"]).await
    else {
        panic!("v9 accepted")
    };
    assert_eq!(status, 403);
    assert!(body.contains("v4.channel.k8s.io"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_over_spdy() {
    let (server, _b) = server().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let echo = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let url = server.get_port_forward("sb").unwrap();
    let (mut c, proto) = connect(&url, &["portforward.k8s.io"]).await.unwrap();
    assert_eq!(proto, "portforward.k8s.io");
    let p = port.to_string();
    // Two requests on one connection, like two local connections through one kubectl port-forward.
    for (rid, msg) in [("0", "first"), ("1", "second")] {
        let error = c
            .open(&[("port", &p), ("requestid", rid), ("streamtype", "error")])
            .await;
        c.send(error, b"", true).await;
        let data = c
            .open(&[("port", &p), ("requestid", rid), ("streamtype", "data")])
            .await;
        c.send(data, msg.as_bytes(), false).await;
        assert_eq!(c.read_until(data, msg).await, msg);
        // Closing our side makes the echo server close, which ends the forward.
        c.send(data, b"", true).await;
        loop {
            match c.next().await {
                Got::Data { id, fin: true, .. } if id == error => break,
                Got::GoAway | Got::Closed => panic!("connection ended"),
                _ => {}
            }
        }
    }
    // A port nobody listens on is reported on the error stream.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let error = c
        .open(&[("port", &dead), ("requestid", "2"), ("streamtype", "error")])
        .await;
    c.open(&[("port", &dead), ("requestid", "2"), ("streamtype", "data")])
        .await;
    let msg = c.read_until(error, "refused").await;
    assert!(
        msg.contains(&format!("error forwarding port {dead}")),
        "{msg}"
    );
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_spdy_connection_kills_the_exec() {
    let (server, _b) = server().await;
    let marker = (300_000 + std::process::id()).to_string();
    let url = server
        .get_exec(ExecTarget {
            container_id: "ctr".into(),
            cmd: vec![common::BUSYBOX.into(), "sleep".into(), marker.clone()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let (mut c, _) = connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    c.open(&[("streamtype", "error")]).await;
    c.open(&[("streamtype", "stdout")]).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = common::pids_with_arg(&marker).first() {
            break *p;
        }
        assert!(std::time::Instant::now() < deadline, "exec never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(c);
    tokio::task::spawn_blocking(move || common::wait_gone(pid))
        .await
        .unwrap();
}
