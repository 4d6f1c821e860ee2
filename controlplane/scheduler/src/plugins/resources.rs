//! NodeResourcesFit (the filter, and its LeastAllocated / MostAllocated scoring) and
//! NodeResourcesBalancedAllocation.

use crate::config::{FitArgs, ScoringType};
use crate::framework::{PluginName, Rejection, MAX_NODE_SCORE};
use crate::model::{NodeData, NodeInfo, PodInfo, Resources};

/// Whether the pod's requests fit in what the node has left; `extra` is what pods nominated to the node
/// (of at least the pod's priority) will take, with their count.
pub fn fit(
    args: &FitArgs,
    pod: &PodInfo,
    info: &NodeInfo,
    node: &NodeData,
    extra: Option<&(Resources, usize)>,
) -> Result<(), Rejection> {
    let mut requested = info.requested.clone();
    let mut pods = info.pods.len();
    if let Some((r, n)) = extra {
        requested.add(r);
        pods += n;
    }
    let alloc = &node.allocatable;
    let mut reasons: Vec<crate::framework::Reason> = Vec::new();
    if pods as i64 + 1 > alloc.pods {
        reasons.push("Too many pods".into());
    }
    let req = &pod.requests;
    let short = |need: i64, have: i64, used: i64| need > 0 && need > have - used;
    if short(req.milli_cpu, alloc.milli_cpu, requested.milli_cpu) {
        reasons.push("Insufficient cpu".into());
    }
    if short(req.memory, alloc.memory, requested.memory) {
        reasons.push("Insufficient memory".into());
    }
    if short(
        req.ephemeral_storage,
        alloc.ephemeral_storage,
        requested.ephemeral_storage,
    ) {
        reasons.push("Insufficient ephemeral-storage".into());
    }
    for (name, need) in &req.scalar {
        if args.ignored_resources.iter().any(|r| r == name) {
            continue;
        }
        if short(*need, alloc.get(name), requested.get(name)) {
            reasons.push(format!("Insufficient {name}").into());
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            plugin: PluginName::NodeResourcesFit,
            code: crate::framework::Code::Unschedulable,
            reasons,
        })
    }
}

/// Requested (after placing the pod) and allocatable of one resource; CPU and memory count upstream's
/// non-zero defaults when `non_zero`.
fn usage(
    pod: &PodInfo,
    info: &NodeInfo,
    node: &NodeData,
    name: &str,
    non_zero: bool,
) -> (i64, i64) {
    let (node_req, pod_req) = if non_zero && matches!(name, "cpu" | "memory") {
        (&info.non_zero_requested, &pod.non_zero)
    } else {
        (&info.requested, &pod.requests)
    };
    (
        node_req.get(name) + pod_req.get(name),
        node.allocatable.get(name),
    )
}

pub fn fit_score(args: &FitArgs, pod: &PodInfo, nodes: &[(&NodeInfo, &NodeData)]) -> Vec<i64> {
    nodes
        .iter()
        .map(|(info, node)| {
            let mut total = 0;
            let mut weights = 0;
            for (name, w) in &args.resources {
                let (req, alloc) = usage(pod, info, node, name, true);
                let s = if alloc == 0 {
                    0
                } else {
                    match args.scoring {
                        ScoringType::LeastAllocated if req > alloc => 0,
                        ScoringType::LeastAllocated => (alloc - req) * MAX_NODE_SCORE / alloc,
                        ScoringType::MostAllocated => req.min(alloc) * MAX_NODE_SCORE / alloc,
                    }
                };
                total += s * w;
                weights += w;
            }
            if weights == 0 {
                0
            } else {
                total / weights
            }
        })
        .collect()
}

/// Prefers nodes whose resources would be used in equal shares: 100 × (1 − standard deviation of the
/// shares).
pub fn balanced_score(
    resources: &[(String, i64)],
    pod: &PodInfo,
    nodes: &[(&NodeInfo, &NodeData)],
) -> Vec<i64> {
    // Upstream skips the plugin for a pod that requests none of the resources.
    if resources.iter().all(|(r, _)| pod.requests.get(r) == 0) {
        return vec![0; nodes.len()];
    }
    nodes
        .iter()
        .map(|(info, node)| {
            let mut fractions = Vec::with_capacity(resources.len());
            let mut weights = Vec::with_capacity(resources.len());
            for (name, w) in resources {
                let (req, alloc) = usage(pod, info, node, name, false);
                if alloc == 0 {
                    continue;
                }
                fractions.push((req as f64 / alloc as f64).min(1.0));
                weights.push(*w as f64);
            }
            let std = match fractions.len() {
                0 | 1 => 0.0,
                2 => (fractions[0] - fractions[1]).abs() / 2.0,
                _ => {
                    let wsum: f64 = weights.iter().sum();
                    let mean: f64 = fractions
                        .iter()
                        .zip(&weights)
                        .map(|(f, w)| f * w)
                        .sum::<f64>()
                        / wsum;
                    let var: f64 = fractions
                        .iter()
                        .zip(&weights)
                        .map(|(f, w)| (f - mean) * (f - mean) * w)
                        .sum::<f64>()
                        / wsum;
                    var.sqrt()
                }
            };
            ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(cpu: i64, mem: i64, pods: i64) -> NodeData {
        NodeData {
            allocatable: Resources {
                milli_cpu: cpu,
                memory: mem,
                pods,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn pod(cpu: i64, mem: i64) -> PodInfo {
        let r = Resources {
            milli_cpu: cpu,
            memory: mem,
            ..Default::default()
        };
        PodInfo {
            requests: r.clone(),
            non_zero: r,
            ..Default::default()
        }
    }

    #[test]
    fn fit_names_every_short_resource() {
        let args = FitArgs::default();
        let mut info = NodeInfo::default();
        info.add_pod(Arc::new(pod(900, 0)));
        let n = node(1000, 1 << 30, 1);
        let err = fit(&args, &pod(200, 2 << 30), &info, &n, None).unwrap_err();
        assert_eq!(
            err.reasons,
            vec!["Too many pods", "Insufficient cpu", "Insufficient memory"]
        );
        assert!(fit(&args, &pod(100, 0), &info, &node(1000, 0, 10), None).is_ok());
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes_and_balanced_prefers_even_shares() {
        let args = FitArgs::default();
        let p = pod(500, 512 << 20);
        let (i1, i2) = (NodeInfo::default(), NodeInfo::default());
        let (small, big) = (node(1000, 1 << 30, 10), node(4000, 4 << 30, 10));
        let s = fit_score(&args, &p, &[(&i1, &small), (&i2, &big)]);
        assert_eq!(s, vec![50, 87]);
        let uneven = node(1000, 8 << 30, 10);
        let res = [("cpu".to_string(), 1), ("memory".to_string(), 1)];
        let b = balanced_score(&res, &p, &[(&i1, &small), (&i2, &uneven)]);
        assert_eq!(b[0], 100);
        assert!(b[1] < 100);
    }
}
