//! The type graph objects are checked and merged against.
//!
//! Built-in kinds come from upstream's OpenAPI definitions (embedded, see build.rs); custom resources from
//! their CRD's structural schema. Both become the same [`Node`] tree, so validation, pruning, strategic
//! merge and server-side apply treat every kind alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::{LazyLock, OnceLock};

use serde_json::Value;

/// How a list merges: replaced whole, a set of scalars, or a map keyed by some of its items' fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListType {
    #[default]
    Atomic,
    Set,
    Map(Vec<String>),
}

/// A list's strategic-merge-patch behaviour (`x-kubernetes-patch-strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PatchStrategy {
    /// Replaced by the patch's list.
    #[default]
    Replace,
    /// Merged item by item (by the merge key, or as a set of scalars).
    Merge,
}

/// A scalar's JSON type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Integer,
    Number,
    Boolean,
}

/// Value constraints of a structural schema (custom resources), checked by [`crate::validate`].
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub required: Vec<String>,
    pub enumeration: Option<Vec<Value>>,
    pub minimum: Option<f64>,
    pub maximum: Option<f64>,
    pub exclusive_minimum: bool,
    pub exclusive_maximum: bool,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<String>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub format: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Node {
    /// A named definition of the built-in graph.
    Ref(&'static Def),
    Object(Box<Object>),
    Array(Box<Array>),
    Scalar(Scalar, Box<Meta>),
    /// `x-kubernetes-int-or-string`: an integer or a string.
    IntOrString(Box<Meta>),
    /// A resource quantity: a string in quantity syntax, or a number.
    Quantity,
    /// Anything (RawExtension, free-form JSON, `x-kubernetes-preserve-unknown-fields` without properties).
    Any(Box<Meta>),
}

/// A named definition; filled once the whole graph is known (definitions refer to each other, some to
/// themselves).
#[derive(Debug)]
pub struct Def {
    pub name: String,
    node: OnceLock<Node>,
}

impl Def {
    pub fn node(&'static self) -> &'static Node {
        self.node.get().expect("definitions are filled before use")
    }
}

/// What any node may carry besides its shape.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub nullable: bool,
    pub default: Option<Value>,
    pub checks: Checks,
}

#[derive(Debug, Clone, Default)]
pub struct Object {
    /// A struct's fields.
    pub properties: BTreeMap<String, Node>,
    /// A map's values (`additionalProperties`).
    pub additional: Option<Node>,
    /// Unknown fields are kept (`x-kubernetes-preserve-unknown-fields`).
    pub preserve_unknown: bool,
    /// Owned and replaced whole by server-side apply (`x-kubernetes-map-type: atomic`).
    pub atomic: bool,
    /// An embedded object with apiVersion, kind and metadata (`x-kubernetes-embedded-resource`).
    pub embedded_resource: bool,
    pub meta: Meta,
}

#[derive(Debug, Clone)]
pub struct Array {
    pub items: Node,
    pub list: ListType,
    pub patch: PatchStrategy,
    pub merge_key: Option<String>,
    /// Keys not in the patch are dropped (`retainKeys`), as for PodSpec.volumes.
    pub retain_keys: bool,
    pub meta: Meta,
}

impl Node {
    /// The node behind any named definition.
    pub fn resolved(&self) -> &Node {
        let mut n = self;
        while let Node::Ref(d) = n {
            n = d.node();
        }
        n
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self.resolved() {
            Node::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Array> {
        match self.resolved() {
            Node::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The schema of `name` inside this object: a struct field, a map value, or anything when unknown
    /// fields are kept.
    pub fn field(&self, name: &str) -> Option<&Node> {
        match self.resolved() {
            Node::Object(o) => o.properties.get(name).or(o.additional.as_ref()).or(
                if o.preserve_unknown || o.embedded_resource && is_embedded_meta(name) {
                    Some(&*ANY)
                } else {
                    None
                },
            ),
            Node::Any(_) => Some(&*ANY),
            _ => None,
        }
    }

    /// Whether server-side apply owns this node as one value rather than field by field.
    pub fn is_atomic(&self) -> bool {
        match self.resolved() {
            Node::Object(o) => o.atomic,
            Node::Array(a) => a.list == ListType::Atomic,
            _ => true,
        }
    }

    pub fn meta(&self) -> Option<&Meta> {
        match self.resolved() {
            Node::Object(o) => Some(&o.meta),
            Node::Array(a) => Some(&a.meta),
            Node::Scalar(_, m) | Node::IntOrString(m) | Node::Any(m) => Some(m),
            Node::Quantity | Node::Ref(_) => None,
        }
    }
}

fn is_embedded_meta(name: &str) -> bool {
    matches!(name, "apiVersion" | "kind" | "metadata")
}

/// The node of anything, for fields whose parent keeps unknown fields.
static ANY: LazyLock<Node> = LazyLock::new(|| Node::Any(Box::default()));

/// Whether a kind lives in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
    /// Only a subresource's (or a review's) body.
    Subresource,
}

/// A built-in kind, as k8s-openapi describes it.
#[derive(Debug, Clone)]
pub struct KindInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub scope: Scope,
    pub list_kind: Option<String>,
    pub definition: String,
}

/// The built-in type graph.
pub struct Schemas {
    defs: HashMap<String, &'static Def>,
    kinds: Vec<KindInfo>,
}

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

impl Schemas {
    /// The built-in kinds' graph, built once from the embedded definitions.
    pub fn builtin() -> &'static Schemas {
        static BUILTIN: OnceLock<Schemas> = OnceLock::new();
        BUILTIN.get_or_init(|| Schemas::from_definitions(&crate::openapi::compact()))
    }

    fn from_definitions(doc: &Value) -> Schemas {
        let empty = serde_json::Map::new();
        let definitions = doc["definitions"].as_object().unwrap_or(&empty);
        // Every definition gets its (leaked, 'static) slot first, so references resolve whatever the order.
        let defs: HashMap<String, &'static Def> = definitions
            .keys()
            .map(|name| {
                let def: &'static Def = Box::leak(Box::new(Def {
                    name: name.clone(),
                    node: OnceLock::new(),
                }));
                (name.clone(), def)
            })
            .collect();
        for (name, schema) in definitions {
            let node = if name == QUANTITY {
                Node::Quantity
            } else {
                convert(schema, &|r| defs.get(r).copied())
            };
            let _ = defs[name].node.set(node);
        }
        let kinds = doc["kinds"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|k| KindInfo {
                        group: k["group"].as_str().unwrap_or_default().to_string(),
                        version: k["version"].as_str().unwrap_or_default().to_string(),
                        kind: k["kind"].as_str().unwrap_or_default().to_string(),
                        plural: k["plural"].as_str().unwrap_or_default().to_string(),
                        scope: match k["scope"].as_str() {
                            Some("Namespaced") => Scope::Namespaced,
                            Some("Cluster") => Scope::Cluster,
                            _ => Scope::Subresource,
                        },
                        list_kind: k["listKind"].as_str().map(str::to_string),
                        definition: k["definition"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Schemas { defs, kinds }
    }

    /// A definition by its OpenAPI name (`io.k8s.api.core.v1.Pod`).
    pub fn definition(&self, name: &str) -> Option<&'static Node> {
        self.defs.get(name).map(|d| d.node())
    }

    /// The schema of a built-in kind.
    pub fn kind(&self, group: &str, version: &str, kind: &str) -> Option<&'static Node> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind)
            .and_then(|k| self.definition(&k.definition))
    }

    pub fn kinds(&self) -> &[KindInfo] {
        &self.kinds
    }
}

