//! Service-account tokens: ES256 JWTs signed with the cluster's service-account key, bound to an
//! audience, an expiry and (optionally) a pod, secret or node, as upstream's TokenRequest issues them.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};
use sha2::Digest;

/// The default audience of tokens: the API itself.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

pub struct Signer {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    pub issuer: String,
    /// `kid`: the hash of the public key, so verifiers pick the right key after a rotation.
    pub key_id: String,
}

/// What a token claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    pub audiences: Vec<String>,
    pub expires: u64,
    pub bound: Option<(String, String, String)>,
    pub node: Option<(String, String)>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    /// From a PKCS#8 P-256 private key.
    pub fn new(pkcs8: &[u8], issuer: &str) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| anyhow::anyhow!("service-account key: {e}"))?;
        let key_id = B64.encode(sha2::Sha256::digest(key.public_key().as_ref()));
        Ok(Signer {
            key,
            rng,
            issuer: issuer.to_string(),
            key_id,
        })
    }

    /// Issues a token for `claims`, valid from now.
    pub fn issue(&self, claims: &Claims) -> String {
        let now = unix_now();
        let mut k8s = json!({
            "namespace": claims.namespace,
            "serviceaccount": {"name": claims.service_account, "uid": claims.service_account_uid},
        });
        if let Some((kind, name, uid)) = &claims.bound {
            k8s[kind.to_ascii_lowercase()] = json!({"name": name, "uid": uid});
        }
        if let Some((name, uid)) = &claims.node {
            k8s["node"] = json!({"name": name, "uid": uid});
        }
        let body = json!({
            "aud": claims.audiences,
            "exp": claims.expires,
            "iat": now,
            "nbf": now,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "sub": format!("system:serviceaccount:{}:{}", claims.namespace, claims.service_account),
        });
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(body.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA signing does not fail with a valid key");
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// Checks signature, issuer, time and audience; returns the claims. Whether the service account (and
    /// the bound object) still exist is the caller's check.
    pub fn verify(&self, token: &str, audiences: &[&str]) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, b, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&B64.decode(h).ok()?).ok()?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{b}").as_bytes(), &B64.decode(s).ok()?)
            .ok()?;
        let body: Value = serde_json::from_slice(&B64.decode(b).ok()?).ok()?;
        if body.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return None;
        }
        let now = unix_now();
        let exp = body.get("exp").and_then(Value::as_u64)?;
        if exp <= now
            || body
                .get("nbf")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > now + 60)
        {
            return None;
        }
        let aud: Vec<String> = match body.get("aud") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        if !aud.iter().any(|a| audiences.contains(&a.as_str())) {
            return None;
        }
        let k8s = body.get("kubernetes.io")?;
        let bound = ["pod", "secret"].iter().find_map(|kind| {
            let o = k8s.get(*kind)?;
            Some((
                if *kind == "pod" {
                    "Pod".to_string()
                } else {
                    "Secret".to_string()
                },
                o.get("name")?.as_str()?.to_string(),
                o.get("uid")?.as_str()?.to_string(),
            ))
        });
        let node = k8s.get("node").and_then(|n| {
            Some((
                n.get("name")?.as_str()?.to_string(),
                n.get("uid")?.as_str()?.to_string(),
            ))
        });
        Some(Claims {
            namespace: k8s.get("namespace")?.as_str()?.to_string(),
            service_account: k8s.pointer("/serviceaccount/name")?.as_str()?.to_string(),
            service_account_uid: k8s.pointer("/serviceaccount/uid")?.as_str()?.to_string(),
            audiences: aud,
            expires: exp,
            bound,
            node,
        })
    }

    /// The public key as a JWK Set, for `/openid/v1/jwks`.
    pub fn jwks(&self) -> Value {
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "kid": self.key_id, "crv": "P-256", "alg": "ES256",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        }]})
    }
}

pub fn now() -> u64 {
    unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        Signer::new(
            pkcs8.as_ref(),
            "https://kubernetes.default.svc.cluster.local",
        )
        .unwrap()
    }

    #[test]
    fn issue_and_verify() {
        let s = signer();
        let claims = Claims {
            namespace: "default".into(),
            service_account: "sa".into(),
            service_account_uid: "u1".into(),
            audiences: vec![API_AUDIENCE.into()],
            expires: now() + 3600,
            bound: Some(("Pod".into(), "p".into(), "pu".into())),
            node: None,
        };
        let token = s.issue(&claims);
        assert_eq!(s.verify(&token, &[API_AUDIENCE]), Some(claims.clone()));
        assert!(s.verify(&token, &["other"]).is_none(), "audience");
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 3, 'x');
        assert!(s.verify(&tampered, &[API_AUDIENCE]).is_none(), "signature");
        assert!(
            signer().verify(&token, &[API_AUDIENCE]).is_none(),
            "another key"
        );
        let expired = s.issue(&Claims {
            expires: now() - 1,
            ..claims
        });
        assert!(s.verify(&expired, &[API_AUDIENCE]).is_none(), "expiry");
    }
}
