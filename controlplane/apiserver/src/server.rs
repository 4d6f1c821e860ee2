//! Serving: TLS (client certificates verified against the cluster CA), HTTP/2 and HTTP/1.1, then for each
//! request authentication, impersonation, authorization, in-flight limits, dispatch and metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

use crate::auth::authn::Credential;
use crate::auth::{node, Attributes, Decision, UserInfo, ANONYMOUS, MASTERS};
use crate::errors::{ApiError, ApiResult};
use crate::http::{error_response, json_response, read_body, text_response, Body, Query};
use crate::request::{self, RequestInfo, ResourceRequest, Verb};
use crate::state::{Call, State};
use crate::{discovery, flowcontrol, openapi, render, rest, subresources, watch};

/// The server's TLS: our serving certificate; client certificates optional but verified when presented.
pub fn tls_config(config: &crate::Config) -> anyhow::Result<rustls::ServerConfig> {
    use anyhow::Context;
    let certs = rustls_pemfile::certs(
        &mut &std::fs::read(&config.cert_file)
            .with_context(|| format!("read {}", config.cert_file.display()))?[..],
    )
    .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(
        &mut &std::fs::read(&config.key_file)
            .with_context(|| format!("read {}", config.key_file.display()))?[..],
    )?
    .context("no private key in the serving key file")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(
        &mut &std::fs::read(&config.client_ca_file)
            .with_context(|| format!("read {}", config.client_ca_file.display()))?[..],
    ) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Accepts connections until the listener fails.
pub async fn serve(
    state: Arc<State>,
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let conn = Arc::new(Connection { peer, cert });
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                let conn = conn.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(state, conn, req).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(250);
            // Headers that never finish arriving do not hold a connection forever (upstream: 32 s).
            builder
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(32));
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub struct Connection {
    pub peer: SocketAddr,
    pub cert: Option<Vec<u8>>,
}

/// Paths open to anonymous clients (health, version, and the service-account issuer's discovery).
fn public(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    [
        "/healthz",
        "/livez",
        "/readyz",
        "/version",
        "/.well-known/openid-configuration",
        "/openid/v1/jwks",
    ]
    .iter()
    .any(|x| p == *x || p.starts_with(&format!("{x}/")))
}

pub async fn authorize(state: &Arc<State>, user: &UserInfo, a: &Attributes) -> Decision {
    if user.in_group(MASTERS) {
        return Decision::Allow;
    }
    if let Some(n) = node::node_name(user) {
        match node::authorize(&state.objects, n, a).await {
            Decision::Allow => return Decision::Allow,
            Decision::Deny(r) => return Decision::Deny(r),
            Decision::NoOpinion => {}
        }
    }
    state.rbac.authorize(user, a)
}

fn attributes(info: &RequestInfo) -> Attributes {
    match info {
        RequestInfo::NonResource { path, verb } => Attributes {
            verb: verb.clone(),
            path: Some(path.clone()),
            ..Default::default()
        },
        RequestInfo::Resource(r) => Attributes {
            verb: r.verb.as_str().to_string(),
            resource: r.resource.clone(),
            subresource: r.subresource.clone().unwrap_or_default(),
            group: r.group.clone(),
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            path: None,
        },
    }
}

/// Impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-*`), allowed by the `impersonate` verb.
async fn impersonate(
    state: &Arc<State>,
    user: UserInfo,
    headers: &http::HeaderMap,
) -> ApiResult<UserInfo> {
    let Some(name) = headers
        .get("Impersonate-User")
        .and_then(|v| v.to_str().ok())
    else {
        if headers.contains_key("Impersonate-Group") {
            return Err(ApiError::internal(
                "requested impersonation of groups without impersonating a user",
            ));
        }
        return Ok(user);
    };
    let groups: Vec<String> = headers
        .get_all("Impersonate-Group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let check = |resource: &str, group: &str, n: &str, ns: &str| Attributes {
        verb: "impersonate".into(),
        resource: resource.into(),
        group: group.into(),
        name: n.into(),
        namespace: ns.into(),
        ..Default::default()
    };
    let target = if let Some(sa) = name.strip_prefix("system:serviceaccount:") {
        let (ns, n) = sa.split_once(':').unwrap_or(("", sa));
        check("serviceaccounts", "", n, ns)
    } else {
        check("users", "", name, "")
    };
    let mut wanted = vec![target];
    wanted.extend(groups.iter().map(|g| check("groups", "", g, "")));
    if let Some(uid) = headers.get("Impersonate-Uid").and_then(|v| v.to_str().ok()) {
        wanted.push(check("uids", "authentication.k8s.io", uid, ""));
    }
    for a in &wanted {
        if authorize(state, &user, a).await != Decision::Allow {
            return Err(ApiError::forbidden(&a.group, &a.resource, &a.name, format!("User {:?} cannot impersonate resource {:?} in API group {:?} at the cluster scope", user.name, a.resource, a.group)));
        }
    }
    let mut groups = groups;
    if name != ANONYMOUS {
        if name.starts_with("system:serviceaccount:") {
            let ns = name
                .trim_start_matches("system:serviceaccount:")
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            groups.push("system:serviceaccounts".into());
            groups.push(format!("system:serviceaccounts:{ns}"));
        }
        groups.push(crate::auth::AUTHENTICATED.into());
    }
    Ok(UserInfo {
        name: name.to_string(),
        uid: headers
            .get("Impersonate-Uid")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        groups,
        extra: Default::default(),
    })
}

async fn handle(
    state: Arc<State>,
    conn: Arc<Connection>,
    req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    let (mut parts, body) = req.into_parts();
    let pass = crate::kubelet::Passthrough {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
    };
    let path = parts.uri.path().to_string();
    let query = Query::parse(parts.uri.query());
    let info = request::parse(&parts.method, &path, query.flag("watch"));
    let labels = metric_labels(&info);
    let resp = match handle_inner(&state, &conn, &parts, body, &query, &info, pass).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    state
        .metrics
        .request(labels, resp.status().as_u16(), start.elapsed());
    tracing::debug!(method = %parts.method, path, status = resp.status().as_u16(), took = ?start.elapsed(), "request");
    resp
}

fn metric_labels(info: &RequestInfo) -> crate::metrics::RequestLabels {
    match info {
        RequestInfo::NonResource { verb, .. } => (
            verb.to_uppercase(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ),
        RequestInfo::Resource(r) => {
            let scope = if r.name.is_some() {
                "resource"
            } else if r.namespace.is_some() {
                "namespace"
            } else {
                "cluster"
            };
            (
                r.verb.as_str().to_uppercase(),
                r.group.clone(),
                r.version.clone(),
                r.resource.clone(),
                r.subresource.clone().unwrap_or_default(),
                scope.to_string(),
            )
        }
    }
}

/// The cluster CA, to anyone and outside authorization, as k3s's supervisor serves it: a joining node
/// has no credentials yet, and trusts what it gets only if its hash is the one in its join token.
fn cacerts(state: &State) -> ApiResult<Response<Body>> {
    let pem = std::fs::read_to_string(&state.config.client_ca_file).map_err(|e| {
        ApiError::internal(format!("{}: {e}", state.config.client_ca_file.display()))
    })?;
    Ok(text_response(StatusCode::OK, pem))
}

async fn handle_inner(
    state: &Arc<State>,
    conn: &Connection,
    parts: &http::request::Parts,
    body: Incoming,
    query: &Query,
    info: &RequestInfo,
    pass: crate::kubelet::Passthrough,
) -> ApiResult<Response<Body>> {
    let path = parts.uri.path();
    if path == "/cacerts" && parts.method == http::Method::GET {
        return cacerts(state);
    }
    let headers = &parts.headers;
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cred = match (bearer, &conn.cert) {
        (Some(t), _) => Credential::Bearer(t),
        (None, Some(c)) => Credential::Certificate(c),
        (None, None) => Credential::None,
    };
    let user = match state.authn.authenticate(cred).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            if !public(path) {
                return Err(ApiError::unauthorized());
            }
            UserInfo::anonymous()
        }
        Err(()) => return Err(ApiError::unauthorized()),
    };
    let user = impersonate(state, user, headers).await?;
    let attrs = attributes(info);
    match authorize(state, &user, &attrs).await {
        Decision::Allow => {}
        Decision::Deny(reason) => return Err(forbidden(info, &user, &attrs, Some(reason))),
        Decision::NoOpinion => return Err(forbidden(info, &user, &attrs, None)),
    }
    let long_running = matches!(info, RequestInfo::Resource(r) if r.verb == Verb::Watch
        || matches!(r.subresource.as_deref(), Some("exec" | "attach" | "portforward" | "proxy" | "log")));
    // The seat is taken before the body is read: a client that trickles its body holds one seat of its
    // own level, and the read is bounded in time.
    let _seat = if long_running {
        None
    } else {
        let (level, flow) = flowcontrol::classify(&user, info);
        match state.flow.admit(level, &flow).await {
            Ok(seat) => Some(seat),
            Err(_) => {
                return Err(ApiError::too_many_requests(
                    "Too many requests, please try again later.",
                    1,
                ))
            }
        }
    };
    let body = match parts.method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => tokio::time::timeout(
            state.config.request_timeout,
            read_body(body, state.config.max_body),
        )
        .await
        .map_err(|_| {
            ApiError::timeout("Timeout: request did not complete within the allotted timeout")
        })??,
        _ => Bytes::new(),
    };
    match info {
        RequestInfo::NonResource { .. } => non_resource(state, path, query, headers),
        RequestInfo::Resource(r) => resource(state, &user, r, query, headers, &body, pass).await,
    }
}

