//! /openapi/v2 and /openapi/v3, built from the embedded definitions (upstream's, with descriptions) and the
//! served resources; enough for `kubectl explain`, kubectl's field-validation probe, and generic clients.
//! Documents are built on first request and kept gzipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::Mutex;

use http::{HeaderMap, Response, StatusCode};
use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::http::{accept, full, json_response, Body};
use crate::registry::Resource;
use crate::state::State;

/// Built documents, gzipped, by path (`v2`, `v3`, `v3/apis/apps/v1`), with the registry generation they
/// were built for.
/// A built document: the registry generation it was built for, gzipped bytes, hash.
type Built = (u64, Vec<u8>, String);

#[derive(Default)]
pub struct Cache {
    docs: Mutex<HashMap<String, Built>>,
}

fn rewrite_refs(v: &mut Value, to: &str, v3: bool) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                *r = r.replace("#/definitions/", to);
            }
            // OpenAPI 3.0 ignores siblings of $ref: a described reference becomes allOf, as upstream writes it.
            // (A `$ref` that is not a string is a property named so, as in JSONSchemaProps.)
            if v3 && m.get("$ref").is_some_and(Value::is_string) && m.len() > 1 {
                let r = m.remove("$ref").expect("checked");
                m.insert("allOf".into(), json!([{"$ref": r}]));
            }
            for child in m.values_mut() {
                rewrite_refs(child, to, v3);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, to, v3)),
        _ => {}
    }
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                out.insert(r.rsplit('/').next().unwrap_or(r).to_string());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

/// Every definition reachable from `roots`.
fn closure(
    defs: &Map<String, Value>,
    roots: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(d) = defs.get(&name) else { continue };
        let mut refs = BTreeSet::new();
        collect_refs(d, &mut refs);
        todo.extend(refs);
        out.insert(name, d.clone());
    }
    out
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string"}, "uniqueItems": true})
}

fn v2_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "type": "string", "uniqueItems": true})
}

/// The definition name of a resource's kind (built-in) or a synthesized one (custom resources).
fn definition_of(r: &Resource) -> String {
    match &r.custom {
        Some(_) => format!("{}.{}.{}", reverse_group(&r.group), r.version, r.kind),
        None => crate::openapi_names::definition(&r.group, &r.version, &r.kind),
    }
}

fn reverse_group(g: &str) -> String {
    g.split('.').rev().collect::<Vec<_>>().join(".")
}

