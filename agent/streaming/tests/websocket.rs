//! Exec, attach and port-forward through the streaming server with a WebSocket client, against real processes.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use basalt_streaming::{AttachTarget, Config, Error, ExecTarget, Server};
use common::client::{connect, refused_status};
use common::{alive, pids_with_arg, sh, wait_gone, HostBackend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: &str = "v5.channel.k8s.io";
const V4: &str = "v4.channel.k8s.io";
const LOOPBACK: &str = "127.0.0.1:0";

async fn server() -> (Server, Arc<HostBackend>) {
    let backend = Arc::new(HostBackend::default());
    let server = Server::start(LOOPBACK.parse().unwrap(), backend.clone())
        .await
        .unwrap();
    (server, backend)
}

fn exec(cmd: Vec<String>, tty: bool, stdin: bool, stderr: bool) -> ExecTarget {
    ExecTarget {
        container_id: "ctr".into(),
        cmd,
        tty,
        stdin,
        stdout: true,
        stderr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_output_and_exit_code_over_v5() {
    let (server, _b) = server().await;
    let addr: SocketAddr = server.addr();
    assert!(addr.ip().is_loopback());
    let url = server
        .get_exec(exec(
            sh("echo hi; echo oops >&2; exit 3"),
            false,
            false,
            true,
        ))
        .unwrap();
    assert!(url.starts_with(&format!("http://{addr}/exec/")), "{url}");
    let client = connect(&url, &[V5, V4]).await.unwrap();
    assert_eq!(client.protocol.as_deref(), Some(V5));
    let got = client.collect().await;
    assert_eq!(got.text(1), "hi\n");
    assert_eq!(got.text(2), "oops\n");
    let status = got.status();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");

    let url = server
        .get_exec(exec(sh("true"), false, false, false))
        .unwrap();
    let got = connect(&url, &[V5]).await.unwrap().collect().await;
    assert_eq!(
        got.status(),
        serde_json::json!({"metadata": {}, "status": "Success"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_error_is_an_internal_error_status() {
    let (server, _b) = server().await;
    let mut t = exec(sh("true"), false, false, false);
    t.container_id = "missing".into();
    let got = connect(&server.get_exec(t).unwrap(), &[V5])
        .await
        .unwrap()
        .collect()
        .await;
    let status = got.status();
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "InternalError");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("\"missing\" not found"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trips_and_v5_close_ends_it() {
    let (server, _b) = server().await;
    let url = server
        .get_exec(exec(sh("cat; echo done"), false, true, false))
        .unwrap();
    let mut c = connect(&url, &[V5]).await.unwrap();
    c.send(0, b"hello\n").await;
    c.read_until(1, "hello\n").await;
    c.close_stdin().await;
    let got = c.collect().await;
    assert_eq!(got.text(1), "done\n");
    assert_eq!(got.status()["status"], "Success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_tty_follows_resize() {
    let (server, _b) = server().await;
    let url = server
        .get_exec(exec(sh("read x; stty size; exit 7"), true, true, false))
        .unwrap();
    let mut c = connect(&url, &[V5]).await.unwrap();
    c.resize(123, 45).await;
    c.send(0, b"go\n").await;
    let got = c.collect().await;
    assert!(got.text(1).contains("45 123"), "stdout {:?}", got.text(1));
    assert!(!got.0.contains_key(&2), "a tty has no stderr channel");
    assert_eq!(got.status()["details"]["causes"][0]["message"], "7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_a_running_process_and_detach() {
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
    assert!(url.contains("/attach/"));
    let mut c = connect(&url, &[V5]).await.unwrap();
    c.send(0, b"x\n").await;
    c.read_until(1, "got:x").await;
    c.close_stdin().await;
    let got = c.collect().await;
    assert_eq!(got.status()["status"], "Success");
    assert!(alive(pid), "detaching must not stop the container");
    backend.stop_container("app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_with_tty_follows_resize() {
    let (server, backend) = server().await;
    let pid = backend.start_container("term", &[common::BUSYBOX.into(), "sh".into()], true);
    let url = server
        .get_attach(AttachTarget {
            container_id: "term".into(),
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let mut c = connect(&url, &[V5]).await.unwrap();
    c.resize(77, 22).await;
    c.send(0, b"stty size\n").await;
    c.read_until(1, "22 77").await;
    c.close_stdin().await;
    let got = c.collect().await;
    assert_eq!(got.status()["status"], "Success");
    assert!(alive(pid));
    backend.stop_container("term");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_single_use_and_unknown_tokens_are_404() {
    let (server, _b) = server().await;
    let url = server
        .get_exec(exec(sh("true"), false, false, false))
        .unwrap();
    connect(&url, &[V5]).await.unwrap().collect().await;
    assert_eq!(refused_status(&url, &[V5]).await, 404);
    let base = format!("http://{}", server.addr());
    assert_eq!(
        refused_status(&format!("{base}/exec/AAAAAAAAAAAAAAAAAAAAAA"), &[V5]).await,
        404
    );
    // A token only opens the kind of session it was issued for, and is burnt by a wrong try.
    let url = server
        .get_exec(exec(sh("true"), false, false, false))
        .unwrap();
    let token = url.rsplit('/').next().unwrap();
    assert_eq!(
        refused_status(&format!("{base}/attach/{token}"), &[V5]).await,
        404
    );
    assert_eq!(refused_status(&url, &[V5]).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expires_after_the_configured_ttl() {
    let ttl = Duration::from_millis(50);
    let backend = Arc::new(HostBackend::default());
    let server = Server::start_with_config(
        LOOPBACK.parse().unwrap(),
        Config { token_ttl: ttl },
        backend,
    )
    .await
    .unwrap();
    let url = server
        .get_exec(exec(sh("true"), false, false, false))
        .unwrap();
    // Expiry compares against the issue instant, so waiting past it is deterministic.
    tokio::time::sleep(ttl * 2).await;
    assert_eq!(refused_status(&url, &[V5]).await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_protocols_are_negotiated() {
    let (server, _b) = server().await;
    let cmd = || exec(sh("echo hi; exit 2"), false, false, false);

    let c = connect(&server.get_exec(cmd()).unwrap(), &[V4])
        .await
        .unwrap();
    assert_eq!(c.protocol.as_deref(), Some(V4));
    let got = c.collect().await;
    assert_eq!(got.text(1), "hi\n");
    assert_eq!(got.status()["details"]["causes"][0]["message"], "2");

    let c = connect(
        &server.get_exec(cmd()).unwrap(),
        &["v4.base64.channel.k8s.io"],
    )
    .await
    .unwrap();
    assert_eq!(c.protocol.as_deref(), Some("v4.base64.channel.k8s.io"));
    let got = c.collect().await;
    assert_eq!(got.text(1), "hi\n");
    assert_eq!(got.status()["details"]["causes"][0]["message"], "2");

    // Before v4 the error channel carries plain text.
    let c = connect(&server.get_exec(cmd()).unwrap(), &["channel.k8s.io"])
        .await
        .unwrap();
    let got = c.collect().await;
    assert_eq!(got.text(1), "hi\n");
    assert!(got.text(3).contains("exit status 2"), "{:?}", got.text(3));

    assert_eq!(
        refused_status(&server.get_exec(cmd()).unwrap(), &["v9.channel.k8s.io"]).await,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_going_away_kills_the_exec() {
    let (server, _b) = server().await;
    let marker = (100_000 + std::process::id()).to_string();
    let cmd = vec![common::BUSYBOX.into(), "sleep".into(), marker.clone()];
    let url = server.get_exec(exec(cmd, false, false, false)).unwrap();
    let c = connect(&url, &[V5]).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = pids_with_arg(&marker).first() {
            break *p;
        }
        assert!(std::time::Instant::now() < deadline, "exec never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.close().await;
    tokio::task::spawn_blocking(move || wait_gone(pid))
        .await
        .unwrap();
}

async fn echo_server() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let h = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_reaches_a_tcp_echo_server() {
    let (server, _b) = server().await;
    let (port, echo) = echo_server().await;
    let url = server.get_port_forward("sb").unwrap();
    assert!(url.contains("/portforward/"));
    let mut c = connect(&format!("{url}?port={port}"), &[V4]).await.unwrap();
    assert_eq!(c.protocol.as_deref(), Some(V4));
    let le = port.to_le_bytes().to_vec();
    assert_eq!(c.recv().await, Some((0, le.clone())));
    assert_eq!(c.recv().await, Some((1, le)));
    c.send(0, b"ping").await;
    assert_eq!(c.read_until(0, "ping").await, "ping");
    c.send(0, b"pong").await;
    assert_eq!(c.read_until(0, "pong").await, "pong");
    c.close().await;
    echo.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_to_a_closed_port_reports_on_the_error_channel() {
    let (server, _b) = server().await;
    // Bind then drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = server.get_port_forward("sb").unwrap();
    let mut c = connect(&format!("{url}?port={port}"), &[V4]).await.unwrap();
    let err = c.read_until(1, "refused").await;
    assert!(
        err.contains(&format!("error forwarding port {port}")),
        "{err:?}"
    );

    let url = server.get_port_forward("sb").unwrap();
    assert_eq!(refused_status(&format!("{url}?port=0"), &[V4]).await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_name_the_field() {
    let (server, _b) = server().await;
    let e = server
        .get_exec(exec(sh("true"), true, false, true))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Invalid {
                field: "stderr",
                ..
            }
        ),
        "{e}"
    );
    let mut t = exec(Vec::new(), false, false, false);
    let e = server.get_exec(t.clone()).unwrap_err();
    assert!(matches!(e, Error::Invalid { field: "cmd", .. }), "{e}");
    t.cmd = sh("true");
    t.stdout = false;
    let e = server.get_exec(t).unwrap_err();
    assert!(e.to_string().contains("at least one stream"), "{e}");
    let e = server.get_port_forward("").unwrap_err();
    assert!(e.to_string().contains("pod_sandbox_id"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forward_several_ports_use_channel_pairs() {
    let (server, _b) = server().await;
    let (p1, e1) = echo_server().await;
    let (p2, e2) = echo_server().await;
    let url = server.get_port_forward("sb").unwrap();
    let mut c = connect(&format!("{url}?port={p1},{p2}"), &[V4])
        .await
        .unwrap();
    let mut greetings = Vec::new();
    for _ in 0..4 {
        greetings.push(c.recv().await.unwrap());
    }
    greetings.sort();
    let le = |p: u16| p.to_le_bytes().to_vec();
    assert_eq!(
        greetings,
        vec![(0, le(p1)), (1, le(p1)), (2, le(p2)), (3, le(p2))]
    );
    c.send(2, b"to-second").await;
    assert_eq!(c.read_until(2, "to-second").await, "to-second");
    c.send(0, b"to-first").await;
    assert_eq!(c.read_until(0, "to-first").await, "to-first");
    c.close().await;
    e1.abort();
    e2.abort();
}
