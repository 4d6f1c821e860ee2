//! HTTP plumbing: bodies, query parameters, content negotiation, and JSON/YAML answers.

use std::collections::HashMap;
use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use crate::errors::ApiError;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

/// Query parameters, decoded. Repeated keys keep the first value (upstream reads the first too).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.entry(percent_decode(k))
                .or_insert_with(|| percent_decode(v));
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | ""))
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {k}: {v:?}"))),
        }
    }

    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "Invalid dryRun value {other:?}: supported values: \"All\""
            ))),
        }
    }
}

/// What the client asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Json,
    Yaml,
    /// meta.k8s.io Table (with the objects as metadata only, whole, or not at all).
    Table(Include),
    PartialObjectMetadata,
    PartialObjectMetadataList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

/// One entry of an Accept header.
#[derive(Debug, Clone)]
pub struct MediaRange {
    pub ty: String,
    pub params: HashMap<String, String>,
}

pub fn accept(headers: &HeaderMap) -> Vec<MediaRange> {
    let raw = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    raw.split(',')
        .map(|part| {
            let mut pieces = part.split(';').map(str::trim);
            let ty = pieces.next().unwrap_or_default().to_ascii_lowercase();
            let params = pieces
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                .collect();
            MediaRange { ty, params }
        })
        .collect()
}

/// Chooses the representation of a resource answer.
pub fn negotiate(headers: &HeaderMap, query: &Query, list: bool) -> Result<Wants, ApiError> {
    let include = match query.get("includeObject") {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    };
    let ranges = accept(headers);
    for r in &ranges {
        let json_like = r.ty == "application/json" || r.ty == "*/*" || r.ty == "application/*";
        match r.params.get("as").map(String::as_str) {
            Some("Table")
                if json_like && r.params.get("g").map(String::as_str) == Some("meta.k8s.io") =>
            {
                return Ok(Wants::Table(include));
            }
            Some("PartialObjectMetadata") if json_like && !list => {
                return Ok(Wants::PartialObjectMetadata)
            }
            Some("PartialObjectMetadataList") if json_like && list => {
                return Ok(Wants::PartialObjectMetadataList)
            }
            Some(_) => continue,
            None => {}
        }
        if json_like {
            return Ok(Wants::Json);
        }
        if r.ty == "application/yaml" {
            return Ok(Wants::Yaml);
        }
    }
    Err(ApiError::not_acceptable(
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf",
    ))
}

pub fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    json_bytes(
        code,
        serde_json::to_vec(v).expect("JSON serializes"),
        "application/json",
    )
}

pub fn json_bytes(code: StatusCode, bytes: Vec<u8>, content_type: &str) -> Response<Body> {
    let mut r = Response::new(full(bytes));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static("application/json")),
    );
    r
}

pub fn yaml_response(code: StatusCode, v: &Value) -> Response<Body> {
    let text = serde_yaml::to_string(v).unwrap_or_default();
    json_bytes(code, text.into_bytes(), "application/yaml")
}

pub fn text_response(code: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(full(text.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    );
    if let Some(secs) = e.details.as_ref().and_then(|d| d.retry_after_seconds) {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// The body's media type (without parameters).
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A request body as JSON (JSON or YAML), with repeated keys (JSON only; YAML refuses them) and the
/// position of a syntax error.
pub fn decode_body(bytes: &[u8], media: &str) -> Result<(Value, Vec<String>), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if media == "application/vnd.kubernetes.protobuf" {
        let v = basalt_apimachinery::protobuf::decode(bytes, protobuf_definition).map_err(|e| {
            ApiError::bad_request(format!("error decoding protobuf request body: {e}"))
        })?;
        return Ok((v, Vec::new()));
    }
    let yaml = media.contains("yaml");
    if !yaml {
        return basalt_apimachinery::validate::parse_json(bytes)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")));
    }
    let v: serde_yaml::Value = serde_yaml::from_slice(bytes).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {} column {}", l.line(), l.column()))
            .unwrap_or_default();
        ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}{at}"))
    })?;
    let v: Value = serde_json::to_value(v)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?;
    Ok((v, Vec::new()))
}

/// The OpenAPI definition of a kind a protobuf body names.
fn protobuf_definition(api_version: &str, kind: &str) -> Option<String> {
    if kind == "DeleteOptions" {
        return Some("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into());
    }
    let (group, version) = crate::meta::split_api_version(api_version);
    basalt_apimachinery::Schemas::builtin()
        .kinds()
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| k.definition.clone())
}

/// Reads a whole body, refusing one larger than `limit` as upstream's 3 MiB cap does. The rest of a too
/// large body is read and dropped (up to a bound) before the refusal, so that an HTTP/1.1 client still
/// writing it gets the 413 rather than a reset connection.
pub async fn read_body(mut body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > limit.saturating_mul(4) {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf.freeze())
}
