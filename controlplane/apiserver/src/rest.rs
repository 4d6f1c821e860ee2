//! The REST verbs on resources: get, list, create, update, patch, delete, deletecollection — upstream's
//! generic registry, with its preconditions, retries, no-op detection, graceful deletion and finalizers.

use basalt_apimachinery::managed;
use basalt_apimachinery::selector::{FieldSelector, LabelSelector};
use basalt_apimachinery::validate::{self, FieldError, Options};
use basalt_store::ListRequest;
use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::errors::{qualified, ApiError, ApiResult};
use crate::http::{content_type, decode_body, Body};
use crate::kinds::{FieldValue, StatusPolicy};
use crate::state::Call;
use crate::{admission, clock, meta, objects, render};

/// What a write answers: the status code, the object and any warnings.
pub struct Outcome {
    pub code: StatusCode,
    pub object: Value,
    pub warnings: Vec<String>,
}

impl Outcome {
    fn new(code: StatusCode, object: Value) -> Self {
        Outcome {
            code,
            object,
            warnings: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------- reads

pub async fn get(call: &Call<'_>) -> ApiResult<Response<Body>> {
    let (obj, _) = call
        .state
        .objects
        .must_get(&call.res, call.namespace(), call.name())
        .await?;
    render::object(call, StatusCode::OK, render::with_type(&call.res, obj), &[])
}

/// Label and field selectors of a list or watch, checked against what the kind supports.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn parse(call: &Call) -> ApiResult<Filter> {
        let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "unable to parse requirement: {}",
                    e.0.trim_start_matches("unable to parse requirement: ")
                ))
            })?;
        let fields = FieldSelector::parse(call.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.0))?;
        for r in &fields.requirements {
            let known = matches!(r.field.as_str(), "metadata.name" | "metadata.namespace")
                || !matches!(
                    call.res.strategy.field(&Value::Null, &r.field),
                    FieldValue::Unsupported
                )
                || call
                    .res
                    .custom
                    .as_ref()
                    .is_some_and(|c| c.selectable(&r.field));
            if !known {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {}",
                    r.field
                )));
            }
        }
        Ok(Filter { labels, fields })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    pub fn matches(&self, call: &Call, obj: &Value) -> bool {
        if !self.labels.matches_object(obj) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        self.fields.matches(|f| match f {
            "metadata.name" => Some(meta::name(obj).to_string()),
            "metadata.namespace" => Some(meta::namespace(obj).to_string()),
            other => match call.res.strategy.field(obj, other) {
                FieldValue::Value(v) => v,
                FieldValue::Unsupported => {
                    call.res.custom.as_ref().and_then(|c| c.field(obj, other))
                }
            },
        })
    }
}

/// A list's continue token: the revision of the first page and the key to go on from (upstream's format).
pub fn encode_continue(rev: i64, start: &str) -> String {
    base64::engine::general_purpose::URL_SAFE
        .encode(json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(token)
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rev, start.to_string()))
}

const TOO_OLD_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

