//! The Kubernetes apiserver of `basalt server`.
//!
//! - [`server`]: TLS and HTTP/2 serving, authentication, authorization, dispatch.
//! - [`flowcontrol`]: seats and fair queues per client class (upstream's priority levels).
//! - [`rest`], [`watch`], [`subresources`]: the verbs on resources.
//! - [`discovery`], [`openapi`]: what clients learn the API from.
//! - [`registry`], [`kinds`], [`crd`]: the served resources and each kind's behaviour.
//! - [`auth`]: client certificates, service-account and bootstrap tokens, RBAC, the Node authorizer.
//! - [`admission`]: upstream's default admission plugins.
//! - [`objects`], [`informer`]: objects in the store, and in-memory copies of small collections.
//! - [`bootstrap`], [`lifecycle`]: the objects a cluster starts with, and what the server keeps doing.

pub mod admission;
pub mod auth;
pub mod bootstrap;
pub mod cacher;
pub mod clock;
pub mod crd;
pub mod discovery;
pub mod errors;
pub mod flowcontrol;
pub mod http;
pub mod informer;
pub mod internal;
pub mod jsonpath;
pub mod kinds;
pub mod kubelet;
pub mod lifecycle;
pub mod meta;
pub mod metrics;
pub mod objects;
pub mod openapi;
mod openapi_names;
pub mod registry;
pub mod render;
pub mod request;
pub mod rest;
pub mod server;
pub mod state;
pub mod subresources;
pub mod version;
pub mod watch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use basalt_store::Store;

pub use state::{Config, State};

/// A running apiserver.
pub struct ApiServer {
    pub state: Arc<State>,
    pub addr: std::net::SocketAddr,
}

fn informer(
    store: &Arc<dyn Store>,
    registry: &registry::Registry,
    group: &str,
    plural: &str,
) -> Arc<informer::Informer> {
    let res = registry
        .all()
        .into_iter()
        .find(|r| r.group == group && r.plural == plural)
        .expect("informed resources are served");
    informer::Informer::start(store.clone(), res.prefix(None))
}

impl ApiServer {
    /// Binds, bootstraps the default objects, and serves until the runtime stops.
    pub async fn start(config: Config, store: Arc<dyn Store>) -> anyhow::Result<ApiServer> {
        let tls = server::tls_config(&config)?;
        let sa_key = std::fs::read(&config.service_account_key_file)
            .with_context(|| format!("read {}", config.service_account_key_file.display()))?;
        let pkcs8 = rustls_pemfile::private_key(&mut &sa_key[..])?
            .context("no private key in the service-account key file")?;
        let signer = Arc::new(auth::tokens::Signer::new(
            pkcs8.secret_der(),
            &config.issuer,
        )?);
        let ca_pem = std::fs::read_to_string(&config.client_ca_file)
            .with_context(|| format!("read {}", config.client_ca_file.display()))?;
        let registry = registry::Registry::builtin();
        let objects = objects::Objects {
            store: store.clone(),
        };
        let rbac = auth::rbac::Rbac {
            roles: informer(&store, &registry, "rbac.authorization.k8s.io", "roles"),
            cluster_roles: informer(
                &store,
                &registry,
                "rbac.authorization.k8s.io",
                "clusterroles",
            ),
            role_bindings: informer(
                &store,
                &registry,
                "rbac.authorization.k8s.io",
                "rolebindings",
            ),
            cluster_role_bindings: informer(
                &store,
                &registry,
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
            ),
        };
        let informers = state::Informers {
            namespaces: informer(&store, &registry, "", "namespaces"),
            service_accounts: informer(&store, &registry, "", "serviceaccounts"),
            priority_classes: informer(&store, &registry, "scheduling.k8s.io", "priorityclasses"),
            limit_ranges: informer(&store, &registry, "", "limitranges"),
            resource_quotas: informer(&store, &registry, "", "resourcequotas"),
            storage_classes: informer(&store, &registry, "storage.k8s.io", "storageclasses"),
            crds: informer(
                &store,
                &registry,
                "apiextensions.k8s.io",
                "customresourcedefinitions",
            ),
        };
        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("listen on {}", config.bind))?;
        let addr = listener.local_addr()?;
        let mut config = config;
        config.bind = addr;
        let kubelet_client = match &config.kubelet_client_cert {
            Some((cert, key)) => Some(
                kubelet::KubeletClient::new(
                    &std::fs::read_to_string(cert)
                        .with_context(|| format!("read {}", cert.display()))?,
                    &std::fs::read_to_string(key)
                        .with_context(|| format!("read {}", key.display()))?,
                )
                .context("the kubelet client certificate")?,
            ),
            None => None,
        };
        let state = Arc::new(State {
            kubelet_client,
            authn: auth::authn::Authenticator {
                signer: signer.clone(),
                audiences: vec![config.issuer.clone()],
                objects: objects.clone(),
            },
            flow: flowcontrol::FlowControl::new(
                config.max_inflight + config.max_mutating_inflight,
                config.request_timeout / 4,
            ),
            config,
            objects,
            registry,
            signer,
            rbac,
            informers,
            watches: Default::default(),
            metrics: Default::default(),
            ready: AtomicBool::new(false),
            backend: store.backend(),
            openapi: Default::default(),
            cachers: Default::default(),
            ca_pem,
        });
        for i in [
            &state.rbac.roles,
            &state.rbac.cluster_roles,
            &state.rbac.role_bindings,
            &state.rbac.cluster_role_bindings,
            &state.informers.namespaces,
            &state.informers.crds,
        ] {
            i.ready().await;
        }
        tokio::spawn(server::serve(state.clone(), listener, tls));
        bootstrap::run(&state)
            .await
            .map_err(|e| anyhow::anyhow!("bootstrap: {}", e.message))?;
        tokio::spawn(crd::run(state.clone()));
        lifecycle::spawn(state.clone());
        state.ready.store(true, Ordering::Release);
        tracing::info!(%addr, backend = state.backend, "apiserver serving");
        Ok(ApiServer { state, addr })
    }
}
