//! RuntimeService: each RPC unpacks its request and calls the agent; the behaviour lives in `sandbox`,
//! `container`, `stats` and `stream`.

use std::pin::Pin;
use std::sync::Arc;

use basalt_proto::cri::{self, runtime_service_server::RuntimeService};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::status;

pub struct Runtime(pub Arc<Agent>);

type R<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> R<T> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _req: Request<cri::VersionRequest>) -> R<cri::VersionResponse> {
        ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "basalt".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        })
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<cri::RunPodSandboxRequest>,
    ) -> R<cri::RunPodSandboxResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| status::invalid("config", "", "is required"))?;
        let id = self.0.run_pod_sandbox(config, req.runtime_handler).await?;
        ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<cri::StopPodSandboxRequest>,
    ) -> R<cri::StopPodSandboxResponse> {
        self.0
            .stop_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<cri::RemovePodSandboxRequest>,
    ) -> R<cri::RemovePodSandboxResponse> {
        self.0
            .remove_pod_sandbox(&req.into_inner().pod_sandbox_id)
            .await?;
        ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<cri::PodSandboxStatusRequest>,
    ) -> R<cri::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let mut resp = self
            .0
            .pod_sandbox_status(&req.pod_sandbox_id, req.verbose)
            .await?;
        if let Some(s) = &resp.status {
            for c in self.0.records.containers_of(&s.id) {
                let live = self.0.live_status(&c).await;
                resp.containers_statuses
                    .push(crate::container::status_of(&c, live.as_ref()));
            }
        }
        ok(resp)
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<cri::ListPodSandboxRequest>,
    ) -> R<cri::ListPodSandboxResponse> {
        let items = self.0.list_pod_sandbox(req.into_inner().filter).await?;
        ok(cri::ListPodSandboxResponse { items })
    }

    async fn create_container(
        &self,
        req: Request<cri::CreateContainerRequest>,
    ) -> R<cri::CreateContainerResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| status::invalid("config", "", "is required"))?;
        let id = self
            .0
            .create_container(&req.pod_sandbox_id, config, req.sandbox_config)
            .await?;
        ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(
        &self,
        req: Request<cri::StartContainerRequest>,
    ) -> R<cri::StartContainerResponse> {
        self.0
            .start_container(&req.into_inner().container_id)
            .await?;
        ok(cri::StartContainerResponse {})
    }

    async fn stop_container(
        &self,
        req: Request<cri::StopContainerRequest>,
    ) -> R<cri::StopContainerResponse> {
        let req = req.into_inner();
        self.0
            .stop_container(&req.container_id, req.timeout)
            .await?;
        ok(cri::StopContainerResponse {})
    }

    async fn remove_container(
        &self,
        req: Request<cri::RemoveContainerRequest>,
    ) -> R<cri::RemoveContainerResponse> {
        self.0
            .remove_container(&req.into_inner().container_id)
            .await?;
        ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(
        &self,
        req: Request<cri::ListContainersRequest>,
    ) -> R<cri::ListContainersResponse> {
        let containers = self.0.list_containers(req.into_inner().filter).await?;
        ok(cri::ListContainersResponse { containers })
    }

    async fn container_status(
        &self,
        req: Request<cri::ContainerStatusRequest>,
    ) -> R<cri::ContainerStatusResponse> {
        let req = req.into_inner();
        ok(self
            .0
            .container_status(&req.container_id, req.verbose)
            .await?)
    }

    async fn update_container_resources(
        &self,
        req: Request<cri::UpdateContainerResourcesRequest>,
    ) -> R<cri::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        self.0
            .update_container_resources(&req.container_id, req.linux)
            .await?;
        ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(
        &self,
        req: Request<cri::ReopenContainerLogRequest>,
    ) -> R<cri::ReopenContainerLogResponse> {
        self.0
            .reopen_container_log(&req.into_inner().container_id)
            .await?;
        ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(&self, req: Request<cri::ExecSyncRequest>) -> R<cri::ExecSyncResponse> {
        let req = req.into_inner();
        ok(self
            .0
            .exec_sync(&req.container_id, req.cmd, req.timeout)
            .await?)
    }

    async fn exec(&self, req: Request<cri::ExecRequest>) -> R<cri::ExecResponse> {
        ok(cri::ExecResponse {
            url: self.0.exec_url(req.into_inner()).await?,
        })
    }

    async fn attach(&self, req: Request<cri::AttachRequest>) -> R<cri::AttachResponse> {
        ok(cri::AttachResponse {
            url: self.0.attach_url(req.into_inner()).await?,
        })
    }

    async fn port_forward(
        &self,
        req: Request<cri::PortForwardRequest>,
    ) -> R<cri::PortForwardResponse> {
        ok(cri::PortForwardResponse {
            url: self.0.port_forward_url(req.into_inner()).await?,
        })
    }

    async fn container_stats(
        &self,
        req: Request<cri::ContainerStatsRequest>,
    ) -> R<cri::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let c = self
            .0
            .records
            .find_container(&id)
            .ok_or_else(|| status::not_found("container", &id))?;
        ok(cri::ContainerStatsResponse {
            stats: Some(self.0.container_stats(&c).await),
        })
    }

    async fn list_container_stats(
        &self,
        req: Request<cri::ListContainerStatsRequest>,
    ) -> R<cri::ListContainerStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = cri::ContainerFilter {
            id: f.id,
            pod_sandbox_id: f.pod_sandbox_id,
            label_selector: f.label_selector,
            state: None,
        };
        let mut stats = Vec::new();
        for c in self.0.list_containers(Some(filter)).await? {
            if let Some(rec) = self.0.records.container(&c.id) {
                stats.push(self.0.container_stats(&rec).await);
            }
        }
        ok(cri::ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<cri::PodSandboxStatsRequest>,
    ) -> R<cri::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        let s = self
            .0
            .records
            .find_sandbox(&id)
            .ok_or_else(|| status::not_found("pod sandbox", &id))?;
        ok(cri::PodSandboxStatsResponse {
            stats: Some(self.0.sandbox_stats(&s).await),
        })
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<cri::ListPodSandboxStatsRequest>,
    ) -> R<cri::ListPodSandboxStatsResponse> {
        let f = req.into_inner().filter.unwrap_or_default();
        let filter = cri::PodSandboxFilter {
            id: f.id,
            label_selector: f.label_selector,
            state: None,
        };
        let mut stats = Vec::new();
        for s in self.0.list_pod_sandbox(Some(filter)).await? {
            if let Some(rec) = self.0.records.sandbox(&s.id) {
                stats.push(self.0.sandbox_stats(&rec).await);
            }
        }
        ok(cri::ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(
        &self,
        req: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> R<cri::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        if !cidr.is_empty() {
            self.0.set_pod_cidr(&cidr)?;
        }
        ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn status(&self, req: Request<cri::StatusRequest>) -> R<cri::StatusResponse> {
        let verbose = req.into_inner().verbose;
        let net = basalt_cni::caller::load_dir(&self.0.args.cni_conf_dir);
        let (net_ok, net_reason, net_msg) = match &net {
            Ok(n) if !n.is_empty() => (true, String::new(), String::new()),
            Ok(_) => (
                false,
                "NetworkPluginNotReady".to_owned(),
                format!(
                    "no network config found in {}",
                    self.0.args.cni_conf_dir.display()
                ),
            ),
            Err(e) => (false, "NetworkPluginNotReady".to_owned(), e.to_string()),
        };
        let mut info = std::collections::HashMap::new();
        if verbose {
            info.insert(
                "config".to_owned(),
                serde_json::json!({
                    "cniConfDir": self.0.args.cni_conf_dir,
                    "cniBinDir": self.0.args.cni_bin_dir,
                    "cgroupParent": self.0.args.cgroup_parent,
                    "streamingAddress": self.0.streaming.addr().to_string(),
                    "podCIDR": *self.0.pod_cidr.lock().unwrap(),
                })
                .to_string(),
            );
        }
        let features = Some(cri::RuntimeHandlerFeatures {
            recursive_read_only_mounts: true,
            user_namespaces: true,
        });
        ok(cri::StatusResponse {
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

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> R<cri::CheckpointContainerResponse> {
        Err(Status::unimplemented(
            "container checkpointing is not supported",
        ))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send + 'static>>;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> R<Self::GetContainerEventsStream> {
        let rx = self.0.events.subscribe();
        // A subscriber too slow to keep up has missed events: end its stream with an error rather than carry
        // on with a gap, so that it relists (kubelet's PLEG does) instead of trusting stale state.
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::BroadcastStream::new(rx), |e| {
                e.map_err(
                    |tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)| {
                        Status::aborted(format!("{n} container events were missed; relist"))
                    },
                )
            });
        ok(Box::pin(stream))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<cri::ListMetricDescriptorsRequest>,
    ) -> R<cri::ListMetricDescriptorsResponse> {
        ok(cri::ListMetricDescriptorsResponse {
            descriptors: crate::stats::metric_descriptors(),
        })
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> R<cri::ListPodSandboxMetricsResponse> {
        ok(cri::ListPodSandboxMetricsResponse {
            pod_metrics: self.0.pod_metrics().await,
        })
    }

    async fn runtime_config(
        &self,
        _req: Request<cri::RuntimeConfigRequest>,
    ) -> R<cri::RuntimeConfigResponse> {
        ok(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        })
    }
}
