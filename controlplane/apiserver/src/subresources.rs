//! Subresources with their own shape: scale, binding, eviction, token, approval, finalize — and the
//! create-only reviews (token, access and rules reviews).

use basalt_apimachinery::selector::LabelSelector;
use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Value};

use crate::auth::{Attributes, Decision, UserInfo};
use crate::errors::{ApiError, ApiResult};
use crate::http::{content_type, decode_body};
use crate::rest::Outcome;
use crate::state::Call;
use crate::{jsonpath, meta};

// ------------------------------------------------------------------------------------------------ scale

fn replicas_paths(call: &Call) -> (String, String, Option<String>) {
    match call.res.custom.as_ref().and_then(|c| c.scale.clone()) {
        Some(s) => (s.spec_replicas, s.status_replicas, s.label_selector),
        None => (".spec.replicas".into(), ".status.replicas".into(), None),
    }
}

fn pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |acc, p| format!("{acc}/{p}"))
}

/// The Scale of an object.
pub fn scale_of(call: &Call, obj: &Value) -> Value {
    let (spec_path, status_path, selector_path) = replicas_paths(call);
    let selector = match selector_path {
        Some(p) => jsonpath::first(obj, &p)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        None => obj
            .pointer("/spec/selector")
            .and_then(|s| {
                if call.res.kind == "ReplicationController" {
                    Some(crate::kinds::table::map_text(Some(s)))
                } else {
                    LabelSelector::from_object(s).ok().map(|s| s.to_query())
                }
            })
            .unwrap_or_default(),
    };
    let mut status = json!({"replicas": jsonpath::first(obj, &status_path).and_then(|v| v.as_i64()).unwrap_or(0)});
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(obj),
            "namespace": meta::namespace(obj),
            "uid": meta::uid(obj),
            "resourceVersion": meta::resource_version(obj),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": jsonpath::first(obj, &spec_path).and_then(|v| v.as_i64()).unwrap_or(0)},
        "status": status,
    })
}

pub async fn get_scale(call: &Call<'_>) -> ApiResult<Value> {
    let (obj, _) = call
        .state
        .objects
        .must_get(&call.res, call.namespace(), call.name())
        .await?;
    Ok(scale_of(call, &obj))
}

/// PUT or PATCH of a Scale: the new replica count goes into the object.
pub async fn write_scale(call: &Call<'_>, body: &Bytes, patch: bool) -> ApiResult<Outcome> {
    let name = call.name().to_string();
    let (spec_path, _, _) = replicas_paths(call);
    let media = if patch {
        "json".to_string()
    } else {
        content_type(call.headers)
    };
    let (doc, _) = decode_body(body, &media)?;
    for _ in 0..16 {
        let (obj, rev) = call
            .state
            .objects
            .must_get(&call.res, call.namespace(), &name)
            .await?;
        let current = scale_of(call, &obj);
        let scale = if patch {
            let media = content_type(call.headers);
            match media.as_str() {
                "application/json-patch+json" => {
                    let p: json_patch::Patch = serde_json::from_value(doc.clone())
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                    let mut s = current.clone();
                    json_patch::patch(&mut s, &p).map_err(|e| {
                        ApiError::new(422, crate::errors::Reason::Invalid, e.to_string())
                    })?;
                    s
                }
                _ => {
                    let mut s = current.clone();
                    json_patch::merge(&mut s, &doc);
                    s
                }
            }
        } else {
            doc.clone()
        };
        let replicas = scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                &name,
                vec![basalt_apimachinery::validate::FieldError::invalid(
                    "spec.replicas",
                    json!(replicas),
                    "must be greater than or equal to 0",
                )],
            ));
        }
        if let Some(rv) = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if rv != meta::resource_version(&obj) {
                return Err(ApiError::modified(&call.res.group, &call.res.plural, &name));
            }
        }
        let mut new = obj.clone();
        let ptr = pointer(&spec_path);
        crate::kinds::default_at(&mut new, &ptr, json!(replicas));
        if let Some(v) = new.pointer_mut(&ptr) {
            *v = json!(replicas);
        }
        let manager = call.manager();
        let prepared = crate::rest::prepare_update(call, &obj, new, None, Some(&manager)).await?;
        match call.state.objects.update(&call.res, &prepared, rev).await {
            Ok(written) => {
                return Ok(Outcome {
                    code: StatusCode::OK,
                    object: scale_of(call, &written),
                    warnings: vec![],
                })
            }
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
}

