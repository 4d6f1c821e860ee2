//! Admission: upstream's default plugins that a cluster needs, in their order — NamespaceLifecycle,
//! LimitRanger, ServiceAccount, DefaultTolerationSeconds, Priority, DefaultStorageClass, ResourceQuota —
//! plus the service IP and node port allocation that kube-apiserver's service registry does, the
//! certificate request's requester, and RBAC's escalation prevention.

use std::net::Ipv4Addr;

use basalt_apimachinery::quantity::Quantity;
use basalt_store::StoreError;
use serde_json::{json, Value};

use crate::errors::{ApiError, ApiResult};
use crate::kinds::default_at;
use crate::kinds::storage::DEFAULT_CLASS_ANNOTATION;
use crate::meta;
use crate::state::Call;

const PROTECTED_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

fn is(call: &Call, group: &str, plural: &str) -> bool {
    call.res.group == group && call.res.plural == plural
}

fn forbidden(call: &Call, name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::forbidden(&call.res.group, &call.res.plural, name, why)
}

/// Mutating admission of a create (`old` = None) or an update.
pub async fn mutate(call: &Call<'_>, obj: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    if old.is_some() || call.req.subresource.is_some() {
        return Ok(());
    }
    if is(call, "", "pods") {
        limit_ranger_defaults(call, obj);
        service_account(call, obj).await?;
        default_tolerations(obj);
        priority(call, obj)?;
    }
    if is(call, "", "persistentvolumeclaims") && obj.pointer("/spec/storageClassName").is_none() {
        let default = call
            .state
            .informers
            .storage_classes
            .items()
            .into_iter()
            .filter(|c| meta::annotation(c, DEFAULT_CLASS_ANNOTATION) == Some("true"))
            .max_by(|a, b| {
                meta::str_at(a, "/metadata/creationTimestamp")
                    .cmp(&meta::str_at(b, "/metadata/creationTimestamp"))
            });
        if let Some(c) = default {
            obj["spec"]["storageClassName"] = json!(meta::name(&c));
        }
    }
    if is(call, "certificates.k8s.io", "certificatesigningrequests") {
        let u = call.user;
        obj["spec"]["username"] = json!(u.name);
        obj["spec"]["groups"] = json!(u.groups);
        if !u.uid.is_empty() {
            obj["spec"]["uid"] = json!(u.uid);
        }
        if !u.extra.is_empty() {
            obj["spec"]["extra"] = json!(u.extra);
        }
        default_at(
            obj,
            "/spec/usages",
            json!(["digital signature", "key encipherment"]),
        );
    }
    Ok(())
}

/// NodeRestriction: a kubelet writes only its own Node, and only mirror pods bound to itself.
fn node_restriction(call: &Call, obj: &Value) -> ApiResult<()> {
    let Some(node) = crate::auth::node::node_name(call.user) else {
        return Ok(());
    };
    if is(call, "", "nodes") && meta::name(obj) != node {
        return Err(forbidden(
            call,
            meta::name(obj),
            format!(
                "node {node:?} is not allowed to modify node {:?}",
                meta::name(obj)
            ),
        ));
    }
    if is(call, "", "pods") && call.req.subresource.is_none() {
        if meta::annotation(obj, "kubernetes.io/config.mirror").is_none() {
            return Err(forbidden(call, meta::name(obj), "pod does not have \"kubernetes.io/config.mirror\" annotation, node can only create mirror pods"));
        }
        if obj.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node) {
            return Err(forbidden(
                call,
                meta::name(obj),
                format!("node {node:?} can only create pods with spec.nodeName set to itself"),
            ));
        }
    }
    Ok(())
}

/// CertificateApproval and CertificateSigning: approving, denying or issuing a request takes the verb
/// `approve` or `sign` on the resource `signers` named as the request's signer, or its whole domain
/// (`example.com/*`), as upstream's admission plugins check.
pub async fn signer_permits(call: &Call<'_>, verb: &str, csr: &Value) -> ApiResult<()> {
    let signer = meta::str_at(csr, "/spec/signerName").unwrap_or_default();
    let domain = signer.split_once('/').map(|(d, _)| format!("{d}/*"));
    for name in std::iter::once(signer.to_string()).chain(domain) {
        let a = crate::auth::Attributes {
            verb: verb.into(),
            resource: "signers".into(),
            subresource: String::new(),
            group: "certificates.k8s.io".into(),
            namespace: String::new(),
            name,
            path: None,
        };
        if crate::server::authorize(call.state, call.user, &a).await == crate::auth::Decision::Allow
        {
            return Ok(());
        }
    }
    Err(forbidden(
        call,
        meta::name(csr),
        format!("user not permitted to {verb} requests with signerName {signer:?}"),
    ))
}

