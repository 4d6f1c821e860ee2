//! DefaultPreemption: when a pod fits nowhere, find a node where removing lower-priority pods makes it
//! fit, removing as few and as unimportant pods as possible and honouring PodDisruptionBudgets (a pod
//! whose eviction would exceed its budget is spared if the pod fits without removing it, and nodes
//! needing fewer such violations win), as upstream's.

use std::collections::HashMap;
use std::sync::Arc;

use crate::algorithm::{histogram, nominated_load, FitError};
use crate::cache::Pdb;
use crate::framework::{Code, PluginName, Rejection};
use crate::model::{NodeInfo, PodInfo};
use crate::plugins::{self, Ctx, CycleState};

#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Upstream's PodEligibleToPreemptOthers.
fn eligible(ctx: &Ctx, pod: &PodInfo) -> Result<(), String> {
    if pod.preempt_never {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    if let Some(n) = &pod.nominated_node {
        if let Some(info) = ctx.cache.node(n) {
            if info
                .pods
                .iter()
                .any(|p| p.terminating && p.preempted && p.priority < pod.priority)
            {
                return Err("not eligible due to a terminating pod on the nominated node.".into());
            }
        }
    }
    Ok(())
}

/// Splits victims (most important first) into those whose eviction would break a budget and the rest.
fn split_by_pdb(
    pdbs: &[&Pdb],
    victims: Vec<Arc<PodInfo>>,
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut fine = Vec::new();
    for v in victims {
        let mut violated = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if v.labels.is_empty()
                || pdb.namespace != v.namespace
                || pdb.selector.is_empty()
                || !pdb.selector.matches(&v.labels)
                || pdb.disrupted_pods.contains(&v.name)
            {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violated = true;
            }
        }
        if violated {
            violating.push(v);
        } else {
            fine.push(v);
        }
    }
    (violating, fine)
}

/// Upstream's MoreImportantPod order: higher priority, then started earlier.
fn importance(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority.cmp(&a.priority).then(a.started.cmp(&b.started))
}

fn check(ctx: &Ctx, st: &CycleState, pod: &PodInfo, info: &NodeInfo) -> Result<(), Rejection> {
    let node = info.node.as_deref().expect("node object");
    let load = nominated_load(ctx, pod, &node.name);
    plugins::filter(ctx, st, pod, info, node, load.as_ref())
}

fn fits(ctx: &Ctx, st: &CycleState, pod: &PodInfo, info: &NodeInfo) -> bool {
    check(ctx, st, pod, info).is_ok()
}

/// The dry run on one node: victims and budget violations, or the node's status when there is nothing
/// to remove or even removing every lower-priority pod is not enough.
fn select_victims(
    ctx: &Ctx,
    st: &CycleState,
    pod: &PodInfo,
    info: &NodeInfo,
    pdbs: &[&Pdb],
) -> Result<(Vec<Arc<PodInfo>>, usize), Rejection> {
    let no_victims = || Rejection::unresolvable(PluginName::DefaultPreemption, NO_VICTIMS);
    let node = info.node.as_deref().ok_or_else(no_victims)?;
    let mut trial = info.clone();
    let mut state = CycleState {
        spread: st.spread.clone(),
        interpod: st.interpod.clone(),
        volumes: None,
    };
    let mut potential: Vec<Arc<PodInfo>> = info
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(no_victims());
    }
    for v in &potential {
        trial.remove_pod(&v.uid);
        if let Some(s) = &mut state.spread {
            s.remove(pod, v, node);
        }
        if let Some(s) = &mut state.interpod {
            s.remove(ctx.cache, pod, v, node);
        }
    }
    state.volumes = None;
    let with_volumes = CycleState {
        volumes: plugins::volumes::prefilter(ctx.cache, pod).ok().flatten(),
        ..state
    };
    check(ctx, &with_volumes, pod, &trial)?;
    potential.sort_by(|a, b| importance(a, b));
    let (violating, fine) = split_by_pdb(pdbs, potential);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (v, is_violating) in violating
        .into_iter()
        .map(|v| (v, true))
        .chain(fine.into_iter().map(|v| (v, false)))
    {
        // Reprieve: put the pod back; if ours no longer fits, it is a victim after all.
        trial.add_pod(v.clone());
        if !fits(ctx, &with_volumes, pod, &trial) {
            trial.remove_pod(&v.uid);
            if is_violating {
                violations += 1;
            }
            victims.push(v);
        }
    }
    Ok((victims, violations))
}

