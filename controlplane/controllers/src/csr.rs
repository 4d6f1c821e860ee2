//! What a CertificateSigningRequest asks for, read as upstream's approver and signers read it: the PKCS#10
//! request (its signature checked), its subject and names, and `spec.usages`; and the shapes the
//! built-in signers accept (a kubelet's client and serving certificates, an apiserver client).

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose, SanType};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// The built-in signers this manager approves or signs for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// `kubernetes.io/kube-apiserver-client`: any client of the apiserver.
    ApiserverClient,
    /// `kubernetes.io/kube-apiserver-client-kubelet`: a kubelet's client certificate.
    KubeletClient,
    /// `kubernetes.io/kubelet-serving`: a kubelet's serving certificate.
    KubeletServing,
}

impl Signer {
    pub fn from_name(name: &str) -> Option<Signer> {
        match name {
            "kubernetes.io/kube-apiserver-client" => Some(Signer::ApiserverClient),
            "kubernetes.io/kube-apiserver-client-kubelet" => Some(Signer::KubeletClient),
            "kubernetes.io/kubelet-serving" => Some(Signer::KubeletServing),
            _ => None,
        }
    }
}

/// A parsed request: what it names, and what its certificate is made of. Requested extensions other
/// than the subjectAltNames are ignored, as upstream's signer ignores them: `spec.usages` decides.
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
    pub subject: rcgen::DistinguishedName,
    pub public_key: rcgen::SubjectPublicKeyInfo,
}

impl Request {
    /// The certificate's parameters: the request's subject and names, nothing else yet.
    pub fn params(&self) -> Result<CertificateParams, String> {
        let mut p = CertificateParams::default();
        p.distinguished_name = self.subject.clone();
        let ia5 = |s: &String| {
            rcgen::Ia5String::try_from(s.clone()).map_err(|e| format!("name {s:?}: {e}"))
        };
        for d in &self.dns {
            p.subject_alt_names.push(SanType::DnsName(ia5(d)?));
        }
        for ip in &self.ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for e in &self.emails {
            p.subject_alt_names.push(SanType::Rfc822Name(ia5(e)?));
        }
        for u in &self.uris {
            p.subject_alt_names.push(SanType::URI(ia5(u)?));
        }
        Ok(p)
    }
}

/// Parses `spec.request` (PEM), checking its signature.
pub fn parse(pem: &[u8]) -> Result<Request, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("PEM block: {e}"))?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block type must be CERTIFICATE REQUEST, not {}",
            block.label
        ));
    }
    let (_, x509) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("not a PKCS#10 request: {e}"))?;
    x509.verify_signature()
        .map_err(|e| format!("the request's signature does not verify: {e}"))?;
    let info = &x509.certification_request_info;
    let mut subject = rcgen::DistinguishedName::new();
    let (mut common_name, mut organizations, mut count) = (String::new(), Vec::new(), 0);
    for a in info.subject.iter_attributes() {
        let value = a
            .as_str()
            .map_err(|_| format!("subject attribute {} is not a string", a.attr_type()))?;
        let oid: Vec<u64> = a.attr_type().iter().into_iter().flatten().collect();
        let ty = DnType::from_oid(&oid);
        match ty {
            DnType::CommonName => common_name = value.to_string(),
            DnType::OrganizationName => organizations.push(value.to_string()),
            _ => {}
        }
        subject.push(ty, value);
        count += 1;
    }
    // rcgen holds one value per attribute type: a subject repeating one (two organizations) would be
    // issued with less than it asked for, so it is refused rather than silently narrowed.
    if count != subject.iter().count() {
        return Err(format!(
            "a subject with a repeated attribute type is not supported (organizations {organizations:?})"
        ));
    }
    let (mut dns, mut ips, mut emails, mut uris) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ext in x509.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for n in &san.general_names {
                match n {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => ips.push(match b.len() {
                        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
                        _ => return Err("an IP subjectAltName of a wrong length".into()),
                    }),
                    GeneralName::RFC822Name(e) => emails.push(e.to_string()),
                    GeneralName::URI(u) => uris.push(u.to_string()),
                    other => return Err(format!("unsupported subjectAltName {other:?}")),
                }
            }
        }
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(info.subject_pki.raw)
        .map_err(|e| format!("public key: {e}"))?;
    Ok(Request {
        common_name,
        organizations,
        dns,
        ips,
        emails,
        uris,
        subject,
        public_key,
    })
}

