//! The scheduler's own picture of the cluster, as upstream's cache: nodes with the pods counted on them
//! (bound pods from the watch, and pods *assumed* on a node while their binding is in flight, so the next
//! cycle does not hand out the same room twice), plus the objects plugins read (namespaces, volumes,
//! disruption budgets, the selectors of services and workloads for default spreading).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use basalt_apimachinery::selector::LabelSelector;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1::StorageClass;

use crate::index::Index;
use crate::model::{Labels, NodeData, NodeInfo, PodInfo};

struct PodState {
    node: String,
    pod: Arc<PodInfo>,
    /// Placed by this scheduler, not yet seen bound in the watch.
    assumed: bool,
}

/// A PodDisruptionBudget as preemption reads it.
#[derive(Clone, Debug)]
pub struct Pdb {
    pub namespace: String,
    pub selector: LabelSelector,
    pub disruptions_allowed: i32,
    pub disrupted_pods: HashSet<String>,
}

/// What changed about a node, for requeueing the pods its change may help.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeChange {
    pub added: bool,
    pub allocatable: bool,
    pub labels: bool,
    pub taints: bool,
    pub unschedulable: bool,
    pub images: bool,
}

#[derive(Default)]
pub struct Cache {
    nodes: HashMap<String, NodeInfo>,
    /// Names of nodes with a Node object, in the order they arrived: the order filtering walks.
    order: Vec<String>,
    pods: HashMap<String, PodState>,
    /// Normalised image name → (size, number of nodes having it).
    images: HashMap<String, (i64, usize)>,
    pub namespaces: HashMap<String, Labels>,
    pub claims: HashMap<(String, String), core::PersistentVolumeClaim>,
    pub volumes: HashMap<String, core::PersistentVolume>,
    pub classes: HashMap<String, StorageClass>,
    pub pdbs: HashMap<String, Pdb>,
    /// Services, ReplicationControllers, ReplicaSets and StatefulSets by uid: namespace and selector.
    pub workload_selectors: HashMap<String, (String, LabelSelector)>,
    /// Pods waiting for a node preemption made room on: uid → (node, pod).
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
    pub index: Index,
}

impl Cache {
    pub fn node_count(&self) -> usize {
        self.order.len()
    }

