//! The kubelet API over HTTPS: `/healthz` for anyone; `/pods`, `/containerLogs`, `/exec`, `/attach`,
//! `/portForward` (proxied by [`crate::stream_proxy`]), `/stats/summary` and `/metrics` for holders of the
//! bearer token the agent writes at first start. The serving certificate is self-signed (both are kept
//! under the data dir and reused).
//!
//! In API mode the apiserver is a client too, as upstream's kubelet with `--client-ca-file` and
//! `--authorization-mode=Webhook`: a client certificate of the cluster CA names the user (CN) and groups
//! (O), and a SubjectAccessReview asks the apiserver whether that user may use the node's subresource
//! (`nodes/proxy` for logs, exec, attach and port-forward, `nodes/stats`, `nodes/metrics`, `nodes/pods`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use basalt_proto::cri;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::cluster::Cluster;
use crate::stream_proxy::{self, Kind};
use crate::Kubelet;

type Body = BoxBody<Bytes, std::io::Error>;

/// Where the API keeps its credentials.
pub struct Credentials {
    pub token: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Reads the token and certificate from `dir`, making them on first start (token: 32 random bytes, hex).
pub fn credentials(dir: &Path, hostnames: &[String]) -> std::io::Result<Credentials> {
    std::fs::create_dir_all(dir)?;
    let token_path = dir.join("kubelet-api.token");
    let token = match std::fs::read_to_string(&token_path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(std::io::Error::from)?;
            let t = hex::encode(b);
            basalt_atomic_file::write_private(&token_path, t.as_bytes())?;
            t
        }
    };
    let (cert_path, key_path) = (dir.join("pki/kubelet.crt"), dir.join("pki/kubelet.key"));
    let (cert_pem, key_pem) = match (
        std::fs::read_to_string(&cert_path),
        std::fs::read_to_string(&key_path),
    ) {
        (Ok(c), Ok(k)) => (c, k),
        _ => {
            let mut names = hostnames.to_vec();
            names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
            let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
            let params = rcgen::CertificateParams::new(names).map_err(std::io::Error::other)?;
            let cert = params.self_signed(&key).map_err(std::io::Error::other)?;
            std::fs::create_dir_all(dir.join("pki"))?;
            basalt_atomic_file::write_private(&key_path, key.serialize_pem().as_bytes())?;
            std::fs::write(&cert_path, cert.pem())?;
            (cert.pem(), key.serialize_pem())
        }
    };
    Ok(Credentials {
        token,
        cert_pem,
        key_pem,
    })
}

/// Serves the API on `addr` until the process ends. Returns the bound address.
pub async fn serve(
    kubelet: Arc<Kubelet>,
    addr: SocketAddr,
    creds: Credentials,
) -> std::io::Result<SocketAddr> {
    serve_on(kubelet, TcpListener::bind(addr).await?, creds, None).await
}

/// A client certificate's user: its CN and its Os.
type Peer = Option<(String, Vec<String>)>;

fn peer(der: &[u8]) -> Peer {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((name, groups))
}

