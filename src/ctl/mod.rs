//! `ucri ctl`: a crictl-style CRI client for troubleshooting and the demo.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use tonic::transport::Channel;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest, StatusRequest, VersionRequest,
};

use crate::config::Config;

mod args;
mod config;
mod output;
pub(crate) mod pods;
mod stream;
mod watch;

pub use args::{CtlArgs, CtlCommand};

/// Runs a client command; returns the exit code.
pub fn run(config: &Config, args: CtlArgs) -> anyhow::Result<i32> {
    let CtlArgs {
        runtime_endpoint,
        timeout,
        command,
    } = args;
    if let CtlCommand::Import { path } = &command {
        return import(config, path);
    }
    let socket = endpoint_path(runtime_endpoint.as_deref(), config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let code = runtime.block_on(async {
        let channel = connect(&socket, std::time::Duration::from_secs(timeout)).await?;
        match command {
            CtlCommand::Exec(args) => stream::exec(channel, args).await,
            CtlCommand::Attach(args) => stream::attach(channel, args).await,
            CtlCommand::PortForward(args) => stream::port_forward(channel, args).await,
            other => run_cri(channel, other).await.map(|()| 0),
        }
    });
    // A read of the local stdin may still wait in a blocking thread.
    runtime.shutdown_background();
    code
}

async fn run_cri(channel: Channel, command: CtlCommand) -> anyhow::Result<()> {
    let mut client = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    match command {
        CtlCommand::Version => print_version(&mut client).await,
        CtlCommand::Info => print_info(&mut client).await,
        CtlCommand::Pull { image, creds } => pull(&mut images, image, creds).await,
        CtlCommand::Images {
            image,
            quiet,
            output,
        } => list_images(&mut images, image, quiet, output).await,
        CtlCommand::Inspecti { image, output } => inspect_image(&mut images, image, output).await,
        CtlCommand::Rmi { images: names } => remove_images(&mut images, names).await,
        CtlCommand::Imagefsinfo => image_fs_info(&mut images).await,
        CtlCommand::Import { path } => Err(anyhow!(
            "import of {} goes through the admin socket",
            path.display()
        )),
        CtlCommand::Logs {
            follow,
            tail,
            timestamps,
            id,
        } => watch::logs(&mut client, id, follow, tail, timestamps).await,
        CtlCommand::Stats { id, output } => watch::stats(&mut client, id, output).await,
        CtlCommand::Statsp { id, output } => watch::statsp(&mut client, id, output).await,
        CtlCommand::Events { output } => watch::events(&mut client, output).await,
        CtlCommand::Run {
            container_config,
            pod_config,
            handler,
        } => {
            pods::run_container(
                &mut client,
                &mut images,
                &container_config,
                &pod_config,
                handler.unwrap_or_default(),
            )
            .await
        }
        other => pods::run(&mut client, other).await,
    }
}

fn endpoint_path(endpoint: Option<&str>, config: &Config) -> anyhow::Result<PathBuf> {
    match endpoint {
        None => Ok(config.daemon.socket.clone()),
        Some(e) if e.starts_with("unix://") => Ok(PathBuf::from(&e["unix://".len()..])),
        Some(e) if e.contains("://") => Err(anyhow!("only unix:// endpoints are supported: {e}")),
        Some(e) => Ok(PathBuf::from(e)),
    }
}

/// Connects a gRPC channel to the CRI unix socket at `socket`.
pub async fn connect(
    socket: &std::path::Path,
    timeout: std::time::Duration,
) -> anyhow::Result<Channel> {
    let endpoint = ucri_cri_api::unix::endpoint().connect_timeout(timeout);
    ucri_cri_api::unix::connect(endpoint, socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

async fn print_version(client: &mut RuntimeServiceClient<Channel>) -> anyhow::Result<()> {
    let v = client
        .version(VersionRequest::default())
        .await?
        .into_inner();
    println!("Version:  {}", v.version);
    println!("RuntimeName:  {}", v.runtime_name);
    println!("RuntimeVersion:  {}", v.runtime_version);
    println!("RuntimeApiVersion:  {}", v.runtime_api_version);
    Ok(())
}

async fn print_info(client: &mut RuntimeServiceClient<Channel>) -> anyhow::Result<()> {
    let resp = client
        .status(StatusRequest { verbose: true })
        .await?
        .into_inner();
    let info: serde_json::Map<String, serde_json::Value> = resp
        .info
        .iter()
        .map(|(k, v)| {
            let value =
                serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.clone()));
            (k.clone(), value)
        })
        .collect();
    let out = serde_json::json!({ "status": resp.status, "runtimeHandlers": resp.runtime_handlers, "info": info });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn spec(image: String) -> Option<ImageSpec> {
    Some(ImageSpec {
        image,
        ..Default::default()
    })
}

async fn pull(
    client: &mut ImageServiceClient<Channel>,
    image: String,
    creds: Option<String>,
) -> anyhow::Result<()> {
    let auth = creds.map(|c| {
        let (username, password) = c.split_once(':').unwrap_or((&c, ""));
        AuthConfig {
            username: username.to_owned(),
            password: password.to_owned(),
            ..Default::default()
        }
    });
    let request = PullImageRequest {
        image: spec(image.clone()),
        auth,
        sandbox_config: None,
    };
    let reply = client.pull_image(request).await?.into_inner();
    println!("Image is up to date for {}", reply.image_ref);
    Ok(())
}

async fn list_images(
    client: &mut ImageServiceClient<Channel>,
    image: Option<String>,
    quiet: bool,
    output: output::Output,
) -> anyhow::Result<()> {
    let filter = image.map(|i| ImageFilter { image: spec(i) });
    let reply = client
        .list_images(ListImagesRequest { filter })
        .await?
        .into_inner();
    if output != output::Output::Table {
        return output::print_structured(&serde_json::to_value(&reply)?, output);
    }
    let images = reply.images;
    if quiet {
        images.iter().for_each(|i| println!("{}", i.id));
        return Ok(());
    }
    println!(
        "{:<50} {:<20} {:<15} {:>10}",
        "IMAGE", "TAG", "IMAGE ID", "SIZE"
    );
    for image in &images {
        let id = image
            .id
            .trim_start_matches("sha256:")
            .chars()
            .take(13)
            .collect::<String>();
        let names: Vec<(String, String)> = match image.repo_tags.is_empty() {
            true => vec![("<none>".into(), "<none>".into())],
            false => image.repo_tags.iter().map(|t| split_tag(t)).collect(),
        };
        for (repo, tag) in names {
            println!(
                "{repo:<50} {tag:<20} {id:<15} {:>10}",
                human_size(image.size)
            );
        }
    }
    Ok(())
}

fn split_tag(tagged: &str) -> (String, String) {
    let slash = tagged.rfind('/').map(|i| i + 1).unwrap_or(0);
    match tagged[slash..].rfind(':') {
        Some(i) => (
            tagged[..slash + i].to_owned(),
            tagged[slash + i + 1..].to_owned(),
        ),
        None => (tagged.to_owned(), "<none>".to_owned()),
    }
}

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.3}{}", units[unit])
}

