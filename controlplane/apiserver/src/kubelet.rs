//! The apiserver's side of `kubectl logs`, `exec`, `attach` and `port-forward`: the pod's node and container
//! are looked up and the request is passed to that node's kubelet API over TLS, with the apiserver's own
//! client certificate (`kube-apiserver-kubelet-client`, bound to `system:kubelet-api-admin`), as
//! kube-apiserver does. Logs stream back as they are written; exec, attach and port-forward are upgraded
//! connections (SPDY or WebSocket) spliced through once the kubelet answers 101, so every streaming
//! protocol the kubelet speaks reaches the client unchanged.
//!
//! As kube-apiserver without `--kubelet-certificate-authority`, the kubelet's serving certificate is not
//! verified: kubelets serve a self-signed one until the cluster CA issues them serving certificates.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::http::Body;
use crate::state::Call;

/// The user the apiserver is to kubelets (kubeadm's name for it).
pub const CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// Where a kubelet serves when its Node does not say (upstream's default).
const DEFAULT_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What of the client's request goes on to the kubelet as it came.
pub struct Passthrough {
    pub method: Method,
    pub uri: Uri,
    pub upgrade: Option<OnUpgrade>,
}

/// The TLS client configuration the apiserver reaches kubelets with.
pub struct KubeletClient {
    tls: Arc<rustls::ClientConfig>,
}

impl KubeletClient {
    pub fn new(cert_pem: &str, key_pem: &str) -> std::io::Result<KubeletClient> {
        let certs =
            rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())?
            .ok_or_else(|| std::io::Error::other("no private key for the kubelet client"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_client_auth_cert(certs, key)
            .map_err(std::io::Error::other)?;
        // The upgrade to SPDY or WebSocket is an HTTP/1.1 affair.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(KubeletClient { tls: Arc::new(tls) })
    }
}

/// Accepts any serving certificate, still checking that the handshake is signed by its key.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The container a call names, or the pod's only one; upstream's messages otherwise.
fn container(pod: &Value, name: &str, asked: Option<&str>) -> ApiResult<String> {
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}"))?.as_array())
        .flatten()
        .filter_map(|c| c.get("name")?.as_str())
        .collect();
    match asked {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name")?.as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    names.join(" ")
                ))),
            }
        }
    }
}

/// The kubelet's address and port, from its Node: InternalIP first, as upstream's default
/// `--kubelet-preferred-address-types` puts it (after Hostname, which needs DNS this node may lack).
fn endpoint(node: &Value) -> Option<(String, u16)> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    let address = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .find_map(|t| {
            addresses
                .iter()
                .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
                .and_then(|a| a.get("address")?.as_str())
        })?
        .to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_PORT);
    Some((address, port))
}

/// The kubelet API path for a pod subresource, with the client's query (minus what the apiserver used).
fn kubelet_path(sub: &str, ns: &str, pod: &str, container: &str, query: Option<&str>) -> String {
    let path = match sub {
        "log" => format!("/containerLogs/{ns}/{pod}/{container}"),
        "exec" => format!("/exec/{ns}/{pod}/{container}"),
        "attach" => format!("/attach/{ns}/{pod}/{container}"),
        _ => format!("/portForward/{ns}/{pod}"),
    };
    // Repeated keys (`command=sh&command=-c`) must survive: the raw query is passed on, not a map of it.
    let rest: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("container="))
        .collect();
    if rest.is_empty() {
        path
    } else {
        format!("{path}?{}", rest.join("&"))
    }
}

/// Headers the kubelet must not see: the client's credentials are the apiserver's business.
fn forwarded(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let n = k.as_str();
        if n == "authorization"
            || n == "host"
            || n == "content-length"
            || n.starts_with("impersonate-")
        {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// Answers `pods/{log,exec,attach,portforward}` through the pod's kubelet.
pub async fn proxy(call: &Call<'_>, sub: &str, pass: Passthrough) -> ApiResult<Response<Body>> {
    let Some(client) = call.state.kubelet_client.as_ref() else {
        return Err(ApiError::unavailable(
            "this apiserver has no client credentials for kubelets",
        ));
    };
    let ns = call.req.namespace.clone().unwrap_or_default();
    let name = call.name().to_string();
    let (pod, _) = call
        .state
        .objects
        .must_get(&call.res, Some(&ns), &name)
        .await?;
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let container = if sub == "portforward" {
        String::new()
    } else {
        container(&pod, &name, call.query.get("container"))?
    };
    let nodes = call
        .state
        .registry
        .lookup("", "v1", "nodes")
        .expect("nodes are served");
    let (node, _) = call.state.objects.must_get(&nodes, None, node_name).await?;
    let (host, port) = endpoint(&node)
        .ok_or_else(|| ApiError::unavailable(format!("node {node_name} publishes no address")))?;
    let path = kubelet_path(sub, &ns, &name, &container, pass.uri.query());
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::unavailable(format!(
            "cannot reach the kubelet of node {node_name} at {host}:{port}: {e}"
        ))
    };
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|e| unreachable(&e))?
    .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(host.clone()).map_err(|e| unreachable(&e))?;
    let tls = tokio_rustls::TlsConnector::from(client.tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(&e))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut req = Request::builder()
        .method(pass.method)
        .uri(&path)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(ApiError::internal)?;
    *req.headers_mut() = forwarded(call.headers);
    req.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_str(&format!("{host}:{port}")).map_err(ApiError::internal)?,
    );
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(&e))?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_side) = pass.upgrade else {
            return Err(ApiError::bad_request(
                "the kubelet upgraded a request that asked for none",
            ));
        };
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (k, v) in resp.headers() {
            answer = answer.header(k, v);
        }
        tokio::spawn(async move {
            let (Ok(kubelet_side), Ok(client_side)) =
                (hyper::upgrade::on(resp).await, client_side.await)
            else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(
                &mut TokioIo::new(client_side),
                &mut TokioIo::new(kubelet_side),
            )
            .await;
        });
        return answer
            .body(crate::http::full(bytes::Bytes::new()))
            .map_err(ApiError::internal);
    }
    // Logs, and the kubelet's own refusals, stream back as they come.
    Ok(resp.map(|b| b.map_err(std::io::Error::other).boxed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one =
            json!({"spec": {"containers": [{"name": "c"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container(&one, "p", None).unwrap(), "c");
        assert_eq!(container(&one, "p", Some("i")).unwrap(), "i");
        let e = container(&one, "p", Some("x")).unwrap_err();
        assert!(e.status()["message"] == "container x is not valid for pod p");
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let e = container(&two, "p", None).unwrap_err();
        assert_eq!(
            e.status()["message"],
            "a container name must be specified for pod p, choose one of: [a b]"
        );
    }

    #[test]
    fn the_query_goes_on_with_repeated_commands() {
        assert_eq!(
            kubelet_path(
                "exec",
                "ns",
                "p",
                "c",
                Some("command=sh&command=-c&container=c&stdout=true")
            ),
            "/exec/ns/p/c?command=sh&command=-c&stdout=true"
        );
        assert_eq!(
            kubelet_path("log", "ns", "p", "c", None),
            "/containerLogs/ns/p/c"
        );
        assert_eq!(
            kubelet_path("portforward", "ns", "p", "", Some("ports=80")),
            "/portForward/ns/p?ports=80"
        );
    }

    #[test]
    fn the_endpoint_is_the_internal_ip_and_the_published_port() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"},
            {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(endpoint(&n), Some(("10.0.0.5".into(), 12345)));
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}]}});
        assert_eq!(endpoint(&n), Some(("h".into(), 10250)));
    }
}
