//! The CRI RuntimeService: `Version`, `Status` and `RuntimeConfig` today;
//! the pod and container RPCs answer `Unimplemented` until their issues land.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1::runtime_service_server::RuntimeService;
use k8s_cri::v1::*;
use tonic::{Request, Response, Status};

use super::cri_service;
use crate::config::{self, Config};
use crate::storage::Storage;

/// The CRI API version ucri serves.
pub const CRI_API_VERSION: &str = "v1";
/// The runtime name reported to kubelet.
pub const RUNTIME_NAME: &str = "ucri";

/// The RuntimeService implementation.
#[derive(Debug)]
pub struct CriRuntimeService {
    config: Arc<Config>,
    mode: &'static str,
    storage: Arc<Storage>,
}

impl CriRuntimeService {
    /// A service for `config`; `mode` says how the daemon entered its namespaces.
    pub fn new(config: Arc<Config>, mode: &'static str, storage: Arc<Storage>) -> Self {
        CriRuntimeService {
            config,
            mode,
            storage,
        }
    }

    fn runtime_condition(&self) -> RuntimeCondition {
        let runtime = &self.config.runtime;
        let handler = runtime.runtimes.get(&runtime.default_runtime);
        let missing: Vec<String> = handler
            .map(|h| h.path.clone())
            .into_iter()
            .chain([runtime.conmon.clone()])
            .filter(|p| ucri_rootless::which(&p.to_string_lossy()).is_none())
            .map(|p| p.display().to_string())
            .collect();
        condition(
            "RuntimeReady",
            missing.is_empty(),
            "OCIRuntimeNotFound",
            &format!("not found in PATH: {}", missing.join(", ")),
        )
    }

    fn verbose_info(&self) -> HashMap<String, String> {
        let config_json = serde_json::to_string(&*self.config).unwrap_or_default();
        HashMap::from([
            ("config".to_owned(), config_json),
            ("mode".to_owned(), self.mode.to_owned()),
            (
                "storageDriver".to_owned(),
                self.storage.rootfs().driver().to_string(),
            ),
            (
                "storageDriverReason".to_owned(),
                self.storage.reason().to_owned(),
            ),
        ])
    }
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> RuntimeCondition {
    RuntimeCondition {
        r#type: kind.to_owned(),
        status: ok,
        reason: if ok { String::new() } else { reason.to_owned() },
        message: if ok {
            String::new()
        } else {
            message.to_owned()
        },
    }
}

fn network_condition() -> RuntimeCondition {
    condition(
        "NetworkReady",
        false,
        "NetworkPluginNotReady",
        "pod networking (uplink namespace + CNI) is not implemented by this build of ucri",
    )
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

cri_service! {
impl RuntimeService for CriRuntimeService {
    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![self.runtime_condition(), network_condition()],
            }),
            info: if verbose { self.verbose_info() } else { HashMap::new() },
            runtime_handlers: self.runtime_handlers(),
            features: None,
        }))
    }

    async fn runtime_config(
        &self,
        _: Request<RuntimeConfigRequest>,
    ) -> Result<Response<RuntimeConfigResponse>, Status> {
        let driver = match self.config.runtime.cgroup_driver {
            config::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
            config::CgroupDriver::Systemd => CgroupDriver::Systemd,
        };
        Ok(Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(crate::error::CriError::Unimplemented { rpc: "GetContainerEvents" }.into())
    }
}
    unimplemented {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = "RunPodSandbox";
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = "StopPodSandbox";
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse = "RemovePodSandbox";
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse = "PodSandboxStatus";
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse = "ListPodSandbox";
        create_container(CreateContainerRequest) -> CreateContainerResponse = "CreateContainer";
        start_container(StartContainerRequest) -> StartContainerResponse = "StartContainer";
        stop_container(StopContainerRequest) -> StopContainerResponse = "StopContainer";
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse = "RemoveContainer";
        list_containers(ListContainersRequest) -> ListContainersResponse = "ListContainers";
        container_status(ContainerStatusRequest) -> ContainerStatusResponse = "ContainerStatus";
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = "UpdateContainerResources";
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse = "ReopenContainerLog";
        exec_sync(ExecSyncRequest) -> ExecSyncResponse = "ExecSync";
        exec(ExecRequest) -> ExecResponse = "Exec";
        attach(AttachRequest) -> AttachResponse = "Attach";
        port_forward(PortForwardRequest) -> PortForwardResponse = "PortForward";
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse = "ContainerStats";
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse = "ListContainerStats";
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = "PodSandboxStats";
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = "ListPodSandboxStats";
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse = "UpdateRuntimeConfig";
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
    }
}

impl CriRuntimeService {
    fn runtime_handlers(&self) -> Vec<RuntimeHandler> {
        self.config
            .runtime
            .runtimes
            .keys()
            .map(|name| RuntimeHandler {
                name: if *name == self.config.runtime.default_runtime {
                    String::new()
                } else {
                    name.clone()
                },
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            })
            .collect()
    }
}