// ---------------------------------------------------------------------------------------------- binding

/// Binds a pod to a node (pods/binding, or the bindings resource): only a pod not yet bound.
pub async fn bind(call: &Call<'_>, body: &Bytes, pod_name: Option<&str>) -> ApiResult<Outcome> {
    let (binding, _) = decode_body(body, &content_type(call.headers))?;
    let name = pod_name
        .map(str::to_string)
        .unwrap_or_else(|| meta::name(&binding).to_string());
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &name,
            vec![basalt_apimachinery::validate::FieldError::required(
                "target.name",
                "",
            )],
        ));
    }
    let pods = call
        .state
        .registry
        .lookup("", "v1", "pods")
        .expect("pods are served");
    let ns = call.req.namespace.clone().unwrap_or_default();
    for _ in 0..16 {
        let (pod, rev) = call.state.objects.must_get(&pods, Some(&ns), &name).await?;
        if let Some(uid) = binding.pointer("/metadata/uid").and_then(Value::as_str) {
            if uid != meta::uid(&pod) {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    &name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&pod)
                    ),
                ));
            }
        }
        if meta::is_deleting(&pod) {
            return Err(ApiError::conflict(
                "",
                "pods",
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(n) = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                &name,
                format!("pod {name} is already assigned to node {n:?}"),
            ));
        }
        let mut new = pod.clone();
        new["spec"]["nodeName"] = json!(node);
        if let Some(a) = binding
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
        {
            for (k, v) in a {
                crate::kinds::default_at(&mut new, "/metadata/annotations", json!({}));
                new["metadata"]["annotations"][k] = v.clone();
            }
        }
        let mut conds = new
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conds.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::clock::now()}));
        new["status"]["conditions"] = json!(conds);
        match call.state.objects.update(&pods, &new, rev).await {
            Ok(_) => {
                return Ok(Outcome {
                    code: StatusCode::CREATED,
                    object: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                    warnings: vec![],
                })
            }
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(ApiError::modified("", "pods", &name))
}

// --------------------------------------------------------------------------------------------- eviction

