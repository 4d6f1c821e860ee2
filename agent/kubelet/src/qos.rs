//! Pod QoS: the class a pod falls in and the cgroup its containers go under (made by [`crate::pod_cgroup`]).

use k8s_openapi::api::core::v1::Pod;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// The QoS class as upstream computes it: no requests or limits anywhere → BestEffort; every container with
/// equal cpu and memory requests and limits → Guaranteed; else Burstable.
pub fn qos_class(pod: &Pod) -> Qos {
    let spec = pod.spec.as_ref().expect("validated");
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut any = false;
    let mut guaranteed = true;
    for c in all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.clone().unwrap_or_default();
        let requests = r.requests.clone().unwrap_or_else(|| limits.clone());
        for res in ["cpu", "memory"] {
            if requests.contains_key(res) || limits.contains_key(res) {
                any = true;
            }
            match (requests.get(res), limits.get(res)) {
                (Some(a), Some(b)) if a == b => {}
                _ => guaranteed = false,
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => Qos::BestEffort,
        (true, true) => Qos::Guaranteed,
        (true, false) => Qos::Burstable,
    }
}

/// The pod's cgroup: `/kubepods/pod<uid>`, `/kubepods/burstable/pod<uid>` or `/kubepods/besteffort/pod<uid>`.
pub fn pod_cgroup(root: &str, pod: &Pod) -> String {
    let uid = pod
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .replace('-', "_");
    let root = root.trim_end_matches('/');
    match qos_class(pod) {
        Qos::Guaranteed => format!("{root}/pod{uid}"),
        Qos::Burstable => format!("{root}/burstable/pod{uid}"),
        Qos::BestEffort => format!("{root}/besteffort/pod{uid}"),
    }
}
