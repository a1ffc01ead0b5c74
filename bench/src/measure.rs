//! The measurements. Each one returns JSON; durations are milliseconds.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tonic::transport::Channel;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::*;

use crate::args::Args;

type Client = RuntimeServiceClient<Channel>;

/// mean, p50, p90, p95, p99 of `samples` in milliseconds.
pub fn summary(samples: &mut [Duration]) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    json!({"n": samples.len(), "mean": ms(mean), "p50": at(0.5), "p90": at(0.9),
           "p95": at(0.95), "p99": at(0.99)})
}

pub fn pod_config(args: &Args, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: args.log_dir.join(name).display().to_string(),
        ..Default::default()
    }
}

pub fn container_config(args: &Args, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: args.image.clone(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: "c.log".into(),
        ..Default::default()
    }
}

/// RunPodSandbox + CreateContainer (+ StartContainer); the IDs and the time
/// of each step.
async fn start_pod(
    client: &mut Client,
    args: &Args,
    name: &str,
    command: &[&str],
    start: bool,
) -> anyhow::Result<(String, String, [Duration; 3])> {
    let sandbox = pod_config(args, name);
    start_pod_with(client, sandbox, container_config(args, command), start).await
}

/// Like [`start_pod`], with the configs given.
pub async fn start_pod_with(
    client: &mut Client,
    sandbox: PodSandboxConfig,
    container: ContainerConfig,
    start: bool,
) -> anyhow::Result<(String, String, [Duration; 3])> {
    let t0 = Instant::now();
    let pod = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let t1 = Instant::now();
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await?
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    if start {
        client
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await?;
    }
    let t3 = Instant::now();
    Ok((pod, id, [t1 - t0, t2 - t1, t3 - t2]))
}

pub async fn remove_pod(client: &mut Client, pod: &str) -> anyhow::Result<(Duration, Duration)> {
    let t0 = Instant::now();
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await?;
    let t1 = Instant::now();
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await?;
    Ok((t1 - t0, t1.elapsed()))
}

/// The lifecycle steps, in the order they happen.
pub const STEPS: [&str; 8] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "ContainerStatus",
    "StopContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    "pod ready",
];

/// Each pod's whole life, one pod after another.
pub async fn lifecycle(client: &mut Client, args: &Args) -> anyhow::Result<Value> {
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); STEPS.len()];
    for i in 0..args.pods {
        let (pod, id, [run, create, start]) =
            start_pod(client, args, &format!("life-{i}"), &["sleep", "3600"], true).await?;
        let t = Instant::now();
        client
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            })
            .await?;
        let status = t.elapsed();
        let t = Instant::now();
        client
            .stop_container(StopContainerRequest {
                container_id: id,
                timeout: 0,
            })
            .await?;
        let stop = t.elapsed();
        let (stop_pod, remove) = remove_pod(client, &pod).await?;
        let all = [
            run,
            create,
            start,
            status,
            stop,
            stop_pod,
            remove,
            run + create + start,
        ];
        for (list, d) in samples.iter_mut().zip(all) {
            list.push(d);
        }
    }
    Ok(STEPS
        .iter()
        .zip(samples.iter_mut())
        .map(|(name, s)| (name.to_string(), summary(s)))
        .collect::<serde_json::Map<_, _>>()
        .into())
}

/// A bare `crun run` of a container like the pods' (`true`, same root
/// filesystem and generated config, fresh namespaces instead of the pod's),
/// inside the daemon's namespaces, timed inside them.
pub async fn floor(client: &mut Client, args: &Args) -> anyhow::Result<Value> {
    let (pod, id, _) = start_pod(client, args, "floor", &["true"], false).await?;
    let bundle_config = args
        .runtime_dir
        .join("containers")
        .join(&id)
        .join("config.json");
    let mut spec: Value = serde_json::from_slice(
        &std::fs::read(&bundle_config)
            .with_context(|| format!("reading {}", bundle_config.display()))?,
    )?;
    if let Some(namespaces) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        for ns in namespaces {
            if let Some(ns) = ns.as_object_mut() {
                ns.remove("path");
            }
        }
    }
    let dir = args.runtime_dir.join("bench-floor");
    let script = format!(
        "set -e; mkdir -p {d}/bundle {d}/root; cat > {d}/bundle/config.json
         for i in $(seq {n}); do
           s=$(date +%s%N); crun --root {d}/root run --bundle {d}/bundle floor-$i >/dev/null 2>&1; e=$(date +%s%N)
           echo $(( (e - s) / 1000 ))
         done
         rm -rf {d}",
        d = dir.display(),
        n = args.pods
    );
    let mut child = Command::new(&args.ucri)
        .args(["nsenter", "--host-network", "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ucri nsenter")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(spec.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    remove_pod(client, &pod).await?;
    if !out.status.success() {
        bail!(
            "the crun floor failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut samples: Vec<Duration> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect();
    Ok(summary(&mut samples))
}

/// `size` pods started at once; time from the batch's start until each
/// pod's container runs.
pub async fn batch(channel: &Channel, args: &Args, size: usize) -> anyhow::Result<Value> {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..size)
        .map(|i| {
            let (channel, args) = (channel.clone(), args.clone());
            tokio::spawn(async move {
                let mut client = RuntimeServiceClient::new(channel);
                let name = format!("batch{size}-{i}");
                let (pod, _, _) =
                    start_pod(&mut client, &args, &name, &["sleep", "3600"], true).await?;
                Ok::<_, anyhow::Error>((pod, t0.elapsed()))
            })
        })
        .collect();
    let mut pods = Vec::new();
    let mut samples = Vec::new();
    for task in tasks {
        let (pod, ready) = task.await??;
        pods.push(pod);
        samples.push(ready);
    }
    let mut client = RuntimeServiceClient::new(channel.clone());
    for pod in pods {
        remove_pod(&mut client, &pod).await?;
    }
    let mut result = summary(&mut samples);
    result["size"] = json!(size);
    Ok(result)
}

/// ExecSync of `true` in a running container.
pub async fn exec_sync(client: &mut Client, args: &Args) -> anyhow::Result<Value> {
    let (pod, id, _) = start_pod(client, args, "exec", &["sleep", "3600"], true).await?;
    let mut samples = Vec::new();
    for _ in 0..args.execs {
        samples.push(exec_sync_true(client, &id).await?);
    }
    remove_pod(client, &pod).await?;
    Ok(summary(&mut samples))
}

/// One ExecSync of `true`: its round trip.
pub async fn exec_sync_true(client: &mut Client, id: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let reply = client
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            timeout: 10,
        })
        .await?
        .into_inner();
    if reply.exit_code != 0 {
        bail!("ExecSync of true exited {}", reply.exit_code);
    }
    Ok(t.elapsed())
}

