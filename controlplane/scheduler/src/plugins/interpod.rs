//! InterPodAffinity: the pod's required affinity and anti-affinity, and the required anti-affinity of
//! the pods already placed, filter; preferred terms (both ways) and placed pods' required affinity
//! (hardPodAffinityWeight) score.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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

/// Placed pods some of `terms` may select: those of the terms' namespaces (every placed pod when a term
/// selects namespaces by label).
fn candidates<'a>(
    cache: &'a Cache,
    terms: &[&AffinityTerm],
) -> Vec<(&'a Arc<PodInfo>, &'a NodeData)> {
    if terms.is_empty() {
        return Vec::new();
    }
    let namespaces: HashSet<&str> = if terms.iter().any(|t| t.namespace_selector.is_some()) {
        cache.index.namespaces()
    } else {
        terms
            .iter()
            .flat_map(|t| t.namespaces.iter().map(String::as_str))
            .collect()
    };
    namespaces
        .iter()
        .filter_map(|ns| cache.index.by_namespace.get(*ns))
        .flat_map(|m| m.keys())
        .filter_map(|uid| cache.placed(uid))
        .collect()
}

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> Option<FilterState> {
    let has_own = !pod.affinity.required.is_empty() || !pod.affinity.required_anti.is_empty();
    if !has_own && cache.pods_with_required_anti_affinity() == 0 {
        return None;
    }
    let ns = ns_lookup(cache);
    let mut st = FilterState {
        existing_anti: HashMap::new(),
        affinity: HashMap::new(),
        anti: HashMap::new(),
        self_affine: false,
    };
    let mut any = false;
    for uid in cache.index.with_required_anti.keys() {
        let Some((p, node)) = cache.placed(uid) else {
            continue;
        };
        for t in &p.affinity.required_anti {
            if t.matches(pod, &ns) {
                add(&mut st.existing_anti, t, node, 1);
                any = true;
            }
        }
    }
    let own: Vec<&AffinityTerm> = pod
        .affinity
        .required
        .iter()
        .chain(&pod.affinity.required_anti)
        .collect();
    for (p, node) in candidates(cache, &own) {
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
        if !(all || (st.self_affine && keys)) {
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
    let own: Vec<&AffinityTerm> = pod
        .affinity
        .preferred
        .iter()
        .chain(&pod.affinity.preferred_anti)
        .map(|(_, t)| t)
        .collect();
    if own.is_empty() && cache.pods_with_affinity() == 0 {
        return vec![0; nodes.len()];
    }
    let mut topo: HashMap<(&str, &str), i64> = HashMap::new();
    fn bump<'a>(
        topo: &mut HashMap<(&'a str, &'a str), i64>,
        t: &AffinityTerm,
        node: &'a NodeData,
        n: i64,
    ) {
        if let Some((k, v)) = node.labels.get_key_value(&t.topology_key) {
            *topo.entry((k.as_str(), v.as_str())).or_default() += n;
        }
    }
    // The pod's own preferences, over the pods they may select.
    for (p, node) in candidates(cache, &own) {
        for (w, t) in &pod.affinity.preferred {
            if t.matches(p, &ns) {
                bump(&mut topo, t, node, *w as i64);
            }
        }
        for (w, t) in &pod.affinity.preferred_anti {
            if t.matches(p, &ns) {
                bump(&mut topo, t, node, -(*w as i64));
            }
        }
    }
    // Placed pods' terms about this pod.
    for uid in cache.index.with_affinity.keys() {
        let Some((p, node)) = cache.placed(uid) else {
            continue;
        };
        if hard_weight > 0 {
            for t in &p.affinity.required {
                if t.matches(pod, &ns) {
                    bump(&mut topo, t, node, hard_weight);
                }
            }
        }
        for (w, t) in &p.affinity.preferred {
            if t.matches(pod, &ns) {
                bump(&mut topo, t, node, *w as i64);
            }
        }
        for (w, t) in &p.affinity.preferred_anti {
            if t.matches(pod, &ns) {
                bump(&mut topo, t, node, -(*w as i64));
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
                .filter(|((k, v), _)| n.labels.get(*k).map(String::as_str) == Some(*v))
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
