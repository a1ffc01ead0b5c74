//! `ucri-bench`: the benchmark suite. It talks to a running ucri daemon over
//! CRI the way kubelet does, measures each figure next to its floor or
//! reference in the same run, prints a markdown table and writes JSON.
//! `packaging/bench/run.sh` sets up the registry and the daemon and runs it.
//!
//! Run it as the daemon's user: the floor runs `crun` through `ucri nsenter`,
//! and memory is read from the daemon's and the monitors' /proc entries.

mod args;
mod measure;
mod report;
mod streams;
mod suite;

use std::time::Duration;

use clap::Parser;
use tonic::transport::Channel;

use args::Args;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = connect(&args.socket).await?;
    let results = suite::run_all(&args, channel).await?;
    print!("{}", report::markdown(&results));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)?;
        eprintln!("ucri-bench: wrote {}", path.display());
    }
    Ok(())
}

/// A channel to the CRI socket.
pub async fn connect(socket: &std::path::Path) -> anyhow::Result<Channel> {
    let endpoint = ucri_cri_api::unix::endpoint().timeout(Duration::from_secs(120));
    Ok(ucri_cri_api::unix::connect(endpoint, socket).await?)
}