pub async fn list(call: &Call<'_>) -> ApiResult<Response<Body>> {
    let filter = Filter::parse(call)?;
    let limit = call
        .query
        .int("limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let prefix = call.res.prefix(call.namespace());
    let end = basalt_store::prefix_end(&prefix);
    let (mut revision, mut start) = match call.query.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            if call
                .query
                .get("resourceVersion")
                .is_some_and(|r| !r.is_empty())
            {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            let (rev, start) = decode_continue(token)?;
            (Some(rev), format!("{prefix}{start}"))
        }
        None => {
            let rv = call.query.get("resourceVersion").unwrap_or_default();
            let exact = call.query.get("resourceVersionMatch") == Some("Exact");
            match (rv, exact) {
                ("" | "0", false) => (None, prefix.clone()),
                (rv, exact) => {
                    let n: i64 = rv.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version {rv:?}"))
                    })?;
                    if exact {
                        (Some(n), prefix.clone())
                    } else {
                        let current = call.state.objects.store.current_revision().await?;
                        if n > current {
                            return Err(ApiError::timeout(format!(
                                "Too large resource version: {n}, current: {current}"
                            )));
                        }
                        (None, prefix.clone())
                    }
                }
            }
        }
    };
    // Without selectors a JSON list is the stored bytes themselves, with their resourceVersion spliced in:
    // a list of thousands of objects then costs no decoding.
    // (Custom resources are decoded: a CRD with several versions serves each object as the version asked.)
    let raw = filter.is_empty()
        && call.res.custom.is_none()
        && crate::http::negotiate(call.headers, call.query, true)? == crate::http::Wants::Json;
    let mut items = Vec::new();
    let mut raw_items: Vec<u8> = Vec::new();
    let mut count = 0usize;
    let mut next_key: Option<String> = None;
    let mut remaining: Option<i64> = None;
    loop {
        let want = limit.map(|l| (l - count).max(if filter.is_empty() { 0 } else { 100 }));
        let page = call
            .state
            .objects
            .store
            .list(ListRequest {
                start: start.clone(),
                end: end.clone(),
                limit: want,
                revision,
            })
            .await
            .map_err(|e| match e {
                basalt_store::StoreError::Compacted { .. }
                    if call.query.get("continue").is_some() =>
                {
                    ApiError::expired(TOO_OLD_CONTINUE)
                }
                other => other.into(),
            })?;
        revision = Some(page.revision);
        let n = page.kvs.len();
        for (i, kv) in page.kvs.iter().enumerate() {
            if raw {
                if count > 0 {
                    raw_items.push(b',');
                }
                objects::splice(kv, call.res.custom.is_none(), &mut raw_items)?;
                count += 1;
            } else {
                let obj = objects::decode(kv)?;
                if filter.matches(call, &obj) {
                    items.push(obj);
                    count += 1;
                }
            }
            if limit.is_some_and(|l| count >= l) {
                let more = i + 1 < n || page.remaining > 0;
                if more {
                    next_key = Some(kv.key.clone());
                    if filter.is_empty() {
                        remaining = Some((n - i - 1) as i64 + page.remaining);
                    }
                }
                break;
            }
        }
        if next_key.is_some() || page.remaining == 0 || limit.is_some_and(|l| count >= l) {
            break;
        }
        start = format!(
            "{}\u{0}",
            page.kvs.last().map(|kv| kv.key.clone()).unwrap_or_default()
        );
    }
    let rev = revision.unwrap_or(0);
    let mut list_meta = Map::new();
    list_meta.insert("resourceVersion".into(), json!(rev.to_string()));
    if let Some(k) = next_key {
        let rest = k.strip_prefix(&prefix).unwrap_or(&k);
        list_meta.insert(
            "continue".into(),
            json!(encode_continue(rev, &format!("{rest}\u{0}"))),
        );
        if let Some(r) = remaining {
            list_meta.insert("remainingItemCount".into(), json!(r));
        }
    }
    if raw {
        let mut body = Vec::with_capacity(raw_items.len() + 256);
        body.extend_from_slice(
            format!(
                "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{},\"items\":[",
                json!(call.res.list_kind),
                json!(call.res.api_version()),
                Value::Object(list_meta)
            )
            .as_bytes(),
        );
        body.extend_from_slice(&raw_items);
        body.extend_from_slice(b"]}");
        return Ok(crate::http::json_bytes(
            StatusCode::OK,
            body,
            "application/json",
        ));
    }
    let items = items
        .into_iter()
        .map(|o| render::with_type(&call.res, o))
        .collect();
    render::list(call, items, list_meta)
}

// -------------------------------------------------------------------------------------- decoding writes

/// `fieldValidation`, defaulting to Warn as upstream does.
fn validation_directive(call: &Call) -> ApiResult<&'static str> {
    match call.query.get("fieldValidation").unwrap_or("Warn") {
        "Strict" | "strict" => Ok("Strict"),
        "Warn" | "warn" | "" => Ok("Warn"),
        "Ignore" | "ignore" => Ok("Ignore"),
        other => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other:?}: supported values are \"Ignore\", \"Warn\", \"Strict\""
        ))),
    }
}

/// Decoding checks of a submitted object: wrong types (400, or 422 for custom resources), unknown and
/// repeated fields (per fieldValidation), structural-schema constraints. Prunes what the schema does not
/// know. Returns the warnings to send.
pub fn check_fields(
    call: &Call,
    obj: &mut Value,
    duplicates: Vec<String>,
) -> ApiResult<Vec<String>> {
    let directive = validation_directive(call)?;
    let res = &call.res;
    let custom = res.custom.is_some();
    let report = validate::check(obj, res.schema.node(), Options { structural: custom });
    if !report.type_errors.is_empty() {
        if custom {
            let errs = report
                .type_errors
                .iter()
                .map(|(p, want, got)| {
                    FieldError::invalid(
                        p.clone(),
                        json!(got),
                        format!("{p} in body must be of type {want}: {got:?}"),
                    )
                })
                .collect();
            return Err(ApiError::invalid(
                &res.group,
                &res.kind,
                meta::name(obj),
                errs,
            ));
        }
        let (path, want, got) = &report.type_errors[0];
        return Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: json: cannot unmarshal {got} into Go struct field {path} of type {want}",
            kind = res.kind,
            version = res.version,
        )));
    }
    let mut problems: Vec<String> = report
        .unknown
        .iter()
        .map(|p| format!("unknown field {p:?}"))
        .collect();
    problems.extend(duplicates.iter().map(|p| format!("duplicate field {p:?}")));
    let mut warnings = Vec::new();
    match directive {
        "Strict" if !problems.is_empty() => {
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                problems.join(", ")
            )));
        }
        "Warn" => warnings = problems,
        _ => {}
    }
    if !report.invalid.is_empty() {
        return Err(ApiError::invalid(
            &res.group,
            &res.kind,
            meta::name(obj),
            report.invalid,
        ));
    }
    Ok(warnings)
}

