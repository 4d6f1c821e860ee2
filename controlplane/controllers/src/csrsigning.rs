//! The csrsigning controller, as upstream's: an approved request to one of the built-in signers gets a
//! certificate from the cluster CA (`--cluster-signing-cert-file`/`-key-file`), with the request's subject
//! and names, the key usages `spec.usages` names, valid from five minutes ago (clock skew) for
//! `spec.expirationSeconds` (at least ten minutes) or `--cluster-signing-duration`, whichever is shorter,
//! and never beyond the CA itself. A request that does not have its signer's shape is marked Failed
//! (`SignerValidationFailure`) rather than signed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};
use rcgen::{CertificateParams, IsCa, KeyPair};

use crate::csr::{self, Signer};
use crate::informers::Informer;
use crate::owners;

/// The CA that signs, read from its files at each signature (so a rotated CA is picked up).
#[derive(Debug, Clone)]
pub struct Authority {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--cluster-signing-duration`: the longest a certificate lives (upstream: a year).
    pub duration: Duration,
}

/// Upstream's floor on a requested duration: twice the backdate.
const MIN_DURATION: Duration = Duration::from_secs(600);
const BACKDATE: Duration = Duration::from_secs(300);

impl Authority {
    /// How long a certificate for a request of `requested` seconds lives.
    fn lifetime(&self, requested: Option<i32>) -> Duration {
        match requested {
            None => self.duration,
            // Floor first: a --cluster-signing-duration under the floor still wins.
            Some(s) => Duration::from_secs(s.max(0) as u64)
                .max(MIN_DURATION)
                .min(self.duration),
        }
    }

    /// A PEM certificate for `req`.
    pub fn sign(
        &self,
        req: &csr::Request,
        usages: &[String],
        requested: Option<i32>,
    ) -> Result<String, String> {
        let read =
            |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let key = KeyPair::from_pem(&read(&self.key)?).map_err(|e| format!("CA key: {e}"))?;
        let ca_params = CertificateParams::from_ca_cert_pem(&read(&self.cert)?)
            .map_err(|e| format!("CA: {e}"))?;
        let ca_until = ca_params.not_after;
        let ca = ca_params
            .self_signed(&key)
            .map_err(|e| format!("CA: {e}"))?;
        let (key_usages, extended) = csr::usages(usages)?;
        let now = time::OffsetDateTime::now_utc();
        if ca_until <= now {
            return Err(format!("the CA expired at {ca_until}"));
        }
        let mut params = req.params()?;
        let p = &mut params;
        p.key_usages = key_usages;
        p.extended_key_usages = extended;
        p.is_ca = IsCa::ExplicitNoCa;
        p.use_authority_key_identifier_extension = true;
        p.not_before = now - BACKDATE;
        p.not_after = (now + self.lifetime(requested)).min(ca_until);
        p.serial_number = Some(serial()?.to_vec().into());
        let cert = params
            .signed_by(&req.public_key, &ca, &key)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(cert.pem())
    }
}

/// A random 127-bit serial (positive, as RFC 5280 asks).
fn serial() -> Result<[u8; 16], String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("serial: {e}"))?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(b)
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: Client,
    authority: Authority,
    csrs: Arc<Informer<CertificateSigningRequest>>,
) {
    let run = Controller::for_shared_stream(csrs.subscribe(), csrs.store()).run(
        reconcile,
        owners::retry,
        Arc::new((client, authority)),
    );
    owners::drive("csrsigning", run).await;
}

async fn reconcile(
    req: Arc<CertificateSigningRequest>,
    ctx: Arc<(Client, Authority)>,
) -> Result<Action, kube::Error> {
    let (client, authority) = &*ctx;
    if csr::issued(&req)
        || !csr::has_condition(&req, "Approved")
        || csr::has_condition(&req, "Failed")
    {
        return Ok(Action::await_change());
    }
    let Some(signer) = Signer::from_name(&req.spec.signer_name) else {
        return Ok(Action::await_change());
    };
    let usages = req.spec.usages.clone().unwrap_or_default();
    let mut out = (*req).clone();
    let status = out.status.get_or_insert_with(Default::default);
    let checked =
        csr::parse(&req.spec.request.0).and_then(|r| csr::check(signer, &r, &usages).map(|()| r));
    match checked {
        Err(why) => {
            tracing::info!(csr = %req.name_any(), %why, "not signed");
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(csr::condition("Failed", "SignerValidationFailure", why));
        }
        Ok(r) => match authority.sign(&r, &usages, req.spec.expiration_seconds) {
            Ok(pem) => {
                tracing::info!(csr = %req.name_any(), signer = %req.spec.signer_name, "signed");
                status.certificate = Some(ByteString(pem.into_bytes()))
            }
            Err(why) => {
                // The CA's files, not the request: tried again later.
                tracing::warn!(csr = %req.name_any(), %why, "cannot sign");
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
        },
    }
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    owners::settled(
        api.replace_status(&req.name_any(), &PostParams::default(), &out)
            .await,
    )?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetime_is_bounded() {
        let a = Authority {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            duration: Duration::from_secs(3600),
        };
        assert_eq!(a.lifetime(None), Duration::from_secs(3600));
        assert_eq!(a.lifetime(Some(60)), MIN_DURATION);
        assert_eq!(a.lifetime(Some(1800)), Duration::from_secs(1800));
        assert_eq!(a.lifetime(Some(86400)), Duration::from_secs(3600));
        let short = Authority {
            duration: Duration::from_secs(300),
            ..a
        };
        assert_eq!(short.lifetime(Some(60)), Duration::from_secs(300));
    }
}