/// Serves on a bound listener; with `cluster`, its CA's client certificates are accepted, and authorized
/// by SubjectAccessReview.
pub async fn serve_on(
    kubelet: Arc<Kubelet>,
    listener: TcpListener,
    creds: Credentials,
    cluster: Option<Arc<Cluster>>,
) -> std::io::Result<SocketAddr> {
    let certs =
        rustls_pemfile::certs(&mut creds.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut creds.key_pem.as_bytes())?
        .ok_or_else(|| std::io::Error::other("no private key in the kubelet key file"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?;
    let builder = match cluster.as_ref().filter(|c| !c.ca_roots().is_empty()) {
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            for der in c.ca_roots() {
                roots
                    .add(rustls::pki_types::CertificateDer::from(der.clone()))
                    .map_err(std::io::Error::other)?;
            }
            // Optional: local tools still come with the bearer token and no certificate.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(std::io::Error::other)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let tls = builder
        .with_single_cert(certs, key)
        .map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let bound = listener.local_addr()?;
    let token = Arc::new(creds.token);
    tokio::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors the error repeats at once: back off instead of spinning.
                    tracing::warn!(error = %e, "kubelet API: accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, kubelet, token) = (acceptor.clone(), kubelet.clone(), token.clone());
            let cluster = cluster.clone();
            tokio::spawn(async move {
                // A client that connects and never finishes the handshake must not hold a task and an fd.
                let Ok(Ok(tls)) =
                    tokio::time::timeout(std::time::Duration::from_secs(30), acceptor.accept(tcp))
                        .await
                else {
                    return;
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| peer(c));
                let caller = Arc::new(Caller {
                    token,
                    peer,
                    cluster,
                });
                let svc = hyper::service::service_fn(move |req| {
                    let (kubelet, caller) = (kubelet.clone(), caller.clone());
                    async move { Ok::<_, std::convert::Infallible>(handle(kubelet, &caller, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    // exec/attach/port-forward take the connection over after the 101.
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(bound)
}

fn text(code: StatusCode, s: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(
            Full::new(Bytes::from(s.into()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn json(v: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn query(req: &Request<hyper::body::Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// Who is on a connection: the local token it must show, or the certificate it showed.
struct Caller {
    token: Arc<String>,
    peer: Peer,
    cluster: Option<Arc<Cluster>>,
}

/// Upstream's mapping of kubelet API paths to the node subresources that authorize them.
fn subresource(path: &str) -> &'static str {
    match path.trim_start_matches('/').split('/').next() {
        Some("stats") => "stats",
        Some("metrics") => "metrics",
        Some("pods") => "pods",
        Some("logs") => "log",
        _ => "proxy",
    }
}

fn verb(method: &hyper::Method) -> &'static str {
    match *method {
        hyper::Method::POST => "create",
        hyper::Method::PUT => "update",
        hyper::Method::PATCH => "patch",
        hyper::Method::DELETE => "delete",
        _ => "get",
    }
}

async fn authorize(
    caller: &Caller,
    req: &Request<hyper::body::Incoming>,
) -> Result<(), Response<Body>> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| constant_time_eq(t.trim().as_bytes(), caller.token.as_bytes())) {
        return Ok(());
    }
    let (Some((user, groups)), Some(cluster)) = (&caller.peer, &caller.cluster) else {
        return Err(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
    };
    let (verb, sub) = (verb(req.method()), subresource(req.uri().path()));
    match cluster.authorize(user, groups, verb, sub).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(text(
            StatusCode::FORBIDDEN,
            format!("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={sub})"),
        )),
        Err(e) => {
            tracing::warn!(error = %e, %user, "kubelet API: SubjectAccessReview failed");
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error (user={user}, verb={verb}, resource=nodes, subresource={sub})"),
            ))
        }
    }
}

async fn handle(
    kubelet: Arc<Kubelet>,
    caller: &Caller,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if let Err(refused) = authorize(caller, &req).await {
        return refused;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["pods"] => json(&serde_json::json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": kubelet.pods(),
        })),
        ["containerLogs", ns, pod, container] => {
            container_logs(&kubelet, ns, pod, container, &query(&req)).await
        }
        ["exec", ns, pod, container] => {
            stream_proxy::handle(&kubelet, Kind::Exec, ns, pod, Some(container), req).await
        }
        ["attach", ns, pod, container] => {
            stream_proxy::handle(&kubelet, Kind::Attach, ns, pod, Some(container), req).await
        }
        ["portForward", ns, pod] => {
            stream_proxy::handle(&kubelet, Kind::PortForward, ns, pod, None, req).await
        }
        ["stats", "summary"] => json(&stats_summary(&kubelet).await),
        ["metrics"] => text(StatusCode::OK, metrics(&kubelet)),
        _ => text(StatusCode::NOT_FOUND, format!("404 page not found: {path}")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The CRI log file of the container's current (or previous) attempt.
fn log_file(
    kubelet: &Kubelet,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<PathBuf, String> {
    let p = kubelet
        .pods()
        .into_iter()
        .find(|p| {
            p.metadata.namespace.as_deref() == Some(ns) && p.metadata.name.as_deref() == Some(pod)
        })
        .ok_or_else(|| format!("pod {ns}/{pod} not found"))?;
    let uid = p.metadata.uid.clone().unwrap_or_default();
    let dir = kubelet
        .settings
        .log_root
        .join(format!("{ns}_{pod}_{uid}"))
        .join(container);
    let mut attempts: Vec<u32> = std::fs::read_dir(&dir)
        .map_err(|_| format!("container {container:?} in pod {ns}/{pod} has no logs"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    attempts.sort();
    let n = if previous {
        attempts.iter().rev().nth(1)
    } else {
        attempts.last()
    };
    n.map(|n| dir.join(format!("{n}.log"))).ok_or_else(|| {
        format!(
            "container {container:?} has no {}logs",
            if previous { "previous " } else { "" }
        )
    })
}

/// One CRI log line as `kubectl logs` shows it: the content, optionally prefixed by its timestamp; partial
/// lines (`P`) are joined with what follows.
fn render(line: &str, timestamps: bool) -> Option<String> {
    let mut it = line.splitn(4, ' ');
    let (ts, _stream, tag, content) = (it.next()?, it.next()?, it.next()?, it.next().unwrap_or(""));
    let nl = if tag == "P" { "" } else { "\n" };
    Some(if timestamps {
        format!("{ts} {content}{nl}")
    } else {
        format!("{content}{nl}")
    })
}

async fn container_logs(
    kubelet: &Kubelet,
    ns: &str,
    pod: &str,
    container: &str,
    q: &HashMap<String, String>,
) -> Response<Body> {
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let file = match log_file(kubelet, ns, pod, container, flag("previous")) {
        Ok(f) => f,
        Err(e) => return text(StatusCode::NOT_FOUND, e),
    };
    let timestamps = flag("timestamps");
    let content = std::fs::read_to_string(&file).unwrap_or_default();
    let lines: Vec<&str> = content.lines().collect();
    let tail = q.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let start = tail.map(|t| lines.len().saturating_sub(t)).unwrap_or(0);
    let mut out = String::new();
    for l in &lines[start..] {
        if let Some(r) = render(l, timestamps) {
            out.push_str(&r);
        }
    }
    if !flag("follow") {
        return text(StatusCode::OK, out);
    }
    // Follow: what exists now, then whatever is appended, until the client goes away or the file is
    // replaced by a new attempt's.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(16);
    let offset = content.len() as u64;
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
            return;
        }
        let mut offset = offset;
        let mut partial = String::new();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let Ok(data) = std::fs::read(&file) else {
                return;
            };
            if (data.len() as u64) < offset {
                return;
            }
            let new = String::from_utf8_lossy(&data[offset as usize..]).into_owned();
            offset = data.len() as u64;
            partial.push_str(&new);
            let mut chunk = String::new();
            while let Some(i) = partial.find('\n') {
                let line: String = partial.drain(..=i).collect();
                if let Some(r) = render(line.trim_end_matches('\n'), timestamps) {
                    chunk.push_str(&r);
                }
            }
            if !chunk.is_empty() && tx.send(Ok(Frame::data(Bytes::from(chunk)))).await.is_err() {
                return;
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "text/plain; charset=utf-8")
        .body(BodyExt::boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .unwrap()
}

async fn stats_summary(kubelet: &Kubelet) -> serde_json::Value {
    let mut rt = kubelet.cri.runtime.clone();
    let stats = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .map(|r| r.into_inner().stats)
        .unwrap_or_default();
    let mut pods: Vec<serde_json::Value> = Vec::new();
    for p in kubelet.pods() {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let containers: Vec<_> = stats
            .iter()
            .filter(|s| {
                s.attributes
                    .as_ref()
                    .and_then(|a| a.labels.get(crate::podconfig::POD_UID))
                    .is_some_and(|u| *u == uid)
            })
            .map(|s| {
                let a = s.attributes.clone().unwrap_or_default();
                serde_json::json!({
                    "name": a.labels.get(crate::podconfig::CONTAINER_NAME),
                    "cpu": {"usageCoreNanoSeconds": s.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds.as_ref()).map(|v| v.value)},
                    "memory": {
                        "workingSetBytes": s.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()).map(|v| v.value),
                        "usageBytes": s.memory.as_ref().and_then(|m| m.usage_bytes.as_ref()).map(|v| v.value),
                    },
                    "rootfs": {"usedBytes": s.writable_layer.as_ref().and_then(|w| w.used_bytes.as_ref()).map(|v| v.value)},
                })
            })
            .collect();
        pods.push(serde_json::json!({
            "podRef": {"name": p.metadata.name, "namespace": p.metadata.namespace, "uid": uid},
            "containers": containers,
        }));
    }
    let mem = crate::node::memory();
    let fs = crate::node::fs(&kubelet.settings.pods_root);
    serde_json::json!({
        "node": {
            "nodeName": kubelet.settings.node_name,
            "memory": mem.map(|m| serde_json::json!({
                "availableBytes": m.available,
                "usageBytes": m.total.saturating_sub(m.available),
            })),
            "fs": fs.map(|f| serde_json::json!({
                "availableBytes": f.available,
                "capacityBytes": f.capacity,
                "usedBytes": f.capacity.saturating_sub(f.available),
            })),
        },
        "pods": pods,
    })
}

fn metrics(kubelet: &Kubelet) -> String {
    let pods = kubelet.pods();
    let running = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    let containers: usize = pods
        .iter()
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
        })
        .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
        .count();
    let mut out = format!(
        "# HELP kubelet_running_pods Number of pods that have a running pod sandbox\n# TYPE kubelet_running_pods gauge\nkubelet_running_pods {running}\n\
         # HELP kubelet_running_containers Number of containers currently running\n# TYPE kubelet_running_containers gauge\nkubelet_running_containers{{container_state=\"running\"}} {containers}\n\
         # HELP basalt_kubelet_static_pods Pods declared by the manifest directory and URL\n# TYPE basalt_kubelet_static_pods gauge\nbasalt_kubelet_static_pods {}\n\
         # HELP basalt_kubelet_manifest_errors_total Manifests that failed to parse or validate\n# TYPE basalt_kubelet_manifest_errors_total counter\nbasalt_kubelet_manifest_errors_total {}\n\
         # HELP basalt_kubelet_pod_syncs_total Pod worker sync passes\n# TYPE basalt_kubelet_pod_syncs_total counter\nbasalt_kubelet_pod_syncs_total {}\n\
         # HELP basalt_kubelet_pleg_events_total Container events taken from the runtime's GetContainerEvents\n# TYPE basalt_kubelet_pleg_events_total counter\nbasalt_kubelet_pleg_events_total {}\n\
         # HELP basalt_kubelet_pleg_relists_total Relists of the fallback PLEG (runtime without GetContainerEvents)\n# TYPE basalt_kubelet_pleg_relists_total counter\nbasalt_kubelet_pleg_relists_total {}\n\
         # HELP basalt_kubelet_containers_gc_total Dead containers removed by container GC\n# TYPE basalt_kubelet_containers_gc_total counter\nbasalt_kubelet_containers_gc_total {}\n",
        pods.len(),
        kubelet.metrics.manifest_errors.load(Ordering::Relaxed),
        kubelet.metrics.pod_syncs.load(Ordering::Relaxed),
        kubelet.metrics.pleg_events.load(Ordering::Relaxed),
        kubelet.metrics.pleg_relists.load(Ordering::Relaxed),
        kubelet.metrics.containers_gc.load(Ordering::Relaxed),
    );
    // The eviction signals, labelled with upstream's signal names.
    out.push_str(
        "# HELP basalt_eviction_signal_available_bytes Eviction signals: what is left\n# TYPE basalt_eviction_signal_available_bytes gauge\n",
    );
    let mem = crate::node::memory();
    let fs = crate::node::fs(&kubelet.settings.pods_root);
    if let Some(m) = mem {
        out.push_str(&format!(
            "basalt_eviction_signal_available_bytes{{signal=\"memory.available\"}} {}\n",
            m.available
        ));
    }
    if let Some(f) = fs {
        out.push_str(&format!(
            "basalt_eviction_signal_available_bytes{{signal=\"nodefs.available\"}} {}\n",
            f.available
        ));
    }
    if let Some(m) = mem {
        out.push_str(&format!(
            "# HELP basalt_node_memory_total_bytes Node memory\n# TYPE basalt_node_memory_total_bytes gauge\nbasalt_node_memory_total_bytes {}\n",
            m.total
        ));
    }
    if let Some(f) = fs {
        out.push_str(&format!(
            "# HELP basalt_node_fs_capacity_bytes Size of the filesystem holding pod data\n# TYPE basalt_node_fs_capacity_bytes gauge\nbasalt_node_fs_capacity_bytes {}\n",
            f.capacity
        ));
    }
    out
}

/// What [`connect`] returns.
pub type ClientStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to a kubelet API that trusts exactly `cert_pem` (the API's self-signed certificate, as
/// `credentials` wrote it): what node-local tools use for the upgraded calls (`/exec`, `/attach`,
/// `/portForward`) that a plain HTTP client library cannot make.
pub async fn connect(addr: SocketAddr, cert_pem: &str) -> std::io::Result<ClientStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut cert_pem.as_bytes()) {
        roots.add(c?).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(std::io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}
