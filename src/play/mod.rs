//! `ucri play POD.yaml`: runs a Kubernetes Pod manifest through the daemon
//! without kubelet: pulls missing images, makes the volumes, runs the pod
//! and its containers, prints their logs prefixed with the container name,
//! restarts containers as `restartPolicy` says, and tears everything down
//! when the pod is done or on Ctrl-C.

pub mod manifest;

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::*;

use crate::config::Config;
use manifest::Pod;

/// Exit code after an interrupt (as a shell reports SIGINT).
const INTERRUPTED: i32 = 130;

/// Runs the manifest in `file`; returns the exit code (0 when every
/// container that ended ended well).
pub fn run(config: &Config, file: &Path) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let pod = manifest::parse(&text).with_context(|| file.display().to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = crate::ctl::connect(&config.daemon.socket, Duration::from_secs(10)).await?;
        let work = config.daemon.data_dir.join("play").join(format!(
            "{}_{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name
        ));
        let mut play = Play::new(channel, pod, work);
        let result = play.run().await;
        play.tear_down().await;
        result
    })
}

/// One running container.
struct Running {
    id: String,
    attempt: u32,
    log: PathBuf,
    offset: u64,
    pending: String,
    done: Option<i32>,
}

struct Play {
    client: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    pod: Pod,
    work: PathBuf,
    sandbox: Option<(String, PodSandboxConfig)>,
    containers: HashMap<String, Running>,
}

impl Play {
    fn new(channel: Channel, pod: Pod, work: PathBuf) -> Play {
        Play {
            client: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            pod,
            work,
            sandbox: None,
            containers: HashMap::new(),
        }
    }

    async fn run(&mut self) -> anyhow::Result<i32> {
        self.pull_images().await?;
        let mounts = self.prepare_volumes()?;
        self.run_sandbox().await?;
        for c in self.pod.spec.containers.clone() {
            self.start_container(&c, 0, &mounts).await?;
        }
        println!("[play] pod {} is running", self.pod.metadata.name);
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = &mut interrupted => {
                    println!("[play] interrupted: stopping the pod");
                    return Ok(INTERRUPTED);
                }
                _ = terminate.recv() => {
                    println!("[play] terminated: stopping the pod");
                    return Ok(INTERRUPTED);
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if let Some(code) = self.tick(&mounts).await? {
                return Ok(code);
            }
        }
    }