/// Upstream's pickOneNodeForPreemption: fewest budget violations, then the lowest highest victim
/// priority, the lowest sum of priorities, the fewest victims, the latest start of the highest-priority
/// victims.
fn pick(mut candidates: Vec<Candidate>) -> Option<Candidate> {
    candidates.sort_by(|a, b| {
        let top = |c: &Candidate| {
            c.victims
                .iter()
                .map(|v| v.priority)
                .max()
                .unwrap_or(i32::MIN)
        };
        let sum = |c: &Candidate| {
            c.victims
                .iter()
                .map(|v| v.priority as i64 + i32::MAX as i64 + 1)
                .sum::<i64>()
        };
        let latest_start = |c: &Candidate| {
            let t = top(c);
            c.victims
                .iter()
                .filter(|v| v.priority == t)
                .map(|v| v.started)
                .min()
                .unwrap_or(i64::MIN)
        };
        a.pdb_violations
            .cmp(&b.pdb_violations)
            .then(top(a).cmp(&top(b)))
            .then(sum(a).cmp(&sum(b)))
            .then(a.victims.len().cmp(&b.victims.len()))
            .then(latest_start(b).cmp(&latest_start(a)))
    });
    candidates.into_iter().next()
}

/// Runs preemption for `pod` after `err`. `Ok` names the node and the pods to evict; `Err` is the
/// post-filter message for the FailedScheduling event.
pub fn preempt(
    ctx: &Ctx,
    st: Option<&CycleState>,
    pod: &PodInfo,
    err: &FitError,
) -> Result<Candidate, String> {
    eligible(ctx, pod).map_err(|m| format!("preemption: {m}"))?;
    let all = err.num_all_nodes;
    let mut statuses: HashMap<String, Rejection> = HashMap::new();
    let not_helpful = || Rejection::unresolvable(PluginName::DefaultPreemption, NOT_HELPFUL);
    let no_victims_here = || Rejection::unresolvable(PluginName::DefaultPreemption, NO_VICTIMS);
    let names = ctx.cache.node_names();
    let potential: Vec<&String> = match (&err.prefilter, st) {
        (None, Some(_)) => err
            .statuses
            .iter()
            .filter(|(_, r)| r.code == Code::Unschedulable)
            .filter_map(|(i, _)| names.get(*i))
            .collect(),
        _ => Vec::new(),
    };
    let message = |statuses: &HashMap<String, Rejection>| {
        let mut all_statuses: Vec<Rejection> = statuses.values().cloned().collect();
        all_statuses.extend((statuses.len()..all).map(|_| not_helpful()));
        format!(
            "preemption: 0/{all} nodes are available: {}.",
            histogram(all_statuses.iter()).join(", ")
        )
    };
    let Some(st) = st.filter(|_| !potential.is_empty()) else {
        return Err(message(&statuses));
    };
    let pdbs: Vec<&Pdb> = ctx.cache.pdbs.values().collect();
    let wanted = (all / 10).max(100);
    let mut candidates = Vec::new();
    for name in potential {
        let Some(info) = ctx.cache.node(name) else {
            continue;
        };
        match select_victims(ctx, st, pod, info, &pdbs) {
            Ok((victims, pdb_violations)) if !victims.is_empty() => {
                candidates.push(Candidate {
                    node: name.clone(),
                    victims,
                    pdb_violations,
                });
                if candidates.len() >= wanted {
                    break;
                }
            }
            Ok(_) => {
                statuses.insert(name.clone(), no_victims_here());
            }
            Err(r) => {
                statuses.insert(name.clone(), r);
            }
        }
    }
    pick(candidates).ok_or_else(|| message(&statuses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_apimachinery::selector::LabelSelector;

    fn pod(name: &str, priority: i32, app: &str) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            uid: name.into(),
            name: name.into(),
            namespace: "ns".into(),
            priority,
            labels: [("app".to_string(), app.to_string())].into(),
            ..Default::default()
        })
    }

    #[test]
    fn budgets_are_spent_in_importance_order() {
        let pdb = Pdb {
            namespace: "ns".into(),
            selector: LabelSelector::parse("app=db").unwrap(),
            disruptions_allowed: 1,
            disrupted_pods: Default::default(),
        };
        let (violating, fine) = split_by_pdb(
            &[&pdb],
            vec![pod("a", 5, "db"), pod("b", 1, "db"), pod("c", 1, "web")],
        );
        let names = |v: &[Arc<PodInfo>]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&violating), ["b"]);
        assert_eq!(names(&fine), ["a", "c"]);
    }

    #[test]
    fn fewer_violations_win_then_lower_priorities() {
        let c = |node: &str, v: Vec<Arc<PodInfo>>, pdb| Candidate {
            node: node.into(),
            victims: v,
            pdb_violations: pdb,
        };
        let best = pick(vec![
            c("x", vec![pod("a", 1, "")], 1),
            c("y", vec![pod("b", 5, "")], 0),
            c("z", vec![pod("c", 3, "")], 0),
        ])
        .unwrap();
        assert_eq!(best.node, "z");
    }
}
