//! `ucri nsenter`: run a command inside the daemon's user and mount
//! namespaces (kubelet runs there in the usernetes set-up).

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{anyhow, Context};
use ucri_rootless::enter::Namespaces;
use ucri_rootless::holder::HolderRecord;
use ucri_rootless::rundir::RuntimeDir;

use crate::config::Config;

/// Replaces this process with `command` inside the namespaces; returns only on error.
pub fn run(config: &Config, command: Vec<String>) -> anyhow::Result<i32> {
    let dir = RuntimeDir::new(&config.daemon.runtime_dir);
    let holder = HolderRecord::load_live(&dir)?.ok_or_else(|| {
        anyhow!(
            "no ucri namespaces for this user (no live holder in {}): start `ucri daemon` first",
            dir.path().display()
        )
    })?;
    let (program, args) = match command.split_first() {
        Some((p, a)) => (p.clone(), a.to_vec()),
        None => (
            std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into()),
            Vec::new(),
        ),
    };
    let namespaces = Namespaces::of_holder(&holder).context("opening the holder's namespaces")?;
    let mut cmd = Command::new(&program);
    cmd.args(&args);
    namespaces.apply_to(&mut cmd);
    let err = cmd.exec();
    Err(anyhow!(
        "running {program} inside the ucri namespaces: {err}"
    ))
}
