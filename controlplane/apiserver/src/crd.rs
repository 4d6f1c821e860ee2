//! CustomResourceDefinitions: validation of a CRD, and the controller that serves (and stops serving) its
//! custom resources, keeps its status conditions, and empties it when it is deleted.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use basalt_apimachinery::schema::structural;
use basalt_apimachinery::validate::FieldError;
use serde_json::{json, Value};

use crate::jsonpath;
use crate::kinds::table::AGE;
use crate::kinds::{NameRule, StatusPolicy, Strategy};
use crate::meta;
use crate::registry::{Resource, SchemaRef, Subresource, ALL_VERBS};
use crate::state::State;

pub const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// A printer column of a CRD version.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub ty: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct Scale {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// How one version of a CRD is served.
pub struct Served {
    pub crd_name: String,
    pub storage_version: String,
    pub status: bool,
    pub scale: Option<Scale>,
    pub columns: Vec<Column>,
    pub selectable: Vec<String>,
    pub schema: Value,
}

impl Served {
    pub fn columns(&self) -> Value {
        let mut cols = vec![
            json!({"name": "Name", "type": "string", "format": "name", "description": crate::kinds::table::NAME.description, "priority": 0}),
        ];
        for c in &self.columns {
            cols.push(json!({"name": c.name, "type": c.ty, "format": c.format, "description": c.description, "priority": c.priority}));
        }
        if self.columns.is_empty() {
            cols.push(json!({"name": "Age", "type": "date", "format": "", "description": AGE.description, "priority": 0}));
        }
        Value::Array(cols)
    }