    /// Prints new log lines, handles exits; Some(code) once the pod is done.
    async fn tick(&mut self, mounts: &HashMap<String, Mount>) -> anyhow::Result<Option<i32>> {
        let policy = self
            .pod
            .spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        for c in self.pod.spec.containers.clone() {
            let Some(running) = self.containers.get_mut(&c.name) else {
                continue;
            };
            print_new_lines(&c.name, running);
            if running.done.is_some() {
                continue;
            }
            let status = self
                .client
                .container_status(ContainerStatusRequest {
                    container_id: running.id.clone(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            if status.state != ContainerState::ContainerExited as i32 {
                continue;
            }
            print_new_lines(&c.name, running);
            println!(
                "[play] {} exited with {} ({})",
                c.name, status.exit_code, status.reason
            );
            let restart = match policy.as_str() {
                "Always" => true,
                "OnFailure" => status.exit_code != 0,
                _ => false,
            };
            if restart {
                let attempt = running.attempt + 1;
                let old = running.id.clone();
                self.client
                    .remove_container(RemoveContainerRequest { container_id: old })
                    .await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                println!("[play] restarting {} (attempt {attempt})", c.name);
                self.start_container(&c, attempt, mounts).await?;
            } else if let Some(r) = self.containers.get_mut(&c.name) {
                r.done = Some(status.exit_code);
            }
        }
        let codes: Vec<Option<i32>> = self.containers.values().map(|r| r.done).collect();
        if codes.iter().all(Option::is_some) {
            let failed = codes.iter().flatten().any(|c| *c != 0);
            println!("[play] every container has ended");
            return Ok(Some(i32::from(failed)));
        }
        Ok(None)
    }

    async fn pull_images(&mut self) -> anyhow::Result<()> {
        for c in &self.pod.spec.containers {
            let spec = ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            };
            if crate::ctl::pods::pull_if_missing(&mut self.images, spec, None).await? {
                println!("[play] pulled {}", c.image);
            }
        }
        Ok(())
    }

    /// emptyDir volumes become directories under the play's work dir.
    fn prepare_volumes(&self) -> anyhow::Result<HashMap<String, Mount>> {
        let mut mounts = HashMap::new();
        for v in &self.pod.spec.volumes {
            let host = match (&v.empty_dir, &v.host_path) {
                (Some(_), _) => {
                    let dir = self.work.join("volumes").join(&v.name);
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    dir
                }
                (_, Some(h)) => {
                    let path = PathBuf::from(&h.path);
                    if h.kind.as_deref() == Some("DirectoryOrCreate") {
                        std::fs::create_dir_all(&path)?;
                    }
                    if !path.exists() {
                        anyhow::bail!("hostPath {} of volume {:?} does not exist", h.path, v.name);
                    }
                    path
                }
                _ => continue,
            };
            mounts.insert(
                v.name.clone(),
                Mount {
                    host_path: host.display().to_string(),
                    ..Default::default()
                },
            );
        }
        Ok(mounts)
    }

    async fn run_sandbox(&mut self) -> anyhow::Result<()> {
        let meta = &self.pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let logs = self.work.join("logs");
        std::fs::create_dir_all(&logs)?;
        let port_mappings = self
            .pod
            .spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter(|p| p.host_port != 0)
            .map(|p| PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => Protocol::Udp,
                    Some("SCTP") => Protocol::Sctp,
                    _ => Protocol::Tcp,
                } as i32,
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
            .collect();
        let network = if self.pod.spec.host_network {
            NamespaceMode::Node
        } else {
            NamespaceMode::Pod
        };
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: meta.name.clone(),
                uid: format!("play-{}-{}", meta.name, std::process::id()),
                namespace,
                attempt: 0,
            }),
            hostname: self.pod.spec.hostname.clone().unwrap_or_default(),
            log_directory: logs.display().to_string(),
            port_mappings,
            labels: meta.labels.clone().into_iter().collect(),
            annotations: meta.annotations.clone().into_iter().collect(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: network as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        self.sandbox = Some((id, config));
        Ok(())
    }

    async fn start_container(
        &mut self,
        c: &manifest::Container,
        attempt: u32,
        volumes: &HashMap<String, Mount>,
    ) -> anyhow::Result<()> {
        let (pod_id, sandbox) = self.sandbox.clone().context("no pod")?;
        let mounts = c
            .volume_mounts
            .iter()
            .filter_map(|m| {
                let base = volumes.get(&m.name)?;
                Some(Mount {
                    container_path: m.mount_path.clone(),
                    readonly: m.read_only,
                    ..base.clone()
                })
            })
            .collect();
        let log_path = format!("{}/{attempt}.log", c.name);
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: c.name.clone(),
                attempt,
            }),
            image: Some(ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: c
                .env
                .iter()
                .map(|e| KeyValue {
                    key: e.name.clone(),
                    value: e.value.clone().into_bytes(),
                })
                .collect(),
            mounts,
            log_path: log_path.clone(),
            ..Default::default()
        };
        let id = self
            .client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id,
                config: Some(config),
                sandbox_config: Some(sandbox.clone()),
            })
            .await
            .with_context(|| format!("creating container {}", c.name))?
            .into_inner()
            .container_id;
        self.client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .with_context(|| format!("starting container {}", c.name))?;
        let log = PathBuf::from(&sandbox.log_directory).join(log_path);
        self.containers.insert(
            c.name.clone(),
            Running {
                id,
                attempt,
                log,
                offset: 0,
                pending: String::new(),
                done: None,
            },
        );
        Ok(())
    }

    /// Stops and removes the pod and its emptyDir volumes.
    async fn tear_down(&mut self) {
        if let Some((id, _)) = self.sandbox.take() {
            let _ = self
                .client
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            let removed = self
                .client
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await;
            if let Err(e) = removed {
                eprintln!("[play] removing the pod: {}", e.message());
            } else {
                println!("[play] pod {} removed", self.pod.metadata.name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// Prints what was appended to a container's CRI log, prefixed with its name.
fn print_new_lines(name: &str, running: &mut Running) {
    let Ok(mut file) = std::fs::File::open(&running.log) else {
        return;
    };
    if file.seek(SeekFrom::Start(running.offset)).is_err() {
        return;
    }
    let mut chunk = String::new();
    if let Ok(n) = file.read_to_string(&mut chunk) {
        running.offset += n as u64;
    }
    running.pending.push_str(&chunk);
    while let Some(end) = running.pending.find('\n') {
        let line: String = running.pending.drain(..=end).collect();
        let mut parts = line.trim_end_matches('\n').splitn(4, ' ');
        let (stream, content) = (parts.nth(1), parts.nth(1).unwrap_or(""));
        if stream == Some("stderr") {
            eprintln!("[{name}] {content}");
        } else {
            println!("[{name}] {content}");
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