/// Paths of one resource.
fn paths(r: &Resource, def_ref: &str, v3: bool) -> Vec<(String, Value)> {
    let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
    let base = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let (coll, item) = if r.namespaced {
        (
            format!("{base}/namespaces/{{namespace}}/{}", r.plural),
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
        )
    } else {
        (
            format!("{base}/{}", r.plural),
            format!("{base}/{}/{{name}}", r.plural),
        )
    };
    let p = |n: &str, d: &str| if v3 { param(n, d) } else { v2_param(n, d) };
    let write_params = vec![
        p("dryRun", "When present, indicates that modifications should not be persisted."),
        p("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        p("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"),
    ];
    let mut patch_params = write_params.clone();
    patch_params.push(p("force", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people."));
    let body = |types: &[&str]| -> Value {
        if v3 {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| (t.to_string(), json!({"schema": {"$ref": def_ref}})))
                .collect();
            json!({"content": content, "required": true})
        } else {
            json!({"name": "body", "in": "body", "required": true, "schema": {"$ref": def_ref}})
        }
    };
    let ok = || {
        if v3 {
            json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": def_ref}}}}})
        } else {
            json!({"200": {"description": "OK", "schema": {"$ref": def_ref}}})
        }
    };
    let op = |action: &str, id: &str, params: Vec<Value>, body: Option<Value>| {
        let mut o = json!({
            "operationId": id,
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": ok(),
        });
        if let Some(b) = body {
            if v3 {
                o["requestBody"] = b;
            } else {
                o["parameters"].as_array_mut().expect("array").push(b);
            }
        }
        o
    };
    let mut out = Vec::new();
    let verbs = &r.verbs;
    let mut coll_ops = json!({});
    if verbs.contains(&"list") {
        coll_ops["get"] = op("list", &format!("list{}", r.kind), vec![], None);
    }
    if verbs.contains(&"create") {
        coll_ops["post"] = op(
            "post",
            &format!("create{}", r.kind),
            write_params.clone(),
            Some(body(&["*/*"])),
        );
    }
    if verbs.contains(&"deletecollection") {
        coll_ops["delete"] = op(
            "deletecollection",
            &format!("deletecollection{}", r.kind),
            vec![],
            None,
        );
    }
    out.push((coll, coll_ops));
    if verbs.contains(&"get") {
        let mut item_ops = json!({"get": op("get", &format!("read{}", r.kind), vec![], None)});
        if verbs.contains(&"update") {
            item_ops["put"] = op(
                "put",
                &format!("replace{}", r.kind),
                write_params.clone(),
                Some(body(&["*/*"])),
            );
        }
        if verbs.contains(&"patch") {
            item_ops["patch"] = op(
                "patch",
                &format!("patch{}", r.kind),
                patch_params,
                Some(body(&[
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ])),
            );
        }
        if verbs.contains(&"delete") {
            item_ops["delete"] = op("delete", &format!("delete{}", r.kind), vec![], None);
        }
        out.push((item, item_ops));
    }
    out
}

impl Cache {
    fn build_v3(state: &State, gv_path: &str) -> Option<Value> {
        let (group, version) = match gv_path.split('/').collect::<Vec<_>>().as_slice() {
            ["api", v] => (String::new(), v.to_string()),
            ["apis", g, v] => (g.to_string(), v.to_string()),
            _ => return None,
        };
        let rs: Vec<_> = state
            .registry
            .all()
            .into_iter()
            .filter(|r| r.group == group && r.version == version)
            .collect();
        if rs.is_empty() {
            return None;
        }
        let full = basalt_apimachinery::openapi::full();
        let defs = full["definitions"].as_object().cloned().unwrap_or_default();
        let mut roots: Vec<String> = vec![
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status".into(),
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into(),
        ];
        let mut custom_defs = BTreeMap::new();
        let mut all_paths = Map::new();
        for r in &rs {
            let def = definition_of(r);
            if let Some(c) = &r.custom {
                custom_defs.insert(def.clone(), c.openapi_schema(r));
                roots.push("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into());
            } else {
                roots.push(def.clone());
                roots.push(
                    format!(
                        "{}List",
                        def.strip_suffix(&r.kind)
                            .map(|p| format!("{p}{}", r.kind))
                            .unwrap_or(def.clone())
                    )
                    .replace(&format!("{}List", r.kind), &r.list_kind),
                );
            }
            for (p, ops) in paths(r, &format!("#/components/schemas/{def}"), true) {
                all_paths.insert(p, ops);
            }
        }
        let mut schemas: BTreeMap<String, Value> = closure(&defs, roots);
        schemas.extend(custom_defs);
        let mut doc = json!({
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
            "paths": all_paths,
            "components": {"schemas": schemas},
        });
        rewrite_refs(&mut doc["components"], "#/components/schemas/", true);
        Some(doc)
    }

    fn build_v2(state: &State) -> Value {
        let full = basalt_apimachinery::openapi::full();
        let mut defs = full["definitions"].as_object().cloned().unwrap_or_default();
        let mut all_paths = Map::new();
        for r in state.registry.all() {
            let def = definition_of(&r);
            if let Some(c) = &r.custom {
                defs.insert(def.clone(), c.openapi_schema(&r));
            }
            for (p, ops) in paths(&r, &format!("#/definitions/{def}"), false) {
                all_paths.insert(p, ops);
            }
        }
        let mut doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": crate::version::GIT_VERSION},
            "paths": all_paths,
            "definitions": defs,
        });
        rewrite_refs(&mut doc["definitions"], "#/definitions/", false);
        doc
    }

    fn gzipped(v: &Value) -> (Vec<u8>, String) {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        let hash = hex::encode(sha2::Sha512::digest(&bytes)).to_uppercase();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = enc.write_all(&bytes);
        (enc.finish().unwrap_or_default(), hash)
    }

    fn cached(
        &self,
        key: &str,
        generation: u64,
        build: impl FnOnce() -> Option<Value>,
    ) -> Option<(Vec<u8>, String)> {
        if let Some((g, bytes, hash)) = self.docs.lock().expect("openapi cache").get(key) {
            if *g == generation {
                return Some((bytes.clone(), hash.clone()));
            }
        }
        let doc = build()?;
        let (bytes, hash) = Self::gzipped(&doc);
        self.docs
            .lock()
            .expect("openapi cache")
            .insert(key.to_string(), (generation, bytes.clone(), hash.clone()));
        Some((bytes, hash))
    }
}

fn respond(gz: Vec<u8>, headers: &HeaderMap, etag: &str) -> Response<Body> {
    let takes_gzip = headers
        .get(http::header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    let (body, encoded) = if takes_gzip {
        (gz, true)
    } else {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut out);
        (out, false)
    };
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if encoded {
        r.headers_mut().insert(
            http::header::CONTENT_ENCODING,
            http::HeaderValue::from_static("gzip"),
        );
    }
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{etag}\"")) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    r
}

pub fn serve(state: &State, path: &str, headers: &HeaderMap) -> Option<Response<Body>> {
    let generation = state.registry_generation();
    if path == "/openapi/v2" {
        let wants_json = accept(headers)
            .iter()
            .any(|r| r.ty == "application/json" || r.ty == "*/*");
        if !wants_json {
            return Some(crate::http::error_response(
                &crate::errors::ApiError::not_acceptable(
                    "only application/json is served for /openapi/v2",
                ),
            ));
        }
        let (gz, hash) = state
            .openapi
            .cached("v2", generation, || Some(Cache::build_v2(state)))?;
        return Some(respond(gz, headers, &hash));
    }
    if path == "/openapi/v3" || path == "/openapi/v3/" {
        let mut paths = Map::new();
        for (g, versions) in state.registry.groups() {
            for v in versions {
                let gv = if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                };
                let hash = state
                    .openapi
                    .cached(&format!("v3/{gv}"), generation, || {
                        Cache::build_v3(state, &gv)
                    })
                    .map(|(_, h)| h)
                    .unwrap_or_default();
                paths.insert(
                    gv.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}),
                );
            }
        }
        return Some(json_response(StatusCode::OK, &json!({"paths": paths})));
    }
    let gv = path.strip_prefix("/openapi/v3/")?;
    let (gz, hash) = state.openapi.cached(&format!("v3/{gv}"), generation, || {
        Cache::build_v3(state, gv)
    })?;
    Some(respond(gz, headers, &hash))
}
