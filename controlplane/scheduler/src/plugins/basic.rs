//! The plugins that look at one node and the pod alone: NodeName, NodeUnschedulable, TaintToleration,
//! NodeAffinity, NodePorts, ImageLocality.

use k8s_openapi::api::core::v1 as core;

use crate::cache::Cache;
use crate::framework::{default_normalize, PluginName, Rejection, MAX_NODE_SCORE};
use crate::model::{NodeData, NodeInfo, PodInfo};

pub fn node_name(pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    match &pod.node_name {
        Some(n) if *n != node.name => Err(Rejection::unresolvable(
            PluginName::NodeName,
            "node(s) didn't match the requested node name",
        )),
        _ => Ok(()),
    }
}

pub use basalt_scheduling::{tolerated, tolerates};

pub fn node_unschedulable(pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = core::Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    if tolerated(&pod.tolerations, &taint) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(
            PluginName::NodeUnschedulable,
            "node(s) were unschedulable",
        ))
    }
}

/// The NoSchedule and NoExecute taints of the node the pod does not tolerate, first one.
pub fn untolerated_taint<'a>(pod: &PodInfo, node: &'a NodeData) -> Option<&'a core::Taint> {
    basalt_scheduling::untolerated(&node.taints, &pod.tolerations, &["NoSchedule", "NoExecute"])
}

pub fn taint_toleration(pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    match untolerated_taint(pod, node) {
        None => Ok(()),
        Some(_) => Err(Rejection::unresolvable(
            PluginName::TaintToleration,
            "node(s) had untolerated taint(s)",
        )),
    }
}

/// Lower is better: PreferNoSchedule taints the pod does not tolerate (tolerations with no effect or
/// PreferNoSchedule count).
pub fn taint_toleration_score(pod: &PodInfo, nodes: &[(&NodeInfo, &NodeData)]) -> Vec<i64> {
    let tols: Vec<core::Toleration> = pod
        .tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .cloned()
        .collect();
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|(_, n)| {
            n.taints
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule" && !tolerated(&tols, t))
                .count() as i64
        })
        .collect();
    default_normalize(&mut scores, true);
    scores
}

/// The pod's nodeSelector and required node affinity (the latter's terms ORed).
pub fn affinity_matches(pod: &PodInfo, node: &NodeData) -> bool {
    pod.node_affinity.matches(&node.labels, &node.name)
}

pub fn node_affinity(pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    if affinity_matches(pod, node) {
        Ok(())
    } else {
        Err(Rejection::unresolvable(
            PluginName::NodeAffinity,
            "node(s) didn't match Pod's node affinity/selector",
        ))
    }
}

pub fn node_affinity_score(pod: &PodInfo, nodes: &[(&NodeInfo, &NodeData)]) -> Vec<i64> {
    let mut scores: Vec<i64> = nodes
        .iter()
        .map(|(_, n)| {
            pod.preferred_node_affinity
                .iter()
                .filter(|(_, t)| t.matches(&n.labels, &n.name))
                .map(|(w, _)| *w as i64)
                .sum()
        })
        .collect();
    default_normalize(&mut scores, false);
    scores
}

pub fn node_ports(pod: &PodInfo, info: &NodeInfo) -> Result<(), Rejection> {
    let conflict = pod
        .host_ports
        .iter()
        .any(|p| info.used_ports.iter().any(|u| u.conflicts(p)));
    if conflict {
        Err(Rejection::unschedulable(
            PluginName::NodePorts,
            "node(s) didn't have free ports for the requested pod ports",
        ))
    } else {
        Ok(())
    }
}

const MB: i64 = 1024 * 1024;
const MIN_THRESHOLD: i64 = 23 * MB;
const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

/// Prefers nodes that already have the pod's images, weighted by how widely each image is spread (an
/// image on every node says little about this one).
pub fn image_locality_score(
    cache: &Cache,
    pod: &PodInfo,
    nodes: &[(&NodeInfo, &NodeData)],
) -> Vec<i64> {
    let total = cache.node_count().max(1) as f64;
    let max_threshold = MAX_CONTAINER_THRESHOLD * pod.images.len().max(1) as i64;
    nodes
        .iter()
        .map(|(_, n)| {
            let mut sum = 0f64;
            for img in &pod.images {
                if n.images.iter().any(|(name, _)| name == img) {
                    if let Some((size, count)) = cache.image(img) {
                        sum += size as f64 * (count as f64 / total);
                    }
                }
            }
            let sum = (sum as i64).clamp(MIN_THRESHOLD, max_threshold);
            MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max_threshold - MIN_THRESHOLD)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: &str) -> core::Taint {
        core::Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let a = NodeData {
            taints: vec![taint("a", "", "PreferNoSchedule")],
            ..Default::default()
        };
        let b = NodeData::default();
        let i = NodeInfo::default();
        let s = taint_toleration_score(&PodInfo::default(), &[(&i, &a), (&i, &b)]);
        assert_eq!(s, vec![0, 100]);
    }
}
