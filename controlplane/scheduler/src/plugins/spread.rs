//! PodTopologySpread: `DoNotSchedule` constraints filter (the skew after placing the pod may not pass
//! maxSkew), `ScheduleAnyway` constraints score; pods without constraints get the profile's default
//! constraints when a service or workload selects them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::cache::Cache;
use crate::config::SpreadArgs;
use crate::framework::{PluginName, Rejection, MAX_NODE_SCORE};
use crate::model::{NodeData, NodeInfo, PodInfo, SpreadConstraint};
use crate::plugins::basic;

/// The pod's constraints: its own, or the defaults with the selector of its services and workloads.
pub fn constraints(args: &SpreadArgs, cache: &Cache, pod: &PodInfo) -> Vec<SpreadConstraint> {
    if !pod.spread.is_empty() {
        return pod.spread.clone();
    }
    if args.defaults.is_empty() {
        return Vec::new();
    }
    let Some(selector) = cache.default_spread_selector(pod) else {
        return Vec::new();
    };
    args.defaults
        .iter()
        .map(|c| {
            let mut c = SpreadConstraint::parse(&pod.labels, c);
            c.selector = selector.clone();
            c
        })
        .collect()
}

fn counts_on(c: &SpreadConstraint, pod: &PodInfo, info: &NodeInfo) -> i64 {
    info.pods
        .iter()
        .filter(|p| p.namespace == pod.namespace && !p.terminating && c.selector.matches(&p.labels))
        .count() as i64
}

fn node_counts(c: &SpreadConstraint, pod: &PodInfo, node: &NodeData) -> bool {
    (!c.honor_affinity || basic::affinity_matches(pod, node))
        && (!c.honor_taints || basic::untolerated_taint(pod, node).is_none())
}

#[derive(Clone)]
pub struct FilterState {
    constraints: Vec<SpreadConstraint>,
    counts: Vec<Arc<HashMap<String, i64>>>,
    mins: Vec<i64>,
}

fn min_of(
    c: &SpreadConstraint,
    domains: usize,
    counts: &HashMap<String, i64>,
    nonzero: usize,
) -> i64 {
    if (domains as i32) < c.min_domains || nonzero < domains {
        // Fewer domains than asked for count as 0; so does any domain without a matching pod.
        0
    } else {
        counts.values().copied().min().unwrap_or(0)
    }
}

/// Every node counts for every constraint (the pod's node affinity and taints do not narrow the nodes)
/// and every node has every key: the cache's counters answer without walking the cluster.
fn indexed(cache: &Cache, pod: &PodInfo, constraints: &[SpreadConstraint]) -> Option<FilterState> {
    let no_affinity = pod.node_affinity.is_empty();
    if !constraints
        .iter()
        .all(|c| (!c.honor_affinity || no_affinity) && !c.honor_taints)
    {
        return None;
    }
    let all = cache.node_count();
    let mut counts = Vec::new();
    let mut mins = Vec::new();
    for c in constraints {
        let domains = cache
            .index
            .domains(&c.topology_key, cache.nodes().map(|(_, n)| &n.labels));
        if domains.values().sum::<usize>() != all {
            return None;
        }
        let m = cache.index.counter(
            &pod.namespace,
            &c.selector,
            &c.topology_key,
            cache.all_placed(),
        );
        let nonzero = m.values().filter(|n| **n > 0).count();
        mins.push(min_of(c, domains.len(), &m, nonzero));
        counts.push(m);
    }
    Some(FilterState {
        constraints: constraints.to_vec(),
        counts,
        mins,
    })
}

pub fn prefilter(args: &SpreadArgs, cache: &Cache, pod: &PodInfo) -> Option<FilterState> {
    let constraints: Vec<SpreadConstraint> = constraints(args, cache, pod)
        .into_iter()
        .filter(|c| c.hard)
        .collect();
    if constraints.is_empty() {
        return None;
    }
    if let Some(st) = indexed(cache, pod, &constraints) {
        return Some(st);
    }
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    for (info, node) in cache.nodes() {
        if !constraints
            .iter()
            .all(|c| node.labels.contains_key(&c.topology_key))
        {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if !node_counts(c, pod, node) {
                continue;
            }
            let value = &node.labels[&c.topology_key];
            let n = counts_on(c, pod, info);
            *counts[i].entry(value.clone()).or_default() += n;
        }
    }
    let mins = constraints
        .iter()
        .zip(&counts)
        .map(|(c, m)| min_of(c, m.len(), m, m.len()))
        .collect();
    Some(FilterState {
        constraints,
        counts: counts.into_iter().map(Arc::new).collect(),
        mins,
    })
}

impl FilterState {
    /// Takes `victim` off `node` (preemption's dry run).
    pub fn remove(&mut self, pod: &PodInfo, victim: &PodInfo, node: &NodeData) {
        for (i, c) in self.constraints.iter().enumerate() {
            if victim.namespace == pod.namespace && c.selector.matches(&victim.labels) {
                if let Some(v) = node.labels.get(&c.topology_key) {
                    if let Some(n) = Arc::make_mut(&mut self.counts[i]).get_mut(v) {
                        *n -= 1;
                    }
                }
            }
        }
        for (i, m) in self.counts.iter().enumerate() {
            if self.mins[i] > 0 {
                self.mins[i] = m.values().copied().min().unwrap_or(0);
            }
        }
    }
}

