//! The filter and score plugins, named and behaving as upstream's, and the dispatch from a profile's
//! plugin list to them.

pub mod basic;
pub mod interpod;
pub mod resources;
pub mod spread;
pub mod volumes;

use crate::cache::Cache;
use crate::config::Profile;
use crate::framework::{PluginName, Rejection};
use crate::model::{NodeData, NodeInfo, PodInfo, Resources};

/// What the pre-filter step computed for one pod in one cycle.
#[derive(Default)]
pub struct CycleState {
    pub spread: Option<spread::FilterState>,
    pub interpod: Option<interpod::FilterState>,
    pub volumes: Option<volumes::State>,
}

pub struct Ctx<'a> {
    pub cache: &'a Cache,
    pub profile: &'a Profile,
}

/// The pre-filter step: state for the filters, or a refusal that holds for every node.
pub fn prefilter(ctx: &Ctx, pod: &PodInfo) -> Result<CycleState, Rejection> {
    let mut st = CycleState::default();
    for p in &ctx.profile.filters {
        match p {
            PluginName::PodTopologySpread => {
                st.spread = spread::prefilter(&ctx.profile.args.spread, ctx.cache, pod)
            }
            PluginName::InterPodAffinity => st.interpod = interpod::prefilter(ctx.cache, pod),
            PluginName::VolumeBinding => st.volumes = volumes::prefilter(ctx.cache, pod)?,
            _ => {}
        }
    }
    Ok(st)
}

/// Runs the profile's filters on one node in order; the first refusal is the node's status.
/// `nominated` is what pods nominated to the node (of at least this pod's priority) will take.
pub fn filter(
    ctx: &Ctx,
    st: &CycleState,
    pod: &PodInfo,
    info: &NodeInfo,
    node: &NodeData,
    nominated: Option<&(Resources, usize)>,
) -> Result<(), Rejection> {
    for p in &ctx.profile.filters {
        match p {
            PluginName::NodeUnschedulable => basic::node_unschedulable(pod, node)?,
            PluginName::NodeName => basic::node_name(pod, node)?,
            PluginName::TaintToleration => basic::taint_toleration(pod, node)?,
            PluginName::NodeAffinity => basic::node_affinity(pod, node)?,
            PluginName::NodePorts => basic::node_ports(pod, info)?,
            PluginName::NodeResourcesFit => {
                resources::fit(&ctx.profile.args.fit, pod, info, node, nominated)?
            }
            PluginName::VolumeBinding => {
                if let Some(v) = &st.volumes {
                    volumes::filter(ctx.cache, v, pod, node)?
                }
            }
            PluginName::PodTopologySpread => {
                if let Some(s) = &st.spread {
                    spread::filter(s, pod, node)?
                }
            }
            PluginName::InterPodAffinity => {
                if let Some(s) = &st.interpod {
                    interpod::filter(s, pod, node)?
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// One score plugin's normalised scores (0..=100) for the feasible nodes.
pub fn score(
    ctx: &Ctx,
    plugin: PluginName,
    pod: &PodInfo,
    nodes: &[(&NodeInfo, &NodeData)],
) -> Vec<i64> {
    let args = &ctx.profile.args;
    match plugin {
        PluginName::TaintToleration => basic::taint_toleration_score(pod, nodes),
        PluginName::NodeAffinity => basic::node_affinity_score(pod, nodes),
        PluginName::NodeResourcesFit => resources::fit_score(&args.fit, pod, nodes),
        PluginName::NodeResourcesBalancedAllocation => {
            resources::balanced_score(&args.balanced, pod, nodes)
        }
        PluginName::ImageLocality => basic::image_locality_score(ctx.cache, pod, nodes),
        PluginName::PodTopologySpread => spread::score(&args.spread, ctx.cache, pod, nodes),
        PluginName::InterPodAffinity => {
            interpod::score(args.hard_pod_affinity_weight, ctx.cache, pod, nodes)
        }
        _ => vec![0; nodes.len()],
    }
}
