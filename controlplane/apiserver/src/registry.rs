//! The served resources: the built-in table (names, verbs, subresources, behaviour) and the custom
//! resources that CRDs add while the server runs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use basalt_apimachinery::schema::{Node, Schemas, Scope};

use crate::kinds::{self, Strategy};

/// Where a resource's schema lives.
#[derive(Clone)]
pub enum SchemaRef {
    Builtin(&'static Node),
    Custom(Arc<Node>),
}

impl SchemaRef {
    pub fn node(&self) -> &Node {
        match self {
            SchemaRef::Builtin(n) => n,
            SchemaRef::Custom(n) => n,
        }
    }
}

/// A subresource as discovery lists it.
#[derive(Debug, Clone)]
pub struct Subresource {
    pub name: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
}

pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const CREATE_ONLY: &[&str] = &["create"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

/// A resource the API serves.
pub struct Resource {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub verbs: Vec<&'static str>,
    pub subresources: Vec<Subresource>,
    pub schema: SchemaRef,
    pub strategy: Arc<dyn Strategy>,
    /// Set for custom resources: the CRD's serving details.
    pub custom: Option<Arc<crate::crd::Served>>,
}

impl Resource {
    pub fn api_version(&self) -> String {
        crate::meta::api_version(&self.group, &self.version)
    }

    /// The store key prefix of every object (`None`) or of one namespace's.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!("/registry/{group}/{}/{ns}/", self.plural),
            None => format!("/registry/{group}/{}/", self.plural),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix(namespace))
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s.name == name)
    }

    pub fn serves(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }
}

/// A built-in resource's extra facts (what k8s-openapi does not know).
struct Entry {
    group: &'static str,
    kind: &'static str,
    singular: &'static str,
    short: &'static [&'static str],
    categories: &'static [&'static str],
    verbs: &'static [&'static str],
    subresources: Vec<Subresource>,
    strategy: Arc<dyn Strategy>,
}

fn status() -> Subresource {
    Subresource {
        name: "status",
        group: "",
        version: "",
        kind: "",
        verbs: STATUS_VERBS,
    }
}

fn scale() -> Subresource {
    Subresource {
        name: "scale",
        group: "autoscaling",
        version: "v1",
        kind: "Scale",
        verbs: STATUS_VERBS,
    }
}

fn plain() -> Arc<dyn Strategy> {
    Arc::new(kinds::Plain::new())
}