fn forbidden(
    info: &RequestInfo,
    user: &UserInfo,
    a: &Attributes,
    reason: Option<String>,
) -> ApiError {
    let mut why = a.denial(user);
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        why = format!("{why}: {r}");
    }
    match info {
        RequestInfo::NonResource { .. } => ApiError::forbidden_message(format!("forbidden: {why}")),
        RequestInfo::Resource(r) => {
            let resource = match &r.subresource {
                Some(s) => format!("{}/{s}", r.resource),
                None => r.resource.clone(),
            };
            ApiError::forbidden(
                &r.group,
                &resource,
                r.name.as_deref().unwrap_or_default(),
                why,
            )
        }
    }
}

fn health(state: &State, path: &str, query: &Query) -> Option<Response<Body>> {
    let (kind, check) = match path
        .trim_end_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["", k] if ["healthz", "livez", "readyz"].contains(k) => (k.to_string(), None),
        ["", k, c] if ["healthz", "livez", "readyz"].contains(k) => {
            (k.to_string(), Some(c.to_string()))
        }
        _ => return None,
    };
    let ready = state.ready.load(Ordering::Acquire);
    let mut checks = vec![("ping", true), ("log", true), ("etcd", true)];
    if kind != "livez" {
        checks.push(("informer-sync", ready));
        checks.push(("poststarthook/rbac/bootstrap-roles", ready));
        checks.push((
            "poststarthook/scheduling/bootstrap-system-priority-classes",
            ready,
        ));
    }
    if let Some(c) = check {
        return Some(
            match checks
                .iter()
                .find(|(n, _)| *n == c || format!("poststarthook/{c}") == *n)
            {
                Some((_, true)) => text_response(StatusCode::OK, "ok"),
                Some((n, false)) => text_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal server error: {n} check failed"),
                ),
                None => text_response(StatusCode::NOT_FOUND, "404 page not found"),
            },
        );
    }
    let ok = checks.iter().all(|(_, g)| *g);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    if query.0.contains_key("verbose") || !ok {
        let mut out = String::new();
        for (n, g) in &checks {
            out.push_str(&if *g {
                format!("[+]{n} ok\n")
            } else {
                format!("[-]{n} failed: reason withheld\n")
            });
        }
        out.push_str(&if ok {
            format!("{kind} check passed\n")
        } else {
            format!("{kind} check failed\n")
        });
        return Some(text_response(code, out));
    }
    Some(text_response(code, "ok"))
}

