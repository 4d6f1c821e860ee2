//! Exec and Attach through the runtime's streaming server, with a WebSocket client speaking what kubectl
//! speaks (`v4.channel.k8s.io`, which containerd 1.6's server also speaks): a tty, a resize, stdin, and the
//! exit status on the error channel.

use std::time::Duration;

use basalt_cri_tests::{api, cri_test, Endpoint, Harness};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BUSYBOX: &str = "busybox";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let url = url.replacen("http://", "ws://", 1);
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap()),
        Some("v4.channel.k8s.io")
    );
    ws
}

async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut m = vec![channel];
    m.extend_from_slice(data);
    ws.send(Message::Binary(m.into())).await.unwrap();
}

/// Reads until `done` says the collected (stdout, status) are complete, or the stream ends.
async fn collect(ws: &mut Ws, done: impl Fn(&str, &str) -> bool) -> (String, String) {
    let (mut out, mut status) = (String::new(), String::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&out, &status) {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
            Err(_) => panic!("timed out; stdout so far {out:?}, status {status:?}"),
        };
        if let Message::Binary(b) = msg {
            if b.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&b[1..]).into_owned();
            match b[0] {
                1 | 2 => out.push_str(&text),
                3 => status.push_str(&text),
                _ => {}
            }
        }
    }
    (out, status)
}

