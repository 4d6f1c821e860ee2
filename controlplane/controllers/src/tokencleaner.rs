//! The tokencleaner controller, as upstream's: a bootstrap token (a Secret of type
//! `bootstrap.kubernetes.io/token` in `kube-system`) is deleted once its `expiration` has passed — or at
//! once when that cannot be read, as upstream treats it. The apiserver already refuses an expired token;
//! this removes the Secret, so a token handed out for a join does not linger.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::owners;

const NAMESPACE: &str = "kube-system";
const TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";

/// Runs the controller until the future is dropped. Its role reaches only `kube-system`'s Secrets, and
/// it watches only the bootstrap tokens among them.
pub async fn run(client: Client) {
    let api: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let run = Controller::new(
        api,
        watcher::Config::default().fields(&format!("type={TOKEN_TYPE}")),
    )
    .run(reconcile, owners::retry, Arc::new(client));
    owners::drive("tokencleaner", run).await;
}

/// How long the token has left: `None` without an expiration, zero when past or unreadable.
fn remaining(secret: &Secret, now: Timestamp) -> Option<Duration> {
    let raw = secret.data.as_ref()?.get("expiration")?;
    let at = std::str::from_utf8(&raw.0)
        .ok()
        .and_then(|s| s.parse::<Timestamp>().ok());
    Some(match at {
        Some(at) if at > now => {
            Duration::from_secs((at.as_second() - now.as_second()).max(1) as u64)
        }
        _ => Duration::ZERO,
    })
}

async fn reconcile(secret: Arc<Secret>, client: Arc<Client>) -> Result<Action, kube::Error> {
    if secret.type_.as_deref() != Some(TOKEN_TYPE) || secret.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    match remaining(&secret, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(left) if !left.is_zero() => return Ok(Action::requeue(left)),
        Some(_) => {}
    }
    let api: Api<Secret> = Api::namespaced((*client).clone(), NAMESPACE);
    if owners::delete_exact(&api, &secret.name_any(), secret.uid(), None).await? {
        tracing::info!(secret = %secret.name_any(), "deleted expired bootstrap token");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn token(expiration: Option<&str>) -> Secret {
        let mut s = Secret {
            type_: Some(TOKEN_TYPE.into()),
            ..Default::default()
        };
        if let Some(e) = expiration {
            s.data = Some([("expiration".to_string(), ByteString(e.as_bytes().to_vec()))].into());
        }
        s
    }

    #[test]
    fn expiration() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        assert_eq!(remaining(&token(None), now), None);
        assert_eq!(
            remaining(&token(Some("2026-12-07T12:01:00Z")), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            remaining(&token(Some("2026-12-07T11:00:00Z")), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            remaining(&token(Some("tomorrow")), now),
            Some(Duration::ZERO)
        );
    }
}
