//! Discovery: /api, /apis, the group and version documents, and aggregated discovery (apidiscovery.k8s.io
//! v2, which kubectl asks for first).

use base64::Engine;
use http::{Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;

use crate::http::{accept, json_bytes, json_response, Body};
use crate::registry::Resource;
use crate::state::State;

const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Upstream's storageVersionHash: the first 8 bytes of sha256("group/version/kind").
fn storage_version_hash(r: &Resource) -> String {
    let d = sha2::Sha256::digest(format!("{}/{}/{}", r.group, r.version, r.kind));
    base64::engine::general_purpose::STANDARD.encode(&d[..8])
}

fn scope(r: &Resource) -> &'static str {
    if r.namespaced {
        "Namespaced"
    } else {
        "Cluster"
    }
}

/// The APIResourceList of one group version.
fn resource_list(state: &State, group: &str, version: &str) -> Option<Value> {
    let rs: Vec<_> = state
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if rs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in &rs {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        if r.verbs.len() > 1 {
            entry["storageVersionHash"] = json!(storage_version_hash(r));
        }
        resources.push(entry);
        for s in &r.subresources {
            let mut sub = json!({
                "name": format!("{}/{}", r.plural, s.name),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": if s.kind.is_empty() { r.kind.as_str() } else { s.kind },
                "verbs": s.verbs,
            });
            if !s.group.is_empty() {
                sub["group"] = json!(s.group);
                sub["version"] = json!(s.version);
            }
            resources.push(sub);
        }
    }
    resources.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": crate::meta::api_version(group, version),
        "resources": resources,
    }))
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(json!({})),
    })
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": scope(r),
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        e["subresources"] = Value::Array(
            r.subresources
                .iter()
                .map(|s| {
                    let (g, v, k) = if s.kind.is_empty() {
                        (r.group.as_str(), r.version.as_str(), r.kind.as_str())
                    } else if s.group.is_empty() {
                        (r.group.as_str(), r.version.as_str(), s.kind)
                    } else {
                        (s.group, s.version, s.kind)
                    };
                    json!({"subresource": s.name, "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs})
                })
                .collect(),
        );
    }
    e
}

/// The aggregated document of the core group (`/api`) or of every other group (`/apis`).
fn aggregated(state: &State, core: bool) -> Value {
    let all = state.registry.all();
    let items: Vec<Value> = state
        .registry
        .groups()
        .into_iter()
        .filter(|(g, _)| g.is_empty() == core)
        .map(|(g, versions)| {
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| {
                    let mut resources: Vec<Value> = all
                        .iter()
                        .filter(|r| r.group == g && r.version == *v)
                        .map(|r| aggregated_resource(r))
                        .collect();
                    resources.sort_by(|a, b| a["resource"].as_str().cmp(&b["resource"].as_str()));
                    json!({"version": v, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn wants_aggregated(headers: &http::HeaderMap) -> Option<&'static str> {
    for r in accept(headers) {
        if r.params.get("g").map(String::as_str) == Some("apidiscovery.k8s.io")
            && r.params.get("as").map(String::as_str) == Some("APIGroupDiscoveryList")
        {
            match r.params.get("v").map(String::as_str) {
                Some("v2") => return Some(AGGREGATED_V2),
                Some("v2beta1") => return Some(AGGREGATED_V2BETA1),
                _ => {}
            }
        }
        if r.ty == "application/json" && r.params.is_empty() {
            return None;
        }
    }
    None
}

fn aggregated_response(state: &State, core: bool, media: &str) -> Response<Body> {
    let mut doc = aggregated(state, core);
    if media == AGGREGATED_V2BETA1 {
        doc["apiVersion"] = json!("apidiscovery.k8s.io/v2beta1");
    }
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    let etag = format!("\"{}\"", hex::encode(&sha2::Sha256::digest(&bytes)[..16]));
    let mut r = json_bytes(StatusCode::OK, bytes, media);
    if let Ok(v) = http::HeaderValue::from_str(&etag) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    r
}

/// Serves a discovery path, or None if the path is not one.
pub fn serve(state: &State, path: &str, headers: &http::HeaderMap) -> Option<Response<Body>> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api"] => Some(match wants_aggregated(headers) {
            Some(media) => aggregated_response(state, true, media),
            None => json_response(
                StatusCode::OK,
                &json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": state.config.bind.to_string()}],
                }),
            ),
        }),
        ["apis"] => Some(match wants_aggregated(headers) {
            Some(media) => aggregated_response(state, false, media),
            None => {
                let groups: Vec<Value> = state
                    .registry
                    .groups()
                    .into_iter()
                    .filter(|(g, _)| !g.is_empty())
                    .map(|(g, vs)| group_doc(&g, &vs))
                    .collect();
                json_response(
                    StatusCode::OK,
                    &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                )
            }
        }),
        ["api", v] => resource_list(state, "", v).map(|l| json_response(StatusCode::OK, &l)),
        ["apis", g] => state
            .registry
            .groups()
            .into_iter()
            .find(|(name, _)| name == g)
            .map(|(name, vs)| {
                let mut d = group_doc(&name, &vs);
                d["kind"] = json!("APIGroup");
                d["apiVersion"] = json!("v1");
                json_response(StatusCode::OK, &d)
            }),
        ["apis", g, v] => resource_list(state, g, v).map(|l| json_response(StatusCode::OK, &l)),
        _ => None,
    }
}