/// The body of a create or update, checked for kind, apiVersion, name and namespace.
fn decode_object(call: &Call, body: &[u8]) -> ApiResult<(Value, Vec<String>)> {
    let (mut obj, dups) = decode_body(body, &content_type(call.headers))?;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let expected_kind = match call.req.subresource.as_deref() {
        Some("scale") => "Scale",
        _ => call.res.kind.as_str(),
    };
    // Like upstream's codec, a body without kind or apiVersion takes them from the URL: clients
    // built from generated models (the Python client) leave them out.
    if !kind.is_empty() && kind != expected_kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({expected_kind})"
        )));
    }
    let expected_version = match call.req.subresource.as_deref() {
        Some("scale") => "autoscaling/v1".to_string(),
        _ => call.res.api_version(),
    };
    if !api_version.is_empty() && api_version != expected_version {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({expected_version})"
        )));
    }
    obj["kind"] = Value::from(expected_kind);
    obj["apiVersion"] = Value::from(expected_version);
    Ok((obj, dups))
}

/// Namespace rules of a submitted object: the URL's wins when the body has none; a different one is an error.
fn place(call: &Call, obj: &mut Value) -> ApiResult<()> {
    let body_ns = meta::namespace(obj).to_string();
    match call.namespace() {
        Some(ns) => {
            if body_ns.is_empty() {
                meta::set(obj, "namespace", ns);
            } else if body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        None => {
            if call.res.namespaced {
                return Err(ApiError::no_route());
            }
            meta::remove(obj, "namespace");
        }
    }
    Ok(())
}

/// Object metadata validation every kind shares.
fn validate_meta(call: &Call, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta::name(obj);
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else if let Err(e) = call.res.strategy.name_rule().check(name) {
        errs.push(FieldError::invalid("metadata.name", json!(name), e));
    }
    crate::kinds::validate_labels(obj, "metadata", &mut errs);
    for (i, f) in meta::finalizers(obj).iter().enumerate() {
        if !f.contains('/') && !["kubernetes", "orphan", "foregroundDeletion"].contains(&f.as_str())
        {
            errs.push(FieldError::invalid(
                format!("metadata.finalizers[{i}]"),
                json!(f),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

// ---------------------------------------------------------------------------------------------- create

/// Everything between a decoded new object and the store: identity, defaults, admission, validation,
/// managed fields.
pub async fn prepare_create(call: &Call<'_>, obj: &mut Value) -> ApiResult<()> {
    place(call, obj)?;
    if meta::name(obj).is_empty() {
        if let Some(g) = meta::str_at(obj, "/metadata/generateName").map(str::to_string) {
            if !g.is_empty() {
                meta::set(obj, "name", format!("{g}{}", random_suffix()));
            }
        }
    }
    obj["apiVersion"] = json!(call.res.api_version());
    obj["kind"] = json!(call.res.kind);
    let m = meta::metadata_mut(obj);
    for f in [
        "resourceVersion",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "generation",
    ] {
        m.remove(f);
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(clock::now()));
    let tracks = call.res.strategy.tracks_generation() || call.res.custom.is_some();
    if tracks {
        meta::set(obj, "generation", 1);
    }
    // A new object's status is the server's to set (upstream's PrepareForCreate resets it).
    if call.res.strategy.status() == StatusPolicy::Subresource {
        if let Some(o) = obj.as_object_mut() {
            if call.res.custom.is_some() {
                o.remove("status");
            } else {
                o.insert("status".into(), json!({}));
            }
        }
    }
    // Upstream's order: defaults (at decoding), mutating admission, then the strategy's PrepareForCreate
    // (which computes what depends on the admitted object, such as a pod's QoS class).
    call.res.strategy.default(obj);
    admission::mutate(call, obj, None).await?;
    call.res.strategy.prepare_create(obj);
    let mut errs = validate_meta(call, obj);
    errs.extend(call.res.strategy.validate(obj));
    if !errs.is_empty() {
        return Err(ApiError::invalid(
            &call.res.group,
            &call.res.kind,
            meta::name(obj),
            errs,
        ));
    }
    admission::validate(call, obj, None).await?;
    Ok(())
}

pub async fn create(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let (mut obj, dups) = decode_object(call, body)?;
    let warnings = check_fields(call, &mut obj, dups)?;
    let managed_in_request = obj.pointer("/metadata/managedFields").is_some();
    if !managed_in_request {
        meta::remove(&mut obj, "managedFields");
    }
    prepare_create(call, &mut obj).await?;
    if !managed_in_request {
        managed::record_update(
            None,
            &mut obj,
            call.res.schema.node(),
            &call.manager(),
            &call.res.api_version(),
            None,
            &clock::now(),
        );
    }
    let mut out = store_create(call, obj).await?;
    out.warnings = warnings;
    Ok(out)
}

/// Stores a prepared new object (unless dry-run) and lets informers catch up.
async fn store_create(call: &Call<'_>, mut obj: Value) -> ApiResult<Outcome> {
    if call.query.dry_run()? {
        return Ok(Outcome::new(StatusCode::CREATED, obj));
    }
    admission::before_store(call, &mut obj).await?;
    let created = match call.state.objects.create(&call.res, &obj).await {
        Ok(c) => c,
        Err(e) => {
            admission::store_failed(call, &obj).await;
            return Err(e);
        }
    };
    settle(call, &created).await;
    crate::lifecycle::after_create(call, &created).await;
    Ok(Outcome::new(StatusCode::CREATED, created))
}

/// Waits for the informer of the written resource (if any) to see the write.
async fn settle(call: &Call<'_>, written: &Value) {
    let prefix = call.res.prefix(None);
    if let Some(i) = call.state.informers.for_prefix(&call.state.rbac, &prefix) {
        if let Ok(rev) = meta::resource_version(written).parse() {
            i.wait_for(rev).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------- update

/// What an update of `old` to `new` stores: system metadata kept, the other half of a status split kept,
/// generation counted, defaults, admission and validation applied, managed fields recorded.
pub async fn prepare_update(
    call: &Call<'_>,
    old: &Value,
    mut new: Value,
    subresource: Option<&str>,
    manager: Option<&str>,
) -> ApiResult<Value> {
    new["apiVersion"] = json!(call.res.api_version());
    new["kind"] = json!(call.res.kind);
    let om = old.get("metadata").cloned().unwrap_or(json!({}));
    {
        let m = meta::metadata_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            match om.get(f) {
                Some(v) => {
                    m.insert(f.to_string(), v.clone());
                }
                None => {
                    m.remove(f);
                }
            }
        }
        m.remove("selfLink");
        if let Some(rv) = om.get("resourceVersion") {
            m.insert("resourceVersion".into(), rv.clone());
        }
    }
    let split = call.res.strategy.has_status_subresource();
    match subresource {
        Some("status") => {
            // Only the status changes through the status subresource.
            let mut merged = old.clone();
            match new.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    merged.as_object_mut().map(|o| o.remove("status"));
                }
            }
            if let Some(mf) = new.pointer("/metadata/managedFields") {
                meta::set(&mut merged, "managedFields", mf.clone());
            }
            call.res.strategy.prepare_status_update(&mut merged, old);
            new = merged;
        }
        None if split => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        },
        _ => {}
    }
    if subresource.is_none() {
        call.res.strategy.prepare_update(&mut new, old);
        call.res.strategy.default(&mut new);
    }
    let tracks = call.res.strategy.tracks_generation() || call.res.custom.is_some();
    if tracks {
        let spec_part = |o: &Value| {
            let mut c = o.clone();
            if let Some(m) = c.as_object_mut() {
                m.remove("metadata");
                m.remove("status");
            }
            c
        };
        let gen = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let changed = spec_part(&new) != spec_part(old)
            || (meta::is_deleting(&new) && !meta::is_deleting(old));
        meta::set(&mut new, "generation", if changed { gen + 1 } else { gen });
    }
    admission::mutate(call, &mut new, Some(old)).await?;
    let mut errs = validate_meta(call, &new);
    errs.extend(call.res.strategy.validate_update(&new, old));
    // Finalizers may only be removed, not added, once an object is being deleted.
    if meta::is_deleting(old) {
        let before = meta::finalizers(old);
        for f in meta::finalizers(&new) {
            if !before.contains(&f) {
                errs.push(FieldError::forbidden("metadata.finalizers", format!("no new finalizers can be added if the object is being deleted, found new finalizers [{f:?}]")));
            }
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(
            &call.res.group,
            &call.res.kind,
            meta::name(&new),
            errs,
        ));
    }
    admission::validate(call, &new, Some(old)).await?;
    if let Some(manager) = manager {
        let stated = new
            .pointer("/metadata/managedFields")
            .filter(|m| Some(*m) != old.pointer("/metadata/managedFields"))
            .cloned();
        if stated.is_none() {
            meta::set(
                &mut new,
                "managedFields",
                old.pointer("/metadata/managedFields")
                    .cloned()
                    .unwrap_or(json!([])),
            );
            managed::record_update(
                Some(old),
                &mut new,
                call.res.schema.node(),
                manager,
                &call.res.api_version(),
                subresource,
                &clock::now(),
            );
        }
    }
    if new
        .pointer("/metadata/managedFields")
        .is_some_and(|m| m.as_array().is_some_and(|a| a.is_empty()))
    {
        meta::remove(&mut new, "managedFields");
    }
    Ok(new)
}

/// Writes a prepared update: a no-op writes nothing; an object whose last finalizer went while it was
/// being deleted is deleted. `Err(None)`: someone wrote in between.
async fn store_update(
    call: &Call<'_>,
    old: &Value,
    rev: i64,
    new: Value,
) -> Result<Outcome, Option<ApiError>> {
    if strip_rv(&new) == strip_rv(old) {
        return Ok(Outcome::new(StatusCode::OK, old.clone()));
    }
    if call.query.dry_run().map_err(Some)? {
        return Ok(Outcome::new(StatusCode::OK, new));
    }
    let ns_finalizers = new
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
        && call.res.group.is_empty()
        && call.res.plural == "namespaces";
    if meta::is_deleting(&new) && meta::finalizers(&new).is_empty() && !ns_finalizers {
        let grace = new
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if grace == 0 {
            // Written first, so that watchers see the last state before the deletion, as upstream does.
            let written = call.state.objects.update(&call.res, &new, rev).await?;
            let rev2: i64 = meta::resource_version(&written).parse().unwrap_or(rev);
            let gone = call
                .state
                .objects
                .delete(&call.res, call.namespace(), meta::name(&new), rev2)
                .await?;
            admission::after_delete(call, &gone).await;
            return Ok(Outcome::new(StatusCode::OK, gone));
        }
    }
    let written = call.state.objects.update(&call.res, &new, rev).await?;
    settle(call, &written).await;
    Ok(Outcome::new(StatusCode::OK, written))
}

fn strip_rv(v: &Value) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    c
}

/// How many times a write is retried when someone else wrote in between (upstream retries without bound
/// while the object keeps changing; a bound keeps a hot object from pinning a request forever).
const RETRIES: usize = 32;

pub async fn update(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let sub = call.req.subresource.as_deref();
    let (mut obj, dups) = decode_object(call, body)?;
    let warnings = check_fields(call, &mut obj, dups)?;
    let name = call.name().to_string();
    let body_name = meta::name(&obj).to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    meta::set(&mut obj, "name", name.clone());
    place(call, &mut obj)?;
    let precondition: Option<i64> = match meta::resource_version(&obj) {
        "" => None,
        rv => Some(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    if precondition.is_none() && !call.res.strategy.unconditional_update() {
        return Err(ApiError::invalid(
            &call.res.group,
            &call.res.kind,
            &name,
            vec![FieldError::invalid(
                "metadata.resourceVersion",
                json!("0x0"),
                "must be specified for an update",
            )],
        ));
    }
    let manager = call.manager();
    for _ in 0..RETRIES {
        let Some((old, rev)) = call
            .state
            .objects
            .get(&call.res, call.namespace(), &name)
            .await?
        else {
            if call.res.strategy.create_on_update() && sub.is_none() {
                let mut fresh = obj.clone();
                meta::remove(&mut fresh, "resourceVersion");
                prepare_create(call, &mut fresh).await?;
                managed::record_update(
                    None,
                    &mut fresh,
                    call.res.schema.node(),
                    &manager,
                    &call.res.api_version(),
                    None,
                    &clock::now(),
                );
                let mut out = store_create(call, fresh).await?;
                out.warnings = warnings;
                return Ok(out);
            }
            return Err(ApiError::not_found(
                &call.res.group,
                &call.res.plural,
                &name,
            ));
        };
        if precondition.is_some_and(|p| p != rev) {
            return Err(ApiError::modified(&call.res.group, &call.res.plural, &name));
        }
        let new = prepare_update(call, &old, obj.clone(), sub, Some(&manager)).await?;
        match store_update(call, &old, rev, new).await {
            Ok(mut out) => {
                out.warnings = warnings;
                return Ok(out);
            }
            Err(Some(e)) => return Err(e),
            Err(None) if precondition.is_some() => {
                return Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
            }
            Err(None) => continue,
        }
    }
    Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
}

// ----------------------------------------------------------------------------------------------- patch

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

const PATCH_TYPES: &str = "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json";

pub async fn patch(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let media = content_type(call.headers);
    let kind = match media.as_str() {
        "application/json-patch+json" => PatchType::Json,
        "application/merge-patch+json" => PatchType::Merge,
        "application/strategic-merge-patch+json" => PatchType::Strategic,
        "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
        _ => return Err(ApiError::unsupported_media_type(PATCH_TYPES)),
    };
    if kind == PatchType::Strategic && call.res.custom.is_some() {
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    let force = call.query.get("force").map(|f| f == "true");
    if force.is_some() && kind != PatchType::Apply {
        return Err(ApiError::bad_request(
            "force is not allowed for non-apply patches",
        ));
    }
    let sub = call.req.subresource.as_deref();
    let name = call.name().to_string();
    let (patch_doc, dups) = decode_body(
        body,
        if kind == PatchType::Apply {
            "yaml"
        } else {
            "json"
        },
    )?;
    if kind == PatchType::Apply && call.query.get("fieldManager").is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            &call.res.group,
            &call.res.kind,
            &name,
            vec![FieldError::required(
                "fieldManager",
                "is required for apply patch",
            )],
        ));
    }
    let manager = call.manager();
    let node = call.res.schema.node();
    let mut warnings = Vec::new();
    for _ in 0..RETRIES {
        let current = call
            .state
            .objects
            .get(&call.res, call.namespace(), &name)
            .await?;
        let (old, rev) = match current {
            Some(c) => c,
            None if kind == PatchType::Apply && sub.is_none() => {
                let mut applied = patch_doc.clone();
                warnings = check_fields(call, &mut applied, dups.clone())?;
                let body_name = meta::name(&applied).to_string();
                if !body_name.is_empty() && body_name != name {
                    return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
                }
                meta::set(&mut applied, "name", name.clone());
                place(call, &mut applied)?;
                let mut created = managed::apply(
                    None,
                    &applied,
                    node,
                    &manager,
                    force == Some(true),
                    &call.res.api_version(),
                    None,
                    &clock::now(),
                )
                .map_err(|c| conflict_error(call, &name, c))?;
                let mf = created.pointer("/metadata/managedFields").cloned();
                prepare_create(call, &mut created).await?;
                if let Some(mf) = mf {
                    meta::set(&mut created, "managedFields", mf);
                }
                let mut out = store_create(call, created).await?;
                out.warnings = warnings;
                return Ok(out);
            }
            None => {
                return Err(ApiError::not_found(
                    &call.res.group,
                    &call.res.plural,
                    &name,
                ))
            }
        };
        let mut patched = match kind {
            PatchType::Json => {
                let p: json_patch::Patch = serde_json::from_value(patch_doc.clone())
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                let mut doc = old.clone();
                json_patch::patch(&mut doc, &p).map_err(|e| {
                    ApiError::new(
                        422,
                        crate::errors::Reason::Invalid,
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
                doc
            }
            PatchType::Merge => {
                let mut doc = old.clone();
                json_patch::merge(&mut doc, &patch_doc);
                doc
            }
            PatchType::Strategic => basalt_apimachinery::smp::apply(&old, &patch_doc, node)
                .map_err(|e| ApiError::new(422, crate::errors::Reason::Invalid, e.to_string()))?,
            PatchType::Apply => {
                let mut applied = patch_doc.clone();
                warnings = check_fields(call, &mut applied, dups.clone())?;
                for f in ["name", "namespace"] {
                    if let Some(v) = meta::str_at(&applied, &format!("/metadata/{f}")) {
                        let expected = if f == "name" {
                            name.as_str()
                        } else {
                            call.namespace().unwrap_or_default()
                        };
                        if !v.is_empty() && v != expected {
                            return Err(ApiError::bad_request(format!("the {f} of the object ({v}) does not match the {f} on the URL ({expected})")));
                        }
                    }
                }
                managed::apply(
                    Some(&old),
                    &applied,
                    node,
                    &manager,
                    force == Some(true),
                    &call.res.api_version(),
                    sub,
                    &clock::now(),
                )
                .map_err(|c| conflict_error(call, &name, c))?
            }
        };
        if kind != PatchType::Apply {
            warnings = check_fields(call, &mut patched, dups.clone())?;
        }
        let precondition =
            match meta::resource_version(&patched) {
                "" => None,
                rv => Some(rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        if precondition.is_some_and(|p| p != rev) {
            return Err(ApiError::modified(&call.res.group, &call.res.plural, &name));
        }
        for (f, expected) in [
            ("name", name.as_str()),
            ("namespace", meta::namespace(&old)),
        ] {
            if meta::str_at(&patched, &format!("/metadata/{f}")).unwrap_or_default() != expected {
                return Err(ApiError::bad_request(format!(
                    "metadata.{f}: the {f} of the object may not change in a patch"
                )));
            }
        }
        let manager_for_update = if kind == PatchType::Apply {
            None
        } else {
            Some(manager.as_str())
        };
        let new = prepare_update(call, &old, patched, sub, manager_for_update).await?;
        match store_update(call, &old, rev, new).await {
            Ok(mut out) => {
                out.warnings = warnings;
                return Ok(out);
            }
            Err(Some(e)) => return Err(e),
            // Written meanwhile: the patch is applied again to the current object, as upstream's
            // GuaranteedUpdate does; a resourceVersion the patch itself carries fails the check above.
            Err(None) => continue,
        }
    }
    Err(ApiError::modified(&call.res.group, &call.res.plural, &name))
}

/// A 409 for apply conflicts, in upstream's words.
fn conflict_error(call: &Call, name: &str, conflicts: Vec<managed::Conflict>) -> ApiError {
    let mut lines: Vec<String> = Vec::new();
    let mut causes = Vec::new();
    for c in &conflicts {
        lines.push(format!("{}: {}", c.message(), c.field));
        causes.push(
            json!({"reason": "FieldManagerConflict", "message": c.message(), "field": c.field}),
        );
    }
    let message = if conflicts.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::new(409, crate::errors::Reason::Conflict, message);
    e.details = Some(Box::new(crate::errors::Details {
        name: name.to_string(),
        group: call.res.group.clone(),
        kind: call.res.plural.clone(),
        causes,
        retry_after_seconds: None,
    }));
    e
}

// ---------------------------------------------------------------------------------------------- delete

/// DeleteOptions from the body and the query.
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    /// `dryRun: ["All"]` in the body (the query's `dryRun` counts too).
    pub dry_run: bool,
}

pub fn delete_options(call: &Call, body: &Bytes) -> ApiResult<DeleteOptions> {
    let mut o = DeleteOptions::default();
    if !body.is_empty() {
        let (v, _) = decode_body(body, &content_type(call.headers))?;
        o.grace = v.get("gracePeriodSeconds").and_then(Value::as_i64);
        o.propagation = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string);
        if v.get("orphanDependents").and_then(Value::as_bool) == Some(true)
            && o.propagation.is_none()
        {
            o.propagation = Some("Orphan".into());
        }
        o.uid = v
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        o.resource_version = v
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(dr) = v.get("dryRun").and_then(Value::as_array) {
            if dr.iter().any(|d| d != "All") {
                return Err(ApiError::bad_request(
                    "Invalid dryRun value: supported values: \"All\"",
                ));
            }
            o.dry_run = !dr.is_empty();
        }
    }
    if let Some(g) = call.query.int("gracePeriodSeconds")? {
        o.grace = Some(g);
    }
    if let Some(p) = call.query.get("propagationPolicy") {
        o.propagation = Some(p.to_string());
    }
    if call.query.get("orphanDependents") == Some("true") && o.propagation.is_none() {
        o.propagation = Some("Orphan".into());
    }
    if let Some(p) = &o.propagation {
        if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "DeleteOptions",
                "",
                vec![FieldError::not_supported(
                    "propagationPolicy",
                    json!(p),
                    &["Foreground", "Background", "Orphan", "nil"],
                )],
            ));
        }
    }
    if o.grace.is_some_and(|g| g < 0) {
        o.grace = Some(0);
    }
    Ok(o)
}

/// Upstream's answer for an immediate deletion of kinds that do not return the object.
fn success_status(call: &Call, obj: &Value) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta::name(obj), "group": call.res.group, "kind": call.res.plural, "uid": meta::uid(obj)},
    })
}