pub fn filter(state: &FilterState, pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(value) = node.labels.get(&c.topology_key) else {
            return Err(Rejection::unresolvable(
                PluginName::PodTopologySpread,
                "node(s) didn't match pod topology spread constraints (missing required label)",
            ));
        };
        let self_match = i64::from(c.selector.matches(&pod.labels));
        let matched = state.counts[i].get(value).copied().unwrap_or(0);
        if matched + self_match - state.mins[i] > c.max_skew as i64 {
            return Err(Rejection::unschedulable(
                PluginName::PodTopologySpread,
                "node(s) didn't match pod topology spread constraints",
            ));
        }
    }
    Ok(())
}

pub fn score(
    args: &SpreadArgs,
    cache: &Cache,
    pod: &PodInfo,
    nodes: &[(&NodeInfo, &NodeData)],
) -> Vec<i64> {
    let constraints: Vec<SpreadConstraint> = constraints(args, cache, pod)
        .into_iter()
        .filter(|c| !c.hard)
        .collect();
    if constraints.is_empty() {
        return vec![0; nodes.len()];
    }
    // Explicit constraints need every key on a node; the defaults don't (upstream).
    let require_all = !pod.spread.is_empty();
    let ignored: Vec<bool> = nodes
        .iter()
        .map(|(_, n)| {
            require_all
                && !constraints
                    .iter()
                    .all(|c| n.labels.contains_key(&c.topology_key))
        })
        .collect();
    // Domains among the nodes being scored, per constraint.
    let mut domains: Vec<HashSet<&str>> = vec![HashSet::new(); constraints.len()];
    for ((_, n), ign) in nodes.iter().zip(&ignored) {
        if *ign {
            continue;
        }
        for (i, c) in constraints.iter().enumerate() {
            if let Some(v) = n.labels.get(&c.topology_key) {
                domains[i].insert(v);
            }
        }
    }
    let weights: Vec<f64> = domains
        .iter()
        .map(|d| ((d.len() + 2) as f64).ln())
        .collect();
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
    let hostname = "kubernetes.io/hostname";
    for (i, c) in constraints.iter().enumerate() {
        if c.topology_key == hostname {
            // Per-node domains: only the scored nodes matter.
            for ((info, n), ign) in nodes.iter().zip(&ignored) {
                if !*ign && node_counts(c, pod, n) {
                    counts[i].insert(n.name.clone(), counts_on(c, pod, info));
                }
            }
            continue;
        }
        for (info, n) in cache.nodes() {
            let Some(v) = n.labels.get(&c.topology_key) else {
                continue;
            };
            if domains[i].contains(v.as_str()) && node_counts(c, pod, n) {
                *counts[i].entry(v.clone()).or_default() += counts_on(c, pod, info);
            }
        }
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|(_, n)| {
            let mut s = 0f64;
            for (i, c) in constraints.iter().enumerate() {
                let key = if c.topology_key == hostname {
                    Some(&n.name)
                } else {
                    n.labels.get(&c.topology_key)
                };
                if let Some(v) = key {
                    let cnt = counts[i].get(v).copied().unwrap_or(0);
                    s += cnt as f64 * weights[i] + (c.max_skew - 1) as f64;
                }
            }
            s.round() as i64
        })
        .collect();
    let considered = raw.iter().zip(&ignored).filter(|(_, i)| !**i);
    let max = considered.clone().map(|(s, _)| *s).max().unwrap_or(0);
    let min = considered.map(|(s, _)| *s).min().unwrap_or(0);
    raw.iter()
        .zip(&ignored)
        .map(|(s, ign)| {
            if *ign {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - s) / max
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1 as core;

    fn node(name: &str, zone: &str) -> core::Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"}},
        }))
        .unwrap()
    }

    fn pod(uid: &str, app: &str, honor_taints: bool) -> Arc<PodInfo> {
        let p: core::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid, "labels": {"app": app}},
            "spec": {"containers": [{"name": "c"}], "topologySpreadConstraints": [{
                "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "nodeTaintsPolicy": if honor_taints { "Honor" } else { "Ignore" },
                "labelSelector": {"matchLabels": {"app": app}}}]},
        }))
        .unwrap();
        Arc::new(PodInfo::new(&p))
    }

    /// The counters kept as pods come and go answer as the walk over every node does.
    #[test]
    fn counters_agree_with_the_walk() {
        let mut cache = Cache::default();
        for (n, z) in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")] {
            cache.upsert_node(&node(n, z));
        }
        let args = SpreadArgs::default();
        let check = |cache: &Cache| {
            let fast = prefilter(&args, cache, &pod("x", "web", false)).unwrap();
            let slow = prefilter(&args, cache, &pod("y", "web", true)).unwrap();
            assert_eq!(fast.mins, slow.mins);
            for (_, n) in cache.nodes() {
                let v = &n.labels["zone"];
                assert_eq!(
                    fast.counts[0].get(v).copied().unwrap_or(0),
                    slow.counts[0].get(v).copied().unwrap_or(0),
                    "zone {v}"
                );
                assert_eq!(
                    filter(&fast, &pod("x", "web", false), n).is_ok(),
                    filter(&slow, &pod("y", "web", true), n).is_ok()
                );
            }
            fast.mins[0]
        };
        assert_eq!(check(&cache), 0);
        cache.assume(pod("p1", "web", false), "a1");
        cache.assume(pod("p2", "web", false), "b1");
        cache.assume(pod("other", "db", false), "c1");
        assert_eq!(check(&cache), 0);
        cache.assume(pod("p3", "web", false), "c1");
        assert_eq!(check(&cache), 1);
        cache.forget("p2");
        assert_eq!(check(&cache), 0);
        cache.upsert_node(&node("d1", "d"));
        assert_eq!(check(&cache), 0);
    }
}
