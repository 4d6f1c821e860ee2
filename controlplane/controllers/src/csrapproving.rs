//! The csrapproving controller, as upstream's: a kubelet's request for its client certificate
//! (`kubernetes.io/kube-apiserver-client-kubelet`, subject `system:node:<name>` in `system:nodes`) is
//! approved when its requester may create `certificatesigningrequests/selfnodeclient` (a node renewing
//! its own certificate) or `certificatesigningrequests/nodeclient` (a joining node, by its bootstrap
//! token's group) — asked of the apiserver with a SubjectAccessReview in the requester's name. Anything
//! else waits for a person (`kubectl certificate approve`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::PostParams;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};

use crate::csr::{self, Signer};
use crate::informers::Informer;
use crate::owners;

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, csrs: Arc<Informer<CertificateSigningRequest>>) {
    let run = Controller::for_shared_stream(csrs.subscribe(), csrs.store()).run(
        reconcile,
        owners::retry,
        Arc::new(client),
    );
    owners::drive("csrapproving", run).await;
}

/// A permission that approves a recognized request, and what the approval says.
struct Recognizer {
    subresource: &'static str,
    message: &'static str,
    recognizes: fn(&CertificateSigningRequest, &csr::Request) -> bool,
}

const RECOGNIZERS: [Recognizer; 2] = [
    Recognizer {
        subresource: "selfnodeclient",
        message: "Auto approving self kubelet client certificate after SubjectAccessReview.",
        recognizes: |c, r| c.spec.username.as_deref() == Some(r.common_name.as_str()),
    },
    Recognizer {
        subresource: "nodeclient",
        message: "Auto approving kubelet client certificate after SubjectAccessReview.",
        recognizes: |_, _| true,
    },
];

/// Whether the requester may create `subresource` of certificatesigningrequests.
async fn permitted(
    client: &Client,
    req: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: req.spec.username.clone(),
            uid: req.spec.uid.clone(),
            groups: req.spec.groups.clone(),
            extra: req.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                version: Some("*".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let out = api.create(&PostParams::default(), &review).await?;
    Ok(out.status.is_some_and(|s| s.allowed))
}

async fn reconcile(
    req: Arc<CertificateSigningRequest>,
    client: Arc<Client>,
) -> Result<Action, kube::Error> {
    if csr::issued(&req)
        || csr::has_condition(&req, "Approved")
        || csr::has_condition(&req, "Denied")
    {
        return Ok(Action::await_change());
    }
    if Signer::from_name(&req.spec.signer_name) != Some(Signer::KubeletClient) {
        return Ok(Action::await_change());
    }
    let Ok(parsed) = csr::parse(&req.spec.request.0) else {
        return Ok(Action::await_change());
    };
    let usages = req.spec.usages.clone().unwrap_or_default();
    if csr::check(Signer::KubeletClient, &parsed, &usages).is_err() {
        return Ok(Action::await_change());
    }
    let mut tried = Vec::new();
    for r in RECOGNIZERS.iter().filter(|r| (r.recognizes)(&req, &parsed)) {
        tried.push(r.subresource);
        if !permitted(&client, &req, r.subresource).await? {
            continue;
        }
        let mut approved = (*req).clone();
        let status = approved.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(csr::condition("Approved", "AutoApproved", r.message.into()));
        let api: Api<CertificateSigningRequest> = Api::all((*client).clone());
        match api
            .replace_subresource(
                "approval",
                &req.name_any(),
                &PostParams::default(),
                &approved,
            )
            .await
        {
            Ok(_) => tracing::info!(csr = %req.name_any(), as_ = r.subresource, "approved"),
            // Changed or gone since it was read: its next event brings it back.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
        return Ok(Action::await_change());
    }
    // Recognized but not permitted (yet): a binding made later lets it through, as upstream retries.
    tracing::debug!(csr = %req.name_any(), ?tried, "recognized, but the requester may not have it approved");
    Ok(Action::requeue(Duration::from_secs(30)))
}
