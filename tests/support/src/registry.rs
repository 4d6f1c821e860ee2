//! A real OCI registry (Debian's `docker-registry`, distribution v2) on a free 127.0.0.1 port, its storage in a
//! temporary directory; stopped and removed on drop. Plain HTTP, or TLS with a throw-away CA plus basic auth.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;

use crate::fixtures::Fixture;
use crate::pki::TestPki;
use crate::require_tool;

pub const USER: &str = "basalt";
pub const PASSWORD: &str = "s3cret-test-password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryMode {
    /// Plain HTTP, anonymous: what `--insecure-registry` is for.
    Plain,
    /// HTTPS with a certificate from the test CA, and htpasswd basic auth.
    TlsAuth,
}

pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: Endpoint,
}

/// What a registry answered for a manifest.
#[derive(Debug)]
pub struct FetchedManifest {
    pub content_type: String,
    /// The registry's `Docker-Content-Digest` header.
    pub digest: String,
    pub body: Vec<u8>,
}

/// Status, headers and body of one HTTP answer.
pub type Response = (u16, Vec<(String, String)>, Vec<u8>);

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

impl Registry {
    pub fn start(mode: RegistryMode) -> Result<Registry> {
        let bin = require_tool("docker-registry", "docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("basalt-registry-")
            .tempdir()?;
        let ca_pem = match mode {
            RegistryMode::Plain => None,
            RegistryMode::TlsAuth => {
                let pki = TestPki::new()?;
                pki.write(&dir.path().join("pki"))?;
                std::fs::create_dir_all(dir.path().join("certs"))?;
                std::fs::write(dir.path().join("certs/ca.crt"), &pki.ca_pem)?;
                let hash = bcrypt::hash(PASSWORD, 5)?;
                std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{hash}\n"))?;
                Some(pki.ca_pem)
            }
        };
        // A port can be taken between our probe and the registry's bind; try a few.
        let mut last_err = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let endpoint = Endpoint {
                addr: ([127, 0, 0, 1], port).into(),
                mode,
                ca_pem: ca_pem.clone(),
            };
            let config = dir.path().join("config.yml");
            std::fs::write(&config, registry_config(dir.path(), endpoint.addr, mode))?;
            let log_path = dir.path().join("registry.log");
            let log = std::fs::File::create(&log_path)?;
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config)
                .env("REGISTRY_HTTP_SECRET", "basalt-test")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            match endpoint.wait_ready(&mut child, &log_path, Duration::from_secs(20)) {
                Ok(()) => {
                    return Ok(Registry {
                        child,
                        dir,
                        endpoint,
                    })
                }
                Err(e) => {
                    last_err = Some(e);
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        self.endpoint.addr.to_string()
    }

    pub fn mode(&self) -> RegistryMode {
        self.endpoint.mode
    }

    /// `user:password` for TLS+auth registries.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        self.endpoint.credentials()
    }

    /// A directory holding only the CA as `ca.crt` (skopeo's `--cert-dir`, containerd's `certs.d/<host>`).
    pub fn ca_dir(&self) -> Option<PathBuf> {
        self.endpoint
            .ca_pem
            .as_ref()
            .map(|_| self.dir.path().join("certs"))
    }

    pub fn ca_pem(&self) -> Option<&str> {
        self.endpoint.ca_pem.as_deref()
    }

    /// The registry's log so far (one access-log line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes a fixture's OCI layout with skopeo as `<host>/<path>:<tag>`.
    pub fn push(&self, fixture: &Fixture, path: &str, tag: &str) -> Result<()> {
        let src = format!(
            "oci:{}:{}",
            fixture.oci_layout.display(),
            fixture.image.reference()
        );
        self.skopeo_copy(&src, path, tag)
    }

    /// Pushes a `docker save` archive (skopeo converts it to a Docker schema2 manifest).
    pub fn push_docker_archive(&self, archive: &Path, path: &str, tag: &str) -> Result<()> {
        self.skopeo_copy(&format!("docker-archive:{}", archive.display()), path, tag)
    }

    /// Pushes each fixture under its own path (`library/busybox`, `basalt/nonroot`, …) and tag.
    pub fn push_all(&self, fixtures: &[Fixture]) -> Result<()> {
        for f in fixtures {
            self.push(f, f.image.path_in_registry(), &f.image.tag)?;
        }
        Ok(())
    }

    fn skopeo_copy(&self, src: &str, path: &str, tag: &str) -> Result<()> {
        let skopeo = require_tool("skopeo", "skopeo")?;
        let mut cmd = Command::new(skopeo);
        cmd.args(["copy", "--quiet", "--insecure-policy"]);
        match self.mode() {
            RegistryMode::Plain => {
                cmd.arg("--dest-tls-verify=false");
            }
            RegistryMode::TlsAuth => {
                cmd.arg("--dest-cert-dir")
                    .arg(self.dir.path().join("certs"))
                    .arg("--dest-creds")
                    .arg(format!("{USER}:{PASSWORD}"));
            }
        }
        cmd.arg(src)
            .arg(format!("docker://{}/{path}:{tag}", self.host()));
        let out = cmd.output().context("running skopeo")?;
        if !out.status.success() {
            bail!(
                "skopeo copy {src} → {path}:{tag} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// GETs a manifest by tag or digest, the way a registry client does (Accept: every manifest type).
    pub fn fetch_manifest(&self, path: &str, reference: &str) -> Result<FetchedManifest> {
        let (code, headers, body) =
            self.get(&format!("/v2/{path}/manifests/{reference}"), Some(ACCEPT))?;
        if code != 200 {
            bail!(
                "GET manifest {path}:{reference}: HTTP {code}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Ok(FetchedManifest {
            content_type: header("content-type"),
            digest: header("docker-content-digest"),
            body,
        })
    }

    /// GET with the registry's credentials (if any), trusting only the test CA.
    pub fn get(&self, path: &str, accept: Option<&str>) -> Result<Response> {
        self.endpoint.get(path, accept)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to reach the registry: address, scheme and the CA to trust.
struct Endpoint {
    addr: SocketAddr,
    mode: RegistryMode,
    ca_pem: Option<String>,
}

impl Endpoint {
    fn scheme(&self) -> &'static str {
        match self.mode {
            RegistryMode::Plain => "http",
            RegistryMode::TlsAuth => "https",
        }
    }

    fn credentials(&self) -> Option<(&'static str, &'static str)> {
        (self.mode == RegistryMode::TlsAuth).then_some((USER, PASSWORD))
    }

    fn wait_ready(&self, child: &mut Child, log: &Path, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("docker-registry exited with {status}:\n{}", log());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                let code = self.get("/v2/", None)?.0;
                if code == 200 || code == 401 {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "docker-registry not ready on {} after {limit:?}:\n{}",
                    self.addr,
                    log()
                );
            }
            // The registry has no readiness signal to wait on; re-probe the port shortly.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn get(&self, path: &str, accept: Option<&str>) -> Result<Response> {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)));
        if let Some(ca_pem) = &self.ca_pem {
            let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes())?.to_owned();
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                    .build(),
            );
        }
        let agent: ureq::Agent = config.build().into();
        let mut req = agent.get(format!("{}://{}{path}", self.scheme(), self.addr));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        if let Some((u, p)) = self.credentials() {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req = req.header("Authorization", format!("Basic {token}"));
        }
        let resp = req.call().with_context(|| format!("GET {path}"))?;
        let code = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let mut body = Vec::new();
        resp.into_body().into_reader().read_to_end(&mut body)?;
        Ok((code, headers, body))
    }
}

fn registry_config(dir: &Path, addr: SocketAddr, mode: RegistryMode) -> String {
    let mut c = format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n",
        root = dir.join("storage").display(),
    );
    if mode == RegistryMode::TlsAuth {
        c.push_str(&format!(
            "  tls:\n    certificate: {pki}/server.crt\n    key: {pki}/server.key\n\
             auth:\n  htpasswd:\n    realm: basalt-test\n    path: {htpasswd}\n",
            pki = dir.join("pki").display(),
            htpasswd = dir.join("htpasswd").display(),
        ));
    }
    c
}
