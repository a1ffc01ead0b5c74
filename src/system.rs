//! `ucri system reset`: stop the namespace holder and delete all state.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use ucri_rootless::enter::Namespaces;
use ucri_rootless::holder::{
    end_namespace_members, end_orphaned_holder, ensure_holder, orphaned_holders, HolderRecord,
};
use ucri_rootless::launch::{map_plan_for_current_user, DaemonLock, LaunchError};
use ucri_rootless::rundir::RuntimeDir;

use crate::config::Config;

/// Resets the user's ucri after a confirmation (or `force`). Returns the exit code.
pub fn reset(config: &Config, force: bool) -> anyhow::Result<i32> {
    let dir = RuntimeDir::new(&config.daemon.runtime_dir);
    let data = &config.daemon.data_dir;
    if !force && !confirm(&dir, data)? {
        eprintln!("ucri: reset cancelled");
        return Ok(1);
    }
    dir.create().context("creating the runtime dir")?;
    let lock = match DaemonLock::acquire(&dir) {
        Ok(lock) => lock,
        Err(LaunchError::AlreadyRunning { pid, .. }) => {
            bail!("the ucri daemon is running (pid {pid}); stop it before `ucri system reset`")
        }
        Err(e) => return Err(e.into()),
    };
    let result = remove_everything(&dir, data, &config.node.writable);
    // Containers are gone now; their cgroups (delegated ones, on the host) too.
    crate::cgroups::probe(&config.runtime).remove_all_pods();
    lock.release();
    result?;
    std::fs::remove_dir_all(dir.path())
        .or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
        .with_context(|| format!("removing {}", dir.path().display()))?;
    eprintln!("ucri: reset done");
    Ok(0)
}

fn confirm(dir: &RuntimeDir, data: &Path) -> anyhow::Result<bool> {
    eprint!(
        "This stops the ucri namespace holder (ending every container) and deletes {} and {}.\n\
         Continue? [y/N] ",
        data.display(),
        dir.path().display()
    );
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// Ends every process in ucri's user namespace (containers, their
/// monitors, pod inits, FUSE daemons), deletes the data dir from inside the
/// namespace (files there belong to subordinate ids the user cannot touch
/// from outside), then stops the holder. The node directories (`[node]
/// writable`) are unmounted too: their mounts (ucri's binds, and a
/// kubelet's own binds and volumes under them) sit on the data dir's
/// `node/` directories and would keep them busy.
fn remove_everything(dir: &RuntimeDir, data: &Path, node_dirs: &[PathBuf]) -> anyhow::Result<()> {
    let live = HolderRecord::load_live(dir)?;
    for orphan in orphaned_holders(dir, live.as_ref()) {
        end_orphaned_holder(orphan);
    }
    if let Some(holder) = &live {
        end_namespace_members(holder.userns, holder.pid);
    }
    if data.exists() {
        let holder = match live {
            Some(h) => h,
            None => ensure_holder(dir, &map_plan_for_current_user()?)?,
        };
        // The holder stops even when the removal fails: a reset that
        // leaves it running keeps the namespaces (and slirp4netns) alive.
        let roots: Vec<&Path> = [data, dir.path()]
            .into_iter()
            .chain(node_dirs.iter().map(PathBuf::as_path))
            .collect();
        let removed = unmount_inside(&holder, &roots).and_then(|()| remove_inside(&holder, data));
        let stopped = holder.stop(dir);
        removed?;
        stopped?;
    } else if let Some(holder) = live {
        holder.stop(dir)?;
    }
    Ok(())
}

/// Lazily unmounts, inside the namespace, every mount under `roots`
/// (container root filesystems, pod pins and /dev/shm), deepest first.
fn unmount_inside(holder: &HolderRecord, roots: &[&Path]) -> anyhow::Result<()> {
    // A lazy unmount uncovers what was mounted below (kubelet bind-mounts
    // its root dir onto itself and mounts again under it): look again,
    // a bounded number of rounds.
    for _ in 0..UNMOUNT_ROUNDS {
        let targets = mounts_under(holder, roots)?;
        if targets.is_empty() {
            return Ok(());
        }
        let namespaces = Namespaces::of_holder(holder)?;
        let mut cmd = Command::new("umount");
        cmd.arg("-l").arg("--").args(&targets);
        namespaces.apply_to(&mut cmd);
        let out = cmd
            .output()
            .context("running umount inside the user namespace")?;
        if !out.status.success() {
            bail!(
                "unmounting ucri's mounts failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let left = mounts_under(holder, roots)?;
    if left.is_empty() {
        return Ok(());
    }
    bail!(
        "still mounted after {UNMOUNT_ROUNDS} rounds of unmounting: {}",
        left.join(", ")
    )
}

/// How many times [`unmount_inside`] reads the mount table again.
const UNMOUNT_ROUNDS: usize = 8;

/// The holder's mountpoints under `roots`, deepest first.
fn mounts_under(holder: &HolderRecord, roots: &[&Path]) -> anyhow::Result<Vec<String>> {
    let mountinfo = std::fs::read_to_string(format!("/proc/{}/mountinfo", holder.pid))
        .context("reading the holder's mount table")?;
    let mut targets: Vec<String> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            m.replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\134", "\\")
        })
        .filter(|m| roots.iter().any(|r| Path::new(m).starts_with(r)))
        .collect();
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    Ok(targets)
}

fn remove_inside(holder: &HolderRecord, data: &Path) -> anyhow::Result<()> {
    let namespaces = Namespaces::of_holder(holder)?;
    let mut cmd = Command::new("rm");
    cmd.arg("-rf").arg("--").arg(data);
    namespaces.apply_to(&mut cmd);
    let out = cmd
        .output()
        .context("running rm inside the user namespace")?;
    if !out.status.success() {
        bail!(
            "removing {} failed ({}): {}",
            data.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