fn returns_deleted_object(call: &Call) -> bool {
    call.res.custom.is_some()
        || (call.res.group.is_empty()
            && matches!(
                call.res.plural.as_str(),
                "pods" | "namespaces" | "services" | "nodes"
            ))
}

pub async fn delete_one(call: &Call<'_>, name: &str, opts: &DeleteOptions) -> ApiResult<Outcome> {
    let dry_run = opts.dry_run || call.query.dry_run()?;
    for _ in 0..RETRIES {
        let (obj, rev) = call
            .state
            .objects
            .must_get(&call.res, call.namespace(), name)
            .await?;
        if let Some(uid) = &opts.uid {
            if uid != meta::uid(&obj) {
                return Err(ApiError::conflict(
                    &call.res.group,
                    &call.res.plural,
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&obj)
                    ),
                ));
            }
        }
        if let Some(rv) = &opts.resource_version {
            if rv != meta::resource_version(&obj) {
                return Err(ApiError::conflict(&call.res.group, &call.res.plural, name, format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta::resource_version(&obj)
                )));
            }
        }
        admission::validate_delete(call, &obj).await?;
        let mut pending = obj.clone();
        let mut finalizers = meta::finalizers(&obj);
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.retain(|f| f != "orphan");
                finalizers.push("foregroundDeletion".into());
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.retain(|f| f != "foregroundDeletion");
                finalizers.push("orphan".into());
            }
            _ => {}
        }
        let is_namespace = call.res.group.is_empty() && call.res.plural == "namespaces";
        let ns_finalizers = is_namespace
            && obj
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
        let grace = call
            .res
            .strategy
            .grace_period(&obj, opts.grace)
            .unwrap_or(0);
        let already = meta::is_deleting(&obj);
        let needs_wait = !finalizers.is_empty() || ns_finalizers || grace > 0;
        if needs_wait {
            let current_grace = obj
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            let shorten = already && current_grace.is_some_and(|g| grace < g);
            if already && !shorten && finalizers == meta::finalizers(&obj) {
                // Deletion is already under way; nothing changes.
                return Ok(Outcome::new(
                    StatusCode::ACCEPTED,
                    render::with_type(&call.res, obj),
                ));
            }
            meta::set_finalizers(&mut pending, finalizers);
            if !already || shorten {
                meta::set(&mut pending, "deletionTimestamp", clock::in_seconds(grace));
                meta::set(&mut pending, "deletionGracePeriodSeconds", grace);
            }
            if is_namespace {
                pending["status"]["phase"] = json!("Terminating");
            }
            if let Some(g) = pending
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
            {
                if !already {
                    meta::set(&mut pending, "generation", g + 1);
                }
            }
            if dry_run {
                return Ok(Outcome::new(StatusCode::ACCEPTED, pending));
            }
            // A grace period of zero with no finalizers left means gone now.
            if grace == 0 && meta::finalizers(&pending).is_empty() && !ns_finalizers {
                // fall through to immediate deletion
            } else {
                match call.state.objects.update(&call.res, &pending, rev).await {
                    Ok(written) => {
                        let code = if already {
                            StatusCode::OK
                        } else {
                            StatusCode::ACCEPTED
                        };
                        return Ok(Outcome::new(code, render::with_type(&call.res, written)));
                    }
                    Err(None) => continue,
                    Err(Some(e)) => return Err(e),
                }
            }
        }
        if dry_run {
            return Ok(Outcome::new(
                StatusCode::OK,
                render::with_type(&call.res, obj),
            ));
        }
        match call
            .state
            .objects
            .delete(&call.res, call.namespace(), name, rev)
            .await
        {
            Ok(gone) => {
                admission::after_delete(call, &gone).await;
                settle(call, &gone).await;
                let body = if returns_deleted_object(call) {
                    render::with_type(&call.res, gone)
                } else {
                    success_status(call, &gone)
                };
                return Ok(Outcome::new(StatusCode::OK, body));
            }
            Err(None) => continue,
            Err(Some(e)) => return Err(e),
        }
    }
    Err(ApiError::modified(&call.res.group, &call.res.plural, name))
}

