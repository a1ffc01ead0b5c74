//! ucri: a rootless Kubernetes container runtime (CRI v1). The binary
//! (`src/main.rs`) is this library's [`main`]; integration tests use the
//! same client code as `ucri ctl` ([`ctl::connect`]).

mod admin;
mod cancel;
mod cgroups;
mod cli;
mod clock;
mod config;
mod cri;
pub mod ctl;
mod daemon;
mod descriptors;
mod error;
mod image;
mod info;
mod keyed_locks;
mod logging;
mod metrics;
mod nsenter;
mod play;
mod random;
mod runtime;
mod storage;
mod streaming;
mod system;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, Overrides, SystemAction};
use crate::config::{Config, UserDirs};

/// The whole program: the hidden roles, then the command line.
pub fn main() -> ExitCode {
    if let Some(code) = run_hidden_role() {
        return exit_code(code);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => exit_code(code),
        Err(e) => {
            eprintln!("ucri: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The roles ucri re-executes itself as; they run before argument parsing.
fn run_hidden_role() -> Option<i32> {
    let role = std::env::args().nth(1)?;
    match role.as_str() {
        ucri_rootless::holder::HOLDER_ARG => ucri_rootless::holder::run_holder(),
        ucri_rootless::launch::CHILD_ARG => Some(daemon::run_child()),
        ucri_storage::probe::PROBE_ARG => Some(ucri_storage::probe::run_probe_role()),
        ucri_net::bypass::AGENT_ARG => Some(ucri_net::bypass::agent::run_agent()),
        _ => None,
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    let config = load_config(&cli.overrides)?;
    logging::init(&config.daemon.log_level);
    match cli.command {
        Command::Daemon => daemon::run(config),
        Command::Info { json } => info::run(&config, json),
        Command::Config => {
            print!("{}", config.to_toml());
            Ok(0)
        }
        Command::Nsenter {
            command,
            host_network,
        } => nsenter::run(&config, command, !host_network),
        Command::Play { file } => play::run(&config, &file),
        Command::System {
            action: SystemAction::Reset { force },
        } => system::reset(&config, force),
        Command::Ctl(args) => {
            ucri_rootless::syscall::die_on_broken_pipe();
            ctl::run(&config, args)
        }
    }
}

/// Defaults, files and drop-ins, then flag/env overrides.
fn load_config(o: &Overrides) -> anyhow::Result<Config> {
    let dirs = UserDirs::discover()?;
    let main_file = o
        .config
        .clone()
        .unwrap_or_else(|| dirs.config_dir.join("ucri.toml"));
    let mut config = Config::load(&dirs, &main_file).context("loading configuration")?;
    if let Some(dir) = &o.runtime_dir {
        config.daemon.runtime_dir = dir.clone();
        config.daemon.socket = dir.join("ucri.sock");
    }
    if let Some(socket) = &o.socket {
        config.daemon.socket = socket.clone();
    }
    if let Some(dir) = &o.data_dir {
        config.daemon.data_dir = dir.clone();
    }
    if let Some(level) = &o.log_level {
        config.daemon.log_level = level.clone();
    }
    config.daemon.allow_root |= o.allow_root;
    Ok(config)
}
