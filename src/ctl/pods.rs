//! `ucri ctl` pod and container commands, following crictl's names and
//! output shapes.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use tonic::transport::Channel;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::*;

use super::args::CtlCommand;
use super::output::{print_structured, Output};

type Client = RuntimeServiceClient<Channel>;

/// Runs one pod or container command.
pub async fn run(client: &mut Client, command: CtlCommand) -> anyhow::Result<()> {
    match command {
        CtlCommand::Runp {
            pod_config_file,
            handler,
        } => runp(client, &pod_config_file, handler.unwrap_or_default()).await,
        CtlCommand::Create {
            pod,
            container_config,
            pod_config,
        } => create(client, pod, &container_config, &pod_config).await,
        CtlCommand::Start { ids } => each(client, ids, Action::Start).await,
        CtlCommand::Stop { timeout, ids } => each(client, ids, Action::Stop(timeout)).await,
        CtlCommand::Rm { ids } => each(client, ids, Action::Rm).await,
        CtlCommand::Stopp { ids } => each(client, ids, Action::Stopp).await,
        CtlCommand::Rmp { ids } => each(client, ids, Action::Rmp).await,
        CtlCommand::Pods { quiet, output } => pods(client, quiet, output).await,
        CtlCommand::Ps {
            all,
            quiet,
            pod,
            output,
        } => ps(client, all, quiet, pod, output).await,
        CtlCommand::Inspect { id, output } => inspect(client, id, output).await,
        CtlCommand::Inspectp { id, output } => inspectp(client, id, output).await,
        other => Err(anyhow!("{other:?} is not a pod or container command")),
    }
}

/// What to do to each of several IDs.
#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop(i64),
    Rm,
    Stopp,
    Rmp,
}

/// Applies `action` to each ID, stopping at the first failure.
async fn each(client: &mut Client, ids: Vec<String>, action: Action) -> anyhow::Result<()> {
    for id in ids {
        match action {
            Action::Start => start(client, id).await?,
            Action::Stop(timeout) => stop(client, id, timeout).await?,
            Action::Rm => rm(client, id).await?,
            Action::Stopp => stopp(client, id).await?,
            Action::Rmp => rmp(client, id).await?,
        }
    }
    Ok(())
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

async fn runp(
    client: &mut Client,
    path: &std::path::Path,
    runtime_handler: String,
) -> anyhow::Result<()> {
    let config =
        super::config::pod_config(&read(path)?).with_context(|| format!("{}", path.display()))?;
    let request = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler,
    };
    println!(
        "{}",
        client
            .run_pod_sandbox(request)
            .await?
            .into_inner()
            .pod_sandbox_id
    );
    Ok(())
}

async fn create(
    client: &mut Client,
    pod: String,
    container: &std::path::Path,
    sandbox: &std::path::Path,
) -> anyhow::Result<()> {
    let config = super::config::container_config(&read(container)?)
        .with_context(|| format!("{}", container.display()))?;
    let sandbox_config = super::config::pod_config(&read(sandbox)?)
        .with_context(|| format!("{}", sandbox.display()))?;
    let request = CreateContainerRequest {
        pod_sandbox_id: pod,
        config: Some(config),
        sandbox_config: Some(sandbox_config),
    };
    println!(
        "{}",
        client
            .create_container(request)
            .await?
            .into_inner()
            .container_id
    );
    Ok(())
}

/// Starts a container and prints its ID.
pub async fn start(client: &mut Client, id: String) -> anyhow::Result<()> {
    client
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    println!("{id}");
    Ok(())
}

async fn stop(client: &mut Client, id: String, timeout: i64) -> anyhow::Result<()> {
    client
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout,
        })
        .await?;
    println!("{id}");
    Ok(())
}

async fn rm(client: &mut Client, id: String) -> anyhow::Result<()> {
    client
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await?;
    println!("{id}");
    Ok(())
}

async fn stopp(client: &mut Client, id: String) -> anyhow::Result<()> {
    client
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
    println!("Stopped sandbox {id}");
    Ok(())
}

