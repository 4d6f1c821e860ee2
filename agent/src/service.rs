//! The CRI's two gRPC services. Each call is a [`Call`] on its request type, implemented in the module of
//! its name (or family): RunPodSandbox in `sandbox_run`, ListContainers in `container_status`, and so on; the
//! tables below route every gRPC method to it. Their shared state is the [`Agent`].

use std::sync::Arc;

use basalt_proto::cri::{
    self, image_service_server::ImageService, runtime_service_server::RuntimeService,
};
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::events::EventStream;

/// One CRI call: what its request asks of the agent, and the response.
// Callers always name the request type, so whether the call's future is Send is known where it matters.
#[allow(async_fn_in_trait)]
pub trait Call {
    type Reply;
    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status>;
}

pub struct Runtime(pub Arc<Agent>);
pub struct Images(pub Arc<Agent>);

/// `method(Request),` in the list becomes the service's method that hands the request to its [`Call`].
macro_rules! service {
    ($service:ident for $ty:ident [$($method:ident($req:ident),)*] $($extra:item)*) => {
        #[tonic::async_trait]
        impl $service for $ty {
            $(async fn $method(
                &self,
                req: Request<cri::$req>,
            ) -> Result<Response<<cri::$req as Call>::Reply>, Status> {
                req.into_inner().call(&self.0).await.map(Response::new)
            })*
            $($extra)*
        }
    };
}

service! {
    RuntimeService for Runtime [
    // runtime_status, update_runtime_config
    version(VersionRequest), status(StatusRequest), runtime_config(RuntimeConfigRequest),
    update_runtime_config(UpdateRuntimeConfigRequest),
    // sandbox_run, sandbox_stop, sandbox_remove, sandbox_status
    run_pod_sandbox(RunPodSandboxRequest), stop_pod_sandbox(StopPodSandboxRequest),
    remove_pod_sandbox(RemovePodSandboxRequest),
    pod_sandbox_status(PodSandboxStatusRequest), list_pod_sandbox(ListPodSandboxRequest),
    // container_create, container_start, container_stop, container_remove
    create_container(CreateContainerRequest), start_container(StartContainerRequest),
    stop_container(StopContainerRequest), remove_container(RemoveContainerRequest),
    // container_status, container_update, container_log
    container_status(ContainerStatusRequest), list_containers(ListContainersRequest),
    update_container_resources(UpdateContainerResourcesRequest),
    reopen_container_log(ReopenContainerLogRequest),
    // exec
    exec_sync(ExecSyncRequest), exec(ExecRequest), attach(AttachRequest), port_forward(PortForwardRequest),
    // container_stats, sandbox_stats, metrics
    container_stats(ContainerStatsRequest), list_container_stats(ListContainerStatsRequest),
    pod_sandbox_stats(PodSandboxStatsRequest), list_pod_sandbox_stats(ListPodSandboxStatsRequest),
    list_metric_descriptors(ListMetricDescriptorsRequest),
    list_pod_sandbox_metrics(ListPodSandboxMetricsRequest),
    ]

    // events
    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<cri::GetEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Ok(Response::new(self.0.events.stream()))
    }

    async fn checkpoint_container(
        &self,
        _req: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(Status::unimplemented("container checkpointing is not supported"))
    }
}

service! {
    ImageService for Images [
    // image_status, image_pull, image_remove, image_fs_info
    list_images(ListImagesRequest), image_status(ImageStatusRequest), pull_image(PullImageRequest),
    remove_image(RemoveImageRequest), image_fs_info(ImageFsInfoRequest),
    ]
}
