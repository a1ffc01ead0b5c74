//! Command-line interface. Every setting flag has an environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ucri: a rootless Kubernetes container runtime (CRI v1).
#[derive(Debug, Parser)]
#[command(name = "ucri", version, about, long_about = None)]
pub struct Cli {
    /// Settings that override the configuration files.
    #[command(flatten)]
    pub overrides: Overrides,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags that override configuration values, for every command.
#[derive(Debug, Args, Default)]
pub struct Overrides {
    /// Main configuration file (drop-ins are read from `<file>.d/*.toml`).
    #[arg(long, global = true, env = "UCRI_CONFIG")]
    pub config: Option<PathBuf>,
    /// The CRI socket path.
    #[arg(long, global = true, env = "UCRI_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Run-time directory (lock, pid files, namespace holder).
    #[arg(long, global = true, env = "UCRI_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,
    /// Persistent data directory (images, containers).
    #[arg(long, global = true, env = "UCRI_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log level or tracing filter.
    #[arg(long, global = true, env = "UCRI_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Allow running as real root on the host (no user namespace).
    #[arg(long, global = true, env = "UCRI_ALLOW_ROOT")]
    pub allow_root: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CRI daemon (rootless: enters its own user namespace).
    Daemon,
    /// Check this host's prerequisites for running ucri rootless.
    Info {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration, every default included.
    Config,
    /// Run a Kubernetes Pod manifest (YAML or JSON) until it ends or Ctrl-C,
    /// printing its containers' logs; unsupported fields are listed, not ignored.
    Play {
        /// The Pod manifest.
        file: std::path::PathBuf,
    },
    /// Run a command inside the daemon's user and mount namespaces and the
    /// uplink network namespace (where pod IPs are reachable).
    Nsenter {
        /// Stay in the host's network namespace.
        #[arg(long)]
        host_network: bool,
        /// The command and its arguments (default: $SHELL).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Maintenance of the user's ucri state.
    System {
        /// The maintenance action.
        #[command(subcommand)]
        action: SystemAction,
    },
    /// A CRI client for troubleshooting (crictl-style).
    Ctl(crate::ctl::CtlArgs),
}

/// `ucri system` actions.
#[derive(Debug, Subcommand)]
pub enum SystemAction {
    /// Stop the namespace holder and delete all images, containers and state.
    Reset {
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}
