//! Generates the built-in kinds' OpenAPI definitions and the table of served kinds from k8s-openapi, and
//! embeds them deflated.
//!
//! Two artifacts go to OUT_DIR:
//! - `openapi.json.z`: every definition reachable from a served kind, with upstream's descriptions and
//!   our merge-semantics extensions (data/merge-semantics.txt), plus the kinds table. Served as
//!   /openapi/v2 and /openapi/v3 and read only then.
//! - `schemas.json.z`: the same without descriptions, which the apiserver keeps in memory as its type graph.

use std::collections::BTreeMap;
use std::io::Write;

use k8s_openapi::api;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::{ListableResource, Resource};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

struct Kinds {
    generator: SchemaGenerator,
    kinds: Vec<Value>,
}

impl Kinds {
    /// A kind served as a resource: schema, list kind and REST facts.
    fn resource<T: Resource + ListableResource + JsonSchema>(&mut self) {
        self.add::<T>(Some(T::LIST_KIND));
    }

    /// A kind that exists only as a subresource's body (Binding, Eviction, Scale, TokenRequest…) or a
    /// create-only review.
    fn body<T: Resource + JsonSchema>(&mut self) {
        self.add::<T>(None);
    }

    fn add<T: Resource + JsonSchema>(&mut self, list_kind: Option<&str>) {
        self.generator.subschema_for::<T>();
        let scope = std::any::type_name::<T::Scope>();
        let scope = if scope.ends_with("NamespaceResourceScope") {
            "Namespaced"
        } else if scope.ends_with("ClusterResourceScope") {
            "Cluster"
        } else {
            "Subresource"
        };
        self.kinds.push(json!({
            "group": T::GROUP,
            "version": T::VERSION,
            "kind": T::KIND,
            "plural": T::URL_PATH_SEGMENT,
            "scope": scope,
            "listKind": list_kind,
            "definition": T::schema_name(),
        }));
    }
}

fn main() {
    println!("cargo:rerun-if-changed=data/merge-semantics.txt");
    println!("cargo:rerun-if-changed=data/proto-fields.txt");
    println!("cargo:rerun-if-changed=build.rs");
    let mut k = Kinds {
        generator: SchemaSettings::draft07().into_generator(),
        kinds: Vec::new(),
    };
    use api::core::v1 as core;
    k.resource::<core::Namespace>();
    k.resource::<core::Pod>();
    k.resource::<core::Node>();
    k.resource::<core::Service>();
    k.resource::<core::Endpoints>();
    k.resource::<core::ConfigMap>();
    k.resource::<core::Secret>();
    k.resource::<core::ServiceAccount>();
    k.resource::<core::Event>();
    k.resource::<core::PersistentVolume>();
    k.resource::<core::PersistentVolumeClaim>();
    k.resource::<core::ResourceQuota>();
    k.resource::<core::LimitRange>();
    k.resource::<core::PodTemplate>();
    k.resource::<core::ReplicationController>();
    k.body::<core::Binding>();
    k.resource::<api::apps::v1::Deployment>();
    k.resource::<api::apps::v1::ReplicaSet>();
    k.resource::<api::apps::v1::DaemonSet>();
    k.resource::<api::apps::v1::StatefulSet>();
    k.resource::<api::apps::v1::ControllerRevision>();
    k.resource::<api::batch::v1::Job>();
    k.resource::<api::batch::v1::CronJob>();
    k.body::<api::autoscaling::v1::Scale>();
    k.resource::<api::autoscaling::v2::HorizontalPodAutoscaler>();
    k.resource::<api::coordination::v1::Lease>();
    k.resource::<api::discovery::v1::EndpointSlice>();
    k.resource::<api::events::v1::Event>();
    k.resource::<api::policy::v1::PodDisruptionBudget>();
    k.body::<api::policy::v1::Eviction>();
    k.resource::<api::storage::v1::StorageClass>();
    k.resource::<api::storage::v1::CSIDriver>();
    k.resource::<api::storage::v1::CSINode>();
    k.resource::<api::storage::v1::VolumeAttachment>();
    k.resource::<api::rbac::v1::Role>();
    k.resource::<api::rbac::v1::ClusterRole>();
    k.resource::<api::rbac::v1::RoleBinding>();
    k.resource::<api::rbac::v1::ClusterRoleBinding>();
    k.resource::<api::certificates::v1::CertificateSigningRequest>();
    k.body::<api::authentication::v1::TokenReview>();
    k.body::<api::authentication::v1::SelfSubjectReview>();
    k.body::<api::authentication::v1::TokenRequest>();
    k.body::<api::authorization::v1::SubjectAccessReview>();
    k.body::<api::authorization::v1::SelfSubjectAccessReview>();
    k.body::<api::authorization::v1::LocalSubjectAccessReview>();
    k.body::<api::authorization::v1::SelfSubjectRulesReview>();
    k.resource::<api::scheduling::v1::PriorityClass>();
    k.resource::<api::networking::v1::Ingress>();
    k.resource::<api::networking::v1::IngressClass>();
    k.resource::<api::networking::v1::NetworkPolicy>();
    k.resource::<api::node::v1::RuntimeClass>();
    k.resource::<apiextensions::CustomResourceDefinition>();
    // The shapes every API answers with.
    k.generator.subschema_for::<meta::Status>();
    k.generator.subschema_for::<meta::DeleteOptions>();
    k.generator.subschema_for::<meta::APIResourceList>();
    k.generator.subschema_for::<meta::APIGroupList>();
    k.generator.subschema_for::<meta::APIVersions>();
    k.generator.subschema_for::<meta::Patch>();

    let mut definitions: BTreeMap<String, Value> =
        k.generator.take_definitions(true).into_iter().collect();

    // List kinds: upstream's `<Kind>List` definitions, which k8s-openapi models with a generic type.
    for kind in &k.kinds {
        let Some(list_kind) = kind["listKind"].as_str() else {
            continue;
        };
        let def = kind["definition"].as_str().unwrap();
        let list_def = format!(
            "{}{}",
            def.strip_suffix(kind["kind"].as_str().unwrap()).unwrap(),
            list_kind
        );
        definitions.insert(
            list_def.clone(),
            json!({
                "description": format!("{list_kind} is a list of {}.", kind["kind"].as_str().unwrap()),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                    "items": {"description": format!("List of {}.", kind["plural"].as_str().unwrap()), "type": "array", "items": {"$ref": format!("#/definitions/{def}")}},
                    "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                    "metadata": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta", "description": "Standard list metadata."},
                },
                "x-kubernetes-group-version-kind": [{"group": kind["group"], "version": kind["version"], "kind": list_kind}],
            }),
        );
    }
    // Kinds: their GVK, and metadata not required (k8s-openapi marks it so only because its field is not
    // optional in Rust).
    for kind in &k.kinds {
        let def = definitions
            .get_mut(kind["definition"].as_str().unwrap())
            .unwrap();
        let obj = def.as_object_mut().unwrap();
        obj.insert(
            "x-kubernetes-group-version-kind".into(),
            json!([{"group": kind["group"], "version": kind["version"], "kind": kind["kind"]}]),
        );
        if let Some(req) = obj.get_mut("required").and_then(Value::as_array_mut) {
            req.retain(|r| r != "metadata");
            if req.is_empty() {
                obj.remove("required");
            }
        }
    }
    apply_merge_semantics(&mut definitions);

    let full = json!({"definitions": definitions, "kinds": k.kinds});
    let mut compact = full.clone();
    strip_descriptions(&mut compact);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    write_deflated(&out.join("openapi.json.z"), &full);
    write_deflated(&out.join("schemas.json.z"), &compact);
    let proto = std::fs::read("data/proto-fields.txt").expect("read data/proto-fields.txt");
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&proto).unwrap();
    std::fs::write(out.join("proto-fields.txt.z"), enc.finish().unwrap()).unwrap();
}

