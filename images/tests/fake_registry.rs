//! Behaviour that a real registry cannot be made to show on demand, against a minimal registry served by the
//! test on 127.0.0.1: the bearer-token flow (a 401 with `WWW-Authenticate: Bearer realm=…,service=…,scope=…`),
//! a registry serving a tampered blob, and layers downloaded concurrently.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use basalt_images::hosts::{Hosts, RegistriesConfig};
use basalt_images::{pull, Client, Error, Store};
use basalt_testsupport::image::Blob;
use basalt_testsupport::{fixtures, Fixture};
use common::*;

#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Require the bearer token `t0ken`, handed out at `/token` to `basalt:pw`.
    bearer: bool,
    /// Flip a byte in the top layer's blob.
    tamper: bool,
    /// Hold each layer request until this many are in flight at once (or 20 s pass).
    hold_until_in_flight: usize,
}

struct Request {
    path: String,
    authorization: Option<String>,
}

#[derive(Default)]
struct State {
    log: Vec<Request>,
    in_flight: usize,
    max_in_flight: usize,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

/// The blobs of one image, owned by the server threads.
struct Served {
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
}

/// Serves fixture `f` at `/v2/library/busybox/…`. One request per connection (`Connection: close`).
fn serve(f: &Fixture, how: Behaviour) -> (String, Shared) {
    let image = Arc::new(Served {
        manifest: f.image.manifest.clone(),
        config: f.image.config.clone(),
        layers: f.image.layers.clone(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shared: Shared = Arc::default();
    let (shared2, addr2) = (shared.clone(), addr.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let shared = shared2.clone();
            let addr = addr2.clone();
            let image = image.clone();
            std::thread::spawn(move || handle(conn, &image, how, &addr, &shared));
        }
    });
    (addr, shared)
}

fn handle(mut conn: std::net::TcpStream, f: &Served, how: Behaviour, addr: &str, shared: &Shared) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut authorization = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_owned());
            }
        }
    }
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "basalt:pw")
    );
    let layer = path
        .strip_prefix("/v2/library/busybox/blobs/")
        .and_then(|d| f.layers.iter().find(|b| b.digest == d));
    let (code, extra, body): (u16, String, Vec<u8>) = if path.starts_with("/token?") {
        if authorization.as_deref() == Some(basic.as_str()) {
            (200, String::new(), br#"{"token":"t0ken"}"#.to_vec())
        } else {
            (401, String::new(), b"bad credentials".to_vec())
        }
    } else if how.bearer && authorization.as_deref() != Some("Bearer t0ken") {
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"test-registry\",scope=\"repository:library/busybox:pull\"\r\n"
        );
        (401, challenge, b"{}".to_vec())
    } else if path == "/v2/library/busybox/manifests/latest" {
        let ct = format!("Content-Type: {}\r\n", f.manifest.media_type);
        (200, ct, f.manifest.bytes.clone())
    } else if path == format!("/v2/library/busybox/blobs/{}", f.config.digest) {
        (200, String::new(), f.config.bytes.clone())
    } else if let Some(b) = layer {
        let mut bytes = b.bytes.clone();
        if how.tamper && b.digest == f.layers.last().unwrap().digest {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
        }
        if how.hold_until_in_flight > 0 {
            let (m, cv) = &**shared;
            let mut s = m.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            cv.notify_all();
            let (mut s, _) = cv
                .wait_timeout_while(s, Duration::from_secs(20), |s| {
                    s.max_in_flight < how.hold_until_in_flight
                })
                .unwrap();
            s.in_flight -= 1;
        }
        (200, String::new(), bytes)
    } else {
        (404, String::new(), Vec::new())
    };
    shared.0.lock().unwrap().log.push(Request {
        path,
        authorization,
    });
    let head = format!(
        "HTTP/1.1 {code} X\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|_| conn.write_all(&body));
}

fn client(addr: &str, yaml: &str) -> Client {
    let mut hosts = Hosts {
        config: RegistriesConfig::parse(yaml, "r.yaml".as_ref()).unwrap(),
        ..Default::default()
    };
    hosts.insecure.insert(addr.to_owned());
    Client::new(hosts)
}

#[test]
fn bearer_token_realm_flow() {
    let fx = fixtures();
    let f = fx.get(fixtures::BUSYBOX);
    let (addr, shared) = serve(
        f,
        Behaviour {
            bearer: true,
            ..Default::default()
        },
    );
    let yaml = format!("configs:\n  \"{addr}\":\n    auth: {{username: basalt, password: pw}}\n");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = format!("{addr}/library/busybox:latest").parse().unwrap();
    let rec = pull(&store, &client(&addr, &yaml), &r, &|_| {}).unwrap();
    assert_matches(&rec, f);
    {
        let s = shared.0.lock().unwrap();
        let tokens: Vec<&Request> = s
            .log
            .iter()
            .filter(|r| r.path.starts_with("/token?"))
            .collect();
        assert_eq!(tokens.len(), 1, "the token is fetched once and reused");
        assert!(
            tokens[0].path.contains("service=test-registry"),
            "{}",
            tokens[0].path
        );
        assert!(
            tokens[0]
                .path
                .contains("scope=repository%3Alibrary%2Fbusybox%3Apull"),
            "{}",
            tokens[0].path
        );
        let blob_gets: Vec<&Request> = s
            .log
            .iter()
            .filter(|r| r.path.contains("/blobs/"))
            .collect();
        assert!(!blob_gets.is_empty());
        assert!(blob_gets
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer t0ken")));
    }

    // Wrong credentials: the realm refuses, and the error says so.
    let yaml =
        format!("configs:\n  \"{addr}\":\n    auth: {{username: basalt, password: wrong}}\n");
    let store2 = Store::open(dir.path().join("2")).unwrap();
    let e = pull(&store2, &client(&addr, &yaml), &r, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("token realm") && e.contains("401"), "{e}");
}

#[test]
fn a_tampered_blob_is_never_readable() {
    let fx = fixtures();
    let f = fx.get(fixtures::LAYERED);
    let (addr, _) = serve(
        f,
        Behaviour {
            tamper: true,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = format!("{addr}/library/busybox:latest").parse().unwrap();
    let e = pull(&store, &client(&addr, ""), &r, &|_| {}).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
    let top: basalt_images::Digest = f.image.layers.last().unwrap().digest.parse().unwrap();
    assert!(!store.has_blob(&top), "tampered {top} readable");
    assert!(!dir.path().join("ingest").join(top.hex()).exists());
    assert_blobs_verified(&store);
    assert!(store.images().unwrap().is_empty());
    // Layers unpacked before the failure are not published, and their temp dirs are gone.
    assert_eq!(
        std::fs::read_dir(dir.path().join("snapshots"))
            .unwrap()
            .count(),
        0
    );
    assert!(store.snapshots().unwrap().is_empty());
}

#[test]
fn layers_download_concurrently() {
    let fx = fixtures();
    let f = fx.get(fixtures::LAYERED);
    assert_eq!(f.image.layers.len(), 3);
    // The server holds every layer request until two are in flight together: a client fetching one layer at a
    // time would wait 20 s per layer and leave max_in_flight at 1.
    let (addr, shared) = serve(
        f,
        Behaviour {
            hold_until_in_flight: 2,
            ..Default::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = format!("{addr}/library/busybox:latest").parse().unwrap();
    let rec = pull(&store, &client(&addr, ""), &r, &|_| {}).unwrap();
    assert_matches(&rec, f);
    assert!(shared.0.lock().unwrap().max_in_flight >= 2);
}
