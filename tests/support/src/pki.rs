//! A throw-away certificate authority and a server certificate for 127.0.0.1 / localhost.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

impl TestPki {
    pub fn new() -> Result<TestPki> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "basalt test CA");
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;

        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate()?;
        let cert = server.signed_by(&key, &ca_cert, &ca_key)?;
        Ok(TestPki {
            ca_pem: ca_cert.pem(),
            server_cert_pem: cert.pem(),
            server_key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.crt`, `server.crt`, `server.key` into `dir`; returns the CA path. A directory holding only
    /// `ca.crt` is what skopeo's `--cert-dir` and containerd's `certs.d/<host>/` expect.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.crt"), &self.ca_pem)?;
        std::fs::write(dir.join("server.crt"), &self.server_cert_pem)?;
        std::fs::write(dir.join("server.key"), &self.server_key_pem)?;
        Ok(dir.join("ca.crt"))
    }
}
