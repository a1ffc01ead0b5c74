//! The benchmark's command line: what to measure and against what.

use std::path::PathBuf;

use clap::Parser;

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