/// Converts one JSON schema (an OpenAPI definition, or a CRD's structural schema) into a node. `lookup`
/// resolves `$ref`s (none in a structural schema).
pub fn convert(schema: &Value, lookup: &dyn Fn(&str) -> Option<&'static Def>) -> Node {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        if name == QUANTITY {
            return Node::Quantity;
        }
        return match lookup(name) {
            Some(def) => Node::Ref(def),
            None => Node::Any(Box::default()),
        };
    }
    // OpenAPI v3 wraps a described reference as allOf: [{$ref}].
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        if all.len() == 1 {
            return convert(&all[0], lookup);
        }
    }
    let meta = meta(schema);
    if flag(schema, "x-kubernetes-int-or-string") {
        return Node::IntOrString(Box::new(meta));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    match ty {
        Some("string") => Node::Scalar(Scalar::String, Box::new(meta)),
        Some("integer") => Node::Scalar(Scalar::Integer, Box::new(meta)),
        Some("number") => Node::Scalar(Scalar::Number, Box::new(meta)),
        Some("boolean") => Node::Scalar(Scalar::Boolean, Box::new(meta)),
        Some("array") => {
            let items = schema
                .get("items")
                .map(|i| convert(i, lookup))
                .unwrap_or(Node::Any(Box::default()));
            let list = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListType::Set,
                Some("map") => ListType::Map(
                    schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| {
                            k.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => ListType::Atomic,
            };
            let strategy = schema
                .get("x-kubernetes-patch-strategy")
                .and_then(Value::as_str)
                .unwrap_or("");
            Node::Array(Box::new(Array {
                items,
                list,
                patch: if strategy.split(',').any(|s| s == "merge") {
                    PatchStrategy::Merge
                } else {
                    PatchStrategy::Replace
                },
                merge_key: schema
                    .get("x-kubernetes-patch-merge-key")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                retain_keys: strategy.split(',').any(|s| s == "retainKeys"),
                meta,
            }))
        }
        Some("object") | None
            if schema.get("properties").is_some()
                || schema.get("additionalProperties").is_some() =>
        {
            let properties = schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| (k.clone(), convert(v, lookup)))
                        .collect()
                })
                .unwrap_or_default();
            let additional = match schema.get("additionalProperties") {
                Some(Value::Bool(true)) => Some(Node::Any(Box::default())),
                Some(v @ Value::Object(_)) => Some(convert(v, lookup)),
                _ => None,
            };
            Node::Object(Box::new(Object {
                properties,
                additional,
                preserve_unknown: flag(schema, "x-kubernetes-preserve-unknown-fields"),
                atomic: schema.get("x-kubernetes-map-type").and_then(Value::as_str)
                    == Some("atomic"),
                embedded_resource: flag(schema, "x-kubernetes-embedded-resource"),
                meta,
            }))
        }
        Some("object") if flag(schema, "x-kubernetes-embedded-resource") => {
            Node::Object(Box::new(Object {
                preserve_unknown: flag(schema, "x-kubernetes-preserve-unknown-fields"),
                embedded_resource: true,
                meta,
                ..Default::default()
            }))
        }
        // An object without fields or value schema (RawExtension), or no type at all: free-form.
        _ => Node::Any(Box::new(meta)),
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn meta(schema: &Value) -> Meta {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let uint = |k: &str| schema.get(k).and_then(Value::as_u64);
    Meta {
        nullable: flag(schema, "nullable"),
        default: schema.get("default").cloned(),
        checks: Checks {
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            enumeration: schema.get("enum").and_then(Value::as_array).cloned(),
            minimum: num("minimum"),
            maximum: num("maximum"),
            exclusive_minimum: flag(schema, "exclusiveMinimum"),
            exclusive_maximum: flag(schema, "exclusiveMaximum"),
            min_length: uint("minLength"),
            max_length: uint("maxLength"),
            pattern: schema
                .get("pattern")
                .and_then(Value::as_str)
                .map(str::to_string),
            min_items: uint("minItems"),
            max_items: uint("maxItems"),
            unique_items: flag(schema, "uniqueItems"),
            min_properties: uint("minProperties"),
            max_properties: uint("maxProperties"),
            format: schema
                .get("format")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
    }
}

/// A custom resource's structural schema (a CRD version's `schema.openAPIV3Schema`) as a node. The
/// top-level `apiVersion`, `kind` and `metadata` are always allowed, as for every kind.
pub fn structural(schema: &Value) -> Node {
    let mut node = convert(schema, &|_| None);
    if let Node::Object(o) = &mut node {
        let builtin = Schemas::builtin();
        o.properties
            .entry("apiVersion".into())
            .or_insert_with(|| Node::Scalar(Scalar::String, Box::default()));
        o.properties
            .entry("kind".into())
            .or_insert_with(|| Node::Scalar(Scalar::String, Box::default()));
        // Metadata is always ObjectMeta, whatever the CRD says of it.
        if let Some(meta) = builtin
            .defs
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        {
            o.properties.insert("metadata".into(), Node::Ref(meta));
        }
    }
    node
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_graph_has_upstreams_kinds_and_merge_keys() {
        let s = Schemas::builtin();
        let pod = s.kind("", "v1", "Pod").expect("Pod");
        let containers = pod
            .field("spec")
            .and_then(|spec| spec.field("containers"))
            .and_then(Node::as_array)
            .expect("spec.containers is a list");
        assert_eq!(containers.list, ListType::Map(vec!["name".into()]));
        assert_eq!(containers.merge_key.as_deref(), Some("name"));
        assert_eq!(containers.patch, PatchStrategy::Merge);
        let ports = containers
            .items
            .field("ports")
            .and_then(Node::as_array)
            .unwrap();
        assert_eq!(
            ports.list,
            ListType::Map(vec!["containerPort".into(), "protocol".into()])
        );
        let volumes = pod
            .field("spec")
            .unwrap()
            .field("volumes")
            .and_then(Node::as_array)
            .unwrap();
        assert!(volumes.retain_keys);
        let args = containers
            .items
            .field("args")
            .and_then(Node::as_array)
            .unwrap();
        assert_eq!(args.list, ListType::Atomic);
        assert_eq!(args.patch, PatchStrategy::Replace);
        let finalizers = pod
            .field("metadata")
            .unwrap()
            .field("finalizers")
            .and_then(Node::as_array)
            .unwrap();
        assert_eq!(
            (finalizers.list.clone(), finalizers.patch),
            (ListType::Set, PatchStrategy::Merge)
        );
        // Labels are a map of strings; an unknown field of a struct is unknown.
        assert!(matches!(
            pod.field("metadata")
                .unwrap()
                .field("labels")
                .unwrap()
                .field("any"),
            Some(Node::Scalar(Scalar::String, _))
        ));
        assert!(pod.field("spec").unwrap().field("nosuchfield").is_none());
        assert!(matches!(
            containers
                .items
                .field("resources")
                .unwrap()
                .field("limits")
                .unwrap()
                .field("cpu"),
            Some(Node::Quantity)
        ));
        let selector = s
            .kind("apps", "v1", "Deployment")
            .unwrap()
            .field("spec")
            .unwrap()
            .field("selector")
            .unwrap();
        assert!(selector.is_atomic(), "LabelSelector is an atomic struct");
    }

    #[test]
    fn kinds_carry_their_rest_facts() {
        let s = Schemas::builtin();
        let find = |g: &str, k: &str| {
            s.kinds()
                .iter()
                .find(|i| i.group == g && i.kind == k)
                .unwrap()
        };
        let pod = find("", "Pod");
        assert_eq!(
            (pod.plural.as_str(), pod.scope),
            ("pods", Scope::Namespaced)
        );
        assert_eq!(pod.list_kind.as_deref(), Some("PodList"));
        assert_eq!(find("", "Node").scope, Scope::Cluster);
        assert_eq!(find("policy", "Eviction").scope, Scope::Subresource);
        assert!(s.definition("io.k8s.api.apps.v1.DeploymentList").is_some());
    }

    #[test]
    fn structural_schemas_convert_with_constraints() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "default": 3},
                        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }
            }
        });
        let node = structural(&schema);
        let spec = node.field("spec").unwrap();
        assert_eq!(
            spec.meta().unwrap().checks.required,
            vec!["size".to_string()]
        );
        let size = spec.field("size").unwrap();
        assert_eq!(size.meta().unwrap().checks.minimum, Some(1.0));
        assert_eq!(size.meta().unwrap().default, Some(serde_json::json!(3)));
        assert_eq!(
            spec.field("tags").and_then(Node::as_array).unwrap().list,
            ListType::Set
        );
        assert!(spec.field("free").unwrap().field("anything").is_some());
        assert!(node.field("metadata").unwrap().field("labels").is_some());
    }
}
