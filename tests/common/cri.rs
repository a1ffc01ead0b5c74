//! CRI helpers shared by the integration tests: a daemon with the busybox
//! test image pulled, pod and container configs, and one call per RPC.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::*;

use super::registry::TestRegistry;
use super::*;

/// Fields drop in order: the daemon stops before the sandbox is reset.
pub struct Env {
    /// The daemon.
    pub _daemon: Daemon,
    /// Its sandbox.
    pub sb: Sandbox,
    /// The registry the image came from.
    pub _registry: TestRegistry,
    /// The pulled busybox image.
    pub image: String,
}

/// A daemon with the busybox test image pulled.
pub fn env(name: &str) -> Env {
    env_with_config(name, "")
}

/// Like [`env`], with `config` (TOML) as the user's `ucri.toml`.
pub fn env_with_config(name: &str, config: &str) -> Env {
    env_as(name, default_user(), config)
}

/// Like [`env_with_config`], with the daemon running as `user`.
pub fn env_as(name: &str, user: TestUser, config: &str) -> Env {
    env_started(name, user, config, |sb| sb.start_daemon())
}

/// Like [`env`], with the daemon started through `wrapper` (e.g.
/// `prlimit --nofile=256:256`).
pub fn env_via(name: &str, wrapper: &[&str]) -> Env {
    env_started(name, default_user(), "", |sb| sb.start_daemon_via(wrapper))
}

fn env_started(
    name: &str,
    user: TestUser,
    config: &str,
    start: impl FnOnce(&mut Sandbox) -> Daemon,
) -> Env {
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "test/busybox:latest");
    let mut sb = Sandbox::for_user(name, user);
    if !config.is_empty() {
        sb.write_user_file(&sb.config_dir().join("ucri.toml"), config);
    }
    let daemon = start(&mut sb);
    let image = registry.image("test/busybox:latest");
    block_on(async {
        let channel = connect(&sb.socket()).await.expect("connect");
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        };
        ImageServiceClient::new(channel)
            .pull_image(request)
            .await
            .expect("pull");
    });
    Env {
        sb,
        _daemon: daemon,
        _registry: registry,
        image,
    }
}

pub async fn client(sb: &Sandbox) -> RuntimeServiceClient<Channel> {
    sb.runtime_client().await
}

pub fn pod_config(sb: &Sandbox, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: sb.root.join("logs").join(name).display().to_string(),
        labels: HashMap::from([("app".to_owned(), name.to_owned())]),
        ..Default::default()
    }
}

pub fn container_config(image: &str, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        labels: HashMap::from([("container".to_owned(), name.to_owned())]),
        ..Default::default()
    }
}

pub fn run_pod(sb: &Sandbox, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
    block_on(async {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        client(sb)
            .await
            .run_pod_sandbox(request)
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    })
}

pub fn create(
    sb: &Sandbox,
    pod: &str,
    config: ContainerConfig,
    sandbox: &PodSandboxConfig,
) -> Result<String, tonic::Status> {
    block_on(async {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        };
        client(sb)
            .await
            .create_container(request)
            .await
            .map(|r| r.into_inner().container_id)
    })
}

pub fn start(sb: &Sandbox, id: &str) -> Result<(), tonic::Status> {
    block_on(async {
        client(sb)
            .await
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .map(|_| ())
    })
}

pub fn stop(sb: &Sandbox, id: &str, timeout: i64) -> Result<(), tonic::Status> {
    block_on(async {
        client(sb)
            .await
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout,
            })
            .await
            .map(|_| ())
    })
}

pub fn status(sb: &Sandbox, id: &str) -> Result<ContainerStatus, tonic::Status> {
    block_on(async {
        let request = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        client(sb)
            .await
            .container_status(request)
            .await
            .map(|r| r.into_inner().status.expect("status"))
    })
}

pub fn pod_status(sb: &Sandbox, id: &str) -> Result<PodSandboxStatusResponse, tonic::Status> {
    block_on(async {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        };
        client(sb)
            .await
            .pod_sandbox_status(request)
            .await
            .map(|r| r.into_inner())
    })
}

pub fn wait_state(sb: &Sandbox, id: &str, state: ContainerState) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(sb, id).expect("status");
        if s.state == state as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never reached {state:?}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_log(path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in {path}: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn remove_pod(sb: &Sandbox, id: &str) {
    block_on(async {
        client(sb)
            .await
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
    })
    .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
}

pub fn stop_pod(sb: &Sandbox, id: &str) {
    block_on(async {
        client(sb)
            .await
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
    })
    .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
}

pub fn remove_container(sb: &Sandbox, id: &str) {
    block_on(async {
        client(sb)
            .await
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
    })
    .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
}

pub fn list_containers(sb: &Sandbox, filter: Option<ContainerFilter>) -> Vec<Container> {
    block_on(async {
        client(sb)
            .await
            .list_containers(ListContainersRequest { filter })
            .await
    })
    .expect("ListContainers")
    .into_inner()
    .containers
}

pub fn daemon_mounts(sb: &Sandbox) -> String {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", sb.daemon_pid())).expect("mountinfo")
}

/// A new pod `name` with one started container that sleeps for ten
/// minutes; returns the pod's id and the container's.
pub fn sleeper_in_new_pod(e: &Env, name: &str) -> (String, String) {
    let pod_cfg = pod_config(&e.sb, name);
    let pod = run_pod(&e.sb, &pod_cfg).expect("RunPodSandbox");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "c", "exec sleep 600"),
        &pod_cfg,
    )
    .expect("CreateContainer");
    start(&e.sb, &id).expect("StartContainer");
    (pod, id)
}

pub fn run_to_exit(
    e: &Env,
    pod: &str,
    pod_cfg: &PodSandboxConfig,
    mut config: ContainerConfig,
) -> (i32, String) {
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    config.log_path = format!("{name}.log");
    let id =
        create(&e.sb, pod, config, pod_cfg).unwrap_or_else(|err| panic!("create {name}: {err}"));
    start(&e.sb, &id).expect("start");
    let s = wait_state(&e.sb, &id, ContainerState::ContainerExited);
    let log = std::fs::read_to_string(&s.log_path).unwrap_or_default();
    let stdout: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            l.splitn(4, ' ')
                .collect::<Vec<_>>()
                .get(3)
                .copied()
                .filter(|_| l.contains(" stdout "))
        })
        .collect();
    remove_container(&e.sb, &id);
    (s.exit_code, stdout.join("\n"))
}

pub fn host_pod(
    sb: &Sandbox,
    name: &str,
    network: NamespaceMode,
    pid: NamespaceMode,
    ipc: NamespaceMode,
) -> PodSandboxConfig {
    let mut config = pod_config(sb, name);
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: network as i32,
                pid: pid as i32,
                ipc: ipc as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

pub fn exec(
    sb: &Sandbox,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<ExecSyncResponse, tonic::Status> {
    block_on(async {
        let request = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        };
        client(sb)
            .await
            .exec_sync(request)
            .await
            .map(|r| r.into_inner())
    })
}

/// ContainerStats of one container.
pub fn container_stats(sb: &Sandbox, id: &str) -> ContainerStats {
    block_on(async {
        client(sb)
            .await
            .container_stats(ContainerStatsRequest {
                container_id: id.into(),
            })
            .await
            .expect("ContainerStats")
            .into_inner()
            .stats
            .expect("stats")
    })
}
