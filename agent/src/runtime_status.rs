//! Version, Status (runtime and network conditions, the handler's features) and RuntimeConfig.

use std::collections::HashMap;

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;

pub async fn version(
    _agent: &Agent,
    _req: cri::VersionRequest,
) -> Result<cri::VersionResponse, Status> {
    Ok(cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "basalt".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    })
}

pub async fn status(agent: &Agent, req: cri::StatusRequest) -> Result<cri::StatusResponse, Status> {
    let args = &agent.args;
    let net = basalt_cni::caller::load_dir(&args.cni_conf_dir);
    let (net_ok, net_reason, net_msg) = match &net {
        Ok(n) if !n.is_empty() => (true, String::new(), String::new()),
        Ok(_) => (
            false,
            "NetworkPluginNotReady".to_owned(),
            format!("no network config found in {}", args.cni_conf_dir.display()),
        ),
        Err(e) => (false, "NetworkPluginNotReady".to_owned(), e.to_string()),
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert(
            "config".to_owned(),
            serde_json::json!({
                "cniConfDir": args.cni_conf_dir,
                "cniBinDir": args.cni_bin_dir,
                "cgroupParent": args.cgroup_parent,
                "streamingAddress": agent.streaming.addr().to_string(),
                "podCIDR": *agent.pod_cidr.lock().unwrap(),
            })
            .to_string(),
        );
    }
    let features = Some(cri::RuntimeHandlerFeatures {
        recursive_read_only_mounts: true,
        user_namespaces: true,
    });
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![
                cri::RuntimeCondition {
                    r#type: "RuntimeReady".into(),
                    status: true,
                    ..Default::default()
                },
                cri::RuntimeCondition {
                    r#type: "NetworkReady".into(),
                    status: net_ok,
                    reason: net_reason,
                    message: net_msg,
                },
            ],
        }),
        info,
        runtime_handlers: vec![cri::RuntimeHandler {
            name: String::new(),
            features,
        }],
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
        }),
    })
}

pub async fn runtime_config(
    _agent: &Agent,
    _req: cri::RuntimeConfigRequest,
) -> Result<cri::RuntimeConfigResponse, Status> {
    Ok(cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
        }),
    })
}
