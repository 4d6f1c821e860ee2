//! The pod's network through CNI: ADD when a sandbox is made, DEL (owed while the record names the network)
//! when it stops, and the default network written for the pod CIDR the kubelet hands over.

use std::path::{Path, PathBuf};

use basalt_proto::cri;
use serde_json::json;
use tonic::Status;

use crate::agent::Agent;
use crate::status;
use crate::store::{SandboxRecord, Survive};

const IFNAME: &str = "eth0";

/// Where the agent pins a pod's network namespace (when the monitor does not: see `sandbox_run`).
pub fn netns_pin(pod_dir: &Path) -> PathBuf {
    pod_dir.join("netns")
}

fn network(agent: &Agent) -> Result<basalt_cni::caller::NetworkConfigList, Status> {
    let nets = basalt_cni::caller::load_dir(&agent.args.cni_conf_dir)
        .map_err(|e| Status::failed_precondition(format!("CNI config: {e}")))?;
    nets.into_iter().next().ok_or_else(|| {
        Status::failed_precondition(format!(
            "no CNI network config in {} (network not ready)",
            agent.args.cni_conf_dir.display()
        ))
    })
}

fn runtime_conf(rec: &SandboxRecord) -> basalt_cni::caller::RuntimeConf {
    let meta = rec.config.metadata.clone().unwrap_or_default();
    let mut rt = basalt_cni::caller::RuntimeConf {
        container_id: rec.id.clone(),
        netns: rec.namespaces.get("net").cloned().unwrap_or_default(),
        ifname: IFNAME.into(),
        ..Default::default()
    }
    .with_pod(&meta.namespace, &meta.name, &rec.id, &meta.uid);
    let ports: Vec<_> = rec
        .config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| {
            let proto = cri::Protocol::try_from(p.protocol)
                .unwrap_or(cri::Protocol::Tcp)
                .as_str_name()
                .to_lowercase();
            let mut m = json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": proto});
            if !p.host_ip.is_empty() {
                m["hostIP"] = json!(p.host_ip);
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        rt.capability_args
            .insert("portMappings".into(), json!(ports));
    }
    rt
}

/// CNI ADD into the sandbox's network namespace; the pod's IPs go into `rec`.
pub async fn add(agent: &Agent, rec: &mut SandboxRecord) -> Result<(), Status> {
    let net = network(agent)?;
    let rt = runtime_conf(rec);
    rec.cni_network = Some(net.name.clone());
    // Owed a DEL from here on, even if ADD fails half-way.
    agent
        .records
        .put_sandbox(rec, Survive::PowerLoss)
        .map_err(|e| status::internal("recording the sandbox", e))?;
    let cni = agent.cni.clone();
    let result = tokio::task::spawn_blocking(move || cni.add(&net, &rt))
        .await
        .map_err(status::from_join)?
        .map_err(|e| Status::unknown(format!("CNI ADD: {e}")))?;
    rec.ips = result
        .get("ips")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address")?.as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_owned())
        .collect();
    Ok(())
}

/// CNI DEL, if one is owed. A network whose config is gone is skipped (with a warning), not retried forever.
pub async fn del(agent: &Agent, rec: &mut SandboxRecord) -> Result<(), Status> {
    let Some(name) = rec.cni_network.clone() else {
        return Ok(());
    };
    let net = match basalt_cni::caller::load_dir(&agent.args.cni_conf_dir)
        .ok()
        .and_then(|nets| nets.into_iter().find(|n| n.name == name))
    {
        Some(n) => n,
        None => {
            tracing::warn!(sandbox = %rec.id, network = %name, "CNI network config gone; skipping DEL");
            rec.cni_network = None;
            return Ok(());
        }
    };
    let rt = runtime_conf(rec);
    let cni = agent.cni.clone();
    tokio::task::spawn_blocking(move || cni.del(&net, &rt))
        .await
        .map_err(status::from_join)?
        .map_err(|e| Status::unknown(format!("CNI DEL: {e}")))?;
    rec.cni_network = None;
    rec.ips.clear();
    Ok(())
}

/// The pod network of a node nobody configured one for: k3s's layout (cluster CIDR 10.42.0.0/16, a /24 per
/// node), this node's being the first /24.
pub const DEFAULT_POD_CIDR: &str = "10.42.0.0/24";

/// Writes a bridge + host-local network for the pod CIDR the kubelet hands us, unless the operator
/// configured a network already. Our `bridge` does hostPort mappings itself (the `portMappings`
/// capability): a node has no `portmap` plugin. Returns the file written, if one was.
pub fn write_default(dir: &Path, cidr: &str) -> Result<Option<PathBuf>, Status> {
    if basalt_cni::caller::load_dir(dir).is_ok_and(|n| !n.is_empty()) {
        return Ok(None);
    }
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "basalt",
        "plugins": [{
            "type": "bridge",
            "bridge": "basalt0",
            "isGateway": true,
            "ipMasq": true,
            "hairpinMode": true,
            "capabilities": {"portMappings": true},
            "ipam": {"type": "host-local", "ranges": [[{"subnet": cidr}]], "routes": [{"dst": "0.0.0.0/0"}]}
        }]
    });
    std::fs::create_dir_all(dir).map_err(|e| status::internal("creating the CNI config dir", e))?;
    // Renamed into place: the directory is watched, and a half-written file is no network.
    let path = dir.join("10-basalt.conflist");
    let tmp = dir.join(".10-basalt.conflist.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&conf).unwrap())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| status::internal("writing the CNI config", e))?;
    Ok(Some(path))
}