fn entries() -> Vec<Entry> {
    use kinds::{apps, core, misc, pods, rbac, storage};
    let e =
        |group, kind, singular, short, categories, subresources, strategy: Arc<dyn Strategy>| {
            Entry {
                group,
                kind,
                singular,
                short,
                categories,
                verbs: ALL_VERBS,
                subresources,
                strategy,
            }
        };
    let mut v = vec![
        e(
            "",
            "Pod",
            "pod",
            &["po"],
            &["all"],
            vec![
                Subresource {
                    name: "attach",
                    group: "",
                    version: "",
                    kind: "PodAttachOptions",
                    verbs: &["create", "get"],
                },
                Subresource {
                    name: "binding",
                    group: "",
                    version: "",
                    kind: "Binding",
                    verbs: CREATE_ONLY,
                },
                Subresource {
                    name: "eviction",
                    group: "policy",
                    version: "v1",
                    kind: "Eviction",
                    verbs: CREATE_ONLY,
                },
                Subresource {
                    name: "exec",
                    group: "",
                    version: "",
                    kind: "PodExecOptions",
                    verbs: &["create", "get"],
                },
                Subresource {
                    name: "log",
                    group: "",
                    version: "",
                    kind: "Pod",
                    verbs: &["get"],
                },
                Subresource {
                    name: "portforward",
                    group: "",
                    version: "",
                    kind: "PodPortForwardOptions",
                    verbs: &["create", "get"],
                },
                status(),
            ],
            Arc::new(pods::Pods),
        ),
        e(
            "",
            "Namespace",
            "namespace",
            &["ns"],
            &[],
            vec![
                Subresource {
                    name: "finalize",
                    group: "",
                    version: "",
                    kind: "Namespace",
                    verbs: &["update"],
                },
                status(),
            ],
            Arc::new(core::Namespaces),
        ),
        e(
            "",
            "Node",
            "node",
            &["no"],
            &[],
            vec![status()],
            Arc::new(core::Nodes),
        ),
        e(
            "",
            "Service",
            "service",
            &["svc"],
            &["all"],
            vec![status()],
            Arc::new(core::Services),
        ),
        e(
            "",
            "Endpoints",
            "endpoints",
            &["ep"],
            &[],
            vec![],
            Arc::new(core::Endpoints),
        ),
        e(
            "",
            "ConfigMap",
            "configmap",
            &["cm"],
            &[],
            vec![],
            Arc::new(core::ConfigMaps),
        ),
        e(
            "",
            "Secret",
            "secret",
            &[],
            &[],
            vec![],
            Arc::new(core::Secrets),
        ),
        e(
            "",
            "ServiceAccount",
            "serviceaccount",
            &["sa"],
            &[],
            vec![Subresource {
                name: "token",
                group: "authentication.k8s.io",
                version: "v1",
                kind: "TokenRequest",
                verbs: CREATE_ONLY,
            }],
            Arc::new(core::ServiceAccounts),
        ),
        e(
            "",
            "Event",
            "event",
            &["ev"],
            &[],
            vec![],
            Arc::new(core::Events),
        ),
        e(
            "",
            "PersistentVolume",
            "persistentvolume",
            &["pv"],
            &[],
            vec![status()],
            Arc::new(core::PersistentVolumes),
        ),
        e(
            "",
            "PersistentVolumeClaim",
            "persistentvolumeclaim",
            &["pvc"],
            &[],
            vec![status()],
            Arc::new(core::PersistentVolumeClaims),
        ),
        e(
            "",
            "ResourceQuota",
            "resourcequota",
            &["quota"],
            &[],
            vec![status()],
            Arc::new(core::ResourceQuotas),
        ),
        e(
            "",
            "LimitRange",
            "limitrange",
            &["limits"],
            &[],
            vec![],
            Arc::new(core::LimitRanges),
        ),
        e(
            "",
            "PodTemplate",
            "podtemplate",
            &[],
            &[],
            vec![],
            Arc::new(core::PodTemplates),
        ),
        e(
            "",
            "ReplicationController",
            "replicationcontroller",
            &["rc"],
            &["all"],
            vec![scale(), status()],
            Arc::new(core::ReplicationControllers),
        ),
        e(
            "apps",
            "Deployment",
            "deployment",
            &["deploy"],
            &["all"],
            vec![scale(), status()],
            Arc::new(apps::Deployments),
        ),
        e(
            "apps",
            "ReplicaSet",
            "replicaset",
            &["rs"],
            &["all"],
            vec![scale(), status()],
            Arc::new(apps::ReplicaSets),
        ),
        e(
            "apps",
            "DaemonSet",
            "daemonset",
            &["ds"],
            &["all"],
            vec![status()],
            Arc::new(apps::DaemonSets),
        ),
        e(
            "apps",
            "StatefulSet",
            "statefulset",
            &["sts"],
            &["all"],
            vec![scale(), status()],
            Arc::new(apps::StatefulSets),
        ),
        e(
            "apps",
            "ControllerRevision",
            "controllerrevision",
            &[],
            &[],
            vec![],
            Arc::new(apps::ControllerRevisions),
        ),
        e(
            "batch",
            "Job",
            "job",
            &[],
            &["all"],
            vec![status()],
            Arc::new(apps::Jobs),
        ),
        e(
            "batch",
            "CronJob",
            "cronjob",
            &["cj"],
            &["all"],
            vec![status()],
            Arc::new(apps::CronJobs),
        ),
        e(
            "autoscaling",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscaler",
            &["hpa"],
            &["all"],
            vec![status()],
            Arc::new(misc::Autoscalers),
        ),
        e(
            "coordination.k8s.io",
            "Lease",
            "lease",
            &[],
            &[],
            vec![],
            Arc::new(misc::Leases),
        ),
        e(
            "discovery.k8s.io",
            "EndpointSlice",
            "endpointslice",
            &[],
            &[],
            vec![],
            Arc::new(misc::EndpointSlices),
        ),
        e(
            "events.k8s.io",
            "Event",
            "event",
            &["ev"],
            &[],
            vec![],
            Arc::new(core::Events),
        ),
        e(
            "policy",
            "PodDisruptionBudget",
            "poddisruptionbudget",
            &["pdb"],
            &[],
            vec![status()],
            Arc::new(misc::DisruptionBudgets),
        ),
        e(
            "storage.k8s.io",
            "StorageClass",
            "storageclass",
            &["sc"],
            &[],
            vec![],
            Arc::new(storage::StorageClasses),
        ),
        e(
            "storage.k8s.io",
            "CSIDriver",
            "csidriver",
            &[],
            &[],
            vec![],
            Arc::new(storage::CsiDrivers),
        ),
        e(
            "storage.k8s.io",
            "CSINode",
            "csinode",
            &[],
            &[],
            vec![],
            Arc::new(storage::CsiNodes),
        ),
        e(
            "storage.k8s.io",
            "VolumeAttachment",
            "volumeattachment",
            &[],
            &[],
            vec![status()],
            Arc::new(storage::VolumeAttachments),
        ),
        e(
            "rbac.authorization.k8s.io",
            "Role",
            "role",
            &[],
            &[],
            vec![],
            Arc::new(rbac::Roles),
        ),
        e(
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "clusterrole",
            &[],
            &[],
            vec![],
            Arc::new(rbac::Roles),
        ),
        e(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            "rolebinding",
            &[],
            &[],
            vec![],
            Arc::new(rbac::Bindings),
        ),
        e(
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            "clusterrolebinding",
            &[],
            &[],
            vec![],
            Arc::new(rbac::Bindings),
        ),
        e(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            "certificatesigningrequest",
            &["csr"],
            &[],
            vec![
                Subresource {
                    name: "approval",
                    group: "",
                    version: "",
                    kind: "",
                    verbs: STATUS_VERBS,
                },
                status(),
            ],
            Arc::new(misc::CertificateSigningRequests),
        ),
        e(
            "scheduling.k8s.io",
            "PriorityClass",
            "priorityclass",
            &["pc"],
            &[],
            vec![],
            Arc::new(misc::PriorityClasses),
        ),
        e(
            "networking.k8s.io",
            "Ingress",
            "ingress",
            &["ing"],
            &[],
            vec![status()],
            Arc::new(misc::Ingresses),
        ),
        e(
            "networking.k8s.io",
            "IngressClass",
            "ingressclass",
            &[],
            &[],
            vec![],
            Arc::new(misc::IngressClasses),
        ),
        e(
            "networking.k8s.io",
            "NetworkPolicy",
            "networkpolicy",
            &["netpol"],
            &[],
            vec![],
            Arc::new(misc::NetworkPolicies),
        ),
        e(
            "node.k8s.io",
            "RuntimeClass",
            "runtimeclass",
            &[],
            &[],
            vec![],
            Arc::new(misc::RuntimeClasses),
        ),
        e(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            "customresourcedefinition",
            &["crd", "crds"],
            &["api-extensions"],
            vec![status()],
            Arc::new(misc::CustomResourceDefinitions),
        ),
    ];
    // Namespaces cannot be deleted as a collection.
    v[1].verbs = &[
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    let create_only = |group, kind, singular| Entry {
        group,
        kind,
        singular,
        short: &[],
        categories: &[],
        verbs: CREATE_ONLY,
        subresources: vec![],
        strategy: plain(),
    };
    v.push(create_only("", "Binding", "binding"));
    v.push(create_only(
        "authentication.k8s.io",
        "TokenReview",
        "tokenreview",
    ));
    v.push(create_only(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreview",
    ));
    v.push(create_only(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreview",
    ));
    v.push(create_only(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreview",
    ));
    v.push(create_only(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreview",
    ));
    v.push(create_only(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreview",
    ));
    v
}

/// Where create-only review kinds live (k8s-openapi calls them subresource-scoped).
fn review_scope(kind: &str) -> Option<bool> {
    match kind {
        "Binding" | "LocalSubjectAccessReview" => Some(true),
        "TokenReview"
        | "SelfSubjectReview"
        | "SubjectAccessReview"
        | "SelfSubjectAccessReview"
        | "SelfSubjectRulesReview" => Some(false),
        _ => None,
    }
}

fn plural_of(kind: &str) -> String {
    match kind {
        "Binding" => "bindings".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

/// Upstream's order of groups in discovery: clients that find a name in two groups take the first.
pub const GROUP_ORDER: &[&str] = &[
    "",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
];

#[derive(Default)]
struct Inner {
    resources: Vec<Arc<Resource>>,
    by_path: HashMap<(String, String, String), Arc<Resource>>,
}

/// Every served resource, built-in and custom.
pub struct Registry {
    inner: RwLock<Inner>,
    generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    pub fn builtin() -> Registry {
        let schemas = Schemas::builtin();
        let mut resources = Vec::new();
        for e in entries() {
            let Some(info) = schemas
                .kinds()
                .iter()
                .find(|k| k.group == e.group && k.kind == e.kind)
            else {
                panic!("no schema for {}/{}", e.group, e.kind);
            };
            let namespaced = match info.scope {
                Scope::Namespaced => true,
                Scope::Cluster => false,
                Scope::Subresource => review_scope(e.kind).unwrap_or(false),
            };
            let plural = if info.scope == Scope::Subresource {
                plural_of(e.kind)
            } else {
                info.plural.clone()
            };
            resources.push(Arc::new(Resource {
                group: info.group.clone(),
                version: info.version.clone(),
                kind: info.kind.clone(),
                plural,
                singular: e.singular.to_string(),
                list_kind: info
                    .list_kind
                    .clone()
                    .unwrap_or_else(|| format!("{}List", info.kind)),
                namespaced,
                short_names: e.short.iter().map(|s| s.to_string()).collect(),
                categories: e.categories.iter().map(|s| s.to_string()).collect(),
                verbs: e.verbs.to_vec(),
                subresources: e.subresources,
                schema: SchemaRef::Builtin(
                    schemas
                        .definition(&info.definition)
                        .expect("kind definition"),
                ),
                strategy: e.strategy,
                custom: None,
            }));
        }
        let registry = Registry {
            inner: RwLock::new(Inner::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
        };
        registry.replace(|all| *all = resources);
        registry
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn replace(&self, f: impl FnOnce(&mut Vec<Arc<Resource>>)) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut inner = self.inner.write().expect("registry lock");
        f(&mut inner.resources);
        inner.by_path = inner
            .resources
            .iter()
            .map(|r| {
                (
                    (r.group.clone(), r.version.clone(), r.plural.clone()),
                    r.clone(),
                )
            })
            .collect();
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Resource>> {
        self.inner
            .read()
            .expect("registry lock")
            .by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<Resource>> {
        self.inner
            .read()
            .expect("registry lock")
            .resources
            .iter()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Resource>> {
        self.inner.read().expect("registry lock").resources.clone()
    }

    /// Serves (or stops serving) the resources of one CRD.
    pub fn set_custom(&self, crd_name: &str, resources: Vec<Arc<Resource>>) {
        self.replace(|all| {
            all.retain(|r| r.custom.as_ref().is_none_or(|c| c.crd_name != crd_name));
            all.extend(resources);
        });
    }

    /// Served groups in discovery order, each with its versions (preferred first).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let all = self.all();
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in &all {
            match groups.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) => {
                    if !versions.contains(&r.version) {
                        versions.push(r.version.clone());
                    }
                }
                None => groups.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        for (g, versions) in groups.iter_mut() {
            if let Some(preferred) = all.iter().find(|r| {
                r.group == *g
                    && r.custom
                        .as_ref()
                        .is_some_and(|c| c.storage_version == r.version)
            }) {
                let p = preferred.version.clone();
                versions.retain(|v| *v != p);
                versions.insert(0, p);
            }
        }
        groups.sort_by_key(|(g, _)| {
            GROUP_ORDER
                .iter()
                .position(|o| o == g)
                .unwrap_or(GROUP_ORDER.len())
        });
        groups
    }
}
