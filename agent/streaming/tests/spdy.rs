//! Exec, attach and port-forward over SPDY/3.1 with a minimal client written here (like client-go's
//! spdystream: one stream per channel, zlib-compressed header blocks with the SPDY/3 dictionary).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_streaming::{AttachTarget, ExecTarget, Server};
use common::{alive, sh, HostBackend};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP: Duration = Duration::from_secs(20);

fn dictionary() -> Vec<u8> {
    let words = "options head post put delete trace accept accept-charset accept-encoding accept-language \
        accept-ranges age allow authorization cache-control connection content-base content-encoding \
        content-language content-length content-location content-md5 content-range content-type date etag \
        expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since \
        last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer \
        retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate \
        method get status 200_OK version HTTP/1.1 url public set-cookie keep-alive origin";
    let mut d = Vec::new();
    for w in words.split_whitespace() {
        let w = w.replace('_', " ");
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(
        b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 \
Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 \
Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar \
Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,\
image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    );
    d
}

#[derive(Debug)]
enum Got {
    Reply(u32),
    Data { id: u32, fin: bool, data: Vec<u8> },
    Reset(u32),
    GoAway,
    Closed,
    Other,
}

/// What the server sent on a connection, per stream.
#[derive(Default)]
struct Seen {
    data: HashMap<u32, Vec<u8>>,
    resets: Vec<u32>,
    fins: Vec<u32>,
    replies: Vec<u32>,
}

struct Client {
    tcp: TcpStream,
    deflate: Compress,
    inflate: Decompress,
    dict: Vec<u8>,
    next_id: u32,
}

/// Upgrades `url` to SPDY/3.1; returns the client and the chosen protocol, or the HTTP status on refusal.
async fn connect(url: &str, protocols: &[&str]) -> Result<(Client, String), (u16, String)> {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_at(rest.find('/').unwrap());
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n"
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(STEP, tcp.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "connection closed during the handshake");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let proto = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-stream-protocol-version:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    if status != 101 {
        let mut body = vec![0u8; 4096];
        let n = tcp.read(&mut body).await.unwrap_or(0);
        return Err((status, String::from_utf8_lossy(&body[..n]).into_owned()));
    }
    let dict = dictionary();
    let mut deflate = Compress::new(Compression::default(), true);
    assert_eq!(
        deflate.set_dictionary(&dict).unwrap(),
        0xe3c6_a7c2,
        "test dictionary is not SPDY/3's"
    );
    let client = Client {
        tcp,
        deflate,
        inflate: Decompress::new(true),
        dict,
        next_id: 1,
    };
    Ok((client, proto))
}

impl Client {
    async fn open(&mut self, headers: &[(&str, &str)]) -> u32 {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (k, v) in headers {
            raw.extend_from_slice(&(k.len() as u32).to_be_bytes());
            raw.extend_from_slice(k.as_bytes());
            raw.extend_from_slice(&(v.len() as u32).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut block = Vec::with_capacity(raw.len() + 1024);
        self.deflate
            .compress_vec(&raw, &mut block, FlushCompress::Sync)
            .unwrap();
        let id = self.next_id;
        self.next_id += 2;
        let mut f = vec![0x80, 0x03, 0x00, 0x01];
        f.extend_from_slice(&((10 + block.len()) as u32).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&block);
        self.tcp.write_all(&f).await.unwrap();
        id
    }

    async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
        let mut f = id.to_be_bytes().to_vec();
        f.extend_from_slice(&((u32::from(fin) << 24) | data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        self.tcp.write_all(&f).await.unwrap();
    }

    async fn next(&mut self) -> Got {
        let mut head = [0u8; 8];
        match tokio::time::timeout(STEP, self.tcp.read_exact(&mut head))
            .await
            .expect("read timed out")
        {
            Ok(_) => {}
            Err(_) => return Got::Closed,
        }
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut p = vec![0u8; len];
        self.tcp.read_exact(&mut p).await.unwrap();
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if word & 0x8000_0000 == 0 {
            return Got::Data {
                id: word,
                fin: head[4] & 1 == 1,
                data: p,
            };
        }
        let id = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
        match word & 0xffff {
            2 => {
                self.inflate_block(&p[4..]);
                Got::Reply(id)
            }
            3 => Got::Reset(id),
            7 => Got::GoAway,
            _ => Got::Other,
        }
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        while !input.is_empty() {
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate.set_dictionary(&self.dict).unwrap();
                }
                Err(e) => panic!("bad header block from server: {e}"),
            }
            input = &input[(self.inflate.total_in() - before) as usize..];
        }
        out
    }

    /// Reads until the server ends the connection.
    async fn collect(mut self) -> Seen {
        let mut seen = Seen::default();
        loop {
            match self.next().await {
                Got::Data { id, fin, data } => {
                    seen.data.entry(id).or_default().extend(data);
                    if fin {
                        seen.fins.push(id);
                    }
                }
                Got::Reset(id) => seen.resets.push(id),
                Got::Reply(id) => seen.replies.push(id),
                Got::GoAway | Got::Closed => return seen,
                Got::Other => {}
            }
        }
    }

    async fn read_until(&mut self, id: u32, needle: &str) -> String {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(needle) {
            match self.next().await {
                Got::Data { id: i, data, .. } if i == id => got.extend(data),
                Got::GoAway | Got::Closed => panic!(
                    "closed before {needle:?}; got {:?}",
                    String::from_utf8_lossy(&got)
                ),
                _ => {}
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
}

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
            cmd: sh("read x; stty size"),
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
        text(&data, stdout).contains("33 101"),
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