fn apply_merge_semantics(definitions: &mut BTreeMap<String, Value>) {
    let text =
        std::fs::read_to_string("data/merge-semantics.txt").expect("read data/merge-semantics.txt");
    let mut key_defaults: Vec<(String, String, String)> = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(def) = definitions.get_mut(words[0]) else {
            continue;
        };
        if words[1] == "atomic-struct" {
            def.as_object_mut()
                .unwrap()
                .insert("x-kubernetes-map-type".into(), "atomic".into());
            continue;
        }
        let Some(prop) = def.pointer_mut(&format!("/properties/{}", words[1])) else {
            panic!(
                "data/merge-semantics.txt: {} has no property {}",
                words[0], words[1]
            );
        };
        let prop = prop.as_object_mut().unwrap();
        let mut attrs: Map<String, Value> = Map::new();
        match words[2] {
            "map" => {
                attrs.insert("x-kubernetes-list-type".into(), "map".into());
            }
            "set" => {
                attrs.insert("x-kubernetes-list-type".into(), "set".into());
            }
            "atomic" => {
                attrs.insert("x-kubernetes-list-type".into(), "atomic".into());
            }
            "atomic-map" => {
                attrs.insert("x-kubernetes-map-type".into(), "atomic".into());
            }
            other => panic!("data/merge-semantics.txt: unknown kind {other}"),
        }
        for w in &words[3..] {
            let (k, v) = w.split_once('=').expect("key=value");
            match k {
                "keys" => {
                    attrs.insert(
                        "x-kubernetes-list-map-keys".into(),
                        json!(v.split(',').collect::<Vec<_>>()),
                    );
                }
                "patch" => {
                    attrs.insert("x-kubernetes-patch-strategy".into(), v.into());
                }
                "merge-key" => {
                    attrs.insert("x-kubernetes-patch-merge-key".into(), v.into());
                }
                "key-default" => {
                    let item = prop
                        .get("items")
                        .and_then(|i| i.get("$ref"))
                        .and_then(Value::as_str)
                        .and_then(|r| r.rsplit('/').next())
                        .expect("a list map of referenced items")
                        .to_string();
                    let (field, value) = v.split_once(':').expect("key:value");
                    key_defaults.push((item, field.to_string(), value.to_string()));
                }
                other => panic!("data/merge-semantics.txt: unknown attribute {other}"),
            }
        }
        prop.extend(attrs);
    }
    for (def, field, value) in key_defaults {
        let p = definitions
            .get_mut(&def)
            .and_then(|d| d.pointer_mut(&format!("/properties/{field}")))
            .unwrap_or_else(|| panic!("{def} has no property {field}"));
        p.as_object_mut()
            .unwrap()
            .insert("default".into(), Value::String(value));
    }
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("description");
            m.values_mut().for_each(strip_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

fn write_deflated(path: &std::path::Path, v: &Value) {
    let bytes = serde_json::to_vec(v).unwrap();
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&bytes).unwrap();
    std::fs::write(path, enc.finish().unwrap()).unwrap();
}
