//! What the scheduler keeps of pods and nodes: the parts its plugins read, parsed once when an object arrives
//! (quantities, selectors, affinity terms) so that a scheduling cycle never parses or allocates per node.

use std::collections::BTreeMap;
use std::sync::Arc;

use basalt_apimachinery::quantity::Quantity;
use basalt_apimachinery::selector::{LabelSelector, Op, Requirement};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

pub type Labels = BTreeMap<String, String>;

/// Amounts of the resources a pod asks for or a node offers, in upstream's units: CPU in millicores,
/// memory and storage in bytes, `pods` as a count, everything else (extended resources, hugepages) in
/// whole units.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

fn amount(name: &str, q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> i64 {
    let Ok(q) = Quantity::parse(&q.0) else {
        return 0;
    };
    let v = if name == "cpu" { q.milli() } else { q.value() };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl Resources {
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            r.set(name, amount(name, q));
        }
        r
    }

    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.pods,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }

    pub fn set(&mut self, name: &str, v: i64) {
        match name {
            "cpu" => self.milli_cpu = v,
            "memory" => self.memory = v,
            "ephemeral-storage" => self.ephemeral_storage = v,
            "pods" => self.pods = v,
            other => {
                self.scalar.insert(other.to_string(), v);
            }
        }
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    /// Each resource the larger of the two.
    pub fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.pods = self.pods.max(o.pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// Upstream's defaults for a container that requests no CPU or memory, used when scoring (never when
/// deciding whether a pod fits), so that pods without requests still spread.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A pod's effective requests as kube-scheduler computes them: the containers' sum, sidecars (restartable
/// init containers) added to it, the largest init container (with the sidecars started before it) as a
/// floor, pod-level requests where set, plus the overhead. The second value is the same with upstream's
/// non-zero defaults for CPU and memory (for scoring).
pub fn pod_requests(spec: &core::PodSpec) -> (Resources, Resources) {
    let requests_of = |c: &core::Container, non_zero: bool| {
        let mut r = Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        if non_zero {
            let has = |n: &str| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_some_and(|m| m.contains_key(n))
            };
            if !has("cpu") {
                r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if !has("memory") {
                r.memory = DEFAULT_MEMORY_REQUEST;
            }
        }
        r
    };
    let compute = |non_zero: bool| {
        let mut reqs = Resources::default();
        for c in &spec.containers {
            reqs.add(&requests_of(c, non_zero));
        }
        let mut sidecars = Resources::default();
        let mut init_max = Resources::default();
        for c in spec.init_containers.iter().flatten() {
            let mut r = requests_of(c, non_zero);
            if c.restart_policy.as_deref() == Some("Always") {
                reqs.add(&r);
                sidecars.add(&r);
                r = sidecars.clone();
            } else {
                r.add(&sidecars);
            }
            init_max.max(&r);
        }
        reqs.max(&init_max);
        if let Some(pod_level) = spec.resources.as_ref().and_then(|r| r.requests.as_ref()) {
            for (name, q) in pod_level {
                if matches!(name.as_str(), "cpu" | "memory") {
                    reqs.set(name, amount(name, q));
                }
            }
        }
        reqs.add(&Resources::from_list(spec.overhead.as_ref()));
        reqs
    };
    (compute(false), compute(true))
}

pub use basalt_scheduling::NodeSelectorTerm;

/// A pod affinity term, parsed: which pods it selects (by namespace and labels) and the topology key.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<LabelSelector>,
    pub selector: LabelSelector,
    pub topology_key: String,
}

impl AffinityTerm {
    fn parse(pod_ns: &str, pod_labels: &Labels, t: &core::PodAffinityTerm) -> Option<AffinityTerm> {
        // A null label selector selects nothing: such a term can never be satisfied by another pod.
        let mut selector = selector_of(t.label_selector.as_ref())?;
        for k in t.match_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(k) {
                selector.requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.clone()]),
                });
            }
        }
        for k in t.mismatch_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(k) {
                selector.requirements.push(Requirement {
                    key: k.clone(),
                    op: Op::NotIn(vec![v.clone()]),
                });
            }
        }
        let namespace_selector = t
            .namespace_selector
            .as_ref()
            .and_then(|s| selector_of(Some(s)));
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.push(pod_ns.to_string());
        }
        Some(AffinityTerm {
            namespaces,
            namespace_selector,
            selector,
            topology_key: t.topology_key.clone(),
        })
    }

    /// Whether `pod` is one of the pods this term selects; `ns_labels` gives a namespace's labels.
    pub fn matches(&self, pod: &PodInfo, ns_labels: &dyn Fn(&str) -> Option<Labels>) -> bool {
        let in_ns = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                s.is_empty() || ns_labels(&pod.namespace).is_some_and(|l| s.matches(&l))
            });
        in_ns && self.selector.matches(&pod.labels)
    }
}

