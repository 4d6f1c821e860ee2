//! The join token, in k3s's format: `K10<sha256 of the cluster's CA bundle>::<id>.<secret>`. The part after
//! `::` is a Kubernetes bootstrap token (Secret `kube-system/bootstrap-token-<id>`); the hash lets a node
//! that fetched the CA over an unverified connection check that it reached this cluster.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::Error;

/// A parsed join token. Its `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Hex sha256 of the CA bundle as `/cacerts` serves it.
    pub ca_hash: String,
    /// `[a-z0-9]{6}`: public, names the Secret.
    pub id: String,
    /// `[a-z0-9]{16}`.
    pub secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K10{}::{}.<secret>", self.ca_hash, self.id)
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "K10{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

/// The hash a token pins: sha256 of the CA bundle's bytes, in hex.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

fn is_token_part(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Token {
    /// A new token for the CA in `ca_pem`, its id and secret from the kernel's random source.
    pub fn generate(ca_pem: &[u8]) -> Result<Token, Error> {
        let mut raw = [0u8; 22];
        random(&mut raw)?;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        // 256 = 7 * 36 + 4: the 4 values past the last whole round are rare enough not to matter for a
        // token that is also rate limited by the apiserver's authentication.
        let s: String = raw
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect();
        Ok(Token {
            ca_hash: ca_hash(ca_pem),
            id: s[..6].into(),
            secret: s[6..].into(),
        })
    }

    /// Reads `K10<hash>::<id>.<secret>`; an error says which part is wrong, never the secret.
    pub fn parse(text: &str) -> Result<Token, Error> {
        let bad = |why: &str| Error::Token(why.to_string());
        let rest = text
            .trim()
            .strip_prefix("K10")
            .ok_or_else(|| bad("must start with K10 (K10<ca-sha256>::<id>.<secret>)"))?;
        let (hash, bootstrap) = rest
            .split_once("::")
            .ok_or_else(|| bad("no \"::\" between the CA hash and the bootstrap token"))?;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the CA hash must be 64 hex digits (sha256)"));
        }
        let (id, secret) = bootstrap
            .split_once('.')
            .ok_or_else(|| bad("the bootstrap token must be <id>.<secret>"))?;
        if !is_token_part(id, 6) {
            return Err(bad("the token id must be 6 characters of [a-z0-9]"));
        }
        if !is_token_part(secret, 16) {
            return Err(bad("the token secret must be 16 characters of [a-z0-9]"));
        }
        Ok(Token {
            ca_hash: hash.to_ascii_lowercase(),
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// The bearer token the apiserver authenticates (`system:bootstrap:<id>`).
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret that makes the token valid: for authentication only, without expiry (a cluster's
    /// standing join token, as k3s's), in the group kubeadm and k3s give node tokens.
    pub fn secret_object(&self) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": format!("bootstrap-token-{}", self.id), "namespace": "kube-system"},
            "stringData": {
                "description": "basalt server's node join token",
                "token-id": self.id, "token-secret": self.secret,
                "usage-bootstrap-authentication": "true",
                "auth-extra-groups": "system:bootstrappers:basalt:default-node-token",
            },
        })
    }
}

pub(crate) fn random(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|e| Error::Io("getrandom(2)".into(), e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let t = Token::generate(b"-----BEGIN CERTIFICATE-----\n").unwrap();
        assert_eq!(Token::parse(&t.to_string()).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        let hash = "a".repeat(64);
        for (text, says) in [
            ("abcdef.0123456789abcdef", "K10"),
            (&*format!("K10{hash}abcdef.0123456789abcdef"), "::"),
            ("K10abc::abcdef.0123456789abcdef", "64 hex"),
            (&*format!("K10{hash}::ABCDEF.0123456789abcdef"), "token id"),
            (&*format!("K10{hash}::abcdef.short"), "token secret"),
        ] {
            let e = Token::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("0123456789abcdef"), "the secret in {e}");
        }
    }
}
