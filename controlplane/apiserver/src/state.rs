//! What every request handler shares.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use http::HeaderMap;

use crate::auth::authn::Authenticator;
use crate::auth::rbac::Rbac;
use crate::auth::tokens::Signer;
use crate::auth::UserInfo;
use crate::http::Query;
use crate::informer::Informer;
use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::registry::{Registry, Resource};
use crate::request::ResourceRequest;
use crate::watch::Watches;

/// The apiserver's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: std::net::SocketAddr,
    /// PEM: serving certificate chain and key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// PEM: the CA whose client certificates authenticate.
    pub client_ca_file: PathBuf,
    /// PEM PKCS#8 P-256 key that signs service-account tokens.
    pub service_account_key_file: PathBuf,
    pub issuer: String,
    /// The address clients should use (discovery, the `kubernetes` service's endpoints).
    pub advertise_address: IpAddr,
    pub service_cidr: String,
    pub node_port_range: (u16, u16),
    /// Largest request body (upstream: 3 MiB).
    pub max_body: usize,
    /// Concurrent requests that are not long-running: upstream's --max-requests-inflight and
    /// --max-mutating-requests-inflight, summed and split among the priority levels (see flowcontrol).
    pub max_inflight: usize,
    pub max_mutating_inflight: usize,
    /// How long a request that is not long-running may take to arrive (upstream's --request-timeout); a
    /// quarter of it bounds a wait in the priority queues.
    pub request_timeout: std::time::Duration,
    /// How often old history is compacted.
    pub compaction_interval: std::time::Duration,
    /// How long an event is kept after its last write (upstream's --event-ttl).
    pub event_ttl: std::time::Duration,
    /// Whether the apiserver cascades deletions along owner references itself: only when no
    /// kube-controller-manager (basalt's controllers) runs its garbage collector, so that the two never
    /// race over the same finalizers.
    pub garbage_collector: bool,
    /// PEM certificate and key the apiserver presents to kubelets (logs, exec, attach, port-forward).
    pub kubelet_client_cert: Option<(PathBuf, PathBuf)>,
    /// More metrics served at `/metrics` (what runs beside the apiserver in the same process: the
    /// controllers), so no second listener is needed for them.
    pub extra_metrics: Option<fn() -> String>,
}

impl Config {
    pub fn new(bind: std::net::SocketAddr, dir: &std::path::Path) -> Config {
        Config {
            bind,
            cert_file: dir.join("serving.crt"),
            key_file: dir.join("serving.key"),
            client_ca_file: dir.join("client-ca.crt"),
            service_account_key_file: dir.join("service-account.key"),
            issuer: crate::auth::tokens::API_AUDIENCE.to_string(),
            advertise_address: bind.ip(),
            service_cidr: "10.43.0.0/16".into(),
            node_port_range: (30000, 32767),
            max_body: 3 * 1024 * 1024,
            max_inflight: 400,
            max_mutating_inflight: 200,
            request_timeout: std::time::Duration::from_secs(60),
            compaction_interval: std::time::Duration::from_secs(300),
            event_ttl: std::time::Duration::from_secs(3600),
            garbage_collector: true,
            kubelet_client_cert: None,
            extra_metrics: None,
        }
    }
}

/// Informers of the small collections the authorizer and admission read.
pub struct Informers {
    pub namespaces: Arc<Informer>,
    pub service_accounts: Arc<Informer>,
    pub priority_classes: Arc<Informer>,
    pub limit_ranges: Arc<Informer>,
    pub resource_quotas: Arc<Informer>,
    pub storage_classes: Arc<Informer>,
    pub crds: Arc<Informer>,
}

impl Informers {
    /// The informer that mirrors `res`, if any, so writes can wait for it.
    pub fn for_prefix<'a>(&'a self, rbac: &'a Rbac, prefix: &str) -> Option<&'a Arc<Informer>> {
        [
            &self.namespaces,
            &self.service_accounts,
            &self.priority_classes,
            &self.limit_ranges,
            &self.resource_quotas,
            &self.storage_classes,
            &self.crds,
            &rbac.roles,
            &rbac.cluster_roles,
            &rbac.role_bindings,
            &rbac.cluster_role_bindings,
        ]
        .into_iter()
        .find(|i| prefix.starts_with(&i.prefix))
    }
}

pub struct State {
    pub config: Config,
    pub objects: Objects,
    pub registry: Registry,
    pub signer: Arc<Signer>,
    pub authn: Authenticator,
    pub rbac: Rbac,
    pub informers: Informers,
    pub watches: Watches,
    pub metrics: Metrics,
    pub ready: AtomicBool,
    pub backend: &'static str,
    pub flow: crate::flowcontrol::FlowControl,
    pub openapi: crate::openapi::Cache,
    pub cachers: crate::cacher::Cachers,
    /// The cluster CA, PEM (published to every namespace as `kube-root-ca.crt`).
    pub ca_pem: String,
    pub kubelet_client: Option<crate::kubelet::KubeletClient>,
}

impl State {
    /// Changes whenever the set of served resources does (a CRD came or went).
    pub fn registry_generation(&self) -> u64 {
        self.registry.generation()
    }
}

/// One API call on a resource.
pub struct Call<'a> {
    pub state: &'a Arc<State>,
    pub user: &'a UserInfo,
    pub req: &'a ResourceRequest,
    pub res: Arc<Resource>,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
}

impl Call<'_> {
    /// The namespace the call addresses, for namespaced resources.
    pub fn namespace(&self) -> Option<&str> {
        if self.res.namespaced {
            self.req.namespace.as_deref()
        } else {
            None
        }
    }

    pub fn name(&self) -> &str {
        self.req.name.as_deref().unwrap_or_default()
    }

    /// The field manager of a write: the request's, or the client's user-agent up to its first `/`.
    pub fn manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        self.headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
            .unwrap_or_else(|| "unknown".into())
    }
}
