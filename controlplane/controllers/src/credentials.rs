//! Per-controller credentials, as kube-controller-manager's `--use-service-account-credentials`: the
//! manager makes the service account `kube-system/<controller>`, asks for a token of it (TokenRequest),
//! and the controller's client reads that token from a file, which a refresher rewrites well before the
//! token expires (kube-rs rereads a token file every minute). What each loop may do is then its
//! `system:controller:<controller>` role, not the manager's.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::config::AuthInfo;
use kube::{Api, Client};

use crate::Error;

const NAMESPACE: &str = "kube-system";
/// Tokens live a day and are renewed every hour: a server that cannot reach itself for a while keeps
/// working.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
const RENEW: Duration = Duration::from_secs(3600);

fn token_path(dir: &Path, sa: &str) -> PathBuf {
    dir.join(format!("{sa}.token"))
}

/// Makes the service account if missing and writes a fresh token of it.
async fn issue(manager: &Client, dir: &Path, sa: &str) -> Result<PathBuf, Error> {
    let api: Api<ServiceAccount> = Api::namespaced(manager.clone(), NAMESPACE);
    if api.get_opt(sa).await?.is_none() {
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.into()),
                namespace: Some(NAMESPACE.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(LIFETIME.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = api
        .create_token_request(sa, &PostParams::default(), &req)
        .await?;
    let token = out
        .status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::NoToken(sa.into()))?;
    let path = token_path(dir, sa);
    let err = |source| Error::TokenFile {
        path: path.display().to_string(),
        source,
    };
    // The directory and the token are the server's alone.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    basalt_atomic_file::write_private(&path, token.as_bytes()).map_err(err)?;
    Ok(path)
}

/// A client for the controller `sa`, retried until the apiserver issues its token.
pub async fn client_for(manager: &Client, config: &kube::Config, dir: &Path, sa: &str) -> Client {
    loop {
        let made = async {
            let path = issue(manager, dir, sa).await?;
            let mut cfg = config.clone();
            cfg.auth_info = AuthInfo {
                token_file: Some(path.display().to_string()),
                ..Default::default()
            };
            Ok::<_, Error>(Client::try_from(cfg)?)
        };
        match made.await {
            Ok(c) => return c,
            Err(e) => tracing::warn!(controller = sa, error = %e, "controller credentials"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Renews every controller's token until aborted.
pub async fn refresh(manager: Client, dir: PathBuf, accounts: Vec<&'static str>) {
    loop {
        tokio::time::sleep(RENEW).await;
        for &sa in &accounts {
            if let Err(e) = issue(&manager, &dir, sa).await {
                tracing::warn!(controller = sa, error = %e, "controller token renewal");
            }
        }
    }
}
