//! A blocking registry client (distribution API v2): manifests and blobs over HTTP or HTTPS, anonymous, basic
//! or bearer-token auth (the `WWW-Authenticate` realm flow), per-host TLS, mirrors tried in order.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use ureq::http::Response;
use ureq::Body;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::hosts::{Endpoint, Hosts};
use crate::manifest::ACCEPT;
use crate::store::IngestWriter;

/// Manifests larger than this are refused (registries cap them at 4 MiB).
const MAX_MANIFEST: u64 = 8 << 20;

pub struct Client {
    hosts: Hosts,
    agents: Mutex<HashMap<String, ureq::Agent>>,
    /// `Authorization` header values learnt per (host, repository).
    auth: Mutex<HashMap<(String, String), String>>,
}

/// A manifest fetched from an endpoint.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub endpoint: Endpoint,
    pub content_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl Client {
    pub fn new(hosts: Hosts) -> Client {
        Client {
            hosts,
            agents: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
        }
    }

    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    fn agent(&self, host: &str) -> Result<ureq::Agent> {
        let mut agents = self.agents.lock().expect("agent cache poisoned");
        if let Some(a) = agents.get(host) {
            return Ok(a.clone());
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(t) = self.hosts.host_config(host).and_then(|c| c.tls.as_ref()) {
            if let Some(ca) = &t.ca_file {
                let pem = std::fs::read(ca).at(ca)?;
                let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                    .filter_map(|i| match i {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect();
                if certs.is_empty() {
                    return Err(Error::Registry {
                        host: host.to_owned(),
                        reason: format!("tls.ca_file {}: no PEM certificate in it", ca.display()),
                    });
                }
                tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
            }
            tls = tls.disable_verification(t.insecure_skip_verify);
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .tls_config(tls.build())
            .build()
            .into();
        agents.insert(host.to_owned(), agent.clone());
        Ok(agent)
    }

    fn err(host: &str, reason: impl Into<String>) -> Error {
        Error::Registry {
            host: host.to_owned(),
            reason: reason.into(),
        }
    }

    /// GETs `/v2/<repo>/<tail>`, answering one auth challenge.
    fn send(
        &self,
        ep: &Endpoint,
        tail: &str,
        headers: &[(&str, String)],
    ) -> Result<Response<Body>> {
        let url = format!("{}/v2/{}/{tail}", ep.base, ep.repository);
        let agent = self.agent(&ep.host)?;
        let key = (ep.host.clone(), ep.repository.clone());
        let call = |authz: Option<&String>| -> Result<Response<Body>> {
            let mut req = agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(a) = authz {
                req = req.header("Authorization", a);
            }
            req.call()
                .map_err(|e| Self::err(&ep.host, format!("{url}: {e}")))
        };
        let known = self.auth.lock().expect("auth cache").get(&key).cloned();
        let resp = call(known.as_ref())?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let authz = self.answer_challenge(ep, &challenge)?;
        let resp = call(Some(&authz))?;
        if resp.status().as_u16() == 401 {
            return Err(Self::err(
                &ep.host,
                format!(
                    "{url}: authentication failed ({})",
                    if self.hosts.credentials(&ep.host).is_some() {
                        "credentials from configs.<host>.auth were refused"
                    } else {
                        "no credentials configured for this host in configs.<host>.auth"
                    }
                ),
            ));
        }
        self.auth.lock().expect("auth cache").insert(key, authz);
        Ok(resp)
    }

    fn answer_challenge(&self, ep: &Endpoint, challenge: &str) -> Result<String> {
        let creds = self.hosts.credentials(&ep.host);
        let basic = |(u, p): &(String, String)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return creds.as_ref().map(basic).ok_or_else(|| {
                Self::err(
                    &ep.host,
                    "registry asks for basic auth but configs.<host>.auth has no credentials",
                )
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Self::err(
                &ep.host,
                format!("unsupported WWW-Authenticate challenge {challenge:?}"),
            ));
        }
        let params = parse_challenge(params);
        let realm = params.get("realm").ok_or_else(|| {
            Self::err(
                &ep.host,
                format!("bearer challenge without realm: {challenge:?}"),
            )
        })?;
        let mut url = realm.clone();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        for k in ["service", "scope"] {
            let v = match (k, params.get(k)) {
                (_, Some(v)) => v.clone(),
                ("scope", None) => format!("repository:{}:pull", ep.repository),
                _ => continue,
            };
            url.push(sep);
            url.push_str(k);
            url.push('=');
            url.push_str(&percent_encode(&v));
            sep = '&';
        }
        let token_host = url
            .split_once("://")
            .map_or("", |(_, r)| r.split('/').next().unwrap_or(""))
            .to_owned();
        let agent = self.agent(&token_host)?;
        let mut req = agent.get(&url);
        if let Some(c) = &creds {
            req = req.header("Authorization", basic(c));
        }
        let mut resp = req
            .call()
            .map_err(|e| Self::err(&ep.host, format!("token realm {realm}: {e}")))?;
        if resp.status().as_u16() != 200 {
            return Err(Self::err(
                &ep.host,
                format!(
                    "token realm {realm} answered HTTP {}",
                    resp.status().as_u16()
                ),
            ));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_vec()
            .map_err(|e| Self::err(&ep.host, format!("token realm {realm}: {e}")))?;
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| Self::err(&ep.host, format!("token realm {realm}: {e}")))?;
        let t = t.token.or(t.access_token).ok_or_else(|| {
            Self::err(
                &ep.host,
                format!("token realm {realm}: answer has no token"),
            )
        })?;
        Ok(format!("Bearer {t}"))
    }

    /// Fetches manifest `reference` (tag or digest) of `registry/repository`, trying each endpoint in turn.
    pub fn manifest(&self, registry: &str, repository: &str, reference: &str) -> Result<Fetched> {
        let mut errors = Vec::new();
        let mut all_missing = true;
        for ep in self.hosts.endpoints(registry, repository) {
            match self.manifest_from(&ep, reference) {
                Ok(f) => return Ok(f),
                Err(e) => {
                    tracing::debug!(endpoint = %ep.base, error = %e, "endpoint failed");
                    match e {
                        Error::NotInRegistry { reason, .. } => errors.push(reason),
                        e => {
                            all_missing = false;
                            errors.push(e.to_string());
                        }
                    }
                }
            }
        }
        if all_missing && !errors.is_empty() {
            return Err(Error::NotInRegistry {
                name: format!("{registry}/{repository}:{reference}"),
                reason: errors.join("; "),
            });
        }
        Err(Self::err(
            registry,
            format!(
                "no endpoint could serve {repository}:{reference}: {}",
                errors.join("; ")
            ),
        ))
    }

    /// Fetches a manifest from one endpoint; a digest reference is verified.
    pub fn manifest_from(&self, ep: &Endpoint, reference: &str) -> Result<Fetched> {
        let mut resp = self.send(
            ep,
            &format!("manifests/{reference}"),
            &[("Accept", ACCEPT.to_owned())],
        )?;
        let code = resp.status().as_u16();
        if code != 200 {
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 << 10)
                .read_to_vec()
                .unwrap_or_default();
            let reason = format!(
                "GET {}/v2/{}/manifests/{reference}: HTTP {code}: {}",
                ep.base,
                ep.repository,
                String::from_utf8_lossy(&body).trim()
            );
            if code == 404 {
                return Err(Error::NotInRegistry {
                    name: format!("{}/{}:{reference}", ep.host, ep.repository),
                    reason,
                });
            }
            return Err(Self::err(&ep.host, reason));
        }
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_MANIFEST)
            .read_to_vec()
            .map_err(|e| Self::err(&ep.host, format!("reading manifest {reference}: {e}")))?;
        let digest = Digest::of(&bytes);
        if let Ok(want) = reference.parse::<Digest>() {
            if want != digest {
                return Err(Error::DigestMismatch {
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        Ok(Fetched {
            endpoint: ep.clone(),
            content_type,
            digest,
            bytes,
        })
    }

    /// Streams blob `digest` into `w`, resuming with a range request if `w` holds a partial download. `progress`
    /// gets (bytes done, total) as data arrives.
    pub fn fetch_blob(
        &self,
        ep: &Endpoint,
        digest: &Digest,
        size: u64,
        w: &mut IngestWriter,
        progress: &dyn Fn(u64, u64),
    ) -> Result<()> {
        let mut headers = Vec::new();
        let from = w.resumed_from();
        if from > 0 && from < size {
            headers.push(("Range", format!("bytes={from}-")));
        } else if from > 0 {
            w.restart()?;
        }
        let resp = self.send(ep, &format!("blobs/{digest}"), &headers)?;
        let code = resp.status().as_u16();
        match code {
            206 if !headers.is_empty() => {}
            200 => {
                if w.resumed_from() > 0 {
                    w.restart()?;
                }
            }
            _ => {
                return Err(Self::err(
                    &ep.host,
                    format!(
                        "GET {}/v2/{}/blobs/{digest}: HTTP {code}",
                        ep.base, ep.repository
                    ),
                ))
            }
        }
        let mut r = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut done = w.written();
        progress(done, size);
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Self::err(&ep.host, format!("downloading {digest}: {e}"))),
            };
            w.write_all(&buf[..n]).at(format!("ingest of {digest}"))?;
            done += n as u64;
            if done > size {
                return Err(Self::err(
                    &ep.host,
                    format!("blob {digest} is larger than its descriptor's {size} bytes"),
                ));
            }
            progress(done, size);
        }
        Ok(())
    }

    /// Fetches a small blob (a config) fully into memory, trying each endpoint.
    pub fn small_blob(&self, ep: &Endpoint, digest: &Digest) -> Result<Vec<u8>> {
        let mut resp = self.send(ep, &format!("blobs/{digest}"), &[])?;
        if resp.status().as_u16() != 200 {
            return Err(Self::err(
                &ep.host,
                format!("GET blob {digest}: HTTP {}", resp.status().as_u16()),
            ));
        }
        resp.body_mut()
            .with_config()
            .limit(MAX_MANIFEST * 4)
            .read_to_vec()
            .map_err(|e| Self::err(&ep.host, format!("reading blob {digest}: {e}")))
    }
}

/// `realm="x",service="y"` → map. Values may be quoted and hold commas.
fn parse_challenge(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let key = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, remain) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, val.to_owned());
        rest = remain.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        assert_eq!(
            percent_encode("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }
}