/// CertificateSubjectRestriction: nobody gets a `system:masters` client certificate through a request
/// (that group bypasses authorization; its certificates are made by hand from the CA).
fn certificate_subject_restriction(call: &Call, csr: &Value) -> ApiResult<()> {
    let signer = "kubernetes.io/kube-apiserver-client";
    if meta::str_at(csr, "/spec/signerName") != Some(signer) {
        return Ok(());
    }
    let orgs = meta::str_at(csr, "/spec/request")
        .map(crate::kinds::misc::request_organizations)
        .and_then(Result::ok)
        .unwrap_or_default();
    if orgs.iter().any(|o| o == crate::auth::MASTERS) {
        return Err(forbidden(
            call,
            meta::name(csr),
            format!("use of {signer} signer with system:masters group is not allowed"),
        ));
    }
    Ok(())
}

/// Validating admission.
pub async fn validate(call: &Call<'_>, obj: &Value, old: Option<&Value>) -> ApiResult<()> {
    node_restriction(call, obj)?;
    if is(call, "certificates.k8s.io", "certificatesigningrequests")
        && call.req.subresource.as_deref() == Some("status")
    {
        let issued = |o: Option<&Value>| o.and_then(|o| o.pointer("/status/certificate")).cloned();
        if issued(Some(obj)).is_some_and(|c| c != json!("")) && issued(Some(obj)) != issued(old) {
            signer_permits(call, "sign", obj).await?;
        }
    }
    if call.req.subresource.is_none() {
        crate::auth::escalation::check(call.state, call.user, &call.res.plural, obj)?;
    }
    if old.is_none() && is(call, "certificates.k8s.io", "certificatesigningrequests") {
        certificate_subject_restriction(call, obj)?;
    }
    if old.is_none() {
        namespace_lifecycle(call, obj)?;
        if is(call, "", "pods") {
            limit_ranger_check(call, obj)?;
        }
        resource_quota(call, obj).await?;
    }
    Ok(())
}

pub async fn validate_delete(call: &Call<'_>, obj: &Value) -> ApiResult<()> {
    if is(call, "", "namespaces") && PROTECTED_NAMESPACES.contains(&meta::name(obj)) {
        return Err(forbidden(
            call,
            meta::name(obj),
            "this namespace may not be deleted",
        ));
    }
    Ok(())
}

fn namespace_lifecycle(call: &Call, obj: &Value) -> ApiResult<()> {
    let Some(ns) = call.namespace() else {
        return Ok(());
    };
    let key = format!("{}{ns}", call.state.informers.namespaces.prefix);
    match call.state.informers.namespaces.get(&key) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n)
            if meta::is_deleting(&n)
                || n.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") =>
        {
            if is(call, "", "events") || is(call, "events.k8s.io", "events") {
                return Ok(());
            }
            Err(forbidden(
                call,
                meta::name(obj),
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ))
        }
        Some(_) => Ok(()),
    }
}

/// The ServiceAccount plugin: the default account, and its token mounted through a projected volume
/// (`kube-api-access-xxxxx`) unless the pod or the account opts out.
async fn service_account(call: &Call<'_>, pod: &mut Value) -> ApiResult<()> {
    let ns = meta::namespace(pod).to_string();
    if pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        let legacy = pod
            .pointer("/spec/serviceAccount")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        pod["spec"]["serviceAccountName"] = json!(legacy);
    }
    let sa_name = pod["spec"]["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    pod["spec"]["serviceAccount"] = json!(sa_name);
    // Mirror pods (created by kubelets for static pods) take no account.
    if meta::annotation(pod, "kubernetes.io/config.mirror").is_some() {
        return Ok(());
    }
    let key = format!(
        "{}{ns}/{sa_name}",
        call.state.informers.service_accounts.prefix
    );
    let sa = match call.state.informers.service_accounts.get(&key) {
        Some(sa) => sa,
        None => {
            // Just created with its namespace? Ask the store before refusing.
            match call.state.objects.store.get(&key).await? {
                Some(kv) => std::sync::Arc::new(crate::objects::decode(&kv)?),
                None => {
                    return Err(forbidden(call, meta::name(pod), format!(
                        "error looking up service account {ns}/{sa_name}: serviceaccount {sa_name:?} not found"
                    )))
                }
            }
        }
    };
    let pod_opt = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool);
    let sa_opt = sa
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool);
    if pod_opt == Some(false) || (pod_opt.is_none() && sa_opt == Some(false)) {
        return Ok(());
    }
    const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let has_mount = |c: &Value| {
        c.get("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|m| {
                m.iter()
                    .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT))
            })
    };
    let volume = format!("kube-api-access-{}", suffix());
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        if let Some(cs) = pod
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        {
            for c in cs {
                if !has_mount(c) {
                    needed = true;
                    default_at(c, "/volumeMounts", json!([]));
                    c["volumeMounts"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT}));
                }
            }
        }
    }
    if needed {
        default_at(pod, "/spec/volumes", json!([]));
        pod["spec"]["volumes"].as_array_mut().unwrap().push(json!({
            "name": volume,
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]
            }
        }));
    }
    Ok(())
}

