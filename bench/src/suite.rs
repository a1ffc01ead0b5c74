//! The whole suite: every section, in an order that keeps them from
//! disturbing each other. The sections are in `measure` and `streams`.

use serde_json::{json, Value};
use tonic::transport::Channel;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;

use crate::args::Args;
use crate::{measure, streams};

/// Every section, in an order that keeps them from disturbing each other.
pub async fn run_all(args: &Args, channel: Channel) -> anyhow::Result<Value> {
    let mut client = RuntimeServiceClient::new(channel.clone());
    let idle_rss_kib = measure::rss_kib(measure::daemon_pid(&args.runtime_dir)?)?;
    eprintln!("ucri-bench: lifecycle, {} pods", args.pods);
    let lifecycle = measure::lifecycle(&mut client, args).await?;
    eprintln!("ucri-bench: the crun floor");
    let floor = measure::floor(&mut client, args).await?;
    let mut batches = Vec::new();
    for &size in &args.batches {
        eprintln!("ucri-bench: batch of {size}");
        batches.push(measure::batch(&channel, args, size).await?);
    }
    eprintln!("ucri-bench: ExecSync x{}", args.execs);
    let exec = measure::exec_sync(&mut client, args).await?;
    eprintln!(
        "ucri-bench: streaming (exec x{} per transport, port-forward)",
        args.execs
    );
    let streaming = streams::run(&mut client, args).await?;
    eprintln!("ucri-bench: {} running pods", args.scale);
    let scale = measure::at_scale(&mut client, args, idle_rss_kib).await?;
    let pull = match &args.pull_image {
        Some(image) => {
            eprintln!("ucri-bench: pull of {image}");
            measure::pull(&channel, args, image).await?
        }
        None => Value::Null,
    };
    Ok(json!({
        "machine": measure::machine(),
        "lifecycle": lifecycle,
        "floor": floor,
        "batches": batches,
        "execSync": exec,
        "streaming": streaming,
        "scale": scale,
        "pull": pull,
    }))
}
