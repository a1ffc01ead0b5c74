//! Pod start latency over CRI, as kubelet drives it: for each of N pods,
//! RunPodSandbox + CreateContainer + StartContainer of a container running
//! `true`, timed per call; then everything is removed. One extra pod's
//! created container is left for the bare-runtime comparison; its ID is
//! printed last. Used by `packaging/bench/pod-start.sh`.
//!
//! `pod_start SOCKET IMAGE N LOGDIR`

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, image, n, logdir] = &args[..] else {
        return Err("usage: pod_start SOCKET IMAGE N LOGDIR".into());
    };
    let n: usize = n.parse()?;
    let mut client = RuntimeServiceClient::new(connect(socket).await?);
    let mut timings: HashMap<&str, Vec<Duration>> = HashMap::new();
    let mut pods = Vec::new();
    for i in 0..n {
        let (pod, _, steps) = start_pod(&mut client, image, logdir, i, true).await?;
        for (name, d) in steps {
            timings.entry(name).or_default().push(d);
        }
        pods.push(pod);
    }
    for pod in pods {
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await?;
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await?;
    }
    for name in [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
        "pod ready",
    ] {
        let (p50, p99) = percentiles(timings.get_mut(name).ok_or("no samples")?);
        println!("{name}\t{p50:.1}\t{p99:.1}");
    }
    let (_, kept, _) = start_pod(&mut client, image, logdir, n, false).await?;
    println!("kept\t{kept}");
    Ok(())
}

type Steps = Vec<(&'static str, Duration)>;

/// One pod with one container (pod ID, container ID, timed steps); without
/// `start` the container is only created.
async fn start_pod(
    client: &mut RuntimeServiceClient<Channel>,
    image: &str,
    logdir: &str,
    i: usize,
    start: bool,
) -> Result<(String, String, Steps), Box<dyn std::error::Error>> {
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("bench-{i}"),
            uid: format!("bench-uid-{i}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: format!("{logdir}/{i}"),
        ..Default::default()
    };
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "c".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["true".into()],
        log_path: "c.log".into(),
        ..Default::default()
    };
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
    let request = CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container),
        sandbox_config: Some(sandbox),
    };
    let id = client
        .create_container(request)
        .await?
        .into_inner()
        .container_id;
    let t2 = Instant::now();
    if !start {
        return Ok((pod, id, Vec::new()));
    }
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    let t3 = Instant::now();
    let steps = vec![
        ("RunPodSandbox", t1 - t0),
        ("CreateContainer", t2 - t1),
        ("StartContainer", t3 - t2),
        ("pod ready", t3 - t0),
    ];
    Ok((pod, id, steps))
}

/// p50 and p99 in milliseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.50), at(0.99))
}

async fn connect(socket: &str) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    Endpoint::from_static("http://ucri.invalid")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}