/// `exec -it`: the resize reaches the terminal (the command waits for a line of stdin, sent after the resize,
/// then for the size), and a non-zero exit comes back as a NonZeroExitCode status.
async fn exec_with_a_tty(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let pod = h.run_pod("wsexec").await;
    let id = h
        .create_start(&pod, h.container_config("c", BUSYBOX, &["sleep", "3600"]))
        .await;
    let url = h
        .cri
        .runtime
        .clone()
        .exec(api::ExecRequest {
            container_id: id.clone(),
            // containerd delivers the resize apart from stdin, so it can land after the line: poll for it
            // (up to 10 s) rather than trust the order; ours is there at once.
            cmd: [
                "sh",
                "-c",
                "read line; i=0; while [ \"$(stty size 2>/dev/null)\" != '45 123' ] && [ $i -lt 100 ]; \
                 do sleep 0.1; i=$((i+1)); done; stty size; echo got-$line; exit 7",
            ]
                .map(String::from)
                .to_vec(),
            tty: true,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = connect(&url).await;
    send(&mut ws, 4, br#"{"Width":123,"Height":45}"#).await;
    send(&mut ws, 0, b"go\r").await;
    let (out, status) = collect(&mut ws, |o, s| o.contains("got-go") && !s.is_empty()).await;
    assert!(
        out.contains("45 123"),
        "the terminal was not resized: {out:?}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("{status:?}: {e}"));
    assert_eq!(st["status"], "Failure", "{st}");
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "7", "{st}");
    h.remove_pod(&pod).await;
}

/// `attach -it` to a container whose own process is an interactive shell on a tty.
async fn attach_with_a_tty(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let pod = h.run_pod("wsattach").await;
    let mut cfg = h.container_config("sh", BUSYBOX, &["sh"]);
    cfg.tty = true;
    cfg.stdin = true;
    let id = h.create_start(&pod, cfg).await;
    let url = h
        .cri
        .runtime
        .clone()
        .attach(api::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: true,
            stdout: true,
            stderr: false,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut ws = connect(&url).await;
    send(&mut ws, 4, br#"{"Width":90,"Height":30}"#).await;
    send(&mut ws, 0, b"stty size; echo attached-$((6*7))\r").await;
    let (out, _) = collect(&mut ws, |o, _| o.contains("attached-42")).await;
    assert!(
        out.contains("30 90"),
        "the terminal was not resized: {out:?}"
    );
    drop(ws);
    // Detaching leaves the container running.
    let st = h.container_status(&id).await.unwrap();
    assert_eq!(
        st.state,
        api::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    h.remove_pod(&pod).await;
}

cri_test!(exec_with_a_tty, runc);
cri_test!(attach_with_a_tty, runc);
cri_test!(attach_over_spdy_with_stdin_once, runc);

/// critest's attach case, over SPDY as kubectl speaks it by default: a shell with `stdin` and `stdin_once`
/// and no tty; the client attaches stdin, stdout and stderr, types `echo hello` a moment later and reads
/// `hello`; then closes its stdin, which ends the shell (stdin_once) and with it the stream.
async fn attach_over_spdy_with_stdin_once(endpoint: Endpoint) {
    use basalt_testsupport::spdy;
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let pod = h.run_pod("spdyattach").await;
    let mut cfg = h.container_config("sh", BUSYBOX, &["sh"]);
    cfg.stdin = true;
    cfg.stdin_once = true;
    let id = h.create_start(&pod, cfg).await;
    let url = h
        .cri
        .runtime
        .clone()
        .attach(api::AttachRequest {
            container_id: id.clone(),
            stdin: true,
            tty: false,
            stdout: true,
            stderr: true,
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (mut c, proto) = spdy::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
        .await
        .unwrap_or_else(|(code, body)| panic!("SPDY upgrade refused: {code} {body}"));
    assert_eq!(proto, "v4.channel.k8s.io");
    // As client-go does: each stream is opened once the previous one was answered.
    let error = c.open_answered(&[("streamtype", "error")]).await;
    let stdin = c.open_answered(&[("streamtype", "stdin")]).await;
    let stdout = c.open_answered(&[("streamtype", "stdout")]).await;
    c.open_answered(&[("streamtype", "stderr")]).await;
    // "A second later", as critest types it: the shell has long been waiting on its stdin by then.
    h.wait_state(
        &id,
        api::ContainerState::ContainerRunning,
        Duration::from_secs(10),
    )
    .await;
    c.send(stdin, b"echo hello\n", false).await;
    let out = c.read_until(stdout, "hello").await;
    assert_eq!(out, "hello\n");
    c.send(stdin, b"", true).await;
    let seen = c.collect().await;
    let status =
        String::from_utf8_lossy(seen.data.get(&error).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    println!(
        "[{}] attach ended: error stream {status:?}",
        endpoint.name()
    );
    assert!(seen.fins.contains(&stdout), "stdout never ended: {seen:?}");
    // stdin_once: the shell got EOF and exited.
    h.wait_state(
        &id,
        api::ContainerState::ContainerExited,
        Duration::from_secs(30),
    )
    .await;
    h.remove_pod(&pod).await;
}

cri_test!(port_forward_to_a_host_network_pod);

/// Port-forward (SPDY, as kubectl speaks it) to a hostNetwork pod: its ports are the node's, so the runtime
/// dials them in the node's network namespace (the pod has none of its own). A server the container runs on
/// the node's 127.0.0.1 answers through the forwarded stream.
async fn port_forward_to_a_host_network_pod(endpoint: Endpoint) {
    use basalt_testsupport::spdy::{self, Got};
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let mut cfg = h.pod_config("pfhost");
    // The node's hostname too, as the kubelet leaves it for a hostNetwork pod.
    cfg.hostname = String::new();
    cfg.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options = Some(api::NamespaceOption {
        network: api::NamespaceMode::Node as i32,
        ..Default::default()
    });
    let pod = h
        .run_pod_with(cfg)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox hostNetwork: {e}"));
    h.track(&pod);
    // A free port of the node's: bound and released here, then taken by the container's server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = format!(
        "mkdir -p /www && echo pf-host-ok > /www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /www"
    );
    h.create_start(
        &pod,
        h.container_config("web", BUSYBOX, &["sh", "-c", &script]),
    )
    .await;
    // Serving once the node's port answers (the container shares the node's network).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "httpd never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = h
        .cri
        .runtime
        .clone()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: pod.id.clone(),
            port: vec![i32::from(port)],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let (mut c, proto) = spdy::connect(&url, &["portforward.k8s.io"])
        .await
        .unwrap_or_else(|(code, body)| panic!("SPDY upgrade refused: {code} {body}"));
    assert_eq!(proto, "portforward.k8s.io");
    let port_text = port.to_string();
    let stream = |t| {
        [
            ("streamtype", t),
            ("port", port_text.as_str()),
            ("requestid", "0"),
        ]
    };
    let error = c.open_answered(&stream("error")).await;
    let data = c.open_answered(&stream("data")).await;
    c.send(data, b"GET / HTTP/1.0\r\n\r\n", false).await;
    let mut got = Vec::new();
    let mut errors = Vec::new();
    loop {
        match c.next().await {
            Got::Data { id, data: d, fin } if id == data => {
                got.extend(d);
                if fin {
                    break;
                }
            }
            Got::Data { id, data: d, .. } if id == error => errors.extend(d),
            Got::GoAway | Got::Closed => break,
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("pf-host-ok"),
        "[{}] forwarded answer {text:?}, error stream {:?}",
        endpoint.name(),
        String::from_utf8_lossy(&errors)
    );
    drop(c);
    h.remove_pod(&pod).await;
    h.assert_empty().await;
}
