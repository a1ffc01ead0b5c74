//! `ucri system reset`: stop the namespace holder and delete all state.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use ucri_rootless::enter::Namespaces;
use ucri_rootless::holder::{ensure_holder, HolderRecord};
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
    let result = remove_everything(&dir, data);
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

/// Deletes the data dir from inside the user namespace (files there belong
/// to subordinate ids the user cannot touch from outside), then stops the holder.
fn remove_everything(dir: &RuntimeDir, data: &Path) -> anyhow::Result<()> {
    let live = HolderRecord::load_live(dir)?;
    if data.exists() {
        let holder = match live {
            Some(h) => h,
            None => ensure_holder(dir, &map_plan_for_current_user()?)?,
        };
        remove_inside(&holder, data)?;
        holder.stop(dir)?;
    } else if let Some(holder) = live {
        holder.stop(dir)?;
    }
    Ok(())
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