fn suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// DefaultTolerationSeconds: pods tolerate not-ready and unreachable nodes for 300 s unless they say.
fn default_tolerations(pod: &mut Value) {
    default_at(pod, "/spec/tolerations", json!([]));
    let tolerations = pod["spec"]["tolerations"].as_array_mut().expect("array");
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tolerations.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str);
            let e = t.get("effect").and_then(Value::as_str);
            (k == Some(key)
                || (k.is_none() && t.get("operator").and_then(Value::as_str) == Some("Exists")))
                && (e.is_none() || e == Some("NoExecute") || e == Some(""))
        });
        if !covered {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// Priority: the class's value (or the global default's, or 0) and its preemption policy.
fn priority(call: &Call, pod: &mut Value) -> ApiResult<()> {
    let classes = call.state.informers.priority_classes.items();
    let name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let class = if name.is_empty() {
        classes
            .iter()
            .find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
            .cloned()
    } else {
        match classes.iter().find(|c| meta::name(c) == name) {
            Some(c) => Some(c.clone()),
            None => {
                return Err(forbidden(
                    call,
                    meta::name(pod),
                    format!("no PriorityClass with name {name} was found"),
                ))
            }
        }
    };
    let (value, policy) = match &class {
        Some(c) => (
            c.get("value").and_then(Value::as_i64).unwrap_or(0),
            c.get("preemptionPolicy")
                .and_then(Value::as_str)
                .unwrap_or("PreemptLowerPriority")
                .to_string(),
        ),
        None => (0, "PreemptLowerPriority".to_string()),
    };
    if let Some(p) = pod.pointer("/spec/priority").and_then(Value::as_i64) {
        if p != value {
            return Err(forbidden(call, meta::name(pod), "the integer value of priority must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name".replace("{value}", &value.to_string())));
        }
    }
    pod["spec"]["priority"] = json!(value);
    if !name.is_empty() || class.is_some() {
        if let Some(c) = &class {
            pod["spec"]["priorityClassName"] = json!(meta::name(c));
        }
    }
    default_at(pod, "/spec/preemptionPolicy", json!(policy));
    Ok(())
}

fn limit_ranges(call: &Call, ns: &str) -> Vec<Value> {
    call.state
        .informers
        .limit_ranges
        .items()
        .into_iter()
        .filter(|l| meta::namespace(l) == ns)
        .flat_map(|l| {
            l.pointer("/spec/limits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("Container"))
        .collect()
}

/// LimitRanger: default requests and limits of containers that state none.
fn limit_ranger_defaults(call: &Call, pod: &mut Value) {
    let ns = meta::namespace(pod).to_string();
    for item in limit_ranges(call, &ns) {
        for list in ["initContainers", "containers"] {
            let Some(cs) = pod
                .pointer_mut(&format!("/spec/{list}"))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for c in cs {
                for (section, from) in [("limits", "default"), ("requests", "defaultRequest")] {
                    for (res, q) in item
                        .get(from)
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        default_at(c, &format!("/resources/{section}/{res}"), q.clone());
                    }
                }
                // A request defaults to the limit when only the limit is known.
                if let Some(limits) = c
                    .pointer("/resources/limits")
                    .and_then(Value::as_object)
                    .cloned()
                {
                    for (res, q) in limits {
                        default_at(c, &format!("/resources/requests/{res}"), q);
                    }
                }
            }
        }
    }
}

fn q(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

/// LimitRanger: min and max per container.
fn limit_ranger_check(call: &Call, pod: &Value) -> ApiResult<()> {
    let ns = meta::namespace(pod);
    for item in limit_ranges(call, ns) {
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (res, min) in item
                .get("min")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let req = c.pointer(&format!("/resources/requests/{res}")).and_then(q);
                if let (Some(min), Some(req)) = (q(min), req) {
                    if req < min {
                        return Err(forbidden(
                            call,
                            meta::name(pod),
                            format!(
                                "minimum {res} usage per Container is {min}, but request is {req}"
                            ),
                        ));
                    }
                }
            }
            for (res, max) in item
                .get("max")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let lim = c.pointer(&format!("/resources/limits/{res}")).and_then(q);
                match (q(max), lim) {
                    (Some(max), Some(lim)) if lim > max => {
                        return Err(forbidden(
                            call,
                            meta::name(pod),
                            format!(
                                "maximum {res} usage per Container is {max}, but limit is {lim}"
                            ),
                        ));
                    }
                    (Some(max), None) => {
                        return Err(forbidden(call, meta::name(pod), format!("maximum {res} usage per Container is {max}.  No limit is specified")));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// What one new object of this kind adds to each quota resource.
fn usage_of(call: &Call, obj: &Value) -> Vec<(String, Quantity)> {
    basalt_apimachinery::quota::usage(&call.res.group, &call.res.plural, obj)
}

async fn resource_quota(call: &Call<'_>, obj: &Value) -> ApiResult<()> {
    let Some(ns) = call.namespace() else {
        return Ok(());
    };
    let quotas: Vec<_> = call
        .state
        .informers
        .resource_quotas
        .items()
        .into_iter()
        .filter(|q| meta::namespace(q) == ns)
        .collect();
    if quotas.is_empty() {
        return Ok(());
    }
    let adds = usage_of(call, obj);
    let relevant: Vec<_> = quotas
        .iter()
        .filter(|quota| {
            quota
                .pointer("/spec/hard")
                .and_then(Value::as_object)
                .is_some_and(|h| adds.iter().any(|(k, _)| h.contains_key(k)))
        })
        .collect();
    if relevant.is_empty() {
        return Ok(());
    }
    // Current usage: the sum over the namespace's existing objects of this kind.
    let (existing, _) = call.state.objects.list_all(&call.res, Some(ns)).await?;
    let mut used: Vec<(String, Quantity)> = Vec::new();
    for o in existing
        .iter()
        .filter(|o| basalt_apimachinery::quota::counts(o))
    {
        basalt_apimachinery::quota::add(&mut used, usage_of(call, o));
    }
    for quota in relevant {
        let hard = quota
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut over = Vec::new();
        for (k, add) in &adds {
            let Some(limit) = hard.get(k).and_then(q) else {
                continue;
            };
            let now = used
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| *v)
                .unwrap_or_default();
            if now.add(add) > limit {
                over.push((k.clone(), *add, now, limit));
            }
        }
        if !over.is_empty() {
            type Over = (String, Quantity, Quantity, Quantity);
            let fmt =
                |f: &dyn Fn(&Over) -> String| over.iter().map(f).collect::<Vec<_>>().join(",");
            return Err(forbidden(
                call,
                meta::name(obj),
                format!(
                    "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                    meta::name(quota),
                    fmt(&|o| format!("{}={}", o.0, o.1)),
                    fmt(&|o| format!("{}={}", o.0, o.2)),
                    fmt(&|o| format!("{}={}", o.0, o.3)),
                ),
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------- service allocation

fn cidr(call: &Call) -> (u32, u32) {
    let (base, bits) = call
        .state
        .config
        .service_cidr
        .split_once('/')
        .unwrap_or(("10.43.0.0", "16"));
    let base: Ipv4Addr = base.parse().unwrap_or(Ipv4Addr::new(10, 43, 0, 0));
    let bits: u32 = bits.parse().unwrap_or(16);
    let size = 1u32 << (32 - bits.min(31));
    (u32::from(base), size)
}

/// The address of the `kubernetes` service: the first of the range.
pub fn first_service_ip(service_cidr: &str) -> Ipv4Addr {
    let (base, bits) = service_cidr.split_once('/').unwrap_or(("10.43.0.0", "16"));
    let _ = bits;
    let base: Ipv4Addr = base.parse().unwrap_or(Ipv4Addr::new(10, 43, 0, 0));
    Ipv4Addr::from(u32::from(base) + 1)
}

async fn claim(call: &Call<'_>, key: &str) -> ApiResult<bool> {
    match call.state.objects.store.create(key, b"{}".to_vec()).await {
        Ok(_) => Ok(true),
        Err(StoreError::AlreadyExists(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn release(call: &Call<'_>, key: &str) {
    let _ = call.state.objects.store.delete(key, None).await;
}

fn ip_key(ip: &str) -> String {
    format!("/registry/core/ranges/serviceips/{ip}")
}

fn port_key(p: i64) -> String {
    format!("/registry/core/ranges/servicenodeports/{p}")
}

/// Allocations a new object needs before it is stored: a service's cluster IP and node ports.
pub async fn before_store(call: &Call<'_>, obj: &mut Value) -> ApiResult<()> {
    if is(call, "", "services") {
        allocate_service(call, obj).await?;
    }
    Ok(())
}

/// Allocates a service's cluster IP and node ports into `svc` (claims in the store, so that servers
/// sharing one etcd never hand out an address twice).
pub async fn allocate_service(call: &Call<'_>, svc: &mut Value) -> ApiResult<()> {
    let ty = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if ty != "ExternalName" {
        let requested = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if requested != "None" {
            let (base, size) = cidr(call);
            let ip = if !requested.is_empty() {
                let parsed: Ipv4Addr = requested.parse().map_err(|_| {
                    ApiError::invalid(
                        "",
                        "Service",
                        meta::name(svc),
                        vec![basalt_apimachinery::validate::FieldError::invalid(
                            "spec.clusterIPs[0]",
                            json!(requested),
                            "must be a valid IP address",
                        )],
                    )
                })?;
                let n = u32::from(parsed);
                if n <= base || n >= base + size - 1 {
                    return Err(ApiError::invalid("", "Service", meta::name(svc), vec![basalt_apimachinery::validate::FieldError::invalid("spec.clusterIPs[0]", json!(requested), format!("failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}", call.state.config.service_cidr))]));
                }
                if !claim(call, &ip_key(&requested)).await? {
                    return Err(ApiError::invalid("", "Service", meta::name(svc), vec![basalt_apimachinery::validate::FieldError::invalid("spec.clusterIPs[0]", json!(requested), format!("failed to allocate IP {requested}: provided IP is already allocated"))]));
                }
                requested
            } else {
                let mut found = None;
                for _ in 0..64 {
                    // .0 is the network, .1 the kubernetes service, the last the broadcast.
                    let n = base + rand::random_range(2..size - 1);
                    let ip = Ipv4Addr::from(n).to_string();
                    if claim(call, &ip_key(&ip)).await? {
                        found = Some(ip);
                        break;
                    }
                }
                found.ok_or_else(|| {
                    ApiError::internal("failed to allocate a serviceIP: range is full")
                })?
            };
            svc["spec"]["clusterIP"] = json!(ip);
            svc["spec"]["clusterIPs"] = json!([ip]);
            default_at(svc, "/spec/ipFamilies", json!(["IPv4"]));
            default_at(svc, "/spec/ipFamilyPolicy", json!("SingleStack"));
        } else {
            svc["spec"]["clusterIPs"] = json!(["None"]);
            default_at(svc, "/spec/ipFamilies", json!(["IPv4"]));
            default_at(svc, "/spec/ipFamilyPolicy", json!("SingleStack"));
        }
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        let (lo, hi) = call.state.config.node_port_range;
        let n = svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map(Vec::len)
            .unwrap_or(0);
        for i in 0..n {
            let requested = svc["spec"]["ports"][i]
                .get("nodePort")
                .and_then(Value::as_i64);
            let port = match requested {
                Some(p) => {
                    if !claim(call, &port_key(p)).await? {
                        return Err(ApiError::invalid(
                            "",
                            "Service",
                            meta::name(svc),
                            vec![basalt_apimachinery::validate::FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                json!(p),
                                "provided port is already allocated".to_string(),
                            )],
                        ));
                    }
                    p
                }
                None => {
                    let mut found = None;
                    for _ in 0..64 {
                        let p = rand::random_range(lo as i64..=hi as i64);
                        if claim(call, &port_key(p)).await? {
                            found = Some(p);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        ApiError::internal("failed to allocate a nodePort: range is full")
                    })?
                }
            };
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
    }
    Ok(())
}

/// Gives back what a service held.
pub async fn release_service(call: &Call<'_>, svc: &Value) {
    if let Some(ip) = svc.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip != "None" && !ip.is_empty() {
            release(call, &ip_key(ip)).await;
        }
    }
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.get("nodePort").and_then(Value::as_i64) {
            release(call, &port_key(n)).await;
        }
    }
}

/// A create that failed after `before_store` gives its allocations back.
pub async fn store_failed(call: &Call<'_>, obj: &Value) {
    if is(call, "", "services") {
        release_service(call, obj).await;
    }
}

/// Cleanup after an object is gone.
pub async fn after_delete(call: &Call<'_>, gone: &Value) {
    if is(call, "", "services") {
        release_service(call, gone).await;
    }
}
