//! The cluster's PKI, made at first start: a CA (ECDSA P-256, ten years), a serving certificate for the
//! apiserver (remade at every start, so new names and addresses are picked up), the service-account signing
//! key, and an admin client certificate (`system:admin` in `system:masters`) in a kubeconfig with mode 0600.
//!
//! Every file is written to a temporary name, fsynced and renamed, so a crash never leaves half a key.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

pub struct Pki {
    pub dir: PathBuf,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
}

/// Writes `data` whole with `mode` (see `basalt_atomic_file`).
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    basalt_atomic_file::write(path, data, mode).with_context(|| format!("write {}", path.display()))
}

fn years(n: i64) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(365 * n),
    )
}

impl Pki {
    /// Makes what is missing under `dir`; remakes the serving certificate for `names` and `ips`.
    pub fn ensure(dir: &Path, names: &[String], ips: &[IpAddr]) -> anyhow::Result<Pki> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let pki = Pki {
            dir: dir.to_path_buf(),
            ca_cert: dir.join("server-ca.crt"),
            ca_key: dir.join("server-ca.key"),
            serving_cert: dir.join("serving-kube-apiserver.crt"),
            serving_key: dir.join("serving-kube-apiserver.key"),
            service_account_key: dir.join("service.key"),
        };
        if !pki.ca_cert.exists() || !pki.ca_key.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            dn.push(DnType::CommonName, format!("basalt-server-ca@{now}"));
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            (params.not_before, params.not_after) = years(10);
            let cert = params.self_signed(&key)?;
            write_file(&pki.ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&pki.ca_cert, cert.pem().as_bytes(), 0o644)?;
        }
        if !pki.service_account_key.exists() {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            write_file(
                &pki.service_account_key,
                key.serialize_pem().as_bytes(),
                0o600,
            )?;
        }
        let mut sans: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
        ];
        sans.extend(names.iter().filter(|n| !n.is_empty()).cloned());
        let mut ip_list: Vec<IpAddr> = vec![
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
        ];
        ip_list.extend(ips.iter().copied());
        let (cert, key) = pki.sign("kube-apiserver", &[], &sans, &ip_list, true)?;
        write_file(&pki.serving_key, key.as_bytes(), 0o600)?;
        write_file(&pki.serving_cert, cert.as_bytes(), 0o644)?;
        Ok(pki)
    }

    fn issuer(&self) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
        let key = KeyPair::from_pem(&std::fs::read_to_string(&self.ca_key)?)?;
        let params = CertificateParams::from_ca_cert_pem(&std::fs::read_to_string(&self.ca_cert)?)?;
        // The same name and key as the stored CA: what it signs chains to the stored certificate.
        let cert = params.self_signed(&key)?;
        Ok((cert, key))
    }

    /// A certificate signed by the CA: PEM certificate and key.
    pub fn sign(
        &self,
        cn: &str,
        orgs: &[&str],
        names: &[String],
        ips: &[IpAddr],
        server: bool,
    ) -> anyhow::Result<(String, String)> {
        let (ca, ca_key) = self.issuer()?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .filter_map(|n| n.clone().try_into().ok().map(SanType::DnsName))
            .chain(ips.iter().map(|ip| SanType::IpAddress(*ip)))
            .collect();
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        (params.not_before, params.not_after) = years(1);
        let cert = params.signed_by(&key, &ca, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A kubeconfig for `user` (in `groups`) against `server`, mode 0600.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> anyhow::Result<()> {
        let (cert, key) = self.sign(user, groups, &[], &[], false)?;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let ca = std::fs::read_to_string(&self.ca_cert)?;
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "default", "cluster": {"server": server, "certificate-authority-data": b64(&ca)}}],
            "users": [{"name": "default", "user": {"client-certificate-data": b64(&cert), "client-key-data": b64(&key)}}],
            "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
            "current-context": "default",
            "preferences": {},
        });
        write_file(path, serde_yaml::to_string(&doc)?.as_bytes(), 0o600)
    }

    /// The certificate the apiserver presents to kubelets, signed afresh at each start (kept 0600 beside
    /// the CA, as the serving key is).
    pub fn kubelet_client(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) =
            self.sign(basalt_apiserver::kubelet::CLIENT_USER, &[], &[], &[], false)?;
        let (c, k) = (
            self.dir.join("kubelet-client.crt"),
            self.dir.join("kubelet-client.key"),
        );
        write_file(&k, key.as_bytes(), 0o600)?;
        write_file(&c, cert.as_bytes(), 0o644)?;
        Ok((c, k))
    }

    pub fn write_admin_kubeconfig(&self, path: &Path, server: &str) -> anyhow::Result<()> {
        self.write_kubeconfig(path, server, "system:admin", &["system:masters"])
    }
}
