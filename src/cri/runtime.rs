//! The CRI RuntimeService: pods, containers, stats and events through the
//! lifecycle; Exec, Attach and PortForward hand out streaming-server URLs.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use ucri_cri_api::v1::runtime_service_server::RuntimeService;
use ucri_cri_api::v1::*;

use super::cri_service;
use crate::config::{self, Config};
use crate::error::CriError;
use crate::runtime::{Lifecycle, LifecycleError};
use crate::storage::Storage;
use crate::streaming::{Streaming, StreamingError};

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
    lifecycle: Arc<Lifecycle>,
    streaming: Arc<Streaming>,
}

impl CriRuntimeService {
    /// A service for `config`; `mode` says how the daemon entered its namespaces.
    pub fn new(
        config: Arc<Config>,
        mode: &'static str,
        storage: Arc<Storage>,
        lifecycle: Arc<Lifecycle>,
        streaming: Arc<Streaming>,
    ) -> Self {
        CriRuntimeService {
            config,
            mode,
            storage,
            lifecycle,
            streaming,
        }
    }

    /// Runs a blocking streaming-URL check off the async workers, in `span`.
    async fn stream_url(
        &self,
        span: tracing::Span,
        work: impl FnOnce(&Streaming, &Lifecycle) -> Result<String, StreamingError> + Send + 'static,
    ) -> Result<String, Status> {
        let (streaming, lifecycle) = (self.streaming.clone(), self.lifecycle.clone());
        let result =
            tokio::task::spawn_blocking(move || span.in_scope(|| work(&streaming, &lifecycle)))
                .await
                .map_err(|e| Status::internal(format!("streaming task: {e}")))?;
        result.map_err(|e| Status::from(CriError::from(e)))
    }

    /// Deletes images removed while in use once no container uses them; a
    /// failure is logged (the removal itself succeeded) and retried next time.
    async fn release_unused_images(&self) {
        if let Err(e) = self.lifecycle.images().release_unused().await {
            tracing::warn!(%e, "cannot delete the content of removed images");
        }
    }

    /// Runs quick lifecycle work (memory and at most a small file or two:
    /// the status calls) on the async worker, in `span`: handing it to the
    /// blocking pool and back costs two thread wake-ups, more than the work.
    fn quick<T>(
        &self,
        span: tracing::Span,
        work: impl FnOnce(&Lifecycle) -> Result<T, LifecycleError>,
    ) -> Result<T, Status> {
        span.in_scope(|| work(&self.lifecycle))
            .map_err(|e| Status::from(CriError::from(e)))
    }