/// A k8s LabelSelector object as a selector; `None` for a null selector.
pub fn selector_of(s: Option<&meta::LabelSelector>) -> Option<LabelSelector> {
    let s = s?;
    let v = serde_json::to_value(s).ok()?;
    // An invalid selector selects nothing; validation rejected it at the apiserver already.
    Some(LabelSelector::from_object(&v).unwrap_or(LabelSelector {
        requirements: vec![Requirement {
            key: String::new(),
            op: Op::In(vec![]),
        }],
    }))
}

#[derive(Clone, Debug, Default)]
pub struct PodAffinity {
    pub required: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred: Vec<(i32, AffinityTerm)>,
    pub preferred_anti: Vec<(i32, AffinityTerm)>,
}

impl PodAffinity {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
            && self.required_anti.is_empty()
            && self.preferred.is_empty()
            && self.preferred_anti.is_empty()
    }
}

/// A topology spread constraint, parsed.
#[derive(Clone, Debug)]
pub struct SpreadConstraint {
    pub max_skew: i32,
    pub topology_key: String,
    pub hard: bool,
    pub selector: LabelSelector,
    pub min_domains: i32,
    /// nodeAffinityPolicy Honor (the default): only nodes the pod's node affinity admits count.
    pub honor_affinity: bool,
    /// nodeTaintsPolicy Honor: only nodes whose taints the pod tolerates count (default Ignore).
    pub honor_taints: bool,
}

impl SpreadConstraint {
    pub fn parse(pod_labels: &Labels, c: &core::TopologySpreadConstraint) -> SpreadConstraint {
        let mut selector = selector_of(c.label_selector.as_ref()).unwrap_or(LabelSelector {
            requirements: vec![Requirement {
                key: String::new(),
                op: Op::In(vec![]),
            }],
        });
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod_labels.get(k) {
                let r = Requirement {
                    key: k.clone(),
                    op: Op::In(vec![v.clone()]),
                };
                if !selector.requirements.contains(&r) {
                    selector.requirements.push(r);
                }
            }
        }
        SpreadConstraint {
            max_skew: c.max_skew.max(1),
            topology_key: c.topology_key.clone(),
            hard: c.when_unsatisfiable != "ScheduleAnyway",
            selector,
            min_domains: c.min_domains.unwrap_or(1).max(1),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// Upstream's image name normalisation for ImageLocality: a name without tag or digest means `:latest`.
pub fn normalize_image(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.contains('@') || last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// What the scheduler keeps of a pod.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub labels: Labels,
    pub scheduler_name: String,
    pub node_name: Option<String>,
    pub nominated_node: Option<String>,
    pub priority: i32,
    pub preempt_never: bool,
    pub requests: Resources,
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    /// nodeSelector and required node affinity.
    pub node_affinity: basalt_scheduling::RequiredNodeAffinity,
    pub preferred_node_affinity: Vec<(i32, NodeSelectorTerm)>,
    pub tolerations: Vec<core::Toleration>,
    pub spread: Vec<SpreadConstraint>,
    pub affinity: PodAffinity,
    pub images: Vec<String>,
    pub claims: Vec<String>,
    pub gated: bool,
    pub terminating: bool,
    /// Terminating because the scheduler preempted it (a DisruptionTarget condition says so).
    pub preempted: bool,
    pub finished: bool,
    /// Creation time in seconds, upstream's tie-breaker between pods of the same priority.
    pub created: i64,
    /// Start time (status.startTime or creation), for choosing preemption victims.
    pub started: i64,
    /// A digest of what scheduling reads (spec, labels): a change may make an unschedulable pod fit.
    pub fingerprint: u64,
}

impl PodInfo {
    pub fn new(pod: &core::Pod) -> PodInfo {
        let md = &pod.metadata;
        let default_spec = core::PodSpec::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let labels = md.labels.clone().unwrap_or_default();
        let namespace = md.namespace.clone().unwrap_or_default();
        let (requests, non_zero) = pod_requests(spec);
        let mut host_ports = Vec::new();
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        for c in spec.containers.iter().chain(sidecars) {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        ip: p
                            .host_ip
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: hp,
                    });
                }
            }
        }
        let node_aff = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref());
        let preferred_node_affinity = node_aff
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|v| {
                v.iter()
                    .map(|p| (p.weight, NodeSelectorTerm::from_api(&p.preference)))
                    .collect()
            })
            .unwrap_or_default();
        let mut affinity = PodAffinity::default();
        if let Some(a) = spec.affinity.as_ref() {
            let parse = |t: &core::PodAffinityTerm| AffinityTerm::parse(&namespace, &labels, t);
            let required = |v: &Option<Vec<core::PodAffinityTerm>>| -> Vec<AffinityTerm> {
                v.iter().flatten().filter_map(parse).collect()
            };
            let preferred = |v: &Option<Vec<core::WeightedPodAffinityTerm>>| {
                v.iter()
                    .flatten()
                    .filter_map(|w| parse(&w.pod_affinity_term).map(|t| (w.weight, t)))
                    .collect::<Vec<_>>()
            };
            if let Some(pa) = &a.pod_affinity {
                affinity.required =
                    required(&pa.required_during_scheduling_ignored_during_execution);
                affinity.preferred =
                    preferred(&pa.preferred_during_scheduling_ignored_during_execution);
            }
            if let Some(pa) = &a.pod_anti_affinity {
                affinity.required_anti =
                    required(&pa.required_during_scheduling_ignored_during_execution);
                affinity.preferred_anti =
                    preferred(&pa.preferred_during_scheduling_ignored_during_execution);
            }
        }
        let spread = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .map(|c| SpreadConstraint::parse(&labels, c))
            .collect();
        let pod_name = md.name.clone().unwrap_or_default();
        let claims = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| {
                if let Some(c) = &v.persistent_volume_claim {
                    Some(c.claim_name.clone())
                } else {
                    v.ephemeral
                        .as_ref()
                        .map(|_| format!("{pod_name}-{}", v.name))
                }
            })
            .collect();
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
        let created = md
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            labels.hash(&mut h);
            serde_json::to_string(spec).unwrap_or_default().hash(&mut h);
            h.finish()
        };
        PodInfo {
            uid: md.uid.clone().unwrap_or_default(),
            name: pod_name,
            resource_version: md.resource_version.clone().unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .clone()
                .unwrap_or_else(|| "default-scheduler".into()),
            node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
            nominated_node: status
                .and_then(|s| s.nominated_node_name.clone())
                .filter(|n| !n.is_empty()),
            priority: spec.priority.unwrap_or(0),
            preempt_never: spec.preemption_policy.as_deref() == Some("Never"),
            requests,
            non_zero,
            host_ports,
            node_affinity: basalt_scheduling::RequiredNodeAffinity::of(spec),
            preferred_node_affinity,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            spread,
            affinity,
            images: spec
                .containers
                .iter()
                .filter_map(|c| c.image.as_deref().map(normalize_image))
                .collect(),
            claims,
            gated: spec
                .scheduling_gates
                .as_ref()
                .is_some_and(|g| !g.is_empty()),
            terminating: md.deletion_timestamp.is_some(),
            preempted: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| {
                    c.type_ == "DisruptionTarget"
                        && c.status == "True"
                        && c.reason.as_deref() == Some("PreemptionByScheduler")
                }),
            finished: phase == "Succeeded" || phase == "Failed",
            created,
            started: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_second())
                .unwrap_or(created),
            fingerprint,
            namespace,
            labels,
        }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What the scheduler keeps of a node.
