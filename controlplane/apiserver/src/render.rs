//! Answers with objects: JSON, YAML, Tables for `kubectl get`, and metadata-only forms.

use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::errors::ApiResult;
use crate::http::{json_bytes, json_response, negotiate, yaml_response, Body, Include, Wants};
use crate::registry::Resource;
use crate::state::Call;

pub const TABLE_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// The object's metadata as a PartialObjectMetadata.
pub fn partial(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// Adds `kind` and `apiVersion` (objects are stored with them; a list's items go without, as upstream's do).
pub fn with_type(res: &Resource, mut obj: Value) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(res.api_version()));
        m.insert("kind".into(), json!(res.kind));
    }
    obj
}

/// Rows of a Table for `objs`.
pub fn table_rows(res: &Resource, objs: &[Value], include: Include) -> Value {
    let t = table_for(res);
    Value::Array(
        objs.iter()
            .map(|o| {
                let mut row = json!({"cells": (t.row)(o)});
                if let Some(custom) = &res.custom {
                    row["cells"] = Value::Array(custom.row(o));
                }
                match include {
                    Include::None => {}
                    Include::Metadata => row["object"] = partial(o),
                    Include::Object => row["object"] = o.clone(),
                }
                row
            })
            .collect(),
    )
}

pub fn table_for(res: &Resource) -> crate::kinds::Table {
    res.strategy.table()
}

pub fn table_columns(res: &Resource) -> Value {
    match &res.custom {
        Some(c) => c.columns(),
        None => table_for(res).definitions(),
    }
}

/// A Table of `objs`.
pub fn table(res: &Resource, objs: &[Value], include: Include, list_meta: Value) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": table_columns(res),
        "rows": table_rows(res, objs, include),
    })
}

/// One object, in the representation the client asked for.
pub fn object(
    call: &Call,
    code: StatusCode,
    obj: Value,
    warnings: &[String],
) -> ApiResult<Response<Body>> {
    let wants = negotiate(call.headers, call.query, false)?;
    let mut r = match wants {
        Wants::Json => json_response(code, &obj),
        Wants::Yaml => yaml_response(code, &obj),
        Wants::Table(include) => {
            let rv = crate::meta::resource_version(&obj).to_string();
            let t = table(
                &call.res,
                std::slice::from_ref(&obj),
                include,
                json!({"resourceVersion": rv}),
            );
            json_bytes(code, serde_json::to_vec(&t).unwrap_or_default(), TABLE_TYPE)
        }
        Wants::PartialObjectMetadata | Wants::PartialObjectMetadataList => json_bytes(
            code,
            serde_json::to_vec(&partial(&obj)).unwrap_or_default(),
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ),
    };
    add_warnings(&mut r, warnings);
    Ok(r)
}

/// `Warning: 299 - "…"` headers, as upstream attaches them.
pub fn add_warnings(r: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = http::HeaderValue::from_str(&text) {
            r.headers_mut().append("Warning", v);
        }
    }
}

/// A list, in the representation the client asked for.
pub fn list(
    call: &Call,
    items: Vec<Value>,
    list_meta: Map<String, Value>,
) -> ApiResult<Response<Body>> {
    let wants = negotiate(call.headers, call.query, true)?;
    let res = &call.res;
    let meta = Value::Object(list_meta);
    Ok(match wants {
        Wants::Table(include) => {
            let t = table(res, &items, include, meta);
            json_bytes(
                StatusCode::OK,
                serde_json::to_vec(&t).unwrap_or_default(),
                TABLE_TYPE,
            )
        }
        Wants::PartialObjectMetadataList | Wants::PartialObjectMetadata => {
            let l = json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
                "items": items.iter().map(partial).collect::<Vec<_>>(),
            });
            json_bytes(
                StatusCode::OK,
                serde_json::to_vec(&l).unwrap_or_default(),
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
            )
        }
        Wants::Json | Wants::Yaml => {
            let items: Vec<Value> = if res.custom.is_some() {
                items
            } else {
                items
                    .into_iter()
                    .map(|mut o| {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("apiVersion");
                            m.remove("kind");
                        }
                        o
                    })
                    .collect()
            };
            let l = json!({
                "kind": res.list_kind,
                "apiVersion": res.api_version(),
                "metadata": meta,
                "items": items,
            });
            if wants == Wants::Yaml {
                yaml_response(StatusCode::OK, &l)
            } else {
                json_response(StatusCode::OK, &l)
            }
        }
    })
}
