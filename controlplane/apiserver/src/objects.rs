//! Objects in the store: keys, encoding, and the read-modify-write loop every update goes through.
//!
//! An object is stored as its JSON without `resourceVersion`; a read sets `resourceVersion` from the store
//! revision that last wrote it, as kube-apiserver does with etcd's mod revision.

use std::sync::Arc;

use basalt_store::{KeyValue, Revision, Store, StoreError};
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::registry::Resource;

pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    crate::meta::set(&mut v, "resourceVersion", kv.mod_revision.to_string());
    Ok(v)
}

/// Appends a stored object to `out` as a list item: its bytes as stored, the resourceVersion set in its
/// metadata, and (`strip_type`) without apiVersion and kind, as upstream lists built-in kinds.
pub fn splice(kv: &KeyValue, strip_type: bool, out: &mut Vec<u8>) -> ApiResult<()> {
    let bad = |e: serde_json::Error| {
        ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key))
    };
    let top: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(&kv.value).map_err(bad)?;
    out.push(b'{');
    let mut first = true;
    let mut wrote_meta = false;
    for (k, v) in &top {
        if strip_type && (k == "apiVersion" || k == "kind") {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, k).map_err(bad)?;
        out.push(b':');
        if k == "metadata" {
            let mut meta: serde_json::Map<String, Value> =
                serde_json::from_str(v.get()).map_err(bad)?;
            meta.insert(
                "resourceVersion".into(),
                Value::String(kv.mod_revision.to_string()),
            );
            serde_json::to_writer(&mut *out, &meta).map_err(bad)?;
            wrote_meta = true;
        } else {
            out.extend_from_slice(v.get().as_bytes());
        }
    }
    if !wrote_meta {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(
            format!(
                "\"metadata\":{{\"resourceVersion\":\"{}\"}}",
                kv.mod_revision
            )
            .as_bytes(),
        );
    }
    out.push(b'}');
    Ok(())
}

pub fn encode(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).expect("a JSON value serializes")
}

/// The store, seen as objects.
#[derive(Clone)]
pub struct Objects {
    pub store: Arc<dyn Store>,
}

impl Objects {
    pub async fn get(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Option<(Value, Revision)>> {
        match self.store.get(&res.key(ns, name)).await? {
            Some(kv) => Ok(Some((decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    pub async fn must_get(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<(Value, Revision)> {
        self.get(res, ns, name)
            .await?
            .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))
    }

    pub async fn create(&self, res: &Resource, obj: &Value) -> ApiResult<Value> {
        let ns = crate::meta::namespace(obj);
        let name = crate::meta::name(obj);
        let key = res.key(Some(ns).filter(|n| !n.is_empty()), name);
        match self.store.create(&key, encode(obj)).await {
            Ok(kv) => decode(&kv),
            Err(StoreError::AlreadyExists(_)) => {
                Err(ApiError::already_exists(&res.group, &res.plural, name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `obj` over the version at `expected`. `Err(None)` when someone wrote in between.
    pub async fn update(
        &self,
        res: &Resource,
        obj: &Value,
        expected: Revision,
    ) -> Result<Value, Option<ApiError>> {
        let ns = crate::meta::namespace(obj);
        let name = crate::meta::name(obj);
        let key = res.key(Some(ns).filter(|n| !n.is_empty()), name);
        match self.store.update(&key, encode(obj), expected).await {
            Ok(kv) => decode(&kv).map_err(Some),
            Err(StoreError::Conflict { .. }) => Err(None),
            Err(StoreError::NotFound(_)) => {
                Err(Some(ApiError::not_found(&res.group, &res.plural, name)))
            }
            Err(e) => Err(Some(e.into())),
        }
    }

    /// Deletes the version at `expected`. `Err(None)` when someone wrote in between.
    pub async fn delete(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        expected: Revision,
    ) -> Result<Value, Option<ApiError>> {
        match self.store.delete(&res.key(ns, name), Some(expected)).await {
            Ok(kv) => decode(&kv).map_err(Some),
            Err(StoreError::Conflict { .. }) => Err(None),
            Err(StoreError::NotFound(_)) => {
                Err(Some(ApiError::not_found(&res.group, &res.plural, name)))
            }
            Err(e) => Err(Some(e.into())),
        }
    }

    /// Every object of a resource (in one namespace, or all), read at one revision.
    pub async fn list_all(
        &self,
        res: &Resource,
        ns: Option<&str>,
    ) -> ApiResult<(Vec<Value>, Revision)> {
        let page = self
            .store
            .list(basalt_store::ListRequest::prefix(&res.prefix(ns)))
            .await?;
        let items = page.kvs.iter().map(decode).collect::<ApiResult<Vec<_>>>()?;
        Ok((items, page.revision))
    }
}
