//! `ucri ctl`'s command line: the client's arguments and commands, in
//! crictl's names and shapes.

use std::path::PathBuf;

use clap::{Args, Subcommand};

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
    /// Pull an image.
    Pull {
        /// The image reference.
        image: String,
        /// Registry credentials as `USER:PASSWORD`.
        #[arg(long)]
        creds: Option<String>,
    },
    /// List images.
    Images {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: super::output::Output,
        /// Only this image.
        image: Option<String>,
        /// Only print image IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's status (JSON).
    Inspecti {
        /// Output format (json or yaml).
        #[arg(short, long, value_enum, default_value = "json")]
        output: super::output::Output,
        /// The image reference or ID.
        image: String,
    },
    /// Remove images.
    Rmi {
        /// Image references or IDs.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the image filesystem usage (JSON).
    Imagefsinfo,
    /// Import an OCI image layout (directory or tar) or a `docker save` archive.
    Import {
        /// The file or directory.
        path: PathBuf,
    },
    /// Run a pod sandbox from a crictl-style JSON config file.
    Runp {
        /// Pod config file.
        #[arg(value_name = "POD_CONFIG")]
        pod_config_file: PathBuf,
        /// Runtime handler.
        #[arg(short = 'r', long = "runtime")]
        handler: Option<String>,
    },
    /// Create a container in a pod from crictl-style JSON config files.
    Create {
        /// The pod ID.
        pod: String,
        /// Container config file.
        container_config: PathBuf,
        /// The pod's config file.
        pod_config: PathBuf,
    },
    /// Start containers.
    Start {
        /// Container IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop containers.
    Stop {
        /// Seconds before SIGKILL.
        #[arg(short, long, default_value_t = 10)]
        timeout: i64,
        /// Container IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove containers (stopping them first).
    Rm {
        /// Container IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop pods.
    Stopp {
        /// Pod IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Remove pods and their containers.
    Rmp {
        /// Pod IDs.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// List pods.
    Pods {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: super::output::Output,
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List containers (running ones unless --all).
    Ps {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: super::output::Output,
        /// Include containers that are not running.
        #[arg(short, long)]
        all: bool,
        /// Only print IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Only this pod's containers.
        #[arg(long = "pod")]
        pod: Option<String>,
    },
    /// Run a command in a running container, streaming its stdio (`-it` for
    /// an interactive terminal; `--sync` for ExecSync).
    Exec(super::stream::ExecArgs),
    /// Attach to a running container's stdio.
    Attach(super::stream::AttachArgs),
    /// Forward local ports to a pod's ports until Ctrl-C.
    #[command(name = "port-forward")]
    PortForward(super::stream::PortForwardArgs),
    /// Print a container's log (the content, without the CRI prefixes).
    Logs {
        /// Keep printing new lines until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (-1: all).
        #[arg(long, default_value_t = -1)]
        tail: i64,
        /// Prefix each line with its timestamp.
        #[arg(short, long)]
        timestamps: bool,
        /// The container ID.
        id: String,
    },
    /// Show containers' resource usage (CPU % over half a second).
    Stats {
        /// Only this container.
        id: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: super::output::Output,
    },
    /// Show pods' resource usage and network counters.
    Statsp {
        /// Only this pod.
        id: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: super::output::Output,
    },
    /// Print container and pod events as they happen.
    Events {
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: super::output::Output,
    },
    /// Pull the image if missing, run the pod, create and start the container.
    Run {
        /// Container config file.
        container_config: PathBuf,
        /// Pod config file.
        pod_config: PathBuf,
        /// Runtime handler.
        #[arg(short = 'r', long = "runtime")]
        handler: Option<String>,
    },
    /// Show a container's status (JSON).
    Inspect {
        /// Output format (json or yaml).
        #[arg(short, long, value_enum, default_value = "json")]
        output: super::output::Output,
        /// The container ID.
        id: String,
    },
    /// Show a pod's status (JSON).
    Inspectp {
        /// Output format (json or yaml).
        #[arg(short, long, value_enum, default_value = "json")]
        output: super::output::Output,
        /// The pod ID.
        id: String,
    },
}