fn non_resource(
    state: &Arc<State>,
    path: &str,
    query: &Query,
    headers: &http::HeaderMap,
) -> ApiResult<Response<Body>> {
    if let Some(r) = health(state, path, query) {
        return Ok(r);
    }
    match path.trim_end_matches('/') {
        "/version" => return Ok(json_response(StatusCode::OK, &crate::version::info())),
        "/metrics" => {
            let mut text = state
                .metrics
                .render(state.watches.open.load(Ordering::Relaxed), state.backend);
            state.flow.render(&mut text);
            if let Some(more) = state.config.extra_metrics {
                text.push_str(&more());
            }
            let mut r = text_response(StatusCode::OK, text);
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(r);
        }
        "/.well-known/openid-configuration" => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({
                    "issuer": state.signer.issuer,
                    "jwks_uri": format!("https://{}/openid/v1/jwks", state.config.bind),
                    "response_types_supported": ["id_token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                }),
            ))
        }
        "/openid/v1/jwks" => return Ok(json_response(StatusCode::OK, &state.signer.jwks())),
        _ => {}
    }
    if path.starts_with("/openapi/") {
        return openapi::serve(state, path, headers).ok_or_else(ApiError::no_route);
    }
    discovery::serve(state, path, headers).ok_or_else(ApiError::no_route)
}

