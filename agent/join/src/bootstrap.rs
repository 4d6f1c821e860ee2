//! The kubelet's TLS bootstrap with a join token, as a k3s agent does it: fetch the cluster CA from
//! `/cacerts` (over a connection nothing is trusted on yet) and refuse it unless its hash is the token's;
//! then, trusting only that CA and authenticated by the bootstrap token, ask for the node's client
//! certificate (a CSR to `kubernetes.io/kube-apiserver-client-kubelet` for `system:node:<name>` in
//! `system:nodes`), wait until the controllers approve and sign it, and keep key and certificate as a
//! kubeconfig (mode 0600) that the kubelet uses from then on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Client, Config};
use sha2::{Digest, Sha256};

use crate::token::{self, Token};
use crate::Error;

/// Where the node's credentials are kept under its data directory.
pub fn kubeconfig_path(dir: &Path) -> PathBuf {
    dir.join("kubelet.kubeconfig")
}

/// The DER certificates of a PEM bundle.
fn pem_certs(pem: &str) -> Vec<Vec<u8>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

/// A client error sorted: the server refusing the token (401/403) or the request (another 4xx but a
/// conflict or throttling) is final; a server that cannot be reached or fails (5xx) is tried again.
fn classify(server: &str, e: kube::Error) -> Error {
    match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => Error::Refused {
            server: server.into(),
            why: format!("{} ({})", s.message, s.code),
        },
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            Error::Server(server.into(), format!("{} ({})", s.message, s.code))
        }
        e => Error::Client(e),
    }
}

/// Retries `f` while the server cannot be reached, up to 30 s apart; returns its answer otherwise.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let mut delay = Duration::from_millis(500);
    loop {
        match f().await {
            Err(Error::Client(e)) => {
                tracing::warn!(error = %e, "join: {what}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            r => return r,
        }
    }
}

/// The cluster CA from `server`, checked against the token's hash.
pub async fn fetch_ca(server: &str, token: &Token) -> Result<String, Error> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e| Error::Server(server.into(), format!("{e}")))?;
    let mut cfg = Config::new(uri);
    // Nothing is trusted yet: what comes back is believed only if it has the token's hash.
    cfg.accept_invalid_certs = true;
    let client = Client::try_from(cfg).map_err(Error::Client)?;
    let pem = retrying("fetching the cluster CA", || async {
        let req = http::Request::get("/cacerts")
            .body(Vec::new())
            .map_err(|e| Error::Server(server.into(), e.to_string()))?;
        client
            .request_text(req)
            .await
            .map_err(|e| classify(server, e))
    })
    .await?;
    let got = token::ca_hash(pem.as_bytes());
    if got != token.ca_hash {
        return Err(Error::CaMismatch {
            server: server.into(),
            got,
            want: token.ca_hash.clone(),
        });
    }
    if pem_certs(&pem).is_empty() {
        return Err(Error::Server(
            server.into(),
            "/cacerts holds no certificate".into(),
        ));
    }
    Ok(pem)
}

/// A client of `server` trusting only `ca_pem`, authenticated by `auth`.
fn client(server: &str, ca_pem: &str, auth: kube::config::AuthInfo) -> Result<Client, Error> {
    let uri: http::Uri = server
        .parse()
        .map_err(|e| Error::Server(server.into(), format!("{e}")))?;
    let mut cfg = Config::new(uri);
    cfg.root_cert = Some(pem_certs(ca_pem));
    cfg.auth_info = auth;
    Client::try_from(cfg).map_err(Error::Client)
}

/// How long a request may wait for approval (the kubelet's bootstrap waits as long).
const APPROVAL_TIMEOUT: Duration = Duration::from_secs(3600);

/// The credentials a node keeps: where its apiserver is, the CA, its certificate and key (PEM), and
/// the certificate's validity (seconds since the epoch).
struct Kept {
    server: String,
    ca: String,
    cert: String,
    key: String,
    not_before: i64,
    not_after: i64,
}