    /// Nodes with a Node object, in filtering order.
    pub fn node_names(&self) -> &[String] {
        &self.order
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name).filter(|n| n.node.is_some())
    }

    pub fn nodes(&self) -> impl Iterator<Item = (&NodeInfo, &NodeData)> {
        self.order.iter().filter_map(|n| {
            let info = self.nodes.get(n)?;
            Some((info, info.node.as_deref()?))
        })
    }

    pub fn image(&self, name: &str) -> Option<(i64, usize)> {
        self.images.get(name).copied()
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<Labels> {
        self.namespaces.get(ns).cloned()
    }

    fn count_images(&mut self, node: &NodeData, delta: isize) {
        let mut seen = HashSet::new();
        for (name, size) in &node.images {
            if !seen.insert(name) {
                continue;
            }
            let e = self.images.entry(name.clone()).or_insert((*size, 0));
            e.1 = (e.1 as isize + delta).max(0) as usize;
            if e.1 == 0 {
                self.images.remove(name);
            }
        }
    }

    /// Adds or replaces a node; says what changed.
    pub fn upsert_node(&mut self, node: &core::Node) -> NodeChange {
        let data = Arc::new(NodeData::new(node));
        let name = data.name.clone();
        let info = self.nodes.entry(name.clone()).or_default();
        let old = info.node.replace(data.clone());
        let change = match &old {
            None => NodeChange {
                added: true,
                ..Default::default()
            },
            Some(o) => NodeChange {
                added: false,
                allocatable: o.allocatable != data.allocatable,
                labels: o.labels != data.labels,
                taints: o.taints != data.taints,
                unschedulable: o.unschedulable != data.unschedulable,
                images: o.images != data.images,
            },
        };
        if let Some(o) = &old {
            if change.images {
                self.count_images(o, -1);
            }
        }
        if old.is_none() {
            self.order.push(name);
        }
        if old.is_none() || change.images {
            self.count_images(&data, 1);
        }
        if change.added || change.labels {
            self.index.nodes_changed();
        }
        change
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(info) = self.nodes.get_mut(name) else {
            return;
        };
        let old = info.node.take();
        // Pods bound to a deleted node stay counted until they go (upstream keeps them as well).
        if info.pods.is_empty() {
            self.nodes.remove(name);
        }
        if let Some(old) = old {
            self.count_images(&old, -1);
        }
        self.order.retain(|n| n != name);
        self.index.nodes_changed();
    }

    fn place(&mut self, node: &str, pod: Arc<PodInfo>) {
        let data = self.nodes.get(node).and_then(|i| i.node.clone());
        self.index
            .placed(&pod, node, data.as_deref().map(|d| &d.labels));
        self.nodes.entry(node.to_string()).or_default().add_pod(pod);
    }

    fn unplace(&mut self, node: &str, uid: &str) {
        let Some(info) = self.nodes.get_mut(node) else {
            return;
        };
        let removed = info.remove_pod(uid);
        let data = info.node.clone();
        if info.node.is_none() && info.pods.is_empty() {
            self.nodes.remove(node);
        }
        if let Some(p) = removed {
            self.index.unplaced(&p, data.as_deref().map(|d| &d.labels));
        }
    }

    /// Placed pods with any pod affinity or anti-affinity terms.
    pub fn pods_with_affinity(&self) -> usize {
        self.index.with_affinity.len()
    }

    /// Placed pods with required pod anti-affinity terms.
    pub fn pods_with_required_anti_affinity(&self) -> usize {
        self.index.with_required_anti.len()
    }

    /// A placed pod and the node it is on (when the Node object is known).
    pub fn placed(&self, uid: &str) -> Option<(&Arc<PodInfo>, &NodeData)> {
        let st = self.pods.get(uid)?;
        let node = self.nodes.get(&st.node)?.node.as_deref()?;
        Some((&st.pod, node))
    }

    /// Every placed pod on a known node, with the node's labels.
    pub fn all_placed(&self) -> impl Iterator<Item = (&PodInfo, &Labels)> {
        self.nodes()
            .flat_map(|(info, node)| info.pods.iter().map(move |p| (&**p, &node.labels)))
    }

    /// A pod from the watch that is bound to a node (or finished, or gone: `None`). Returns the node it
    /// was counted on before, for requeueing when room was freed.
    pub fn upsert_bound_pod(&mut self, pod: Arc<PodInfo>) -> Option<String> {
        let node = pod.node_name.clone()?;
        let old = self.pods.remove(&pod.uid);
        let old_node = old.as_ref().map(|o| o.node.clone());
        if let Some(o) = &old {
            self.unplace(&o.node, &o.pod.uid);
        }
        self.nominated.remove(&pod.uid);
        self.place(&node, pod.clone());
        self.pods.insert(
            pod.uid.clone(),
            PodState {
                node,
                pod,
                assumed: false,
            },
        );
        old_node
    }

    /// Forgets a pod (deleted, finished, or an assumed pod whose binding failed); returns where it was.
    pub fn remove_pod(&mut self, uid: &str) -> Option<(String, Arc<PodInfo>)> {
        self.nominated.remove(uid);
        let old = self.pods.remove(uid)?;
        self.unplace(&old.node, uid);
        Some((old.node, old.pod))
    }

    /// Counts `pod` on `node` before the binding is confirmed.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        let mut pod = (*pod).clone();
        pod.node_name = Some(node.to_string());
        let pod = Arc::new(pod);
        self.nominated.remove(&pod.uid);
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.unplace(&old.node, &pod.uid);
        }
        self.place(node, pod.clone());
        self.pods.insert(
            pod.uid.clone(),
            PodState {
                node: node.to_string(),
                pod,
                assumed: true,
            },
        );
    }

    /// Undoes [`Cache::assume`] after a failed binding (a pod the watch already saw bound stays).
    pub fn forget(&mut self, uid: &str) {
        if self.pods.get(uid).is_some_and(|p| p.assumed) {
            self.remove_pod(uid);
        }
    }

    /// Uids of every pod counted on a node.
    pub fn placement_uids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    pub fn is_known(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    pub fn nominate(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.nominated
            .insert(pod.uid.clone(), (node.to_string(), pod));
    }

    pub fn unnominate(&mut self, uid: &str) {
        self.nominated.remove(uid);
    }

    /// Pods nominated to `node`, other than `except`.
    pub fn nominated_on<'a>(
        &'a self,
        node: &'a str,
        except: &'a str,
    ) -> impl Iterator<Item = &'a Arc<PodInfo>> + 'a {
        self.nominated
            .iter()
            .filter(move |(uid, (n, _))| n == node && uid.as_str() != except)
            .map(|(_, (_, p))| p)
    }

    /// Whether a pod other than `except` is nominated anywhere (a fast path for the common case).
    pub fn has_nominated(&self) -> bool {
        !self.nominated.is_empty()
    }

    /// The selector of default topology spreading for `pod`: the labels its services, replication
    /// controllers, replica sets and stateful sets select it by (upstream's DefaultSelector). `None` when
    /// nothing selects the pod.
    pub fn default_spread_selector(&self, pod: &PodInfo) -> Option<LabelSelector> {
        let mut reqs = Vec::new();
        for (ns, sel) in self.workload_selectors.values() {
            if *ns == pod.namespace && !sel.is_empty() && sel.matches(&pod.labels) {
                for r in &sel.requirements {
                    if !reqs.contains(r) {
                        reqs.push(r.clone());
                    }
                }
            }
        }
        if reqs.is_empty() {
            None
        } else {
            Some(LabelSelector { requirements: reqs })
        }
    }

    /// A summary for logs and tests: node → names of the pods counted there.
    pub fn placement(&self) -> BTreeMap<String, Vec<String>> {
        self.nodes
            .iter()
            .map(|(n, i)| (n.clone(), i.pods.iter().map(|p| p.key()).collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, images: &[&str]) -> core::Node {
        core::Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(core::NodeStatus {
                images: Some(
                    images
                        .iter()
                        .map(|i| core::ContainerImage {
                            names: Some(vec![i.to_string()]),
                            size_bytes: Some(100),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn assumed_pods_count_until_forgotten_and_images_are_counted_per_node() {
        let mut c = Cache::default();
        assert!(c.upsert_node(&node("a", &["nginx:1"])).added);
        c.upsert_node(&node("b", &["nginx:1", "redis"]));
        assert_eq!(c.image("nginx:1"), Some((100, 2)));
        assert_eq!(c.image("redis:latest"), Some((100, 1)));
        let pod = Arc::new(PodInfo {
            uid: "u1".into(),
            ..Default::default()
        });
        c.assume(pod, "a");
        assert_eq!(c.node("a").unwrap().pods.len(), 1);
        c.forget("u1");
        assert!(c.node("a").unwrap().pods.is_empty());
        c.remove_node("b");
        assert_eq!(c.image("nginx:1"), Some((100, 1)));
        assert_eq!(c.image("redis:latest"), None);
        assert_eq!(c.node_names(), ["a".to_string()]);
    }
}
