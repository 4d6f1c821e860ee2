//! One-time tokens for the URLs returned by the CRI Exec/Attach/PortForward RPCs.
//!
//! Kubelet hands the URL to the API server, which connects once; the token is the only authorisation, so it is
//! unguessable (128 random bits), used at most once, and short-lived.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;

use crate::backend::{AttachTarget, ExecTarget};
use crate::Error;

/// Upper bound on URLs handed out and not yet used, so a caller looping on Exec cannot grow memory unbounded.
pub(crate) const MAX_IN_FLIGHT: usize = 1000;

/// What a token stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    Exec(ExecTarget),
    Attach(AttachTarget),
    PortForward(String),
}

impl Pending {
    /// The URL path segment that must come with the token.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

pub(crate) struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Pending, Instant)>>,
}

impl TokenCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `pending` and returns its fresh token.
    pub(crate) fn insert(&self, pending: Pending) -> Result<String, Error> {
        self.insert_at(pending, Instant::now())
    }

    pub(crate) fn insert_at(&self, pending: Pending, now: Instant) -> Result<String, Error> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (_, expires)| *expires > now);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(Error::TooManyRequests {
                limit: MAX_IN_FLIGHT,
            });
        }
        let token = loop {
            let mut raw = [0u8; 16];
            rand::rng().fill_bytes(&mut raw);
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
            if !entries.contains_key(&token) {
                break token;
            }
        };
        entries.insert(token.clone(), (pending, now + self.ttl));
        Ok(token)
    }

    /// Removes and returns the request for `token` if it exists, is unexpired and was issued for `kind`.
    pub(crate) fn take(&self, kind: &str, token: &str) -> Option<Pending> {
        self.take_at(kind, token, Instant::now())
    }

    pub(crate) fn take_at(&self, kind: &str, token: &str, now: Instant) -> Option<Pending> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Consumed even on a kind mismatch: a token that leaked into the wrong URL is burnt.
        let (pending, expires) = entries.remove(token)?;
        (expires > now && pending.kind() == kind).then_some(pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward("sb".into())
    }

    #[test]
    fn token_is_single_use_and_kind_bound() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let t = cache.insert(pf()).unwrap();
        assert!(t.len() >= 16, "token {t:?} too short");
        assert_eq!(cache.take("portforward", &t), Some(pf()));
        assert_eq!(cache.take("portforward", &t), None);
        let t = cache.insert(pf()).unwrap();
        assert_eq!(cache.take("exec", &t), None);
        assert_eq!(cache.take("portforward", &t), None);
    }

    #[test]
    fn token_expires_after_ttl() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let now = Instant::now();
        let t1 = cache.insert_at(pf(), now).unwrap();
        let t2 = cache.insert_at(pf(), now).unwrap();
        assert_ne!(t1, t2);
        assert_eq!(
            cache.take_at("portforward", &t1, now + Duration::from_secs(59)),
            Some(pf())
        );
        assert_eq!(
            cache.take_at("portforward", &t2, now + Duration::from_secs(60)),
            None
        );
    }

    #[test]
    fn in_flight_is_bounded_and_expired_entries_free_room() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..MAX_IN_FLIGHT {
            cache.insert_at(pf(), now).unwrap();
        }
        assert!(matches!(
            cache.insert_at(pf(), now),
            Err(Error::TooManyRequests { .. })
        ));
        assert!(cache.insert_at(pf(), now + Duration::from_secs(61)).is_ok());
    }
}
