//! The objects every cluster starts with: its namespaces, upstream's RBAC policy, the system priority
//! classes, and the `kubernetes` service pointing at this server. Written at each start when missing (and
//! the default roles updated when they changed, unless an operator turned that off), as kube-apiserver's
//! post-start hooks do.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::auth::policy;
use crate::errors::ApiResult;
use crate::internal::Internal;
use crate::meta;
use crate::state::State;

pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn run(state: &Arc<State>) -> ApiResult<()> {
    let internal = Internal::new(state.clone());
    let namespaces = internal.resource("", "namespaces");
    for ns in SYSTEM_NAMESPACES {
        internal
            .ensure(
                &namespaces,
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .await?;
    }
    state
        .informers
        .namespaces
        .wait_for(state.objects.store.current_revision().await?)
        .await;
    for ns in SYSTEM_NAMESPACES {
        crate::lifecycle::populate_namespace(state, ns).await;
    }
    // Namespaces made before a crash between their creation and their population.
    for ns in state.informers.namespaces.items() {
        if !meta::is_deleting(&ns) {
            crate::lifecycle::populate_namespace(state, meta::name(&ns)).await;
        }
    }
    let roles = internal.resource("rbac.authorization.k8s.io", "clusterroles");
    for r in policy::cluster_roles() {
        reconcile(&internal, &roles, r, &["rules", "aggregationRule"]).await?;
    }
    let bindings = internal.resource("rbac.authorization.k8s.io", "clusterrolebindings");
    for b in policy::cluster_role_bindings() {
        reconcile(&internal, &bindings, b, &["subjects"]).await?;
    }
    let (roles, bindings) = (
        internal.resource("rbac.authorization.k8s.io", "roles"),
        internal.resource("rbac.authorization.k8s.io", "rolebindings"),
    );
    for (r, b) in policy::namespaced_roles() {
        reconcile(&internal, &roles, r, &["rules"]).await?;
        reconcile(&internal, &bindings, b, &["subjects"]).await?;
    }
    let classes = internal.resource("scheduling.k8s.io", "priorityclasses");
    for c in policy::priority_classes() {
        internal.ensure(&classes, &c).await?;
    }
    kubernetes_service(state, &internal).await
}

/// Creates a default object, or brings the listed fields back to the default when the object still
/// allows it (`rbac.authorization.kubernetes.io/autoupdate`).
async fn reconcile(
    internal: &Internal,
    res: &Arc<crate::registry::Resource>,
    wanted: Value,
    fields: &[&str],
) -> ApiResult<()> {
    let name = meta::name(&wanted).to_string();
    let ns = Some(meta::namespace(&wanted)).filter(|n| !n.is_empty());
    match internal.state.objects.get(res, ns, &name).await? {
        None => {
            internal.ensure(res, &wanted).await?;
        }
        Some((current, _)) => {
            if meta::annotation(&current, "rbac.authorization.kubernetes.io/autoupdate")
                == Some("false")
            {
                return Ok(());
            }
            // Labels become a superset of the defaults' (they carry the aggregation of roles).
            let mut labels = current
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let before = labels.len();
            if let Some(w) = wanted
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
            {
                for (k, v) in w {
                    labels.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
            let differs =
                labels.len() != before || fields.iter().any(|f| current.get(*f) != wanted.get(*f));
            if differs {
                let mut updated = current.clone();
                updated["metadata"]["labels"] = Value::Object(labels);
                for f in fields {
                    match wanted.get(*f) {
                        Some(v) => updated[*f] = v.clone(),
                        None => {
                            updated.as_object_mut().map(|o| o.remove(*f));
                        }
                    }
                }
                internal.update(res, &updated).await?;
            }
        }
    }
    Ok(())
}

/// `default/kubernetes`: the first service IP, port 443 → this server, with its Endpoints and
/// EndpointSlice.
async fn kubernetes_service(state: &Arc<State>, internal: &Internal) -> ApiResult<()> {
    let ip = crate::admission::first_service_ip(&state.config.service_cidr).to_string();
    let port = state.config.bind.port();
    let address = state.config.advertise_address.to_string();
    let services = internal.resource("", "services");
    // Looked up first: creating it again would fail in admission (its cluster IP is taken, by itself)
    // before the create could answer AlreadyExists — on every restart, and on a second server.
    let exists = state
        .objects
        .get(&services, Some("default"), "kubernetes")
        .await?
        .is_some();
    if !exists {
        internal
            .ensure(&services, &json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}], "sessionAffinity": "None", "type": "ClusterIP"},
            }))
            .await?;
    }
    let endpoints = internal.resource("", "endpoints");
    let ep = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    match state
        .objects
        .get(&endpoints, Some("default"), "kubernetes")
        .await?
    {
        None => {
            internal.ensure(&endpoints, &ep).await?;
        }
        Some((cur, _)) if cur.get("subsets") != ep.get("subsets") => {
            let mut updated = cur.clone();
            updated["subsets"] = ep["subsets"].clone();
            internal.update(&endpoints, &updated).await?;
        }
        _ => {}
    }
    let slices = internal.resource("discovery.k8s.io", "endpointslices");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    match state
        .objects
        .get(&slices, Some("default"), "kubernetes")
        .await?
    {
        None => {
            internal.ensure(&slices, &slice).await?;
        }
        Some((cur, _))
            if cur.get("endpoints") != slice.get("endpoints")
                || cur.get("ports") != slice.get("ports") =>
        {
            let mut updated = cur.clone();
            updated["endpoints"] = slice["endpoints"].clone();
            updated["ports"] = slice["ports"].clone();
            internal.update(&slices, &updated).await?;
        }
        _ => {}
    }
    Ok(())
}
