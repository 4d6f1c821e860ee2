//! VolumeBinding: a pod's claims must exist; an unbound claim of an `Immediate` class waits for the
//! volume controller; a bound claim's volume must be reachable from the node (its node affinity); an
//! unbound `WaitForFirstConsumer` claim needs an available volume the node reaches, or a class that
//! provisions — and once the node is chosen the scheduler triggers the binding (PreBind).

use k8s_openapi::api::core::v1 as core;

use crate::cache::Cache;
use crate::framework::{PluginName, Rejection};
use crate::model::{NodeData, NodeSelectorTerm, PodInfo, Resources};

/// What PreBind does for a claim once the node is chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Bind the claim to this available volume (its claimRef).
    BindVolume { claim: String, volume: String },
    /// Ask the claim's provisioner for a volume on the node (`volume.kubernetes.io/selected-node`).
    Provision { claim: String },
}

#[derive(Default)]
pub struct State {
    bound_volumes: Vec<String>,
    /// Unbound delayed claims: name, class, request, access modes.
    delayed: Vec<(String, String, i64, Vec<String>)>,
}

const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> Result<Option<State>, Rejection> {
    if pod.claims.is_empty() {
        return Ok(None);
    }
    let mut st = State::default();
    for name in &pod.claims {
        let Some(pvc) = cache.claims.get(&(pod.namespace.clone(), name.clone())) else {
            return Err(Rejection::unresolvable(
                PluginName::VolumeBinding,
                format!("persistentvolumeclaim \"{name}\" not found"),
            ));
        };
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(Rejection::unresolvable(
                PluginName::VolumeBinding,
                format!("persistentvolumeclaim \"{name}\" is being deleted"),
            ));
        }
        let spec = pvc.spec.clone().unwrap_or_default();
        if let Some(v) = spec.volume_name.filter(|v| !v.is_empty()) {
            if !cache.volumes.contains_key(&v) {
                return Err(Rejection::unresolvable(
                    PluginName::VolumeBinding,
                    "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)",
                ));
            }
            st.bound_volumes.push(v);
            continue;
        }
        let class = spec.storage_class_name.clone().unwrap_or_default();
        let delayed = cache
            .classes
            .get(&class)
            .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !delayed {
            return Err(Rejection::unresolvable(
                PluginName::VolumeBinding,
                "pod has unbound immediate PersistentVolumeClaims",
            ));
        }
        let request =
            Resources::from_list(spec.resources.as_ref().and_then(|r| r.requests.as_ref()))
                .get("storage");
        st.delayed.push((
            name.clone(),
            class,
            request,
            spec.access_modes.unwrap_or_default(),
        ));
    }
    Ok(Some(st))
}

fn reachable(pv: &core::PersistentVolume, node: &NodeData) -> bool {
    let Some(terms) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    terms
        .node_selector_terms
        .iter()
        .any(|t| NodeSelectorTerm::from_api(t).matches(&node.labels, &node.name))
}

/// An available volume for a delayed claim on `node`: the smallest that fits, as upstream picks.
fn find_volume<'a>(
    cache: &'a Cache,
    pod: &PodInfo,
    claim: &(String, String, i64, Vec<String>),
    node: &NodeData,
    taken: &[&str],
) -> Option<&'a str> {
    let (name, class, request, modes) = claim;
    cache
        .volumes
        .iter()
        .filter(|(vname, pv)| {
            let spec = pv.spec.clone().unwrap_or_default();
            let free = match &spec.claim_ref {
                None => true,
                Some(r) => {
                    r.namespace.as_deref() == Some(pod.namespace.as_str())
                        && r.name.as_deref() == Some(name.as_str())
                }
            };
            let phase_ok = pv
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_none_or(|p| p == "Available" || p == "Pending");
            free && phase_ok
                && !taken.contains(&vname.as_str())
                && spec.storage_class_name.clone().unwrap_or_default() == *class
                && Resources::from_list(spec.capacity.as_ref()).get("storage") >= *request
                && modes
                    .iter()
                    .all(|m| spec.access_modes.iter().flatten().any(|a| a == m))
                && reachable(pv, node)
        })
        .min_by_key(|(_, pv)| {
            Resources::from_list(pv.spec.as_ref().and_then(|s| s.capacity.as_ref())).get("storage")
        })
        .map(|(n, _)| n.as_str())
}

pub fn filter(cache: &Cache, st: &State, pod: &PodInfo, node: &NodeData) -> Result<(), Rejection> {
    for v in &st.bound_volumes {
        if let Some(pv) = cache.volumes.get(v) {
            if !reachable(pv, node) {
                return Err(Rejection::unresolvable(
                    PluginName::VolumeBinding,
                    "node(s) didn't match PersistentVolume's node affinity",
                ));
            }
        }
    }
    let mut taken = Vec::new();
    for claim in &st.delayed {
        if let Some(v) = find_volume(cache, pod, claim, node, &taken) {
            taken.push(v);
            continue;
        }
        let provisions = cache
            .classes
            .get(&claim.1)
            .is_some_and(|c| c.provisioner != NO_PROVISIONER);
        if !provisions {
            return Err(Rejection::unresolvable(
                PluginName::VolumeBinding,
                "node(s) didn't find available persistent volumes to bind",
            ));
        }
    }
    Ok(())
}

/// What to do for the pod's delayed claims on the chosen node.
pub fn actions(cache: &Cache, st: &State, pod: &PodInfo, node: &NodeData) -> Vec<Action> {
    let mut taken = Vec::new();
    st.delayed
        .iter()
        .map(|claim| match find_volume(cache, pod, claim, node, &taken) {
            Some(v) => {
                taken.push(v);
                Action::BindVolume {
                    claim: claim.0.clone(),
                    volume: v.to_string(),
                }
            }
            None => Action::Provision {
                claim: claim.0.clone(),
            },
        })
        .collect()
}
