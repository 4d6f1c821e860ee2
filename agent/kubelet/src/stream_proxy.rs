//! `/exec`, `/attach` and `/portForward` of the kubelet API: the CRI is asked for a streaming URL, and the
//! client's upgrade request is replayed to it; once the runtime's streaming server answers `101 Switching
//! Protocols` the bytes are copied both ways (kubelet's redirect-less proxy). WebSocket and SPDY alike: the
//! proxy never looks inside the upgraded stream.
//!
//! It must never forward the API's bearer token to the runtime: the streaming URL is already a one-time
//! credential.

use basalt_proto::cri;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Kubelet;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Which streaming call a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

/// The largest response head the runtime's streaming server may send before the upgrade.
const MAX_HEAD: usize = 16 << 10;
/// Connecting to the runtime's streaming server and reading its answer: it is on this node, so a backend that
/// takes longer is stuck, and must not pin the request (and its sockets) forever.
const HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(30);
/// The body of an error answered instead of the upgrade.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Headers that belong to one hop (or to the kubelet API itself) and are not replayed to the runtime.
const HOP: &[&str] = &[
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
];

fn err(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from(msg.into()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

/// `a%20b+c` → `a b c`: query values as kubectl encodes them.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every `key=value` of the query, decoded, in order (a key such as `command` repeats).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn flag(q: &[(String, String)], names: &[&str]) -> bool {
    q.iter()
        .any(|(k, v)| names.contains(&k.as_str()) && matches!(v.as_str(), "1" | "true" | "True"))
}

/// The CRI ID of a running pod's container, or of its sandbox when `container` is `None`.
async fn lookup(
    kubelet: &Kubelet,
    ns: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<String, Response<Body>> {
    let p = kubelet
        .pods()
        .into_iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(pod)
        })
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("pod {ns}/{pod} not found")))?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let Some(name) = container else {
        let list = kubelet
            .cri
            .pod_sandboxes(&uid)
            .await
            .map_err(|e| err(StatusCode::BAD_GATEWAY, e.message().to_owned()))?;
        return crate::cri::newest_ready(&list)
            .map(|s| s.id.clone())
            .ok_or_else(|| {
                err(
                    StatusCode::NOT_FOUND,
                    format!("pod {ns}/{pod} has no ready sandbox"),
                )
            });
    };
    let st = p.status.unwrap_or_default();
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name && c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .and_then(|c| {
            c.container_id
                .as_deref()?
                .split("://")
                .nth(1)
                .map(str::to_owned)
        })
        .ok_or_else(|| {
            err(
                StatusCode::NOT_FOUND,
                format!("container {name:?} is not running in pod {ns}/{pod}"),
            )
        })
}

/// Asks the CRI for the streaming URL of this request.
async fn streaming_url(
    kubelet: &Kubelet,
    kind: Kind,
    id: String,
    q: &[(String, String)],
) -> Result<String, Response<Body>> {
    let mut rt = kubelet.cri.runtime.clone();
    let stdin = flag(q, &["stdin", "input"]);
    let stdout = flag(q, &["stdout", "output"]);
    let stderr = flag(q, &["stderr", "error"]);
    let tty = flag(q, &["tty"]);
    let r = match kind {
        Kind::Exec => {
            let cmd: Vec<String> = q
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect();
            if cmd.is_empty() {
                return Err(err(
                    StatusCode::BAD_REQUEST,
                    "exec: query parameter \"command\" is required",
                ));
            }
            rt.exec(cri::ExecRequest {
                container_id: id,
                cmd,
                tty,
                stdin,
                stdout,
                // With a tty stderr is merged into stdout, as kubelet asks.
                stderr: stderr && !tty,
            })
            .await
            .map(|r| r.into_inner().url)
        }
        Kind::Attach => rt
            .attach(cri::AttachRequest {
                container_id: id,
                stdin,
                tty,
                stdout,
                stderr: stderr && !tty,
            })
            .await
            .map(|r| r.into_inner().url),
        Kind::PortForward => {
            let mut port = Vec::new();
            for (k, v) in q.iter().filter(|(k, _)| k == "port") {
                for p in v.split(',') {
                    match p.trim().parse::<u16>() {
                        Ok(n) if n > 0 => port.push(i32::from(n)),
                        _ => {
                            return Err(err(
                                StatusCode::BAD_REQUEST,
                                format!("portForward: {k} {p:?}: must be 1-65535"),
                            ))
                        }
                    }
                }
            }
            rt.port_forward(cri::PortForwardRequest {
                pod_sandbox_id: id,
                port,
            })
            .await
            .map(|r| r.into_inner().url)
        }
    };
    r.map_err(|e| err(http_status(e.code()), format!("CRI: {}", e.message())))
}

