//! A pod's node selector and required node affinity, parsed once into typed requirements.

use std::collections::BTreeMap;

use basalt_apimachinery::selector::{LabelSelector, Op, Requirement};
use k8s_openapi::api::core::v1 as core;

/// One term of a node selector: every requirement on labels and on fields (`metadata.name`) holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    pub labels: LabelSelector,
    pub fields: LabelSelector,
}

fn requirements(reqs: &Option<Vec<core::NodeSelectorRequirement>>) -> LabelSelector {
    LabelSelector {
        requirements: reqs
            .iter()
            .flatten()
            .map(|r| {
                let values = r.values.clone().unwrap_or_default();
                let num = || values.first().and_then(|v| v.parse::<i64>().ok());
                let op = match r.operator.as_str() {
                    "In" => Op::In(values.clone()),
                    "NotIn" => Op::NotIn(values.clone()),
                    "Exists" => Op::Exists,
                    "DoesNotExist" => Op::DoesNotExist,
                    // A bad number matches nothing, as upstream's parse error does.
                    "Gt" => num().map(Op::GreaterThan).unwrap_or(Op::In(vec![])),
                    "Lt" => num().map(Op::LessThan).unwrap_or(Op::In(vec![])),
                    _ => Op::In(vec![]),
                };
                Requirement {
                    key: r.key.clone(),
                    op,
                }
            })
            .collect(),
    }
}

impl NodeSelectorTerm {
    pub fn from_api(t: &core::NodeSelectorTerm) -> NodeSelectorTerm {
        NodeSelectorTerm {
            labels: requirements(&t.match_expressions),
            fields: requirements(&t.match_fields),
        }
    }

    /// Whether the node with `labels` and `name` matches. An empty term matches no node (upstream), and
    /// `metadata.name` is the one field a node selector may ask about.
    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        if self.labels.is_empty() && self.fields.is_empty() {
            return false;
        }
        if !self.labels.matches(labels) {
            return false;
        }
        self.fields.requirements.iter().all(|r| {
            r.key == "metadata.name"
                && r.matches(&BTreeMap::from([(r.key.clone(), name.to_string())]))
        })
    }
}

/// Whether any of `terms` (ORed, as a NodeSelector's are) matches.
pub fn any_matches(
    terms: &[NodeSelectorTerm],
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    terms.iter().any(|t| t.matches(labels, name))
}

/// What a pod requires of its node's labels: its `nodeSelector` and its required node affinity (whose
/// terms are ORed); both must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequiredNodeAffinity {
    pub node_selector: BTreeMap<String, String>,
    /// None: the pod has no required node affinity (every node matches it).
    pub terms: Option<Vec<NodeSelectorTerm>>,
}

impl RequiredNodeAffinity {
    pub fn of(spec: &core::PodSpec) -> RequiredNodeAffinity {
        RequiredNodeAffinity {
            node_selector: spec.node_selector.clone().unwrap_or_default(),
            terms: spec
                .affinity
                .as_ref()
                .and_then(|a| a.node_affinity.as_ref())
                .and_then(|n| {
                    n.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .map(|s| {
                    s.node_selector_terms
                        .iter()
                        .map(NodeSelectorTerm::from_api)
                        .collect()
                }),
        }
    }

    /// Whether the pod asks nothing of its node.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>, name: &str) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .terms
                .as_deref()
                .is_none_or(|t| any_matches(t, labels, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: &str, values: &[&str]) -> core::NodeSelectorRequirement {
        core::NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn spec(
        selector: &[(&str, &str)],
        terms: Option<Vec<core::NodeSelectorTerm>>,
    ) -> core::PodSpec {
        core::PodSpec {
            node_selector: (!selector.is_empty()).then(|| {
                selector
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            affinity: terms.map(|t| core::Affinity {
                node_affinity: Some(core::NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(core::NodeSelector {
                        node_selector_terms: t,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn selector_and_terms_both_hold_terms_are_ored() {
        let labels = BTreeMap::from([
            ("zone".to_string(), "a".to_string()),
            ("cores".to_string(), "8".to_string()),
        ]);
        let term = |r: Vec<core::NodeSelectorRequirement>| core::NodeSelectorTerm {
            match_expressions: Some(r),
            match_fields: None,
        };
        assert!(RequiredNodeAffinity::of(&spec(&[], None)).matches(&labels, "n1"));
        assert!(RequiredNodeAffinity::of(&spec(&[("zone", "a")], None)).matches(&labels, "n1"));
        assert!(!RequiredNodeAffinity::of(&spec(&[("zone", "b")], None)).matches(&labels, "n1"));
        let either = spec(
            &[],
            Some(vec![
                term(vec![req("zone", "In", &["b"])]),
                term(vec![req("cores", "Gt", &["4"])]),
            ]),
        );
        assert!(RequiredNodeAffinity::of(&either).matches(&labels, "n1"));
        let neither = spec(
            &[("zone", "a")],
            Some(vec![term(vec![
                req("cores", "Lt", &["4"]),
                req("zone", "Exists", &[]),
            ])]),
        );
        assert!(!RequiredNodeAffinity::of(&neither).matches(&labels, "n1"));
        // A bad number and an unknown operator match nothing; an empty term matches no node.
        let bad = spec(&[], Some(vec![term(vec![req("cores", "Gt", &["x"])])]));
        assert!(!RequiredNodeAffinity::of(&bad).matches(&labels, "n1"));
        let empty = spec(&[], Some(vec![core::NodeSelectorTerm::default()]));
        assert!(!RequiredNodeAffinity::of(&empty).matches(&labels, "n1"));
    }

    #[test]
    fn match_fields_name_the_node() {
        let pin = spec(
            &[],
            Some(vec![core::NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req("metadata.name", "In", &["n1"])]),
            }]),
        );
        let a = RequiredNodeAffinity::of(&pin);
        assert!(a.matches(&BTreeMap::new(), "n1"));
        assert!(!a.matches(&BTreeMap::new(), "n2"));
        let other_field = spec(
            &[],
            Some(vec![core::NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req("metadata.uid", "In", &["n1"])]),
            }]),
        );
        assert!(!RequiredNodeAffinity::of(&other_field).matches(&BTreeMap::new(), "n1"));
    }
}