    /// Runs blocking lifecycle work off the async workers, in `span`.
    async fn blocking<T: Send + 'static>(
        &self,
        span: tracing::Span,
        work: impl FnOnce(&Lifecycle) -> Result<T, LifecycleError> + Send + 'static,
    ) -> Result<T, Status> {
        let lifecycle = self.lifecycle.clone();
        let result = tokio::task::spawn_blocking(move || span.in_scope(|| work(&lifecycle)))
            .await
            .map_err(|e| Status::internal(format!("lifecycle task: {e}")))?;
        result.map_err(|e| Status::from(CriError::from(e)))
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
            (
                "network".to_owned(),
                self.lifecycle.network().describe().to_string(),
            ),
            ("cgroups".to_owned(), self.lifecycle.cgroups().describe()),
            (
                "userNamespacePods".to_owned(),
                crate::runtime::userns::pod_capacity().to_string(),
            ),
            (
                "streamingServer".to_owned(),
                format!("http://{}", self.streaming.address()),
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

fn network_condition(network: &ucri_net::Network) -> RuntimeCondition {
    let ready = network.ready();
    condition(
        "NetworkReady",
        ready.is_ok(),
        "NetworkPluginNotReady",
        &ready.err().unwrap_or_default(),
    )
}

/// Not a condition kubelet acts on: it says whether resource limits apply.
fn limits_condition(cgroups: &crate::cgroups::CgroupSupport) -> RuntimeCondition {
    let message = match cgroups {
        crate::cgroups::CgroupSupport::None { reason, fix } => format!("{reason}; fix: {fix}"),
        _ => String::new(),
    };
    condition(
        "ResourceLimitsApplied",
        cgroups.delegated(),
        "CgroupsNotDelegated",
        &message,
    )
}

/// Not a condition kubelet acts on: whether every state record was read
/// at start-up, and where the unreadable ones went.
fn state_condition(quarantined: &[crate::runtime::state::Quarantined]) -> RuntimeCondition {
    let listed: Vec<String> = quarantined
        .iter()
        .map(|q| {
            format!(
                "{} {}: {} (now {})",
                q.kind,
                q.id,
                q.reason,
                q.path.display()
            )
        })
        .collect();
    let message = format!(
        "{} state records could not be read and were set aside, with what they describe left \
         as it is: {}",
        quarantined.len(),
        listed.join("; ")
    );
    condition(
        "StateRecordsRead",
        quarantined.is_empty(),
        "StateQuarantined",
        &message,
    )
}

/// Not a condition kubelet acts on: whether pod connections to the
/// outside take the socket bypass or the uplink helper's path.
fn bypass_condition(support: &Result<(), String>) -> RuntimeCondition {
    let message = support
        .as_ref()
        .err()
        .map(|why| format!("pod traffic to the outside goes through the uplink helper: {why}"))
        .unwrap_or_default();
    condition("SocketBypass", support.is_ok(), "SocketBypassOff", &message)
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ContainerEventResponse, Status>> + Send>>;

/// A `Stream*` list RPC's answer (Kubernetes 1.36, KEP-5825): the list in
/// messages of at most [`STREAM_CHUNK`] items, so that no message grows past
/// gRPC's size limit however many pods there are.
pub type ListStream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Items per message of a `Stream*` list RPC.
pub const STREAM_CHUNK: usize = 100;

/// Splits `items` into messages made by `wrap`; an empty list is one empty
/// message, as an empty unary list is one empty reply.
pub fn list_stream<I: Send + 'static, T: Send + 'static>(
    items: Vec<I>,
    wrap: impl Fn(Vec<I>) -> T + Send + 'static,
) -> ListStream<T> {
    let mut chunks: Vec<Vec<I>> = Vec::new();
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(STREAM_CHUNK).collect());
    }
    if chunks.is_empty() {
        chunks.push(Vec::new());
    }
    Box::pin(tokio_stream::iter(
        chunks.into_iter().map(move |c| Ok(wrap(c))),
    ))
}

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

    async fn update_runtime_config(&self, request: Request<UpdateRuntimeConfigRequest>) -> Result<Response<UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        let span = tracing::debug_span!("update_runtime_config", %cidr);
        self.blocking(span, move |l| Ok(l.network().set_pod_cidrs(&cidr)?)).await?;
        Ok(Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn status(&self, request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let verbose = request.into_inner().verbose;
        Ok(Response::new(StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![
                    self.runtime_condition(),
                    network_condition(self.lifecycle.network()),
                    limits_condition(self.lifecycle.cgroups()),
                    state_condition(&self.lifecycle.quarantined()),
                    bypass_condition(self.lifecycle.socket_bypass()),
                ],
            }),
            info: if verbose { self.verbose_info() } else { HashMap::new() },
            runtime_handlers: self.runtime_handlers(),
            // Merge and Strict are applied in the spec, and ContainerStatus
            // reports the resulting identity.
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
                // Pods with their own user namespace are not supported yet.
                user_namespaces_host_network: false,
            }),
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
        use tokio_stream::StreamExt;
        let events = tokio_stream::wrappers::BroadcastStream::new(self.lifecycle.subscribe())
            .filter_map(|event| match event {
                Ok(event) => Some(Ok(event)),
                Err(lagged) => {
                    // A slow subscriber misses events; the runtime never waits for it.
                    tracing::warn!(%lagged, "an event subscriber fell behind");
                    None
                }
            });
        Ok(Response::new(Box::pin(events)))
    }
    async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> Result<Response<RunPodSandboxResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
        let name = config.metadata.as_ref().map(|m| format!("{}/{}", m.namespace, m.name)).unwrap_or_default();
        let handler = request.runtime_handler;
        let span = tracing::info_span!("run_pod_sandbox", pod = %name);
        let id = self.blocking(span, move |l| l.run_pod(config, &handler)).await?;
        Ok(Response::new(RunPodSandboxResponse { pod_sandbox_id: id }))
    }

    async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> Result<Response<StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let span = tracing::info_span!("stop_pod_sandbox", pod = %id);
        self.blocking(span, move |l| l.stop_pod(&id)).await?;
        Ok(Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(&self, request: Request<RemovePodSandboxRequest>) -> Result<Response<RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let span = tracing::info_span!("remove_pod_sandbox", pod = %id);
        self.blocking(span, move |l| l.remove_pod(&id)).await?;
        self.release_unused_images().await;
        Ok(Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(&self, request: Request<PodSandboxStatusRequest>) -> Result<Response<PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let (id, verbose) = (request.pod_sandbox_id, request.verbose);
        let span = tracing::debug_span!("pod_sandbox_status", pod = %id);
        let (status, info) = self.quick(span, |l| l.pod_status(&id, verbose))?;
        Ok(Response::new(PodSandboxStatusResponse { status: Some(status), info, containers_statuses: vec![], timestamp: 0 }))
    }

    async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> Result<Response<ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter;
        let items = self.blocking(tracing::debug_span!("list_pod_sandbox"), move |l| Ok(l.list_pods(filter))).await?;
        Ok(Response::new(ListPodSandboxResponse { items }))
    }

    async fn create_container(&self, request: Request<CreateContainerRequest>) -> Result<Response<CreateContainerResponse>, Status> {
        let request = request.into_inner();
        let config = request.config.ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?;
        // The request's sandbox_config is not trusted: the pod's security
        // settings come from the pod as it was created.
        let pod = request.pod_sandbox_id;
        let span = tracing::info_span!("create_container", pod = %pod);
        let id = self.blocking(span, move |l| l.create_container(&pod, config)).await?;
        Ok(Response::new(CreateContainerResponse { container_id: id }))
    }

    async fn start_container(&self, request: Request<StartContainerRequest>) -> Result<Response<StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let span = tracing::info_span!("start_container", container = %id);
        self.blocking(span, move |l| l.start_container(&id)).await?;
        Ok(Response::new(StartContainerResponse {}))
    }

    async fn stop_container(&self, request: Request<StopContainerRequest>) -> Result<Response<StopContainerResponse>, Status> {
        let request = request.into_inner();
        let (id, timeout) = (request.container_id, request.timeout);
        if timeout < 0 {
            return Err(Status::invalid_argument("StopContainer timeout must not be negative"));
        }
        let span = tracing::info_span!("stop_container", container = %id);
        self.blocking(span, move |l| l.stop_container(&id, timeout)).await?;
        Ok(Response::new(StopContainerResponse {}))
    }

    async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> Result<Response<RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        let span = tracing::info_span!("remove_container", container = %id);
        self.blocking(span, move |l| l.remove_container(&id)).await?;
        self.release_unused_images().await;
        Ok(Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(&self, request: Request<ListContainersRequest>) -> Result<Response<ListContainersResponse>, Status> {
        let filter = request.into_inner().filter;
        let containers = self.blocking(tracing::debug_span!("list_containers"), move |l| Ok(l.list_containers(filter))).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::info_span!("exec", container = %request.container_id);
        let url = self.stream_url(span, move |s, l| s.exec_url(l, request)).await?;
        Ok(Response::new(ExecResponse { url }))
    }

    async fn attach(&self, request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::info_span!("attach", container = %request.container_id);
        let url = self.stream_url(span, move |s, l| s.attach_url(l, request)).await?;
        Ok(Response::new(AttachResponse { url }))
    }

    async fn port_forward(&self, request: Request<PortForwardRequest>) -> Result<Response<PortForwardResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::info_span!("port_forward", pod = %request.pod_sandbox_id);
        let url = self.stream_url(span, move |s, l| s.port_forward_url(l, request)).await?;
        Ok(Response::new(PortForwardResponse { url }))
    }

    async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> Result<Response<ExecSyncResponse>, Status> {
        let request = request.into_inner();
        let (id, cmd, timeout) = (request.container_id, request.cmd, request.timeout);
        if timeout < 0 {
            return Err(Status::invalid_argument("ExecSync timeout must not be negative"));
        }
        let span = tracing::info_span!("exec_sync", container = %id);
        // Dropped with this future when the client goes away: kills the process.
        let (_cancel_on_drop, cancel) = crate::cancel::cancellation()
            .map_err(|e| Status::internal(format!("ExecSync cancellation: {e}")))?;
        let out = self.blocking(span, move |l| l.exec_sync(&id, cmd, timeout, &cancel)).await?;
        Ok(Response::new(ExecSyncResponse { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code }))
    }

    async fn reopen_container_log(&self, request: Request<ReopenContainerLogRequest>) -> Result<Response<ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        let span = tracing::info_span!("reopen_container_log", container = %id);
        self.blocking(span, move |l| l.reopen_log(&id)).await?;
        Ok(Response::new(ReopenContainerLogResponse {}))
    }

    async fn container_status(&self, request: Request<ContainerStatusRequest>) -> Result<Response<ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let (id, verbose) = (request.container_id, request.verbose);
        let span = tracing::debug_span!("container_status", container = %id);
        // An exit on disk but not in the record is recorded first (a state
        // write with fsync): that one goes to the blocking pool.
        let (status, info) = if self.lifecycle.exit_unrecorded(&id) {
            self.blocking(span, move |l| l.container_status(&id, verbose)).await?
        } else {
            self.quick(span, |l| l.container_status(&id, verbose))?
        };
        Ok(Response::new(ContainerStatusResponse { status: Some(status), info }))
    }

    async fn update_container_resources(&self, request: Request<UpdateContainerResourcesRequest>) -> Result<Response<UpdateContainerResourcesResponse>, Status> {
        let request = request.into_inner();
        let (id, resources) = (request.container_id, request.linux);
        let span = tracing::info_span!("update_container_resources", container = %id);
        self.blocking(span, move |l| l.update_resources(&id, resources)).await?;
        Ok(Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn list_metric_descriptors(&self, _: Request<ListMetricDescriptorsRequest>) -> Result<Response<ListMetricDescriptorsResponse>, Status> {
        Ok(Response::new(ListMetricDescriptorsResponse { descriptors: crate::runtime::pod_metrics::descriptors() }))
    }

    async fn list_pod_sandbox_metrics(&self, _: Request<ListPodSandboxMetricsRequest>) -> Result<Response<ListPodSandboxMetricsResponse>, Status> {
        let span = tracing::debug_span!("list_pod_sandbox_metrics");
        let pod_metrics = self.blocking(span, |l| Ok(l.pod_metrics())).await?;
        Ok(Response::new(ListPodSandboxMetricsResponse { pod_metrics }))
    }

    async fn container_stats(&self, request: Request<ContainerStatsRequest>) -> Result<Response<ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        let span = tracing::debug_span!("container_stats", container = %id);
        let stats = self.blocking(span, move |l| l.container_stats(&id)).await?;
        Ok(Response::new(ContainerStatsResponse { stats: Some(stats) }))
    }

    async fn list_container_stats(&self, request: Request<ListContainerStatsRequest>) -> Result<Response<ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter;
        let span = tracing::debug_span!("list_container_stats");
        let stats = self.blocking(span, move |l| Ok(l.list_container_stats(filter))).await?;
        Ok(Response::new(ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(&self, request: Request<PodSandboxStatsRequest>) -> Result<Response<PodSandboxStatsResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        let span = tracing::debug_span!("pod_sandbox_stats", pod = %id);
        let stats = self.blocking(span, move |l| l.pod_stats(&id)).await?;
        Ok(Response::new(PodSandboxStatsResponse { stats: Some(stats) }))
    }

    async fn list_pod_sandbox_stats(&self, request: Request<ListPodSandboxStatsRequest>) -> Result<Response<ListPodSandboxStatsResponse>, Status> {
        let filter = request.into_inner().filter;
        let span = tracing::debug_span!("list_pod_sandbox_stats");
        let stats = self.blocking(span, move |l| Ok(l.list_pod_stats(filter))).await?;
        Ok(Response::new(ListPodSandboxStatsResponse { stats }))
    }

    type StreamPodSandboxesStream = ListStream<StreamPodSandboxesResponse>;

    async fn stream_pod_sandboxes(&self, request: Request<StreamPodSandboxesRequest>) -> Result<Response<Self::StreamPodSandboxesStream>, Status> {
        let filter = request.into_inner().filter;
        let items = self.blocking(tracing::debug_span!("stream_pod_sandboxes"), move |l| Ok(l.list_pods(filter))).await?;
        Ok(Response::new(list_stream(items, |pod_sandboxes| StreamPodSandboxesResponse { pod_sandboxes })))
    }

    type StreamContainersStream = ListStream<StreamContainersResponse>;

    async fn stream_containers(&self, request: Request<StreamContainersRequest>) -> Result<Response<Self::StreamContainersStream>, Status> {
        let filter = request.into_inner().filter;
        let items = self.blocking(tracing::debug_span!("stream_containers"), move |l| Ok(l.list_containers(filter))).await?;
        Ok(Response::new(list_stream(items, |containers| StreamContainersResponse { containers })))
    }

    type StreamContainerStatsStream = ListStream<StreamContainerStatsResponse>;

    async fn stream_container_stats(&self, request: Request<StreamContainerStatsRequest>) -> Result<Response<Self::StreamContainerStatsStream>, Status> {
        let filter = request.into_inner().filter;
        let items = self.blocking(tracing::debug_span!("stream_container_stats"), move |l| Ok(l.list_container_stats(filter))).await?;
        Ok(Response::new(list_stream(items, |container_stats| StreamContainerStatsResponse { container_stats })))
    }

    type StreamPodSandboxStatsStream = ListStream<StreamPodSandboxStatsResponse>;

    async fn stream_pod_sandbox_stats(&self, request: Request<StreamPodSandboxStatsRequest>) -> Result<Response<Self::StreamPodSandboxStatsStream>, Status> {
        let filter = request.into_inner().filter;
        let items = self.blocking(tracing::debug_span!("stream_pod_sandbox_stats"), move |l| Ok(l.list_pod_stats(filter))).await?;
        Ok(Response::new(list_stream(items, |pod_sandbox_stats| StreamPodSandboxStatsResponse { pod_sandbox_stats })))
    }

    type StreamPodSandboxMetricsStream = ListStream<StreamPodSandboxMetricsResponse>;

    async fn stream_pod_sandbox_metrics(&self, _: Request<StreamPodSandboxMetricsRequest>) -> Result<Response<Self::StreamPodSandboxMetricsStream>, Status> {
        let items = self.blocking(tracing::debug_span!("stream_pod_sandbox_metrics"), |l| Ok(l.pod_metrics())).await?;
        Ok(Response::new(list_stream(items, |pod_sandbox_metrics| StreamPodSandboxMetricsResponse { pod_sandbox_metrics })))
    }

    async fn update_pod_sandbox_resources(&self, request: Request<UpdatePodSandboxResourcesRequest>) -> Result<Response<UpdatePodSandboxResourcesResponse>, Status> {
        let request = request.into_inner();
        let id = request.pod_sandbox_id;
        let span = tracing::info_span!("update_pod_sandbox_resources", pod = %id);
        self.blocking(span, move |l| l.update_pod_resources(&id, request.overhead, request.resources)).await?;
        Ok(Response::new(UpdatePodSandboxResourcesResponse {}))
    }
}
    unimplemented {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
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
                    recursive_read_only_mounts: true,
                    // Only when the daemon's id range holds a pod's 65,536.
                    user_namespaces: crate::runtime::userns::pod_capacity() > 0,
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn stream_lists_come_in_chunks_and_an_empty_list_is_one_message() {
        let sizes: Vec<usize> = list_stream((0..250).collect(), |chunk: Vec<i32>| chunk.len())
            .map(|m| m.expect("ok"))
            .collect()
            .await;
        assert_eq!(sizes, [100, 100, 50]);
        let empty: Vec<usize> = list_stream(Vec::<i32>::new(), |chunk| chunk.len())
            .map(|m| m.expect("ok"))
            .collect()
            .await;
        assert_eq!(empty, [0]);
    }
}
