//! The HTTP listener: hands out URLs, and on connect checks the token and upgrades to a stream protocol.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::backend::{AttachTarget, Backend, ExecTarget};
use crate::process::ProcessTarget;
use crate::session::Session;
use crate::token::{Pending, TokenCache};
use crate::wsproto::WsProtocol;
use crate::{spdy, ws, Error};

/// Tunables; `Config::default()` matches kubelet.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a URL returned by `get_*` stays valid (kubelet: 1 minute).
    pub token_ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(60),
        }
    }
}

/// A running streaming server. Dropping it stops accepting connections; sessions already open run to their end.
pub struct Server {
    addr: SocketAddr,
    tokens: Arc<TokenCache>,
    accept: JoinHandle<()>,
}

struct State {
    tokens: Arc<TokenCache>,
    backend: Arc<dyn Backend>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and serves with the default [`Config`].
    pub async fn start(addr: SocketAddr, backend: Arc<dyn Backend>) -> Result<Server, Error> {
        Self::start_with_config(addr, Config::default(), backend).await
    }

    pub async fn start_with_config(
        addr: SocketAddr,
        config: Config,
        backend: Arc<dyn Backend>,
    ) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let tokens = Arc::new(TokenCache::new(config.token_ttl));
        let state = Arc::new(State {
            tokens: tokens.clone(),
            backend,
        });
        let accept = tokio::spawn(accept_loop(listener, state));
        tracing::info!(%addr, "streaming server listening");
        Ok(Server {
            addr,
            tokens,
            accept,
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// URL for the CRI `Exec` response.
    pub fn get_exec(&self, target: ExecTarget) -> Result<String, Error> {
        require_container_id(&target.container_id)?;
        if target.cmd.is_empty() || target.cmd[0].is_empty() {
            return Err(invalid(
                "cmd",
                format!("{:?}", target.cmd),
                "must name a program",
            ));
        }
        require_streams(target.tty, target.stdin, target.stdout, target.stderr)?;
        self.url(Pending::Exec(target))
    }

    /// URL for the CRI `Attach` response.
    pub fn get_attach(&self, target: AttachTarget) -> Result<String, Error> {
        require_container_id(&target.container_id)?;
        require_streams(target.tty, target.stdin, target.stdout, target.stderr)?;
        self.url(Pending::Attach(target))
    }

    /// URL for the CRI `PortForward` response; the ports come later, from the client.
    pub fn get_port_forward(&self, sandbox_id: &str) -> Result<String, Error> {
        if sandbox_id.is_empty() {
            return Err(invalid(
                "pod_sandbox_id",
                String::new(),
                "must not be empty",
            ));
        }
        self.url(Pending::PortForward(sandbox_id.to_string()))
    }

    fn url(&self, pending: Pending) -> Result<String, Error> {
        let kind = pending.kind();
        let token = self.tokens.insert(pending)?;
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }

    /// Stops accepting connections.
    pub fn shutdown(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn invalid(field: &'static str, value: String, reason: &'static str) -> Error {
    Error::Invalid {
        field,
        value,
        reason,
    }
}

fn require_container_id(id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(invalid("container_id", String::new(), "must not be empty"));
    }
    Ok(())
}

fn require_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<(), Error> {
    if tty && stderr {
        return Err(invalid(
            "stderr",
            "true".into(),
            "tty and stderr cannot both be true",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(invalid(
            "stdin/stdout/stderr",
            "false/false/false".into(),
            "at least one stream must be requested",
        ));
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends are transient; back off instead of spinning.
                tracing::warn!(error = %e, "streaming server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, state)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, error = %e, "streaming connection ended with an error");
            }
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Ports from `?port=80&port=8080` or `?port=80,8080`, as kubectl and kubelet write them.
fn query_ports(query: Option<&str>) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.unwrap_or("").split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => return Err(format!("invalid port {p:?} in query: must be 1-65535")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

fn handle(mut req: Request<Incoming>, state: Arc<State>) -> Response<Full<Bytes>> {
    let mut segments = req.uri().path().trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    if req.method() != http::Method::GET && req.method() != http::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST");
    }
    let Some(pending) = state.tokens.take(kind, token) else {
        return text(StatusCode::NOT_FOUND, "unknown or expired streaming token");
    };
    let session = match pending {
        Pending::Exec(t) => Session::Process(ProcessTarget::Exec(t)),
        Pending::Attach(t) => Session::Process(ProcessTarget::Attach(t)),
        Pending::PortForward(id) => Session::PortForward(id),
    };
    let headers = req.headers();
    if header_has(headers, header::UPGRADE, "websocket") {
        upgrade_websocket(&mut req, state, session)
    } else if header_has(headers, header::UPGRADE, spdy::UPGRADE) {
        spdy::upgrade(&mut req, state.backend.clone(), session)
    } else {
        text(
            StatusCode::BAD_REQUEST,
            "streaming needs an Upgrade to websocket or SPDY/3.1",
        )
    }
}

fn upgrade_websocket(
    req: &mut Request<Incoming>,
    state: Arc<State>,
    session: Session,
) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return text(StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13");
    }
    let offered = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let supported = match session {
        Session::Process(_) => WsProtocol::PROCESS,
        Session::PortForward(_) => WsProtocol::PORT_FORWARD,
    };
    let proto = match WsProtocol::negotiate(offered, supported) {
        Ok(p) => p,
        Err(offered) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "none of the requested subprotocols {offered:?} is supported; supported: {:?}",
                    supported.iter().map(|p| p.name()).collect::<Vec<_>>()
                ),
            )
        }
    };
    let session = match session {
        Session::PortForward(id) => match query_ports(req.uri().query()) {
            Ok(ports) => (Session::PortForward(id), ports),
            Err(e) => return text(StatusCode::BAD_REQUEST, e),
        },
        s => (s, Vec::new()),
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    let backend = state.backend.clone();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        match session {
            (Session::Process(target), _) => {
                ws::serve_process(upgraded, proto, backend, target).await
            }
            (Session::PortForward(id), ports) => {
                ws::serve_port_forward(upgraded, proto, backend, id, ports).await
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        http::HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    if proto != WsProtocol::Unnamed {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            http::HeaderValue::from_static(proto.name()),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_kubelet() {
        assert_eq!(
            query_ports(Some("port=80&port=8080,9090")),
            Ok(vec![80, 8080, 9090])
        );
        assert!(query_ports(Some("port=0")).unwrap_err().contains("\"0\""));
        assert!(query_ports(Some("port=http"))
            .unwrap_err()
            .contains("\"http\""));
        assert!(query_ports(None).unwrap_err().contains("required"));
    }
}
