//! One scheduling attempt, as upstream's `schedulePod`: pre-filter, the nominated node first, then filter
//! nodes from a rotating start until enough are feasible (percentageOfNodesToScore), score them with
//! the profile's weights and pick the best (ties at random). A pod that fits nowhere gets a [`FitError`]
//! whose message is upstream's (`0/3 nodes are available: 1 Insufficient cpu, 2 node(s) …`).

use std::collections::BTreeMap;

use crate::framework::{Code, PluginName, Rejection};
use crate::model::{NodeData, NodeInfo, PodInfo, Resources};
use crate::plugins::{self, Ctx, CycleState};

/// Why no node was chosen.
#[derive(Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// A pre-filter refusal that holds for every node.
    pub prefilter: Option<Rejection>,
    /// Each refused node's status, by its position in the cache's node order.
    pub statuses: Vec<(usize, Rejection)>,
    /// What preemption said (`preemption: …`), when it ran and found nothing.
    pub postfilter: Option<String>,
}

impl FitError {
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        if let Some(p) = &self.prefilter {
            msg.push_str(&format!(" {}.", p.reasons.join(", ")));
        } else {
            let hist = histogram(self.statuses.iter().map(|(_, r)| r));
            if !hist.is_empty() {
                msg.push_str(&format!(" {}.", hist.join(", ")));
            }
        }
        if let Some(p) = &self.postfilter {
            msg.push(' ');
            msg.push_str(p);
        }
        msg
    }

    /// The plugins that refused: the events that may help the pod are theirs.
    pub fn rejectors(&self) -> Vec<PluginName> {
        let mut v: Vec<PluginName> = self
            .prefilter
            .iter()
            .chain(self.statuses.iter().map(|(_, r)| r))
            .map(|r| r.plugin)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `N reason` for each distinct reason, sorted as strings (upstream's sortReasonsHistogram).
pub fn histogram<'a>(statuses: impl Iterator<Item = &'a Rejection>) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        for r in &s.reasons {
            *counts.entry(r.as_ref()).or_default() += 1;
        }
    }
    let mut v: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    v.sort();
    v
}

pub struct Placement {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

/// Upstream's numFeasibleNodesToFind: all nodes below 100; otherwise the configured percentage, or
/// adaptively 50% less 1% per 125 nodes, at least 5%, and never fewer than 100 nodes.
pub fn nodes_to_find(all: usize, percentage: Option<u32>) -> usize {
    const MIN_NODES: usize = 100;
    if all < MIN_NODES {
        return all;
    }
    let pct = match percentage {
        Some(p) => p as usize,
        None => (50usize.saturating_sub(all / 125)).max(5),
    };
    if pct >= 100 {
        return all;
    }
    (all * pct / 100).max(MIN_NODES)
}

/// A tiny xorshift generator for picking among equal scores.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

pub struct Algorithm {
    next_start: usize,
    rng: Rng,
}

impl Default for Algorithm {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Algorithm {
            next_start: 0,
            rng: Rng(seed),
        }
    }
}

/// What nominated pods of at least `pod`'s priority will take on `node`.
pub fn nominated_load(ctx: &Ctx, pod: &PodInfo, node: &str) -> Option<(Resources, usize)> {
    if !ctx.cache.has_nominated() {
        return None;
    }
    let mut r = Resources::default();
    let mut n = 0;
    for p in ctx.cache.nominated_on(node, &pod.uid) {
        if p.priority >= pod.priority {
            r.add(&p.requests);
            n += 1;
        }
    }
    (n > 0).then_some((r, n))
}