async fn resource(
    state: &Arc<State>,
    user: &UserInfo,
    r: &ResourceRequest,
    query: &Query,
    headers: &http::HeaderMap,
    body: &Bytes,
    pass: crate::kubelet::Passthrough,
) -> ApiResult<Response<Body>> {
    let res = state
        .registry
        .lookup(&r.group, &r.version, &r.resource)
        .ok_or_else(ApiError::no_route)?;
    if res.namespaced && r.namespace.is_none() && !matches!(r.verb, Verb::List | Verb::Watch) {
        return Err(ApiError::no_route());
    }
    let call = Call {
        state,
        user,
        req: r,
        res: res.clone(),
        query,
        headers,
    };
    let outcome = |o: rest::Outcome| render::object(&call, o.code, o.object, &o.warnings);
    if let Some(sub) = r.subresource.as_deref() {
        if !res.has_subresource(sub) {
            return Err(ApiError::no_route());
        }
        return match (sub, r.verb) {
            ("status", Verb::Get) => rest::get(&call).await,
            ("status", Verb::Update) => outcome(rest::update(&call, body).await?),
            ("status", Verb::Patch) => outcome(rest::patch(&call, body).await?),
            ("scale", Verb::Get) => Ok(json_response(
                StatusCode::OK,
                &subresources::get_scale(&call).await?,
            )),
            ("scale", Verb::Update) => {
                let o = subresources::write_scale(&call, body, false).await?;
                Ok(json_response(o.code, &o.object))
            }
            ("scale", Verb::Patch) => {
                let o = subresources::write_scale(&call, body, true).await?;
                Ok(json_response(o.code, &o.object))
            }
            ("binding", Verb::Create) => {
                let o = subresources::bind(&call, body, r.name.as_deref()).await?;
                Ok(json_response(o.code, &o.object))
            }
            ("eviction", Verb::Create) => {
                let o = subresources::evict(&call, body).await?;
                Ok(json_response(o.code, &o.object))
            }
            ("token", Verb::Create) => {
                let o = subresources::token(&call, body).await?;
                Ok(json_response(o.code, &o.object))
            }
            ("approval", Verb::Update) => outcome(subresources::approval(&call, body).await?),
            ("approval", Verb::Get) => rest::get(&call).await,
            ("finalize", Verb::Update) => outcome(subresources::finalize(&call, body).await?),
            ("log", Verb::Get) | ("exec" | "attach" | "portforward", Verb::Get | Verb::Create) => {
                crate::kubelet::proxy(&call, sub, pass).await
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    if res.verbs == ["create"] {
        if r.verb != Verb::Create {
            return Err(ApiError::method_not_allowed());
        }
        if res.kind == "Binding" {
            let o = subresources::bind(&call, body, None).await?;
            return Ok(json_response(o.code, &o.object));
        }
        let o = subresources::review(&call, body).await?;
        return Ok(json_response(o.code, &o.object));
    }
    if !res.serves(r.verb.as_str()) {
        return Err(ApiError::method_not_allowed());
    }
    match r.verb {
        Verb::Get => rest::get(&call).await,
        Verb::List => rest::list(&call).await,
        Verb::Watch => watch::watch(&call).await,
        Verb::Create => outcome(rest::create(&call, body).await?),
        Verb::Update => outcome(rest::update(&call, body).await?),
        Verb::Patch => outcome(rest::patch(&call, body).await?),
        Verb::Delete => outcome(rest::delete(&call, body).await?),
        Verb::DeleteCollection => rest::delete_collection(&call, body).await,
    }
}