/// Evicts a pod: deleted unless a PodDisruptionBudget that selects it allows no disruption (429).
pub async fn evict(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let (eviction, _) = decode_body(body, &content_type(call.headers))?;
    let name = call.name().to_string();
    let ns = call.req.namespace.clone().unwrap_or_default();
    let (pod, _) = call
        .state
        .objects
        .must_get(&call.res, Some(&ns), &name)
        .await?;
    let mut opts = crate::rest::DeleteOptions::default();
    if let Some(d) = eviction.get("deleteOptions") {
        opts.dry_run = d
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
        opts.grace = d.get("gracePeriodSeconds").and_then(Value::as_i64);
        opts.uid = d
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        opts.resource_version = d
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    // Upstream's canIgnorePDB: a pod that ended, never started or is already going costs no budget.
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    if !matches!(phase, Some("Succeeded" | "Failed" | "Pending")) && !meta::is_deleting(&pod) {
        charge_budget(
            call,
            &ns,
            &name,
            &pod,
            opts.dry_run || call.query.dry_run()?,
        )
        .await?;
    }
    crate::rest::delete_one(call, &name, &opts).await?;
    Ok(Outcome {
        code: StatusCode::CREATED,
        object: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        warnings: vec![],
    })
}

/// The eviction's cost to the pod's PodDisruptionBudget, as upstream's: refused (429) while the budget
/// allows no disruption or its status is older than its spec; else one disruption taken and the pod
/// recorded in `status.disruptedPods`, written against the budget's revision so that two evictions cannot
/// both spend the last one (a dry run only checks). A pod that is not Ready costs nothing under
/// `unhealthyPodEvictionPolicy: AlwaysAllow`, or under the default `IfHealthyBudget` while the budget has
/// its desired healthy pods. A pod under more than one budget cannot be evicted.
async fn charge_budget(
    call: &Call<'_>,
    ns: &str,
    name: &str,
    pod: &Value,
    dry_run: bool,
) -> ApiResult<()> {
    let res = call
        .state
        .registry
        .lookup("policy", "v1", "poddisruptionbudgets")
        .expect("pdbs are served");
    let (budgets, _) = call.state.objects.list_all(&res, Some(ns)).await?;
    // policy/v1: an empty selector matches every pod, a missing one none.
    let mut covering = budgets.into_iter().filter(|b| {
        b.pointer("/spec/selector")
            .and_then(|s| LabelSelector::from_object(s).ok())
            .is_some_and(|sel| sel.matches_object(pod))
    });
    let Some(budget) = covering.next() else {
        return Ok(());
    };
    if covering.next().is_some() {
        return Err(ApiError::internal(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        ));
    }
    let refuse = |why: String| {
        let mut e = ApiError::too_many_requests(
            "Cannot evict pod as it would violate the pod's disruption budget.".to_string(),
            10,
        );
        if let Some(d) = e.details.as_mut() {
            d.causes = vec![json!({"reason": "DisruptionBudget", "message": why})];
        }
        e
    };
    let ready = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    let budget_name = meta::name(&budget).to_string();
    // Written against the budget's revision; an eviction in between makes this one read it again.
    for _ in 0..5 {
        let (mut b, revision) = call
            .state
            .objects
            .must_get(&res, Some(ns), &budget_name)
            .await?;
        let int = |p: &str| b.pointer(p).and_then(Value::as_i64).unwrap_or(0);
        if !ready {
            let policy = b.pointer("/spec/unhealthyPodEvictionPolicy");
            let (current, desired) = (int("/status/currentHealthy"), int("/status/desiredHealthy"));
            if policy.and_then(Value::as_str) == Some("AlwaysAllow")
                || (current >= desired && desired > 0)
            {
                return Ok(());
            }
        }
        if int("/status/observedGeneration") < int("/metadata/generation") {
            return Err(refuse(format!(
                "The disruption budget {budget_name} is still being processed by the server."
            )));
        }
        let allowed = int("/status/disruptionsAllowed");
        if allowed <= 0 {
            return Err(refuse(format!(
                "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
                int("/status/desiredHealthy"),
                int("/status/currentHealthy")
            )));
        }
        if dry_run {
            return Ok(());
        }
        b["status"]["disruptionsAllowed"] = json!(allowed - 1);
        let disrupted = &mut b["status"]["disruptedPods"];
        if !disrupted.is_object() {
            *disrupted = json!({});
        }
        disrupted[name] = json!(crate::clock::now());
        match call.state.objects.update(&res, &b, revision).await {
            Ok(_) => return Ok(()),
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(refuse(format!(
        "The disruption budget {budget_name} kept changing while evicting; try again."
    )))
}

// ------------------------------------------------------------------------------------------------ token

/// TokenRequest: a bound service-account token.
pub async fn token(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let (req, _) = decode_body(body, &content_type(call.headers))?;
    let name = call.name().to_string();
    let ns = call.req.namespace.clone().unwrap_or_default();
    let (sa, _) = call
        .state
        .objects
        .must_get(&call.res, Some(&ns), &name)
        .await?;
    let mut audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = call.state.authn.audiences.clone();
    }
    let expiration = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if expiration < 600 {
        return Err(ApiError::invalid(
            "authentication.k8s.io",
            "TokenRequest",
            &name,
            vec![basalt_apimachinery::validate::FieldError::invalid(
                "spec.expirationSeconds",
                json!(expiration),
                "may not specify a duration less than 10 minutes",
            )],
        ));
    }
    let expiration = expiration.min(2 * 24 * 3600);
    let mut bound = None;
    if let Some(r) = req.pointer("/spec/boundObjectRef") {
        let kind = r
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let bname = r
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let plural = match kind.as_str() {
            "Pod" => "pods",
            "Secret" => "secrets",
            "Node" => "nodes",
            other => {
                return Err(ApiError::invalid(
                    "authentication.k8s.io",
                    "TokenRequest",
                    &name,
                    vec![basalt_apimachinery::validate::FieldError::not_supported(
                        "spec.boundObjectRef.kind",
                        json!(other),
                        &["Pod", "Secret", "Node"],
                    )],
                ))
            }
        };
        let res = call
            .state
            .registry
            .lookup("", "v1", plural)
            .expect("served");
        let target_ns = if plural == "nodes" {
            None
        } else {
            Some(ns.as_str())
        };
        let (obj, _) = call.state.objects.must_get(&res, target_ns, &bname).await?;
        if let Some(uid) = r.get("uid").and_then(Value::as_str) {
            if uid != meta::uid(&obj) {
                return Err(ApiError::conflict("", plural, &bname, format!("the UID in the bound object reference ({uid}) does not match the UID in record")));
            }
        }
        bound = Some((kind, bname, meta::uid(&obj).to_string()));
    }
    let (node, bound) = match bound {
        Some((k, n, u)) if k == "Node" => (Some((n, u)), None),
        other => (None, other),
    };
    let expires = crate::auth::tokens::now() + expiration as u64;
    let token = call.state.signer.issue(&crate::auth::tokens::Claims {
        namespace: ns.clone(),
        service_account: name.clone(),
        service_account_uid: meta::uid(&sa).to_string(),
        audiences: audiences.clone(),
        expires,
        bound,
        node,
    });
    let exp_time =
        crate::clock::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires));
    let mut out = req.clone();
    out["apiVersion"] = json!("authentication.k8s.io/v1");
    out["kind"] = json!("TokenRequest");
    out["metadata"] =
        json!({"name": name, "namespace": ns, "creationTimestamp": crate::clock::now()});
    out["spec"]["audiences"] = json!(audiences);
    out["spec"]["expirationSeconds"] = json!(expiration);
    out["status"] = json!({"token": token, "expirationTimestamp": exp_time});
    Ok(Outcome {
        code: StatusCode::CREATED,
        object: out,
        warnings: vec![],
    })
}

