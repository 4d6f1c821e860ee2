//! What the kubelet knows about a pod beyond its spec, and the downward API values it gives containers
//! (in env and in volumes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use basalt_proto::cri;
use k8s_openapi::api::core::v1::{Pod, PodSpec};

/// What the kubelet knows about a pod beyond its spec.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub node_name: &'a str,
    /// `/var/log/pods`-like root: the pod's logs go to `<log_root>/<ns>_<name>_<uid>/`.
    pub log_root: &'a Path,
    pub cgroup_parent: String,
    pub pod_ips: Vec<String>,
    pub host_ip: String,
    pub seccomp_default: bool,
    /// The pod's user namespace (`hostUsers: false`), its range allocated.
    pub userns: Option<cri::UserNamespace>,
}

impl PodContext<'_> {
    pub fn spec(&self) -> &PodSpec {
        self.pod.spec.as_ref().expect("validated pods have a spec")
    }
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or_default()
    }
    pub fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
    pub fn uid(&self) -> &str {
        self.pod.metadata.uid.as_deref().unwrap_or_default()
    }
    pub fn log_dir(&self) -> PathBuf {
        self.log_root.join(format!(
            "{}_{}_{}",
            self.namespace(),
            self.name(),
            self.uid()
        ))
    }
}

/// A `fieldRef.fieldPath` the downward API has no value for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fieldRef.fieldPath {0:?}: not supported")]
pub struct UnsupportedField(pub String);

/// The downward API value of `fieldRef.fieldPath`.
pub fn field_value(ctx: &PodContext, path: &str) -> Result<String, UnsupportedField> {
    let m = &ctx.pod.metadata;
    let bracket = |prefix: &str, map: Option<&BTreeMap<String, String>>| -> Option<String> {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.and_then(|m| m.get(key)).cloned().unwrap_or_default())
    };
    if let Some(v) = bracket("metadata.labels['", m.labels.as_ref()) {
        return Ok(v);
    }
    if let Some(v) = bracket("metadata.annotations['", m.annotations.as_ref()) {
        return Ok(v);
    }
    Ok(match path {
        "metadata.name" => ctx.name().into(),
        "metadata.namespace" => ctx.namespace().into(),
        "metadata.uid" => ctx.uid().into(),
        "spec.nodeName" => ctx.node_name.into(),
        "spec.serviceAccountName" => ctx.spec().service_account_name.clone().unwrap_or_default(),
        "status.hostIP" => ctx.host_ip.clone(),
        "status.hostIPs" => ctx.host_ip.clone(),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" {
                &m.labels
            } else {
                &m.annotations
            };
            map.iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        p => return Err(UnsupportedField(p.to_owned())),
    })
}