async fn inspect_image(
    client: &mut ImageServiceClient<Channel>,
    image: String,
    output: output::Output,
) -> anyhow::Result<()> {
    let request = ImageStatusRequest {
        image: spec(image.clone()),
        verbose: true,
    };
    let reply = client.image_status(request).await?.into_inner();
    let status = reply
        .image
        .ok_or_else(|| anyhow!("no such image: {image}"))?;
    let info: serde_json::Value = reply
        .info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_default();
    let out = serde_json::json!({ "status": status, "info": info });
    output::print_structured(&out, output)
}

async fn remove_images(
    client: &mut ImageServiceClient<Channel>,
    images: Vec<String>,
) -> anyhow::Result<()> {
    for image in images {
        client
            .remove_image(RemoveImageRequest {
                image: spec(image.clone()),
            })
            .await
            .with_context(|| format!("removing {image}"))?;
        println!("Deleted: {image}");
    }
    Ok(())
}

async fn image_fs_info(client: &mut ImageServiceClient<Channel>) -> anyhow::Result<()> {
    let reply = client
        .image_fs_info(ImageFsInfoRequest {})
        .await?
        .into_inner();
    println!("{}", serde_json::to_string_pretty(&reply)?);
    Ok(())
}

fn import(config: &Config, path: &std::path::Path) -> anyhow::Result<i32> {
    use crate::admin::{AdminRequest, AdminResponse};
    let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let request = AdminRequest::Import { path };
    match runtime.block_on(crate::admin::call(&config.daemon.runtime_dir, &request))? {
        AdminResponse::Imported { images } => {
            for image in images {
                let names = if image.repo_tags.is_empty() {
                    "<none>".to_owned()
                } else {
                    image.repo_tags.join(", ")
                };
                println!("Imported {} {names}", image.id);
            }
            Ok(0)
        }
        AdminResponse::Error { code, message } => Err(anyhow!("import failed ({code}): {message}")),
    }
}
