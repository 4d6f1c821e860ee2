//! Authentication: client certificates (CN is the user, O the groups), service-account tokens, and
//! bootstrap tokens for joining nodes. A request with none of them is anonymous; one with a credential that
//! does not check out is refused (401).

use std::sync::Arc;

use base64::Engine;
use serde_json::Value;

use super::tokens::Signer;
use super::{UserInfo, AUTHENTICATED};
use crate::objects::Objects;

pub struct Authenticator {
    pub signer: Arc<Signer>,
    pub audiences: Vec<String>,
    pub objects: Objects,
}

/// What the request presented.
pub enum Credential<'a> {
    Bearer(&'a str),
    Certificate(&'a [u8]),
    None,
}

/// The identity of a verified client certificate.
pub fn certificate_user(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push(AUTHENTICATED.into());
    Some(UserInfo {
        name,
        groups,
        ..Default::default()
    })
}

fn is_bootstrap_token(t: &str) -> Option<(&str, &str)> {
    let (id, secret) = t.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn decode_field(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

impl Authenticator {
    /// `Ok(None)`: anonymous. `Err(())`: a credential that is not valid.
    pub async fn authenticate(&self, cred: Credential<'_>) -> Result<Option<UserInfo>, ()> {
        match cred {
            Credential::None => Ok(None),
            Credential::Certificate(der) => certificate_user(der).map(Some).ok_or(()),
            Credential::Bearer(token) => {
                if let Some((id, secret)) = is_bootstrap_token(token) {
                    return self.bootstrap(id, secret).await.map(Some).ok_or(());
                }
                self.service_account(token).await.map(Some).ok_or(())
            }
        }
    }

    async fn get(&self, key: &str) -> Option<Value> {
        let kv = self.objects.store.get(key).await.ok()??;
        crate::objects::decode(&kv).ok()
    }

    async fn service_account(&self, token: &str) -> Option<UserInfo> {
        let audiences: Vec<&str> = self.audiences.iter().map(String::as_str).collect();
        let claims = self.signer.verify(token, &audiences)?;
        // A token outlives nothing it names: the account (and the pod or secret it is bound to) must
        // still be the one it was issued for.
        let sa = self
            .get(&format!(
                "/registry/core/serviceaccounts/{}/{}",
                claims.namespace, claims.service_account
            ))
            .await?;
        if crate::meta::uid(&sa) != claims.service_account_uid {
            return None;
        }
        let mut extra = std::collections::BTreeMap::new();
        if let Some((kind, name, uid)) = &claims.bound {
            let plural = if kind == "Pod" { "pods" } else { "secrets" };
            let obj = self
                .get(&format!(
                    "/registry/core/{plural}/{}/{name}",
                    claims.namespace
                ))
                .await?;
            if crate::meta::uid(&obj) != uid || crate::meta::is_deleting(&obj) {
                return None;
            }
            if kind == "Pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec![name.clone()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".to_string(),
                    vec![uid.clone()],
                );
            }
        }
        if let Some((name, uid)) = &claims.node {
            extra.insert(
                "authentication.kubernetes.io/node-name".to_string(),
                vec![name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/node-uid".to_string(),
                vec![uid.clone()],
            );
        }
        Some(UserInfo {
            name: format!(
                "system:serviceaccount:{}:{}",
                claims.namespace, claims.service_account
            ),
            uid: claims.service_account_uid,
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{}", claims.namespace),
                AUTHENTICATED.into(),
            ],
            extra,
        })
    }

    async fn bootstrap(&self, id: &str, secret: &str) -> Option<UserInfo> {
        let s = self
            .get(&format!(
                "/registry/core/secrets/kube-system/bootstrap-token-{id}"
            ))
            .await?;
        if s.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token")
            || decode_field(&s, "token-id")? != id
            || decode_field(&s, "token-secret")? != secret
            || decode_field(&s, "usage-bootstrap-authentication").as_deref() != Some("true")
            || crate::meta::is_deleting(&s)
        {
            return None;
        }
        if let Some(exp) = decode_field(&s, "expiration") {
            let t = crate::clock::parse(&exp)?;
            if t < std::time::SystemTime::now() {
                return None;
            }
        }
        let mut groups = vec!["system:bootstrappers".to_string()];
        if let Some(extra) = decode_field(&s, "auth-extra-groups") {
            groups.extend(
                extra
                    .split(',')
                    .map(|g| g.trim().to_string())
                    .filter(|g| g.starts_with("system:bootstrappers:")),
            );
        }
        groups.push(AUTHENTICATED.into());
        Some(UserInfo {
            name: format!("system:bootstrap:{id}"),
            groups,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_token_shape() {
        assert_eq!(
            is_bootstrap_token("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert!(is_bootstrap_token("ABCDEF.0123456789abcdef").is_none());
        assert!(is_bootstrap_token("abcdef.short").is_none());
        assert!(is_bootstrap_token("a.b.c").is_none());
    }

    #[test]
    fn certificate_subjects_give_user_and_groups() {
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jane");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = certificate_user(cert.der()).unwrap();
        assert_eq!(user.name, "jane");
        assert_eq!(user.groups, vec!["system:masters", AUTHENTICATED]);
    }
}