fn read_kept(path: &Path) -> Option<Kept> {
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let user = kc.auth_infos.first()?.auth_info.clone()?;
    let cluster = kc.clusters.first()?.cluster.clone()?;
    let decode = |b: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    };
    let cert = decode(user.client_certificate_data.as_deref()?)?;
    let key = {
        use secrecy::ExposeSecret;
        decode(user.client_key_data.as_ref()?.expose_secret())?
    };
    let params = rcgen::CertificateParams::from_ca_cert_pem(&cert).ok()?;
    Some(Kept {
        server: cluster.server?,
        ca: decode(cluster.certificate_authority_data.as_deref()?)?,
        cert,
        key,
        not_before: params.not_before.unix_timestamp(),
        not_after: params.not_after.unix_timestamp(),
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The key of a request in flight, kept (0600) from before the request is sent until its certificate is
/// written: a restart while waiting asks again with the same key, under the same request name, instead
/// of leaving a dead request. Gone once the credentials are kept, so the next request has a new key.
fn pending_key(dir: &Path) -> Result<rcgen::KeyPair, Error> {
    let path = dir.join("kubelet-client-pending.key");
    if let Ok(pem) = std::fs::read_to_string(&path) {
        if let Ok(k) = rcgen::KeyPair::from_pem(&pem) {
            return Ok(k);
        }
    }
    let key = rcgen::KeyPair::generate().map_err(|e| Error::Key(e.to_string()))?;
    write_private(&path, key.serialize_pem().as_bytes())?;
    Ok(key)
}

/// Asks `client`'s apiserver for a client certificate of `system:node:<node>` and waits until it is
/// issued; then keeps it with its key as the kubeconfig at `path`.
async fn request_certificate(
    client: Client,
    server: &str,
    ca: &str,
    node: &str,
    path: &Path,
) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let key = pending_key(dir)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| Error::Key(e.to_string()))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| Error::Key(e.to_string()))?;
    // Named after the node and its key, as the kubelet names its requests: asked again, it is found.
    let mut digest = Sha256::new();
    digest.update(node.as_bytes());
    digest.update(key.public_key_der());
    let name = format!("node-csr-{}", &hex::encode(digest.finalize())[..32]);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: "kubernetes.io/kube-apiserver-client-kubelet".into(),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<CertificateSigningRequest> = Api::all(client);
    retrying("sending the certificate request", || async {
        match api.create(&PostParams::default(), &csr).await {
            Ok(_) => Ok(()),
            // Sent before a restart: the same key, the same request.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(classify(server, e)),
        }
    })
    .await?;
    tracing::info!(csr = %name, "waiting for the certificate request to be approved and signed (kubectl certificate approve {name}, if no one approves it)");
    let deadline = tokio::time::Instant::now() + APPROVAL_TIMEOUT;
    let cert = loop {
        let now = retrying("reading the certificate request", || async {
            api.get(&name).await.map_err(|e| classify(server, e))
        })
        .await?;
        let status = now.status.unwrap_or_default();
        if let Some(c) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            return Err(Error::NotIssued {
                csr: name,
                condition: c.type_.clone(),
                why: c.message.clone().unwrap_or_default(),
            });
        }
        if let Some(c) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8_lossy(&c.0).into_owned();
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::NotIssued {
                csr: name,
                condition: "not issued".into(),
                why: format!("no certificate within {APPROVAL_TIMEOUT:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    write_kubeconfig(path, server, ca, &cert, &key.serialize_pem())?;
    let _ = std::fs::remove_file(dir.join("kubelet-client-pending.key"));
    tracing::info!(csr = %name, path = %path.display(), "node credentials issued");
    Ok(())
}

/// The node's credentials: kept ones while their certificate is valid, else a new certificate through
/// a CSR sent with the bootstrap token. Returns the kubeconfig's path.
pub async fn join(server: &str, token: &Token, node: &str, dir: &Path) -> Result<PathBuf, Error> {
    let path = kubeconfig_path(dir);
    match read_kept(&path) {
        Some(k) if k.not_after > now_secs() => return Ok(path),
        Some(_) => {
            tracing::warn!(path = %path.display(), "join: the kept node certificate has expired; joining again")
        }
        None if path.exists() => {
            tracing::warn!(path = %path.display(), "join: the kept node credentials are unreadable; joining again")
        }
        None => {}
    }
    let ca = fetch_ca(server, token).await?;
    let bootstrap = client(
        server,
        &ca,
        kube::config::AuthInfo {
            token: Some(token.bearer().into()),
            ..Default::default()
        },
    )?;
    // The token is tried before anything is written: a refused join leaves nothing behind.
    retrying("checking the join token", || async {
        let req = http::Request::get("/api")
            .body(Vec::new())
            .map_err(|e| Error::Server(server.into(), e.to_string()))?;
        bootstrap
            .request_text(req)
            .await
            .map(drop)
            .map_err(|e| classify(server, e))
    })
    .await?;
    request_certificate(bootstrap, server, &ca, node, &path).await?;
    Ok(path)
}

/// When the kept certificate is to be renewed (seconds since the epoch): at 70–90% of its life, the
/// point drawn at random (`jitter` in 0..1) as the kubelet's certificate manager draws it, so nodes
/// joined together do not all renew at once. `None` without readable credentials.
pub fn renewal_at(path: &Path, jitter: f64) -> Option<i64> {
    let k = read_kept(path)?;
    Some(renewal_point(k.not_before, k.not_after, jitter))
}

fn renewal_point(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
}

/// A random number in 0..1 for [`renewal_at`].
pub fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = crate::token::random(&mut b);
    f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// Renews the node's client certificate with its current one: a new key and a request the controllers
/// approve as the node renewing itself (`selfnodeclient`), written over the kept kubeconfig. The old
/// credentials stay in place until the new ones are issued.
pub async fn renew(path: &Path, node: &str) -> Result<(), Error> {
    let k = read_kept(path).ok_or_else(|| {
        Error::Server(
            path.display().to_string(),
            "no readable node credentials to renew".into(),
        )
    })?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let current = client(
        &k.server,
        &k.ca,
        kube::config::AuthInfo {
            client_certificate_data: Some(b64(&k.cert)),
            client_key_data: Some(b64(&k.key).into()),
            ..Default::default()
        },
    )?;
    request_certificate(current, &k.server, &k.ca, node, path).await
}

/// A kubeconfig holding the node's credentials, written whole (mode 0600) and renamed into place.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &str,
    cert: &str,
    key: &str,
) -> Result<(), Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "default", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "default", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    });
    let text = serde_yaml::to_string(&doc).map_err(|e| Error::Key(e.to_string()))?;
    write_private(path, text.as_bytes())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    basalt_atomic_file::write_private(path, data)
        .map_err(|e| Error::Io(path.display().to_string(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_certificate_of_a_bundle() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certs(pem), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert!(pem_certs("junk").is_empty());
    }

    #[test]
    fn renewal_is_at_seventy_to_ninety_percent_of_the_life() {
        assert_eq!(renewal_point(1000, 2000, 0.0), 1700);
        assert_eq!(renewal_point(1000, 2000, 1.0), 1900);
        assert_eq!(renewal_point(1000, 2000, 7.0), 1900);
        let j = jitter();
        assert!((0.0..=1.0).contains(&j));
    }

    #[test]
    fn kubeconfig_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = kubeconfig_path(d.path());
        write_kubeconfig(&p, "https://127.0.0.1:6443", "ca", "cert", "key").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let kc = kube::config::Kubeconfig::read_from(&p).unwrap();
        assert_eq!(
            kc.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("https://127.0.0.1:6443")
        );
    }
}
