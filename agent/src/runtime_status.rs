//! Version, Status (runtime and network conditions, the handler's features) and RuntimeConfig.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::service::Call;
use crate::view;

impl Call for cri::VersionRequest {
    type Reply = cri::VersionResponse;

    async fn call(self, _agent: &Agent) -> Result<Self::Reply, Status> {
        Ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "basalt".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }
}

impl Call for cri::StatusRequest {
    type Reply = cri::StatusResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
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
        let info = view::verbose_info(self.verbose, "config", || {
            serde_json::json!({
                "cniConfDir": args.cni_conf_dir,
                "cniBinDir": args.cni_bin_dir,
                "cgroupParent": args.cgroup_parent,
                "streamingAddress": agent.streaming.addr().to_string(),
                "podCIDR": *agent.pod_cidr.lock().unwrap(),
            })
        });
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
}

impl Call for cri::RuntimeConfigRequest {
    type Reply = cri::RuntimeConfigResponse;

    async fn call(self, _agent: &Agent) -> Result<Self::Reply, Status> {
        Ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}
