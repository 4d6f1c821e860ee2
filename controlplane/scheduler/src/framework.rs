//! The scheduling framework's vocabulary: plugin names, what a filter answers, the per-cycle state the
//! pre-filter and pre-score steps compute, and upstream's score normalisation.

use std::borrow::Cow;
use std::fmt;

/// A filter's reason: almost always a constant, so refusing thousands of nodes allocates no text.
pub type Reason = Cow<'static, str>;

/// The plugins, by upstream's names. Each is a filter, a scorer or both; a profile enables a subset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginName {
    PrioritySort,
    SchedulingGates,
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    VolumeBinding,
    PodTopologySpread,
    InterPodAffinity,
    DefaultPreemption,
    NodeResourcesBalancedAllocation,
    ImageLocality,
    DefaultBinder,
}

use PluginName::*;

impl PluginName {
    pub const ALL: [PluginName; 15] = [
        PrioritySort,
        SchedulingGates,
        NodeUnschedulable,
        NodeName,
        TaintToleration,
        NodeAffinity,
        NodePorts,
        NodeResourcesFit,
        VolumeBinding,
        PodTopologySpread,
        InterPodAffinity,
        DefaultPreemption,
        NodeResourcesBalancedAllocation,
        ImageLocality,
        DefaultBinder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrioritySort => "PrioritySort",
            SchedulingGates => "SchedulingGates",
            NodeUnschedulable => "NodeUnschedulable",
            NodeName => "NodeName",
            TaintToleration => "TaintToleration",
            NodeAffinity => "NodeAffinity",
            NodePorts => "NodePorts",
            NodeResourcesFit => "NodeResourcesFit",
            VolumeBinding => "VolumeBinding",
            PodTopologySpread => "PodTopologySpread",
            InterPodAffinity => "InterPodAffinity",
            DefaultPreemption => "DefaultPreemption",
            NodeResourcesBalancedAllocation => "NodeResourcesBalancedAllocation",
            ImageLocality => "ImageLocality",
            DefaultBinder => "DefaultBinder",
        }
    }

    pub fn parse(s: &str) -> Option<PluginName> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Upstream's in-tree plugins this scheduler does not implement: a configuration naming them is
    /// accepted (they have nothing to do without their API objects here) rather than refused.
    pub fn known_elsewhere(s: &str) -> bool {
        matches!(
            s,
            "VolumeRestrictions"
                | "NodeVolumeLimits"
                | "VolumeZone"
                | "DynamicResources"
                | "NodeDeclaredFeatures"
                | "GangScheduling"
        )
    }

    pub fn is_filter(self) -> bool {
        matches!(
            self,
            NodeUnschedulable
                | NodeName
                | TaintToleration
                | NodeAffinity
                | NodePorts
                | NodeResourcesFit
                | VolumeBinding
                | PodTopologySpread
                | InterPodAffinity
        )
    }

    pub fn is_score(self) -> bool {
        matches!(
            self,
            TaintToleration
                | NodeAffinity
                | NodeResourcesFit
                | PodTopologySpread
                | InterPodAffinity
                | NodeResourcesBalancedAllocation
                | ImageLocality
        )
    }

    /// The weights of upstream's default profile.
    pub fn default_weight(self) -> i64 {
        match self {
            TaintToleration => 3,
            NodeAffinity | PodTopologySpread | InterPodAffinity => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for PluginName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether preemption could help a node a filter refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Removing pods could make room (resources, ports, anti-affinity, spreading).
    Unschedulable,
    /// Nothing about other pods would change the answer (labels, taints, node name).
    UnschedulableAndUnresolvable,
}

/// A filter's refusal of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub plugin: PluginName,
    pub code: Code,
    pub reasons: Vec<Reason>,
}

impl Rejection {
    pub fn new(plugin: PluginName, code: Code, reason: impl Into<Reason>) -> Rejection {
        Rejection {
            plugin,
            code,
            reasons: vec![reason.into()],
        }
    }

    pub fn unresolvable(plugin: PluginName, reason: impl Into<Reason>) -> Rejection {
        Self::new(plugin, Code::UnschedulableAndUnresolvable, reason)
    }

    pub fn unschedulable(plugin: PluginName, reason: impl Into<Reason>) -> Rejection {
        Self::new(plugin, Code::Unschedulable, reason)
    }
}

pub const MAX_NODE_SCORE: i64 = 100;

/// Upstream's DefaultNormalizeScore: scale to 0..=100 by the largest score, reversed when lower is better.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in PluginName::ALL {
            assert_eq!(PluginName::parse(p.as_str()), Some(p));
        }
        assert_eq!(PluginName::parse("NoSuchPlugin"), None);
    }

    #[test]
    fn normalisation_is_upstreams() {
        let mut s = vec![0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut z = vec![0, 0];
        default_normalize(&mut z, false);
        assert_eq!(z, vec![0, 0]);
    }
}
