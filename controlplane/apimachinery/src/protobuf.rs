//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`), decoded into the JSON form.
//!
//! Typed Go clients — kubectl's `create`, `auth can-i`, `create token` among them — send built-in objects
//! as protobuf: the magic `k8s\0`, then a `runtime.Unknown` carrying apiVersion, kind and the object's bytes
//! in upstream's generated.proto layout. The field numbers of every built-in message are in
//! data/proto-fields.txt (see tools/proto-fields.py); a few types whose JSON form is not an object of their
//! fields (Time, Quantity, IntOrString, RawExtension…) are read by hand.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value};

static TABLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/proto-fields.txt.z"));

/// The magic that starts every Kubernetes protobuf body.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtoError(pub String);

fn err(msg: impl Into<String>) -> ProtoError {
    ProtoError(msg.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Float,
    Msg(String),
}

#[derive(Debug, Clone)]
enum Field {
    One(String, Kind),
    Repeated(String, Kind),
    Map(String, Kind, Kind),
    /// An embedded Go struct: its fields are the parent's.
    Inline(String),
}

type Table = HashMap<String, HashMap<u32, Field>>;

fn kind(s: &str) -> Kind {
    match s {
        "string" => Kind::String,
        "bytes" => Kind::Bytes,
        "bool" => Kind::Bool,
        "int32" => Kind::Int32,
        "int64" => Kind::Int64,
        "double" => Kind::Double,
        "float" => Kind::Float,
        other => Kind::Msg(other.strip_prefix("msg:").unwrap_or(other).to_string()),
    }
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let mut text = String::new();
        flate2::read::ZlibDecoder::new(TABLE)
            .read_to_string(&mut text)
            .expect("the embedded protobuf table inflates");
        let mut t: Table = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let w: Vec<&str> = line.split_whitespace().collect();
            let (def, tag, name, label, ty) = (w[0], w[1].parse().unwrap_or(0), w[2], w[3], w[4]);
            let field = match label {
                "opt" => Field::One(name.into(), kind(ty)),
                "rep" => Field::Repeated(name.into(), kind(ty)),
                "map" => {
                    let (k, v) = ty.split_once(',').unwrap_or(("string", "string"));
                    Field::Map(name.into(), kind(k), kind(v))
                }
                _ => Field::Inline(ty.strip_prefix("msg:").unwrap_or(ty).to_string()),
            };
            t.entry(def.to_string()).or_default().insert(tag, field);
        }
        t
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| err("truncated varint"))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(err("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| err("truncated field"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// One raw field: its number and its value by wire type.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

fn fields(buf: &[u8]) -> Result<Vec<(u32, Wire<'_>)>, ProtoError> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while !r.done() {
        let key = r.varint()?;
        let tag = (key >> 3) as u32;
        let w = match key & 7 {
            0 => Wire::Varint(r.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
            2 => {
                let n = r.varint()? as usize;
                Wire::Bytes(r.take(n)?)
            }
            5 => Wire::Fixed32(u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"))),
            other => return Err(err(format!("unsupported wire type {other}"))),
        };
        out.push((tag, w));
    }
    Ok(out)
}

fn scalar(k: &Kind, w: &Wire) -> Result<Value, ProtoError> {
    Ok(match (k, w) {
        (Kind::String, Wire::Bytes(b)) => {
            Value::String(String::from_utf8(b.to_vec()).map_err(|_| err("a string is not UTF-8"))?)
        }
        (Kind::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(*v != 0),
        (Kind::Int32, Wire::Varint(v)) => Value::from(*v as i32 as i64),
        (Kind::Int64, Wire::Varint(v)) => Value::from(*v as i64),
        (Kind::Double, Wire::Fixed64(v)) => serde_json::Number::from_f64(f64::from_bits(*v))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        (Kind::Float, Wire::Fixed32(v)) => {
            serde_json::Number::from_f64(f64::from(f32::from_bits(*v)))
                .map(Value::Number)
                .unwrap_or(Value::Null)
        }
        (Kind::Msg(def), Wire::Bytes(b)) => message(def, b)?,
        _ => {
            return Err(err(format!(
                "field of type {k:?} with an unexpected wire type"
            )))
        }
    })
}

/// Values of a repeated scalar field, packed or not.
fn repeated(k: &Kind, w: &Wire) -> Result<Vec<Value>, ProtoError> {
    match (k, w) {
        (Kind::Bool | Kind::Int32 | Kind::Int64, Wire::Bytes(b)) => {
            let mut r = Reader { buf: b, pos: 0 };
            let mut out = Vec::new();
            while !r.done() {
                out.push(scalar(k, &Wire::Varint(r.varint()?))?);
            }
            Ok(out)
        }
        _ => Ok(vec![scalar(k, w)?]),
    }
}

/// Go's zero `time.Time` in Unix seconds (January 1, year 1).
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` of a Unix time (UTC).
fn rfc3339(secs: i64, micros: Option<i64>) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    match micros {
        Some(us) => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z"),
        None => format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
    }
}

fn raw_json(b: &[u8]) -> Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|_| Value::String(base64::engine::general_purpose::STANDARD.encode(b)))
}

/// Fields whose zero value means something (Go pointers: `*int32`, `*bool`, `*string`), kept when a client
/// sends them zero. Every other zero scalar, empty list and empty map is dropped, as Go's `omitempty` drops
/// them from JSON: a Go client's protobuf carries every non-pointer field, set or not.
const MEANINGFUL_ZERO: &[&str] = &[
    "replicas",
    "parallelism",
    "completions",
    "backoffLimit",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "activeDeadlineSeconds",
    "terminationGracePeriodSeconds",
    "ttlSecondsAfterFinished",
    "startingDeadlineSeconds",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "revisionHistoryLimit",
    "progressDeadlineSeconds",
    "defaultMode",
    "mode",
    "runAsUser",
    "runAsGroup",
    "fsGroup",
    "priority",
    "storageClassName",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "shareProcessNamespace",
    "hostUsers",
    "setHostnameAsFQDN",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "privileged",
    "allowPrivilegeEscalation",
    "optional",
    "suspend",
    "immutable",
    "allocateLoadBalancerNodePorts",
    "expirationSeconds",
    "gracePeriodSeconds",
    "orphanDependents",
    "value",
    "allowed",
    "denied",
    "authenticated",
    "unschedulable",
];

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
    }
}

fn required(def: &str) -> Vec<String> {
    crate::Schemas::builtin()
        .definition(def)
        .and_then(crate::Node::meta)
        .map(|m| m.checks.required.clone())
        .unwrap_or_default()
}

/// Decodes one message of definition `def` into its JSON form.
pub fn message(def: &str, buf: &[u8]) -> Result<Value, ProtoError> {
    let fs = fields(buf)?;
    let get = |tag: u32| fs.iter().rev().find(|(t, _)| *t == tag).map(|(_, w)| w);
    let varint = |tag: u32| match get(tag) {
        Some(Wire::Varint(v)) => *v as i64,
        _ => 0,
    };
    let bytes = |tag: u32| match get(tag) {
        Some(Wire::Bytes(b)) => *b,
        _ => &[][..],
    };
    let short = def.rsplit('.').next().unwrap_or(def);
    match def {
        // Go's zero time (year 1) and an empty message are no time at all: null, as Go's JSON writes it.
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime"
            if get(1).is_none() || varint(1) == GO_ZERO_TIME =>
        {
            return Ok(Value::Null)
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.Time" => {
            return Ok(Value::String(rfc3339(varint(1), None)))
        }
        "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return Ok(Value::String(rfc3339(varint(1), Some(varint(2) / 1000))))
        }
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => {
            return Ok(Value::String(
                String::from_utf8_lossy(bytes(1)).into_owned(),
            ))
        }
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => {
            return Ok(if varint(1) == 1 {
                Value::String(String::from_utf8_lossy(bytes(3)).into_owned())
            } else {
                Value::from(varint(2) as i32)
            })
        }
        "io.k8s.apimachinery.pkg.runtime.RawExtension"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1"
        | "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON" => {
            return Ok(raw_json(bytes(1)))
        }
        _ if short == "ExtraValue" || short == "Verbs" => {
            let items: Vec<Value> = fs
                .iter()
                .filter(|(t, _)| *t == 1)
                .filter_map(|(_, w)| match w {
                    Wire::Bytes(b) => Some(Value::String(String::from_utf8_lossy(b).into_owned())),
                    _ => None,
                })
                .collect();
            return Ok(Value::Array(items));
        }
        _ => {}
    }
    let spec = table().get(def);
    let mut obj = Map::new();
    for (tag, w) in &fs {
        let Some(f) = spec.and_then(|s| s.get(tag)) else {
            // A field this version does not know: skipped, as a decoder of an older schema does.
            continue;
        };
        match f {
            Field::One(name, k) => {
                obj.insert(name.clone(), scalar(k, w)?);
            }
            Field::Repeated(name, k) => {
                let list = obj
                    .entry(name.clone())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(a) = list {
                    a.extend(repeated(k, w)?);
                }
            }
            Field::Map(name, kk, vk) => {
                let Wire::Bytes(entry) = w else {
                    return Err(err(format!("map field {name} is not a message")));
                };
                let ef = fields(entry)?;
                let key = ef
                    .iter()
                    .find(|(t, _)| *t == 1)
                    .map(|(_, w)| scalar(kk, w))
                    .transpose()?
                    .unwrap_or(Value::String(String::new()));
                let val = match ef.iter().find(|(t, _)| *t == 2) {
                    Some((_, w)) => scalar(vk, w)?,
                    None => match vk {
                        Kind::String | Kind::Bytes => Value::String(String::new()),
                        Kind::Msg(d) => message(d, &[])?,
                        _ => Value::Null,
                    },
                };
                let m = obj
                    .entry(name.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let (Value::Object(m), Some(k)) = (
                    m,
                    key.as_str()
                        .map(str::to_string)
                        .or_else(|| Some(key.to_string())),
                ) {
                    m.insert(k, val);
                }
            }
            Field::Inline(inner) => {
                let Wire::Bytes(b) = w else { continue };
                if let Value::Object(m) = message(inner, b)? {
                    obj.extend(m);
                }
            }
        }
    }
    let required = required(def);
    obj.retain(|k, v| {
        !is_zero(v)
            || required.iter().any(|r| r == k)
            || (MEANINGFUL_ZERO.contains(&k.as_str()) && !v.is_array() && !v.is_object())
    });
    Ok(Value::Object(obj))
}

/// Decodes a `k8s\0`-framed body: its apiVersion, kind and the object (apiVersion and kind included).
/// `definition` names the OpenAPI definition of a kind.
pub fn decode(
    body: &[u8],
    definition: impl Fn(&str, &str) -> Option<String>,
) -> Result<Value, ProtoError> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| err("the body is not Kubernetes protobuf (no k8s\\0 prefix)"))?;
    let unknown = fields(rest)?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (t, w) in &unknown {
        match (t, w) {
            (1, Wire::Bytes(tm)) => {
                for (tt, tw) in fields(tm)? {
                    if let Wire::Bytes(b) = tw {
                        let s = String::from_utf8_lossy(b).into_owned();
                        if tt == 1 {
                            api_version = s;
                        } else if tt == 2 {
                            kind = s;
                        }
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let def = definition(&api_version, &kind)
        .ok_or_else(|| err(format!("no protobuf schema for {api_version}, Kind={kind}")))?;
    let mut obj = message(&def, raw)?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(tag: u32, b: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(tag << 3 | 2), out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn varint_field(tag: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(tag << 3), out);
        varint(v, out);
    }

    #[test]
    fn a_config_map_as_kubectl_sends_it() {
        // metadata {name: "c1", namespace: "t1", creationTimestamp: {seconds: 86400}}
        let mut time = Vec::new();
        varint_field(1, 86400, &mut time);
        let mut meta = Vec::new();
        bytes_field(1, b"c1", &mut meta);
        bytes_field(3, b"t1", &mut meta);
        bytes_field(8, &time, &mut meta);
        let mut entry = Vec::new();
        bytes_field(1, b"a", &mut entry);
        bytes_field(2, b"b", &mut entry);
        let mut cm = Vec::new();
        bytes_field(1, &meta, &mut cm);
        bytes_field(2, &entry, &mut cm);
        varint_field(4, 1, &mut cm);
        let mut tm = Vec::new();
        bytes_field(1, b"v1", &mut tm);
        bytes_field(2, b"ConfigMap", &mut tm);
        let mut unknown = Vec::new();
        bytes_field(1, &tm, &mut unknown);
        bytes_field(2, &cm, &mut unknown);
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let v = decode(&body, |av, k| {
            (av == "v1" && k == "ConfigMap").then(|| "io.k8s.api.core.v1.ConfigMap".to_string())
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c1", "namespace": "t1", "creationTimestamp": "1970-01-02T00:00:00Z"},
                "data": {"a": "b"},
                "immutable": true
            })
        );
    }

    #[test]
    fn ints_or_strings_quantities_and_inlined_structs() {
        let mut ios = Vec::new();
        varint_field(1, 1, &mut ios);
        bytes_field(3, b"http", &mut ios);
        assert_eq!(
            message("io.k8s.apimachinery.pkg.util.intstr.IntOrString", &ios).unwrap(),
            Value::String("http".into())
        );
        let mut n = Vec::new();
        varint_field(2, 8080, &mut n);
        assert_eq!(
            message("io.k8s.apimachinery.pkg.util.intstr.IntOrString", &n).unwrap(),
            Value::from(8080)
        );
        // ConfigMapKeySelector embeds LocalObjectReference (name) inline.
        let mut lor = Vec::new();
        bytes_field(1, b"cfg", &mut lor);
        let mut sel = Vec::new();
        bytes_field(1, &lor, &mut sel);
        bytes_field(2, b"key", &mut sel);
        assert_eq!(
            message("io.k8s.api.core.v1.ConfigMapKeySelector", &sel).unwrap(),
            serde_json::json!({"name": "cfg", "key": "key"})
        );
        assert_eq!(rfc3339(1_700_000_000, None), "2023-11-14T22:13:20Z");
        assert!(decode(b"{}", |_, _| None).is_err());
    }
}