async fn rmp(client: &mut Client, id: String) -> anyhow::Result<()> {
    client
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await?;
    println!("Removed sandbox {id}");
    Ok(())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

fn age(created_ns: i64) -> String {
    let now = crate::clock::now_nanos();
    let secs = (now - created_ns).max(0) / 1_000_000_000;
    match secs {
        s if s < 60 => format!("{s} seconds ago"),
        s if s < 3600 => format!("{} minutes ago", s / 60),
        s => format!("{} hours ago", s / 3600),
    }
}

async fn pods(client: &mut Client, quiet: bool, output: Output) -> anyhow::Result<()> {
    let reply = client
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await?
        .into_inner();
    if output != Output::Table {
        return print_structured(&serde_json::to_value(&reply)?, output);
    }
    let items = reply.items;
    if !quiet {
        println!(
            "{:<13}  {:<16}  {:<8}  {:<20}  {:<12}  {:<7}  RUNTIME",
            "POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT"
        );
    }
    for pod in items {
        if quiet {
            println!("{}", pod.id);
            continue;
        }
        let m = pod.metadata.unwrap_or_default();
        let state = if pod.state == PodSandboxState::SandboxReady as i32 {
            "Ready"
        } else {
            "NotReady"
        };
        let runtime = if pod.runtime_handler.is_empty() {
            "(default)"
        } else {
            &pod.runtime_handler
        };
        println!(
            "{:<13}  {:<16}  {state:<8}  {:<20}  {:<12}  {:<7}  {runtime}",
            short(&pod.id),
            age(pod.created_at),
            m.name,
            m.namespace,
            m.attempt
        );
    }
    Ok(())
}

fn container_state_name(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        _ => "Unknown",
    }
}

async fn ps(
    client: &mut Client,
    all: bool,
    quiet: bool,
    pod: Option<String>,
    output: Output,
) -> anyhow::Result<()> {
    let state = (!all).then_some(ContainerStateValue {
        state: ContainerState::ContainerRunning as i32,
    });
    let filter = ContainerFilter {
        state,
        pod_sandbox_id: pod.unwrap_or_default(),
        ..Default::default()
    };
    let reply = client
        .list_containers(ListContainersRequest {
            filter: Some(filter),
        })
        .await?
        .into_inner();
    if output != Output::Table {
        return print_structured(&serde_json::to_value(&reply)?, output);
    }
    let containers = reply.containers;
    if !quiet {
        println!(
            "{:<13}  {:<13}  {:<16}  {:<8}  {:<16}  {:<7}  POD ID",
            "CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT"
        );
    }
    for c in containers {
        if quiet {
            println!("{}", c.id);
            continue;
        }
        let m = c.metadata.unwrap_or_default();
        let image = c.image_ref.trim_start_matches("sha256:");
        println!(
            "{:<13}  {:<13}  {:<16}  {:<8}  {:<16}  {:<7}  {}",
            short(&c.id),
            short(image),
            age(c.created_at),
            container_state_name(c.state),
            m.name,
            m.attempt,
            short(&c.pod_sandbox_id)
        );
    }
    Ok(())
}

async fn inspect(client: &mut Client, id: String, output: Output) -> anyhow::Result<()> {
    let reply = client
        .container_status(ContainerStatusRequest {
            container_id: id,
            verbose: true,
        })
        .await?
        .into_inner();
    print_status(serde_json::to_value(reply.status)?, &reply.info, output)
}

async fn inspectp(client: &mut Client, id: String, output: Output) -> anyhow::Result<()> {
    let reply = client
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: true,
        })
        .await?
        .into_inner();
    print_status(serde_json::to_value(reply.status)?, &reply.info, output)
}

fn print_status(
    status: serde_json::Value,
    info: &std::collections::HashMap<String, String>,
    output: Output,
) -> anyhow::Result<()> {
    let info: serde_json::Value = info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    print_structured(
        &serde_json::json!({ "status": status, "info": info }),
        output,
    )
}

/// `ucri ctl run CONTAINER.json POD.json`: pull the image when missing, run
/// the pod, create and start the container; prints the container ID.
pub async fn run_container(
    client: &mut Client,
    images: &mut ImageServiceClient<Channel>,
    container_file: &Path,
    pod_file: &Path,
    handler: String,
) -> anyhow::Result<()> {
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let container = super::config::container_config(&read(container_file)?)
        .with_context(|| container_file.display().to_string())?;
    let pod = super::config::pod_config(&read(pod_file)?)
        .with_context(|| pod_file.display().to_string())?;
    let Some(image) = container.image.clone() else {
        bail!(
            "{}: the container config names no image",
            container_file.display()
        );
    };
    pull_if_missing(images, image, Some(&pod)).await?;
    let pod_id = client
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: handler,
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let id = client
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id,
            config: Some(container),
            sandbox_config: Some(pod),
        })
        .await?
        .into_inner()
        .container_id;
    start(client, id).await
}

/// Pulls `image` unless the store has it; true when it pulled.
pub async fn pull_if_missing(
    images: &mut ImageServiceClient<Channel>,
    image: ImageSpec,
    pod: Option<&PodSandboxConfig>,
) -> anyhow::Result<bool> {
    let present = images
        .image_status(ImageStatusRequest {
            image: Some(image.clone()),
            verbose: false,
        })
        .await?
        .into_inner()
        .image
        .is_some();
    if present {
        return Ok(false);
    }
    let name = image.image.clone();
    images
        .pull_image(PullImageRequest {
            image: Some(image),
            auth: None,
            sandbox_config: pod.cloned(),
        })
        .await
        .with_context(|| format!("pulling {name}"))?;
    Ok(true)
}