// ------------------------------------------------------------------------------------------ approval

/// CSR approval: only the Approved/Denied conditions change (the others, and the certificate, stay as
/// stored), at the resourceVersion the client read, by a user with `approve` on the request's signer.
pub async fn approval(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    use crate::kinds::misc::{conditions_where, APPROVAL_CONDITIONS};
    let (new_obj, _) = decode_body(body, &content_type(call.headers))?;
    let name = call.name().to_string();
    let wanted_rv = meta::str_at(&new_obj, "/metadata/resourceVersion")
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    let approval = conditions_where(&new_obj, |t| APPROVAL_CONDITIONS.contains(&t));
    let types: Vec<&str> = approval
        .iter()
        .filter_map(|c| c.get("type").and_then(Value::as_str))
        .collect();
    if types.contains(&"Approved") && types.contains(&"Denied") {
        return Err(ApiError::invalid(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &name,
            vec![basalt_apimachinery::validate::FieldError::invalid(
                "status.conditions",
                json!(approval),
                "Approved and Denied conditions are mutually exclusive",
            )],
        ));
    }
    let mut checked = false;
    for _ in 0..16 {
        let (old, rev) = call.state.objects.must_get(&call.res, None, &name).await?;
        if wanted_rv.as_deref().is_some_and(|w| {
            w != meta::str_at(&old, "/metadata/resourceVersion").unwrap_or_default()
        }) {
            return Err(ApiError::modified(&call.res.group, &call.res.plural, &name));
        }
        if !checked {
            crate::admission::signer_permits(call, "approve", &old).await?;
            checked = true;
        }
        let mut updated = old.clone();
        let mut conds = conditions_where(&old, |t| !APPROVAL_CONDITIONS.contains(&t));
        conds.extend(approval.iter().cloned());
        updated["status"]["conditions"] = json!(conds);
        if updated == old {
            return Ok(Outcome {
                code: StatusCode::OK,
                object: old,
                warnings: vec![],
            });
        }
        match call.state.objects.update(&call.res, &updated, rev).await {
            Ok(w) => {
                return Ok(Outcome {
                    code: StatusCode::OK,
                    object: w,
                    warnings: vec![],
                })
            }
            Err(None) if wanted_rv.is_some() => {
                return Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
            }
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
}

// ------------------------------------------------------------------------------------------- finalize

/// A namespace's spec.finalizers, set by whoever finalizes it.
pub async fn finalize(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let (new_obj, _) = decode_body(body, &content_type(call.headers))?;
    let name = call.name().to_string();
    for _ in 0..16 {
        let (old, rev) = call.state.objects.must_get(&call.res, None, &name).await?;
        let mut updated = old.clone();
        updated["spec"]["finalizers"] = new_obj
            .pointer("/spec/finalizers")
            .cloned()
            .unwrap_or(json!([]));
        let empty = updated["spec"]["finalizers"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        if empty && meta::is_deleting(&updated) && meta::finalizers(&updated).is_empty() {
            match call.state.objects.delete(&call.res, None, &name, rev).await {
                Ok(gone) => {
                    return Ok(Outcome {
                        code: StatusCode::OK,
                        object: gone,
                        warnings: vec![],
                    })
                }
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        match call.state.objects.update(&call.res, &updated, rev).await {
            Ok(w) => {
                return Ok(Outcome {
                    code: StatusCode::OK,
                    object: w,
                    warnings: vec![],
                })
            }
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
}

// -------------------------------------------------------------------------------------------- reviews

fn user_from_spec(spec: &Value) -> UserInfo {
    UserInfo {
        name: spec
            .get("user")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        extra: Default::default(),
    }
}

fn attributes_from(spec: &Value) -> Attributes {
    if let Some(n) = spec.get("nonResourceAttributes") {
        return Attributes {
            verb: n
                .get("verb")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            path: Some(
                n.get("path")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            ..Default::default()
        };
    }
    let r = spec.get("resourceAttributes").cloned().unwrap_or_default();
    let s = |k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Attributes {
        verb: s("verb"),
        resource: s("resource"),
        subresource: s("subresource"),
        group: s("group"),
        namespace: s("namespace"),
        name: s("name"),
        path: None,
    }
}

/// The create-only review kinds.
pub async fn review(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let (mut obj, _) = decode_body(body, &content_type(call.headers))?;
    let state = call.state;
    let kind = call.res.kind.as_str();
    obj["apiVersion"] = json!(call.res.api_version());
    obj["kind"] = json!(kind);
    crate::kinds::default_at(&mut obj, "/metadata", json!({}));
    obj["metadata"]["creationTimestamp"] = Value::Null;
    match kind {
        "SelfSubjectReview" => {
            obj["status"] = json!({"userInfo": call.user.to_json()});
        }
        "TokenReview" => {
            let token = obj
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let user = state
                .authn
                .authenticate(crate::auth::authn::Credential::Bearer(&token))
                .await;
            obj["status"] = match user {
                Ok(Some(u)) => {
                    json!({"authenticated": true, "user": u.to_json(), "audiences": state.authn.audiences})
                }
                _ => json!({"authenticated": false, "error": "token not valid"}),
            };
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" | "SelfSubjectAccessReview" => {
            let spec = obj.get("spec").cloned().unwrap_or_default();
            let user = if kind == "SelfSubjectAccessReview" {
                call.user.clone()
            } else {
                user_from_spec(&spec)
            };
            let mut attrs = attributes_from(&spec);
            if kind == "LocalSubjectAccessReview" {
                let ns = call.req.namespace.clone().unwrap_or_default();
                if !attrs.namespace.is_empty() && attrs.namespace != ns {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
                attrs.namespace = ns;
            }
            let decision = crate::server::authorize(state, &user, &attrs).await;
            obj["status"] = match decision {
                Decision::Allow => {
                    json!({"allowed": true, "reason": "allowed by the cluster's RBAC policy"})
                }
                Decision::Deny(r) => json!({"allowed": false, "denied": true, "reason": r}),
                Decision::NoOpinion => json!({"allowed": false}),
            };
        }
        "SelfSubjectRulesReview" => {
            let ns = obj
                .pointer("/spec/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let rules = if call.user.in_group(crate::auth::MASTERS) {
                vec![
                    json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
                    json!({"verbs": ["*"], "nonResourceURLs": ["*"]}),
                ]
            } else {
                state.rbac.rules_for(call.user, &ns)
            };
            let (resource_rules, non_resource_rules): (Vec<Value>, Vec<Value>) = rules
                .into_iter()
                .partition(|r| r.get("nonResourceURLs").is_none());
            obj["status"] = json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
        }
        _ => return Err(ApiError::method_not_allowed()),
    }
    Ok(Outcome {
        code: StatusCode::CREATED,
        object: obj,
        warnings: vec![],
    })
}
