//! `ucri nsenter`: run a command inside the daemon's user and mount
//! namespaces and the uplink network namespace (kubelet runs there in the
//! usernetes set-up, so pod IPs are reachable for probes).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use nix::sched::CloneFlags;

use anyhow::{anyhow, Context};
use ucri_rootless::enter::Namespaces;
use ucri_rootless::holder::HolderRecord;
use ucri_rootless::rundir::RuntimeDir;

use crate::config::Config;

/// Replaces this process with `command` inside the namespaces; returns only
/// on error. In the node namespace, `UCRI_NODE_IP` holds the node's address.
pub fn run(config: &Config, command: Vec<String>, uplink: bool) -> anyhow::Result<i32> {
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
    let mut namespaces =
        Namespaces::of_holder(&holder).context("opening the holder's namespaces")?;
    if uplink {
        namespaces = enter_uplink(namespaces, &holder, config)?;
    }
    let mut cmd = Command::new(&program);
    cmd.args(&args);
    if uplink {
        // What kubelet takes as --node-ip: the address the daemon assigns
        // inside the node namespace (`[node] address`).
        if let Ok(Some(address)) = config.node.resolved_address() {
            cmd.env("UCRI_NODE_IP", address.to_string());
        }
    }
    namespaces.apply_to(&mut cmd);
    let err = cmd.exec();
    Err(anyhow!(
        "running {program} inside the ucri namespaces: {err}"
    ))
}

/// Adds the uplink namespace, reached through the holder's root (the pin is
/// a mount in the holder's mount namespace). Without a pinned uplink the
/// command stays in the host's network namespace, with a note.
fn enter_uplink(
    namespaces: Namespaces,
    holder: &HolderRecord,
    config: &Config,
) -> anyhow::Result<Namespaces> {
    let pin = config.daemon.runtime_dir.join("uplink/netns");
    let through_holder = PathBuf::from(format!("/proc/{}/root", holder.pid))
        .join(pin.strip_prefix("/").unwrap_or(&pin));
    let pinned = nix::sys::statfs::statfs(&through_holder)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
    if !pinned {
        eprintln!(
            "ucri nsenter: the uplink network namespace is not set up; staying in the host's"
        );
        return Ok(namespaces);
    }
    namespaces
        .with(&through_holder, CloneFlags::CLONE_NEWNET)
        .context("opening the uplink network namespace")
}