    pub fn row(&self, obj: &Value) -> Vec<Value> {
        let mut cells = vec![json!(meta::name(obj))];
        for c in &self.columns {
            cells.push(match jsonpath::first(obj, &c.path) {
                Some(Value::Array(a)) => json!(a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                    .collect::<Vec<_>>()
                    .join(",")),
                Some(v) => v,
                None => Value::Null,
            });
        }
        if self.columns.is_empty() {
            cells.push(
                obj.pointer("/metadata/creationTimestamp")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
        }
        cells
    }

    pub fn selectable(&self, field: &str) -> bool {
        self.selectable
            .iter()
            .any(|s| s.trim_start_matches('.') == field)
    }

    pub fn field(&self, obj: &Value, field: &str) -> Option<String> {
        jsonpath::first(obj, &format!(".{field}")).map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    /// The version's schema as an OpenAPI definition, with its kind.
    pub fn openapi_schema(&self, res: &Resource) -> Value {
        let mut s = self.schema.clone();
        s["x-kubernetes-group-version-kind"] =
            json!([{"group": res.group, "version": res.version, "kind": res.kind}]);
        if let Some(props) = s.get_mut("properties").and_then(Value::as_object_mut) {
            props.insert("metadata".into(), json!({"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "description": "Standard object's metadata."}));
            props.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            props.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        }
        s
    }
}

/// Custom resources' behaviour: a status subresource when the CRD asks for one.
struct CustomStrategy {
    status: bool,
}

impl Strategy for CustomStrategy {
    fn status(&self) -> StatusPolicy {
        if self.status {
            StatusPolicy::Subresource
        } else {
            StatusPolicy::WithObject
        }
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn name_rule(&self) -> NameRule {
        NameRule::Subdomain
    }
}

fn strs(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Upstream's CRD validation, the parts users meet.
pub fn validate(crd: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or_default();
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let plural = spec
        .pointer("/names/plural")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if group.is_empty() {
        errs.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errs.push(FieldError::invalid(
            "spec.group",
            json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errs.push(FieldError::required("spec.names.plural", ""));
    }
    if spec
        .pointer("/names/kind")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        errs.push(FieldError::required("spec.names.kind", ""));
    }
    let name = meta::name(crd);
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            "metadata.name",
            json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match spec.get("scope").and_then(Value::as_str) {
        Some("Namespaced" | "Cluster") => {}
        Some(s) => errs.push(FieldError::not_supported(
            "spec.scope",
            json!(s),
            &["Cluster", "Namespaced"],
        )),
        None => errs.push(FieldError::required("spec.scope", "")),
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            "spec.versions",
            json!([]),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage != 1 {
        errs.push(FieldError::invalid(
            "spec.versions",
            json!(versions),
            "must have exactly one version marked as storage version",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, v) in versions.iter().enumerate() {
        let vn = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if !seen.insert(vn.to_string()) {
            errs.push(FieldError::new(
                format!("spec.versions[{i}].name"),
                basalt_apimachinery::validate::ErrorKind::Duplicate,
                Some(json!(vn)),
                "",
            ));
        }
        if let Err(e) = basalt_apimachinery::names::dns1035_label(vn) {
            errs.push(FieldError::invalid(
                format!("spec.versions[{i}].name"),
                json!(vn),
                e,
            ));
        }
        match v.pointer("/schema/openAPIV3Schema") {
            None => errs.push(FieldError::required(
                format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(s) => {
                if s.get("type").and_then(Value::as_str) != Some("object") {
                    errs.push(FieldError::required(
                        format!("spec.versions[{i}].schema.openAPIV3Schema.type"),
                        "must not be empty at the root",
                    ));
                }
                structural_errors(
                    s,
                    &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                    &mut errs,
                );
            }
        }
    }
    errs
}

/// A structural schema has a type everywhere (unless it keeps unknown fields or is int-or-string).
fn structural_errors(s: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let preserve = s
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    let ios = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if s.get("type").is_none() && !preserve && !ios {
        errs.push(FieldError::required(
            format!("{path}.type"),
            "must not be empty for specified object fields",
        ));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            structural_errors(v, &format!("{path}.properties[{k}]"), errs);
        }
    }
    if let Some(items) = s.get("items") {
        structural_errors(items, &format!("{path}.items"), errs);
    }
}

/// The resources a CRD serves (one per served version), if it is valid and not being deleted.
fn resources(crd: &Value) -> Vec<Arc<Resource>> {
    if !validate(crd).is_empty() {
        return Vec::new();
    }
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default().to_string();
    let names = &spec["names"];
    let kind = names["kind"].as_str().unwrap_or_default().to_string();
    let plural = names["plural"].as_str().unwrap_or_default().to_string();
    let singular = names
        .get("singular")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_ascii_lowercase());
    let list_kind = names
        .get("listKind")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let namespaced = spec["scope"].as_str() == Some("Namespaced");
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage_version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
        .map(|v| {
            let version = v["name"].as_str().unwrap_or_default().to_string();
            let schema = v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or(json!({"type": "object"}));
            let status = v.pointer("/subresources/status").is_some();
            let scale = v.pointer("/subresources/scale").map(|s| Scale {
                spec_replicas: s
                    .get("specReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".spec.replicas")
                    .to_string(),
                status_replicas: s
                    .get("statusReplicasPath")
                    .and_then(Value::as_str)
                    .unwrap_or(".status.replicas")
                    .to_string(),
                label_selector: s
                    .get("labelSelectorPath")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
            let mut subresources = Vec::new();
            if status {
                subresources.push(Subresource {
                    name: "status",
                    group: "",
                    version: "",
                    kind: "",
                    verbs: &["get", "patch", "update"],
                });
            }
            if scale.is_some() {
                subresources.push(Subresource {
                    name: "scale",
                    group: "autoscaling",
                    version: "v1",
                    kind: "Scale",
                    verbs: &["get", "patch", "update"],
                });
            }
            let columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| Column {
                    name: c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    ty: c
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("string")
                        .to_string(),
                    format: c
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    description: c
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    path: c
                        .get("jsonPath")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                })
                .collect();
            let selectable = v
                .get("selectableFields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    f.get("jsonPath")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect();
            Arc::new(Resource {
                group: group.clone(),
                version,
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                list_kind: list_kind.clone(),
                namespaced,
                short_names: strs(names.get("shortNames")),
                categories: strs(names.get("categories")),
                verbs: ALL_VERBS.to_vec(),
                subresources,
                schema: SchemaRef::Custom(Arc::new(structural(&schema))),
                strategy: Arc::new(CustomStrategy { status }),
                custom: Some(Arc::new(Served {
                    crd_name: meta::name(crd).to_string(),
                    storage_version: storage_version.clone(),
                    status,
                    scale,
                    columns,
                    selectable,
                    schema,
                })),
            })
        })
        .collect()
}

fn condition(t: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": status, "reason": reason, "message": message, "lastTransitionTime": crate::clock::now()})
}

/// Keeps the registry in step with the CRDs, their status current, and empties deleted ones.
pub async fn run(state: Arc<State>) {
    let informer = state.informers.crds.clone();
    informer.ready().await;
    let mut served: std::collections::BTreeMap<String, String> = Default::default();
    let mut last_rev = -1;
    loop {
        let rev = informer.revision();
        if rev != last_rev {
            last_rev = rev;
            let crds = informer.items();
            let names: BTreeSet<String> = crds.iter().map(|c| meta::name(c).to_string()).collect();
            for gone in served
                .keys()
                .filter(|n| !names.contains(*n))
                .cloned()
                .collect::<Vec<_>>()
            {
                state.registry.set_custom(&gone, Vec::new());
                served.remove(&gone);
            }
            for crd in crds {
                if let Err(e) = reconcile(&state, &crd, &mut served).await {
                    tracing::warn!(crd = meta::name(&crd), error = %e.message, "custom resource definition not reconciled");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn reconcile(
    state: &Arc<State>,
    crd: &Value,
    served: &mut std::collections::BTreeMap<String, String>,
) -> crate::errors::ApiResult<()> {
    let name = meta::name(crd).to_string();
    let res = state
        .registry
        .by_kind("apiextensions.k8s.io", "CustomResourceDefinition")
        .expect("CRDs are served");
    if meta::is_deleting(crd) {
        // Stop serving, delete every custom resource, then let the CRD go.
        let rs = resources(crd);
        state.registry.set_custom(&name, Vec::new());
        served.remove(&name);
        if let Some(r) = rs.first() {
            let page = state
                .objects
                .store
                .list(basalt_store::ListRequest::prefix(&r.prefix(None)))
                .await?;
            for kv in page.kvs {
                let _ = state.objects.store.delete(&kv.key, None).await;
            }
        }
        let mut new = crd.clone();
        let mut f = meta::finalizers(crd);
        f.retain(|x| x != CLEANUP_FINALIZER);
        meta::set_finalizers(&mut new, f);
        let rev: i64 = meta::resource_version(crd).parse().unwrap_or(0);
        if meta::finalizers(&new).is_empty() {
            let _ = state.objects.delete(&res, None, &name, rev).await;
        } else {
            let _ = state.objects.update(&res, &new, rev).await;
        }
        return Ok(());
    }
    let fingerprint = format!("{}", crd.get("spec").cloned().unwrap_or_default());
    if served.get(&name) != Some(&fingerprint) {
        state.registry.set_custom(&name, resources(crd));
        served.insert(name.clone(), fingerprint);
    }
    // Status: names accepted, established, the stored version recorded; the cleanup finalizer in place.
    let spec = &crd["spec"];
    let storage = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut new = crd.clone();
    let mut stored: Vec<String> = strs(crd.pointer("/status/storedVersions"));
    if !storage.is_empty() && !stored.contains(&storage) {
        stored.push(storage);
    }
    let conds = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conds.iter().any(|c| {
            c.get("type").and_then(Value::as_str) == Some(t)
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    let mut conditions = conds.clone();
    if !has("NamesAccepted") {
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("NamesAccepted"));
        conditions.push(condition(
            "NamesAccepted",
            "True",
            "NoConflicts",
            "no conflicts found",
        ));
    }
    if !has("Established") {
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Established"));
        conditions.push(condition(
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        ));
    }
    let mut accepted = spec["names"].clone();
    if accepted.get("singular").is_none() {
        accepted["singular"] = json!(spec["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase());
    }
    new["status"] =
        json!({"acceptedNames": accepted, "conditions": conditions, "storedVersions": stored});
    let mut f = meta::finalizers(&new);
    if !f.iter().any(|x| x == CLEANUP_FINALIZER) {
        f.push(CLEANUP_FINALIZER.into());
        meta::set_finalizers(&mut new, f);
    }
    if new != *crd {
        let rev: i64 = meta::resource_version(crd).parse().unwrap_or(0);
        let _ = state.objects.update(&res, &new, rev).await;
    }
    Ok(())
}
