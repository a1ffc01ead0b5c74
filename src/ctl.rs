//! `ucri ctl`: a crictl-style CRI client for troubleshooting and the demo.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{StatusRequest, VersionRequest};
use tonic::transport::{Channel, Endpoint};

use crate::config::Config;

/// `ucri ctl` arguments.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// CRI endpoint (`unix:///path` or a path); defaults to the user's ucri socket.
    #[arg(short = 'r', long, env = "CONTAINER_RUNTIME_ENDPOINT")]
    pub runtime_endpoint: Option<String>,
    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// The client command.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `ucri ctl` commands.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Show the runtime's name and versions.
    Version,
    /// Show the runtime's status conditions and configuration.
    Info,
}

/// Runs a client command; returns the exit code.
pub fn run(config: &Config, args: CtlArgs) -> anyhow::Result<i32> {
    let socket = endpoint_path(args.runtime_endpoint.as_deref(), config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let channel = connect(&socket, std::time::Duration::from_secs(args.timeout)).await?;
        let mut client = RuntimeServiceClient::new(channel);
        match args.command {
            CtlCommand::Version => print_version(&mut client).await,
            CtlCommand::Info => print_info(&mut client).await,
        }
    })?;
    Ok(0)
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
    let socket = socket.to_owned();
    let display = socket.display().to_string();
    Endpoint::from_static("http://ucri.invalid")
        .connect_timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connecting to {display}"))
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
