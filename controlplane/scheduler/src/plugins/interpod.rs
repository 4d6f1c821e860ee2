//! InterPodAffinity: the pod's required affinity and anti-affinity, and the required anti-affinity of
//! the pods already placed, filter; preferred terms (both ways) and placed pods' required affinity
//! (hardPodAffinityWeight) score.

use std::collections::HashMap;

use crate::cache::Cache;
use crate::framework::{PluginName, Rejection, MAX_NODE_SCORE};
use crate::model::{AffinityTerm, Labels, NodeData, NodeInfo, PodInfo};

type Pair = (String, String);

#[derive(Clone)]
pub struct FilterState {
    /// Topology pairs where a placed pod's required anti-affinity forbids this pod.
    existing_anti: HashMap<Pair, i64>,
    /// Per topology pair, placed pods matching all of the pod's required affinity terms.
    affinity: HashMap<Pair, i64>,
    /// Per topology pair, placed pods matching one of the pod's required anti-affinity terms.
    anti: HashMap<Pair, i64>,
    /// No placed pod matches the affinity terms, but the pod matches them itself: the first of a group.
    self_affine: bool,
}

fn ns_lookup(cache: &Cache) -> impl Fn(&str) -> Option<Labels> + '_ {
    move |ns| cache.namespace_labels(ns)
}

fn add(map: &mut HashMap<Pair, i64>, term: &AffinityTerm, node: &NodeData, n: i64) {
    if let Some(v) = node.labels.get(&term.topology_key) {
        *map.entry((term.topology_key.clone(), v.clone()))
            .or_default() += n;
    }
}

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> Option<FilterState> {
    let ns = ns_lookup(cache);
    let mut st = FilterState {
        existing_anti: HashMap::new(),
        affinity: HashMap::new(),
        anti: HashMap::new(),
        self_affine: false,
    };
    let has_own = !pod.affinity.required.is_empty() || !pod.affinity.required_anti.is_empty();
    let mut any = false;
    for (info, node) in cache.nodes() {
        if info.pods_with_required_anti_affinity == 0 && !has_own {
            continue;
        }
        for p in &info.pods {
            for t in &p.affinity.required_anti {
                if t.matches(pod, &ns) {
                    add(&mut st.existing_anti, t, node, 1);
                    any = true;
                }
            }
            if !pod.affinity.required.is_empty()
                && pod.affinity.required.iter().all(|t| t.matches(p, &ns))
            {
                for t in &pod.affinity.required {
                    add(&mut st.affinity, t, node, 1);
                }
                any = true;
            }
            for t in &pod.affinity.required_anti {
                if t.matches(p, &ns) {
                    add(&mut st.anti, t, node, 1);
                    any = true;
                }
            }
        }
    }
    if !has_own && !any {
        return None;
    }
    st.self_affine = st.affinity.is_empty()
        && !pod.affinity.required.is_empty()
        && pod.affinity.required.iter().all(|t| t.matches(pod, &ns));
    Some(st)
}

impl FilterState {
    /// Takes `victim` off `node` (preemption's dry run).
    pub fn remove(&mut self, cache: &Cache, pod: &PodInfo, victim: &PodInfo, node: &NodeData) {
        let ns = ns_lookup(cache);
        for t in &victim.affinity.required_anti {
            if t.matches(pod, &ns) {
                add(&mut self.existing_anti, t, node, -1);
            }
        }
        if !pod.affinity.required.is_empty()
            && pod.affinity.required.iter().all(|t| t.matches(victim, &ns))
        {
            for t in &pod.affinity.required {
                add(&mut self.affinity, t, node, -1);
            }
        }
        for t in &pod.affinity.required_anti {
            if t.matches(victim, &ns) {
                add(&mut self.anti, t, node, -1);
            }
        }
    }
}

fn count(map: &HashMap<Pair, i64>, key: &str, node: &NodeData) -> i64 {
    node.labels
        .get(key)
        .and_then(|v| map.get(&(key.to_string(), v.clone())))
        .copied()
        .unwrap_or(0)
}

pub fn filter(st: &FilterState, pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    if !pod.affinity.required.is_empty() {
        let all = pod
            .affinity
            .required
            .iter()
            .all(|t| count(&st.affinity, &t.topology_key, node) > 0);
        let keys = pod
            .affinity
            .required
            .iter()
            .all(|t| node.labels.contains_key(&t.topology_key));
        if !all && !(st.self_affine && keys) {
            return Err(Rejection::unresolvable(
                PluginName::InterPodAffinity,
                "node(s) didn't match pod affinity rules",
            ));
        }
    }
    if pod
        .affinity
        .required_anti
        .iter()
        .any(|t| count(&st.anti, &t.topology_key, node) > 0)
    {
        return Err(Rejection::unschedulable(
            PluginName::InterPodAffinity,
            "node(s) didn't match pod anti-affinity rules",
        ));
    }
    if st
        .existing_anti
        .iter()
        .any(|((k, v), n)| *n > 0 && node.labels.get(k) == Some(v))
    {
        return Err(Rejection::unschedulable(
            PluginName::InterPodAffinity,
            "node(s) didn't satisfy existing pods anti-affinity rules",
        ));
    }
    Ok(())
}

pub fn score(
    hard_weight: i64,
    cache: &Cache,
    pod: &PodInfo,
    nodes: &[(&NodeInfo, &NodeData)],
) -> Vec<i64> {
    let ns = ns_lookup(cache);
    let own_preferences =
        !pod.affinity.preferred.is_empty() || !pod.affinity.preferred_anti.is_empty();
    let mut topo: HashMap<Pair, i64> = HashMap::new();
    for (info, node) in cache.nodes() {
        if !own_preferences && info.pods_with_affinity == 0 {
            continue;
        }
        for p in &info.pods {
            for (w, t) in &pod.affinity.preferred {
                if t.matches(p, &ns) {
                    add(&mut topo, t, node, *w as i64);
                }
            }
            for (w, t) in &pod.affinity.preferred_anti {
                if t.matches(p, &ns) {
                    add(&mut topo, t, node, -(*w as i64));
                }
            }
            if hard_weight > 0 {
                for t in &p.affinity.required {
                    if t.matches(pod, &ns) {
                        add(&mut topo, t, node, hard_weight);
                    }
                }
            }
            for (w, t) in &p.affinity.preferred {
                if t.matches(pod, &ns) {
                    add(&mut topo, t, node, *w as i64);
                }
            }
            for (w, t) in &p.affinity.preferred_anti {
                if t.matches(pod, &ns) {
                    add(&mut topo, t, node, -(*w as i64));
                }
            }
        }
    }
    if topo.is_empty() {
        return vec![0; nodes.len()];
    }
    let raw: Vec<i64> = nodes
        .iter()
        .map(|(_, n)| {
            topo.iter()
                .filter(|((k, v), _)| n.labels.get(k) == Some(v))
                .map(|(_, s)| *s)
                .sum()
        })
        .collect();
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    raw.iter()
        .map(|s| {
            if max > min {
                MAX_NODE_SCORE * (s - min) / (max - min)
            } else {
                0
            }
        })
        .collect()
}