/// The HTTP answer to a CRI error, as the apiserver would give a client: the runtime's refusal of a bad
/// request is the client's fault, only an unreachable or broken runtime is a gateway error.
fn http_status(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists | tonic::Code::Aborted => {
            StatusCode::CONFLICT
        }
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => StatusCode::FORBIDDEN,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// `http://host:port/path?query` → (host:port, /path?query). Only plain HTTP: the runtime's streaming
/// server listens on the node itself.
fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Some((authority.to_owned(), path.to_owned()))
}

/// Handles one streaming request of the kubelet API (already authorized).
pub async fn handle(
    kubelet: &Kubelet,
    kind: Kind,
    ns: &str,
    pod: &str,
    container: Option<&str>,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let q = query_pairs(req.uri().query());
    let id = match lookup(kubelet, ns, pod, container).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let url = match streaming_url(kubelet, kind, id, &q).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some((authority, mut path)) = split_url(&url) else {
        return err(
            StatusCode::BAD_GATEWAY,
            format!("the runtime's streaming URL {url:?} is not http://"),
        );
    };
    // Port-forward ports travel in the query (WebSocket) or in stream headers (SPDY): keep the client's.
    if kind == Kind::PortForward && !path.contains('?') {
        if let Some(query) = req.uri().query() {
            path = format!("{path}?{query}");
        }
    }
    match proxy(authority, path, req).await {
        Ok(r) => r,
        Err(e) => err(
            StatusCode::BAD_GATEWAY,
            format!("streaming server {url}: {e}"),
        ),
    }
}

/// Replays the request head to the streaming server and, on `101`, splices the two upgraded connections.
async fn proxy(
    authority: String,
    path: String,
    mut req: Request<hyper::body::Incoming>,
) -> std::io::Result<Response<Body>> {
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 30 s");
    let mut backend = tokio::time::timeout(HANDSHAKE, TcpStream::connect(&authority))
        .await
        .map_err(|_| timed_out())??;
    let mut head = format!("{} {path} HTTP/1.1\r\nHost: {authority}\r\n", req.method());
    for (k, v) in req.headers() {
        if HOP.contains(&k.as_str()) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    backend.write_all(head.as_bytes()).await?;

    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        let mut chunk = [0u8; 1024];
        let n = tokio::time::timeout(HANDSHAKE, backend.read(&mut chunk))
            .await
            .map_err(|_| timed_out())??;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed the connection before answering",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("response head too large"));
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed
        .parse(&buf[..end])
        .map_err(|e| std::io::Error::other(format!("bad response: {e}")))?;
    let code = parsed.code.unwrap_or(502);
    let length = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let chunked = parsed.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && std::str::from_utf8(h.value).is_ok_and(|v| v.contains("chunked"))
    });
    let mut resp = Response::builder().status(code);
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        resp = resp.header(h.name, h.value);
    }
    let leftover = buf[end..].to_vec();
    if code != 101 {
        // An error before the upgrade (bad token, unsupported protocol): pass its body on. The connection
        // may stay open (keep-alive), so read what Content-Length says, not to the end; a chunked body is
        // not decoded here and is replaced by a short note.
        let mut body = leftover;
        if chunked {
            body = format!("the streaming server answered {code} (chunked body not relayed)")
                .into_bytes();
        } else {
            // Without Content-Length the body runs to the end of the connection.
            let want = length.unwrap_or(MAX_ERROR_BODY).min(MAX_ERROR_BODY);
            let wait = if length.is_some() {
                HANDSHAKE
            } else {
                std::time::Duration::from_secs(5)
            };
            while body.len() < want {
                let mut chunk = [0u8; 4096];
                match tokio::time::timeout(wait, backend.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            body.truncate(want);
        }
        return resp
            .body(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed())
            .map_err(std::io::Error::other);
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(client) = upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(client);
        if !leftover.is_empty() && client.write_all(&leftover).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
    });
    resp.body(http_body_util::Empty::new().map_err(|e| match e {}).boxed())
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded_and_repeat() {
        let q = query_pairs(Some(
            "command=sh&command=-c&command=echo%20a+b%3Dc&tty=1&stdin=true",
        ));
        let cmd: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmd, ["sh", "-c", "echo a b=c"]);
        assert!(flag(&q, &["tty"]) && flag(&q, &["stdin", "input"]));
        assert!(!flag(&q, &["stdout", "output"]));
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn streaming_urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:3456/exec/abc"),
            Some(("127.0.0.1:3456".into(), "/exec/abc".into()))
        );
        assert_eq!(split_url("https://x/y"), None);
    }
}