/// Key usages and extended key usages named by `spec.usages`.
pub fn usages(
    list: &[String],
) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>), String> {
    let (mut ku, mut eku) = (Vec::new(), Vec::new());
    for u in list {
        match u.as_str() {
            "signing" | "digital signature" => ku.push(KeyUsagePurpose::DigitalSignature),
            "content commitment" => ku.push(KeyUsagePurpose::ContentCommitment),
            "key encipherment" => ku.push(KeyUsagePurpose::KeyEncipherment),
            "key agreement" => ku.push(KeyUsagePurpose::KeyAgreement),
            "data encipherment" => ku.push(KeyUsagePurpose::DataEncipherment),
            "cert sign" => ku.push(KeyUsagePurpose::KeyCertSign),
            "crl sign" => ku.push(KeyUsagePurpose::CrlSign),
            "encipher only" => ku.push(KeyUsagePurpose::EncipherOnly),
            "decipher only" => ku.push(KeyUsagePurpose::DecipherOnly),
            "any" => eku.push(ExtendedKeyUsagePurpose::Any),
            "server auth" => eku.push(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => eku.push(ExtendedKeyUsagePurpose::ClientAuth),
            "code signing" => eku.push(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" | "s/mime" => eku.push(ExtendedKeyUsagePurpose::EmailProtection),
            "timestamping" => eku.push(ExtendedKeyUsagePurpose::TimeStamping),
            "ocsp signing" => eku.push(ExtendedKeyUsagePurpose::OcspSigning),
            other => return Err(format!("unsupported key usage {other:?}")),
        }
    }
    ku.dedup();
    eku.dedup();
    Ok((ku, eku))
}

/// `usages` holds every one of `required` and nothing beyond `required` and `optional` (upstream's
/// message for the kubelet signers).
fn usages_within(usages: &[String], required: &[&str], optional: &[&str]) -> Result<(), String> {
    let complete = required.iter().all(|r| usages.iter().any(|u| u == r));
    let allowed = usages
        .iter()
        .all(|u| required.contains(&u.as_str()) || optional.contains(&u.as_str()));
    if complete && allowed {
        return Ok(());
    }
    let mut sorted = usages.to_vec();
    sorted.sort();
    Err(format!("usages did not match [{}]", sorted.join(" ")))
}

/// The apiserver-client signer's usages, with upstream's messages.
fn client_usages(usages: &[String]) -> Result<(), String> {
    const ALLOWED: [&str; 3] = ["digital signature", "key encipherment", "client auth"];
    if let Some(u) = usages.iter().find(|u| !ALLOWED.contains(&u.as_str())) {
        return Err(format!("invalid usage for client certificate: {u}"));
    }
    if !usages.iter().any(|u| u == "client auth") {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

/// Whether `req` with `usages` has the shape `signer` signs; why not, if not.
pub fn check(signer: Signer, req: &Request, usages: &[String]) -> Result<(), String> {
    let node = || {
        if req.organizations != ["system:nodes"] {
            return Err(format!(
                "subject organization is not system:nodes: {:?}",
                req.organizations
            ));
        }
        if !req.common_name.starts_with("system:node:") {
            return Err(format!(
                "subject common name does not begin with system:node: ({:?})",
                req.common_name
            ));
        }
        if !req.emails.is_empty() {
            return Err("Email subjectAltNames are not allowed".into());
        }
        if !req.uris.is_empty() {
            return Err("URI subjectAltNames are not allowed".into());
        }
        Ok(())
    };
    match signer {
        // CertificateSubjectRestriction refuses these at creation; never signed all the same.
        Signer::ApiserverClient if req.organizations.iter().any(|o| o == "system:masters") => Err(
            "use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"
                .into(),
        ),
        Signer::ApiserverClient => client_usages(usages),
        Signer::KubeletClient => {
            node()?;
            if !req.dns.is_empty() {
                return Err("DNS subjectAltNames are not allowed".into());
            }
            if !req.ips.is_empty() {
                return Err("IP subjectAltNames are not allowed".into());
            }
            usages_within(
                usages,
                &["digital signature", "client auth"],
                &["key encipherment"],
            )
        }
        Signer::KubeletServing => {
            node()?;
            if req.dns.is_empty() && req.ips.is_empty() {
                return Err("DNS or IP subjectAltName is required".into());
            }
            usages_within(
                usages,
                &["digital signature", "server auth"],
                &["key encipherment"],
            )
        }
    }
}

/// Whether the request already carries a true condition of `type_`.
pub fn has_condition(csr: &CertificateSigningRequest, type_: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Whether a certificate has been issued for the request.
pub fn issued(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty())
}

/// A true condition, stamped now.
pub fn condition(type_: &str, reason: &str, message: String) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cn: &str, orgs: &[&str], dns: &[&str]) -> Request {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p =
            rcgen::CertificateParams::new(dns.iter().map(|d| d.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        parse(pem.as_bytes()).unwrap()
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_client_shape() {
        let ok = request("system:node:a", &["system:nodes"], &[]);
        assert_eq!(ok.common_name, "system:node:a");
        let usages = strings(&["digital signature", "key encipherment", "client auth"]);
        assert_eq!(check(Signer::KubeletClient, &ok, &usages), Ok(()));
        let e = check(
            Signer::KubeletClient,
            &ok,
            &strings(&["digital signature", "server auth"]),
        );
        assert!(e.unwrap_err().contains("usages did not match"));
        let wrong_org = request("system:node:a", &["system:masters"], &[]);
        assert!(check(Signer::KubeletClient, &wrong_org, &usages)
            .unwrap_err()
            .contains("system:nodes"));
        let named = request("system:node:a", &["system:nodes"], &["a.example"]);
        assert!(check(Signer::KubeletClient, &named, &usages).is_err());
        let serving = strings(&["digital signature", "server auth"]);
        assert_eq!(check(Signer::KubeletServing, &named, &serving), Ok(()));
        assert!(check(Signer::KubeletServing, &ok, &serving)
            .unwrap_err()
            .contains("DNS or IP"));
    }

    #[test]
    fn refuses_what_it_cannot_issue_faithfully() {
        assert!(parse(b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n").is_err());
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bob");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "a");
        // A second organization, under the same OID as a custom type.
        p.distinguished_name
            .push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]), "b");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        let e = parse(pem.as_bytes()).err().unwrap();
        assert!(e.contains("repeated attribute"), "{e}");
        assert!(usages(&strings(&["client auth", "frobnicate"])).is_err());
    }

    #[test]
    fn requested_extensions_beyond_names_are_ignored() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["n.example".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        // A subjectKeyIdentifier, as openssl adds to a request.
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[2, 5, 29, 14],
            vec![0x04, 0x02, 0xab, 0xcd],
        )];
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        let r = parse(pem.as_bytes()).unwrap();
        assert_eq!(r.dns, ["n.example"]);
        assert_eq!(r.organizations, ["system:nodes"]);
        assert!(r.params().is_ok());
    }
}
