//! The csrcleaner controller, as upstream's: certificate requests do not pile up. A request is deleted
//! an hour after it was approved, denied or failed, a day after it was made if nobody decided, and at
//! once when the certificate it was issued has expired. Each is looked at again when its time comes,
//! rather than in upstream's hourly sweep.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informer;
use crate::owners;

const DECIDED: i64 = 3600;
const PENDING: i64 = 24 * 3600;

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, csrs: Arc<Informer<CertificateSigningRequest>>) {
    let run = Controller::for_shared_stream(csrs.subscribe(), csrs.store()).run(
        reconcile,
        owners::retry,
        Arc::new(client),
    );
    owners::drive("csrcleaner", run).await;
}

/// When the issued certificate expires (seconds since the epoch), if one was issued and can be read.
fn certificate_expiry(csr: &CertificateSigningRequest) -> Option<i64> {
    let pem = csr.status.as_ref()?.certificate.as_ref()?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem.0).ok()?;
    let cert = block.parse_x509().ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// When the request is to be deleted (seconds since the epoch).
fn deadline(csr: &CertificateSigningRequest) -> i64 {
    let created = csr
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    let decided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| matches!(c.type_.as_str(), "Approved" | "Denied" | "Failed"))
        .map(|c| {
            c.last_update_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
                .map_or(created, |t| t.0.as_second())
        })
        .max();
    let by_state = match decided {
        Some(at) => at + DECIDED,
        None => created + PENDING,
    };
    certificate_expiry(csr).map_or(by_state, |e| by_state.min(e))
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    client: Arc<Client>,
) -> Result<Action, kube::Error> {
    if csr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let left = deadline(&csr) - Timestamp::now().as_second();
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    let api: Api<CertificateSigningRequest> = Api::all((*client).clone());
    if owners::delete_exact(&api, &csr.name_any(), csr.uid(), None).await? {
        tracing::info!(csr = %csr.name_any(), "deleted: expired or long decided");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines() {
        let csr = |status: serde_json::Value| -> CertificateSigningRequest {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "r", "creationTimestamp": "2026-12-07T10:00:00Z"},
                "spec": {"request": "", "signerName": "example.com/x"},
                "status": status,
            }))
            .unwrap()
        };
        let at = |s: &str| s.parse::<Timestamp>().unwrap().as_second();
        assert_eq!(
            deadline(&csr(serde_json::json!({}))),
            at("2026-12-08T10:00:00Z")
        );
        let denied = csr(
            serde_json::json!({"conditions": [{"type": "Denied", "status": "True",
            "lastUpdateTime": "2026-12-07T11:00:00Z"}]}),
        );
        assert_eq!(deadline(&denied), at("2026-12-07T12:00:00Z"));
    }
}
