//! The CRI's two gRPC services as tables: each call goes to the module of the same name, which unpacks the
//! request, does the work and builds the response. Their shared state is the [`Agent`].

use std::sync::Arc;

use basalt_proto::cri::{
    self, image_service_server::ImageService, runtime_service_server::RuntimeService,
};
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::events::EventStream;
use crate::{
    container_create, container_log, container_remove, container_start, container_stats,
    container_status, container_stop, container_update, exec, image_fs_info, image_pull,
    image_remove, image_status, metrics, runtime_status, sandbox_remove, sandbox_run,
    sandbox_stats, sandbox_status, sandbox_stop, update_runtime_config,
};

pub struct Runtime(pub Arc<Agent>);
pub struct Images(pub Arc<Agent>);

/// `call(Request) -> Response = module;` becomes a method that hands the request to `module::call`.
macro_rules! service {
    ($trait:ident for $ty:ident { $($call:ident($req:ident) -> $resp:ident = $module:ident;)* } $($extra:item)*) => {
        #[tonic::async_trait]
        impl $trait for $ty {
            $(async fn $call(&self, req: Request<cri::$req>) -> Result<Response<cri::$resp>, Status> {
                $module::$call(&self.0, req.into_inner()).await.map(Response::new)
            })*
            $($extra)*
        }
    };
}

service! {
    RuntimeService for Runtime {
        version(VersionRequest) -> VersionResponse = runtime_status;
        status(StatusRequest) -> StatusResponse = runtime_status;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse = runtime_status;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse = update_runtime_config;

        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = sandbox_run;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = sandbox_stop;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse = sandbox_remove;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse = sandbox_status;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse = sandbox_status;

        create_container(CreateContainerRequest) -> CreateContainerResponse = container_create;
        start_container(StartContainerRequest) -> StartContainerResponse = container_start;
        stop_container(StopContainerRequest) -> StopContainerResponse = container_stop;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse = container_remove;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse = container_status;
        list_containers(ListContainersRequest) -> ListContainersResponse = container_status;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = container_update;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse = container_log;

        exec_sync(ExecSyncRequest) -> ExecSyncResponse = exec;
        exec(ExecRequest) -> ExecResponse = exec;
        attach(AttachRequest) -> AttachResponse = exec;
        port_forward(PortForwardRequest) -> PortForwardResponse = exec;

        container_stats(ContainerStatsRequest) -> ContainerStatsResponse = container_stats;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse = container_stats;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = sandbox_stats;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = sandbox_stats;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = metrics;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = metrics;
    }

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
    ImageService for Images {
        list_images(ListImagesRequest) -> ListImagesResponse = image_status;
        image_status(ImageStatusRequest) -> ImageStatusResponse = image_status;
        pull_image(PullImageRequest) -> PullImageResponse = image_pull;
        remove_image(RemoveImageRequest) -> RemoveImageResponse = image_remove;
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse = image_fs_info;
    }
}