/// `scale` running pods: the daemon's and the monitors' memory, and the
/// list calls kubelet makes all the time.
pub async fn at_scale(
    client: &mut Client,
    args: &Args,
    idle_rss_kib: u64,
) -> anyhow::Result<Value> {
    let mut pods = Vec::new();
    for i in 0..args.scale {
        let (pod, _, _) = start_pod(
            client,
            args,
            &format!("scale-{i}"),
            &["sleep", "3600"],
            true,
        )
        .await?;
        pods.push(pod);
    }
    let daemon = daemon_pid(&args.runtime_dir)?;
    let busy_rss_kib = rss_kib(daemon)?;
    let monitors = processes_named("conmon");
    let monitor_pss_kib: u64 = monitors.iter().filter_map(|pid| pss_kib(*pid)).sum();
    let mut lists = serde_json::Map::new();
    for name in ["ListPodSandbox", "ListContainers", "ListContainerStats"] {
        let mut samples = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            match name {
                "ListPodSandbox" => {
                    client
                        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                        .await?;
                }
                "ListContainers" => {
                    client
                        .list_containers(ListContainersRequest { filter: None })
                        .await?;
                }
                _ => {
                    client
                        .list_container_stats(ListContainerStatsRequest { filter: None })
                        .await?;
                }
            }
            samples.push(t.elapsed());
        }
        lists.insert(name.to_owned(), summary(&mut samples));
    }
    for pod in &pods {
        remove_pod(client, pod).await?;
    }
    let per_pod = (busy_rss_kib.saturating_sub(idle_rss_kib) + monitor_pss_kib) as f64
        / args.scale.max(1) as f64;
    Ok(json!({
        "pods": args.scale,
        "daemonRssIdleKiB": idle_rss_kib,
        "daemonRssBusyKiB": busy_rss_kib,
        "monitors": monitors.len(),
        "monitorPssKiB": monitor_pss_kib,
        "perPodKiB": per_pod.round(),
        "lists": lists,
    }))
}

/// Alternating rounds of `skopeo copy` to an OCI dir and a cold CRI pull.
pub async fn pull(channel: &Channel, args: &Args, image: &str) -> anyhow::Result<Value> {
    let mut images = ImageServiceClient::new(channel.clone());
    let (mut ucri, mut skopeo, mut bytes) = (Vec::new(), Vec::new(), 0u64);
    for round in 0..args.pull_rounds {
        let dest = args.scratch.join(format!("skopeo-{round}"));
        let _ = std::fs::remove_dir_all(&dest);
        let t = Instant::now();
        let out = Command::new("skopeo")
            .args(["copy", "-q", "--insecure-policy", "--src-tls-verify=false"])
            .arg(format!("docker://{image}"))
            .arg(format!("oci:{}", dest.display()))
            .output()
            .context("running skopeo")?;
        skopeo.push(t.elapsed());
        if !out.status.success() {
            bail!(
                "skopeo copy failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        bytes = dir_bytes(&dest.join("blobs"));
        let _ = std::fs::remove_dir_all(&dest);
        let _ = images
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
            })
            .await;
        let t = Instant::now();
        images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await?;
        ucri.push(t.elapsed());
    }
    let (ucri, skopeo) = (summary(&mut ucri), summary(&mut skopeo));
    let rate = |s: &Value| bytes as f64 / 1e6 / (s["p50"].as_f64().unwrap_or(f64::MAX) / 1000.0);
    Ok(json!({
        "image": image,
        "bytes": bytes,
        "ucriSeconds": ucri,
        "skopeoSeconds": skopeo,
        "ucriMBps": (rate(&ucri) * 10.0).round() / 10.0,
        "skopeoMBps": (rate(&skopeo) * 10.0).round() / 10.0,
        "ratio": ((rate(&ucri) / rate(&skopeo)) * 100.0).round() / 100.0,
    }))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

pub fn daemon_pid(runtime_dir: &Path) -> anyhow::Result<u32> {
    let path = runtime_dir.join("daemon.pid");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.trim().parse()?)
}

fn status_kib(pid: u32, file: &str, key: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "status", "VmRSS:").with_context(|| format!("VmRSS of pid {pid}"))
}

fn pss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "smaps_rollup", "Pss:")
}

/// This user's processes whose command name is `name`.
fn processes_named(name: &str) -> Vec<u32> {
    let me = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let mine = std::fs::metadata(format!("/proc/{pid}"))
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .ok()
                == me.as_ref().ok().copied();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('Z'))
            });
            mine && !zombie
                && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// What the figures were measured on.
pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({"cpu": cpu, "cpus": cpus, "kernel": kernel.trim()})
}