pub async fn delete(call: &Call<'_>, body: &Bytes) -> ApiResult<Outcome> {
    let opts = delete_options(call, body)?;
    let name = call.name().to_string();
    delete_one(call, &name, &opts).await
}

pub async fn delete_collection(call: &Call<'_>, body: &Bytes) -> ApiResult<Response<Body>> {
    if !call.res.serves("deletecollection") {
        return Err(ApiError::method_not_allowed());
    }
    let filter = Filter::parse(call)?;
    let opts = delete_options(call, body)?;
    let (items, rev) = call
        .state
        .objects
        .list_all(&call.res, call.namespace())
        .await?;
    let mut deleted = Vec::new();
    for obj in items.into_iter().filter(|o| filter.matches(call, o)) {
        let name = meta::name(&obj).to_string();
        let sub = Call {
            state: call.state,
            user: call.user,
            req: call.req,
            res: call.res.clone(),
            query: call.query,
            headers: call.headers,
        };
        let ns_call;
        let target = if call.res.namespaced && call.req.namespace.is_none() {
            let mut r = call.req.clone();
            r.namespace = Some(meta::namespace(&obj).to_string());
            ns_call = r;
            Call {
                req: &ns_call,
                ..sub
            }
        } else {
            sub
        };
        match delete_one(&target, &name, &opts).await {
            Ok(o) => deleted.push(o.object),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let mut list_meta = Map::new();
    list_meta.insert("resourceVersion".into(), json!(rev.to_string()));
    render::list(call, deleted, list_meta)
}

pub fn not_served(call: &Call) -> ApiError {
    ApiError::not_found(
        &call.res.group,
        &qualified(&call.res.group, &call.res.plural),
        call.name(),
    )
}