impl Algorithm {
    /// Finds a node for `pod`; on failure the state of the pre-filter is returned too, for preemption.
    pub fn schedule(
        &mut self,
        ctx: &Ctx,
        pod: &PodInfo,
        percentage: Option<u32>,
    ) -> Result<Placement, Box<(FitError, Option<CycleState>)>> {
        let all = ctx.cache.node_count();
        let mut err = FitError {
            num_all_nodes: all,
            prefilter: None,
            statuses: Vec::new(),
            postfilter: None,
        };
        if all == 0 {
            return Err(Box::new((err, None)));
        }
        let state = match plugins::prefilter(ctx, pod) {
            Ok(s) => s,
            Err(r) => {
                err.prefilter = Some(r);
                return Err(Box::new((err, None)));
            }
        };
        let check = |info: &NodeInfo, node: &NodeData| {
            let load = nominated_load(ctx, pod, &node.name);
            plugins::filter(ctx, &state, pod, info, node, load.as_ref())
        };
        // The node preemption made room on comes first.
        if let Some(n) = &pod.nominated_node {
            if let Some(info) = ctx.cache.node(n) {
                let node = info.node.as_deref().expect("node object");
                if check(info, node).is_ok() {
                    return Ok(Placement {
                        node: n.clone(),
                        evaluated: 1,
                        feasible: 1,
                    });
                }
            }
        }
        let want = nodes_to_find(all, percentage);
        let names = ctx.cache.node_names();
        let start = self.next_start % all;
        let mut feasible: Vec<(&NodeInfo, &NodeData)> = Vec::with_capacity(want.min(all));
        let mut processed = 0;
        for i in 0..all {
            let at = (start + i) % all;
            let name = &names[at];
            processed += 1;
            let Some(info) = ctx.cache.node(name) else {
                continue;
            };
            let node = info.node.as_deref().expect("node object");
            match check(info, node) {
                Ok(()) => {
                    feasible.push((info, node));
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(r) => {
                    err.statuses.push((at, r));
                }
            }
        }
        self.next_start = (start + processed) % all;
        if feasible.is_empty() {
            return Err(Box::new((err, Some(state))));
        }
        let evaluated = processed;
        let count = feasible.len();
        if count == 1 || ctx.profile.scores.is_empty() {
            return Ok(Placement {
                node: feasible[0].1.name.clone(),
                evaluated,
                feasible: count,
            });
        }
        let mut totals = vec![0i64; count];
        for (plugin, weight) in &ctx.profile.scores {
            let s = plugins::score(ctx, *plugin, pod, &feasible);
            for (t, s) in totals.iter_mut().zip(s) {
                *t += s * weight;
            }
        }
        let best = *totals.iter().max().expect("non-empty");
        let mut chosen = 0;
        let mut seen = 0u64;
        for (i, t) in totals.iter().enumerate() {
            if *t == best {
                seen += 1;
                if self.rng.next().is_multiple_of(seen) {
                    chosen = i;
                }
            }
        }
        Ok(Placement {
            node: feasible[chosen].1.name.clone(),
            evaluated,
            feasible: count,
        })
    }
}

/// Whether every refusal in `err` was unresolvable (preemption cannot help anywhere).
pub fn all_unresolvable(err: &FitError) -> bool {
    err.prefilter.is_some()
        || err
            .statuses
            .iter()
            .all(|(_, r)| r.code == Code::UnschedulableAndUnresolvable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_upstreams_histogram() {
        let mut statuses = vec![(
            0,
            Rejection::unschedulable(PluginName::NodeResourcesFit, "Insufficient cpu"),
        )];
        for n in [1, 2] {
            statuses.push((
                n,
                Rejection::unresolvable(
                    PluginName::TaintToleration,
                    "node(s) had untolerated taint(s)",
                ),
            ));
        }
        let e = FitError {
            num_all_nodes: 3,
            prefilter: None,
            statuses,
            postfilter: Some(
                "preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
                    .into(),
            ),
        };
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint(s). preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            e.rejectors(),
            vec![PluginName::TaintToleration, PluginName::NodeResourcesFit]
        );
    }

    #[test]
    fn how_many_nodes_are_filtered() {
        assert_eq!(nodes_to_find(50, None), 50);
        assert_eq!(nodes_to_find(5000, None), 500);
        assert_eq!(nodes_to_find(1000, None), 420);
        assert_eq!(nodes_to_find(1000, Some(100)), 1000);
        assert_eq!(nodes_to_find(200, Some(10)), 100);
    }
}
