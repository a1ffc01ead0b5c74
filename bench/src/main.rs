//! `ucri-bench`: the benchmark suite. It talks to a running ucri daemon over
//! CRI the way kubelet does, measures each figure next to its floor or
//! reference in the same run, prints a markdown table and writes JSON.
//! `packaging/bench/run.sh` sets up the registry and the daemon and runs it.
//!
//! Run it as the daemon's user: the floor runs `crun` through `ucri nsenter`,
//! and memory is read from the daemon's and the monitors' /proc entries.

mod measure;
mod report;
mod streams;
mod suite;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tonic::transport::Channel;

/// What to measure and against what.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ucri-bench",
    about = "ucri's benchmark suite (CRI, as kubelet drives it)"
)]
pub struct Args {
    /// The daemon's CRI socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// ucri's runtime dir (for the daemon pid and container bundles).
    #[arg(long)]
    pub runtime_dir: PathBuf,
    /// The `ucri` binary (for `ucri nsenter`).
    #[arg(long, default_value = "ucri")]
    pub ucri: PathBuf,
    /// A small image with a shell, already pulled (pods run it).
    #[arg(long)]
    pub image: String,
    /// A big image on a registry, for the pull figure (registry/repo:tag).
    #[arg(long)]
    pub pull_image: Option<String>,
    /// Where pod logs go.
    #[arg(long)]
    pub log_dir: PathBuf,
    /// Scratch space for skopeo's copy.
    #[arg(long)]
    pub scratch: PathBuf,
    /// Pods in the sequential lifecycle run (and crun runs of the floor).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub pods: usize,
    /// Sizes of the concurrent batches.
    #[arg(long, value_delimiter = ',', default_value = "10,30")]
    pub batches: Vec<usize>,
    /// Running pods for the memory and API-at-scale figures.
    #[arg(long, default_value_t = 100)]
    pub scale: usize,
    /// ExecSync calls.
    #[arg(long, default_value_t = 100)]
    pub execs: usize,
    /// Pull rounds (ucri and skopeo alternate; the median is kept).
    #[arg(long, default_value_t = 3)]
    pub pull_rounds: usize,
    /// Write the results here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

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