#[derive(Clone, Debug, Default)]
pub struct NodeData {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<core::Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// Normalised image names with their sizes.
    pub images: Vec<(String, i64)>,
}

impl NodeData {
    pub fn new(node: &core::Node) -> NodeData {
        let status = node.status.as_ref();
        let spec = node.spec.as_ref();
        let mut images = Vec::new();
        for img in status.and_then(|s| s.images.as_ref()).into_iter().flatten() {
            for n in img.names.iter().flatten() {
                images.push((normalize_image(n), img.size_bytes.unwrap_or(0)));
            }
        }
        NodeData {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            allocatable: Resources::from_list(status.and_then(|s| s.allocatable.as_ref())),
            images,
        }
    }
}

/// A node with the pods the scheduler counts on it (bound, or assumed while their binding is in flight).
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// `None` while pods are known on a node whose Node object is not (yet) seen.
    pub node: Option<Arc<NodeData>>,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if !pod.affinity.is_empty() {
            self.pods_with_affinity += 1;
        }
        if !pod.affinity.required_anti.is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(i);
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero);
        for hp in &pod.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if !pod.affinity.is_empty() {
            self.pods_with_affinity -= 1;
        }
        if !pod.affinity.required_anti.is_empty() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(req: &[(&str, &str)]) -> core::Container {
        core::Container {
            name: "c".into(),
            resources: Some(core::ResourceRequirements {
                requests: Some(
                    req.iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                                    v.to_string(),
                                ),
                            )
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn requests_count_sidecars_init_containers_and_overhead() {
        let mut sidecar = container(&[("cpu", "200m")]);
        sidecar.restart_policy = Some("Always".into());
        let spec = core::PodSpec {
            containers: vec![container(&[("cpu", "500m"), ("memory", "1Gi")])],
            init_containers: Some(vec![
                sidecar,
                // 1 CPU with the sidecar's 200m started before it: 1200m, more than 700m.
                container(&[("cpu", "1")]),
            ]),
            overhead: Some(
                [(
                    "cpu".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("10m".into()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let (r, nz) = pod_requests(&spec);
        assert_eq!(r.milli_cpu, 1210);
        assert_eq!(r.memory, 1 << 30);
        // Non-zero: the init container without memory counts 200Mi, the sidecar too (400Mi < 1Gi + 200Mi).
        assert_eq!(nz.memory, (1 << 30) + DEFAULT_MEMORY_REQUEST);
    }

    #[test]
    fn image_names_are_normalised() {
        assert_eq!(normalize_image("nginx"), "nginx:latest");
        assert_eq!(normalize_image("reg:5000/nginx"), "reg:5000/nginx:latest");
        assert_eq!(normalize_image("nginx:1.25"), "nginx:1.25");
        assert_eq!(normalize_image("nginx@sha256:ab"), "nginx@sha256:ab");
    }
}
