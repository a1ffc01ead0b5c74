//! Does kernel overlayfs mount inside a user namespace (`userxattr`, Linux
//! 5.11+)? Answered by trying it in a throwaway user+mount namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// The hidden argument that makes the binary run the probe role.
pub const PROBE_ARG: &str = "__probe-overlay";

/// Errors of the overlay probe.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Preparing the probe directories failed.
    #[error("preparing {path}: {source}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel refused the mount.
    #[error("mount -t overlay -o userxattr: {0}")]
    Mount(nix::Error),
    /// Entering the throwaway namespaces failed.
    #[error("entering a new user namespace: {0}")]
    Namespace(String),
    /// The probe process could not run or died.
    #[error("overlay probe: {0}")]
    Process(String),
}

/// Mounts an overlay with `userxattr` under `base` and unmounts it again.
///
/// Needs CAP_SYS_ADMIN in the user namespace owning the current mount namespace.
pub fn try_overlay_mount(base: &Path) -> Result<(), ProbeError> {
    let dirs = ["lower", "upper", "work", "merged"].map(|d| base.join(d));
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(|source| ProbeError::Prepare {
            path: dir.clone(),
            source,
        })?;
    }
    let [lower, upper, work, merged] = &dirs;
    let options = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(ProbeError::Mount)?;
    let _ = umount2(merged, MntFlags::MNT_DETACH);
    Ok(())
}

/// The probe role's main: enter a single-id user namespace with a private
/// mount namespace, try the mount in the directory given as argument.
/// Exit code 0 means overlay works; otherwise the reason is on stderr.
pub fn run_probe_role() -> i32 {
    let Some(base) = std::env::args().nth(2) else {
        eprintln!("usage: ucri {PROBE_ARG} DIR");
        return 2;
    };
    match enter_single_id_userns().and_then(|()| try_overlay_mount(Path::new(&base))) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn enter_single_id_userns() -> Result<(), ProbeError> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let ns = |e: String| ProbeError::Namespace(e);
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| ns(e.to_string()))?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(|e| ns(e.to_string()))?;
    std::fs::write("/proc/self/setgroups", "deny").map_err(|e| ns(e.to_string()))?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(|e| ns(e.to_string()))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| ns(format!("making mounts private: {e}")))
}

/// Removes the probe's directories; overlayfs leaves `work/work` with mode
/// 000, which must be opened up first.
fn remove_scratch(scratch: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let inner_work = scratch.join("work/work");
    let _ = std::fs::set_permissions(&inner_work, std::fs::Permissions::from_mode(0o700));
    if let Err(e) = std::fs::remove_dir_all(scratch) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %scratch.display(), %e, "cannot remove the overlay probe directory");
        }
    }
}

/// Runs the probe in a child process (`exe` re-executed with [`PROBE_ARG`])
/// in a scratch directory under `scratch_parent`, which is removed afterwards.
pub fn probe_overlay_in_userns(exe: &Path, scratch_parent: &Path) -> Result<(), ProbeError> {
    std::fs::create_dir_all(scratch_parent).map_err(|source| ProbeError::Prepare {
        path: scratch_parent.to_owned(),
        source,
    })?;
    let scratch = scratch_parent.join(format!(".overlay-probe-{}", std::process::id()));
    let output = Command::new(exe).arg(PROBE_ARG).arg(&scratch).output();
    remove_scratch(&scratch);
    let output = output.map_err(|e| ProbeError::Process(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ProbeError::Process(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ))
    }
}
