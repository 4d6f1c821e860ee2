//! UpdateRuntimeConfig: the pod CIDR the kubelet hands over, for which a default network is written when
//! the operator configured none.

use basalt_proto::cri;
use tonic::Status;

use crate::agent::Agent;
use crate::network;
use crate::service::Call;

impl Call for cri::UpdateRuntimeConfigRequest {
    type Reply = cri::UpdateRuntimeConfigResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let cidr = self
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            *agent.pod_cidr.lock().unwrap() = Some(cidr.clone());
            network::write_default(&agent.args.cni_conf_dir, &cidr)?;
        }
        Ok(cri::UpdateRuntimeConfigResponse {})
    }
}
