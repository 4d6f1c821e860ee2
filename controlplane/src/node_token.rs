//! The node join token (`<data-dir>/server/node-token`, mode 0600), as k3s's: made at first start, kept
//! while the CA it pins stays the same, and backed by its bootstrap-token Secret, written back at each
//! start so a restored server still admits its nodes. Revoking it is deleting the file and the Secret
//! and restarting: a new token is made.

use std::path::{Path, PathBuf};

use basalt_apiserver::internal::Internal;
use basalt_join::Token;

/// The token for the CA in `ca_pem`, made or read, with its Secret in place. Returns it and its path.
pub async fn ensure(
    dir: &Path,
    ca_pem: &[u8],
    server: &basalt_apiserver::ApiServer,
) -> anyhow::Result<(Token, PathBuf)> {
    let path = dir.join("node-token");
    let internal = Internal::new(server.state.clone());
    let secrets = internal.resource("", "secrets");
    let kept = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| Token::parse(&t).ok());
    let token = match kept {
        Some(t) if t.ca_hash == basalt_join::token::ca_hash(ca_pem) => t,
        stale => {
            // A token pinning a CA this server no longer has: replaced, and its Secret with it.
            if let Some(old) = stale {
                let name = format!("bootstrap-token-{}", old.id);
                let _ = internal
                    .delete(&secrets, Some("kube-system"), &name, &Default::default())
                    .await;
            }
            let t = Token::generate(ca_pem)?;
            crate::pki::write_file(&path, format!("{t}\n").as_bytes(), 0o600)?;
            t
        }
    };
    internal
        .ensure(&secrets, &token.secret_object())
        .await
        .map_err(|e| anyhow::anyhow!("the node token's Secret: {}", e.message))?;
    Ok((token, path))
}
