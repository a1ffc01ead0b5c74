//! Preparing the daemon's mount namespace for the OCI runtime.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};

/// The cgroup2 mount of a cgroup v1 "hybrid" host.
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Errors preparing mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A mount call failed.
    #[error("{what}: {source}")]
    Mount {
        /// What was being done.
        what: &'static str,
        /// The errno.
        source: nix::Error,
    },
}

/// What [`prepare_mount_namespace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountPrep {
    /// The hybrid host's cgroup2 mount was covered (crun refuses hybrid hosts).
    pub covered_hybrid_cgroup2: bool,
}

/// Makes every mount private, then covers the cgroup2 mount of a hybrid
/// host. Idempotent: safe to run again in a namespace already prepared.
pub fn prepare_mount_namespace() -> Result<MountPrep, MountError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| MountError::Mount {
        what: "making / recursively private",
        source,
    })?;
    let covered_hybrid_cgroup2 = hide_hybrid_cgroup2()?;
    Ok(MountPrep {
        covered_hybrid_cgroup2,
    })
}

/// True on a cgroup v1 host that also mounts cgroup2 at /sys/fs/cgroup/unified.
pub fn is_hybrid_cgroup_host() -> bool {
    let root_is_tmpfs = statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == TMPFS_MAGIC)
        .unwrap_or(false);
    root_is_tmpfs
        && statfs(HYBRID_UNIFIED)
            .map(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
            .unwrap_or(false)
}

fn hide_hybrid_cgroup2() -> Result<bool, MountError> {
    if !is_hybrid_cgroup_host() {
        return Ok(false);
    }
    mount(
        Some("tmpfs"),
        Path::new(HYBRID_UNIFIED),
        Some("tmpfs"),
        // Writable: with delegated v1 cgroups crun mirrors each container's
        // cgroup path here (directories only).
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=1m,mode=0755"),
    )
    .map_err(|source| MountError::Mount {
        what: "covering /sys/fs/cgroup/unified (cgroup v1 hybrid host)",
        source,
    })?;
    tracing::info!(
        path = HYBRID_UNIFIED,
        "covered the hybrid host's cgroup2 mount so the OCI runtime sees a cgroup v1 host"
    );
    Ok(true)
}

/// Every mount point of the calling process's mount namespace; none when
/// `/proc/self/mountinfo` cannot be read (see [`try_mountpoints`] where
/// "none" would be taken for "gone").
pub fn mountpoints() -> Vec<PathBuf> {
    try_mountpoints().unwrap_or_else(|e| {
        tracing::warn!(%e, "cannot read /proc/self/mountinfo");
        Vec::new()
    })
}

/// Every mount point of the calling process's mount namespace, or why
/// `/proc/self/mountinfo` could not be read.
pub fn try_mountpoints() -> std::io::Result<Vec<PathBuf>> {
    Ok(std::fs::read_to_string("/proc/self/mountinfo")?
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .collect())
}

/// True when `path` is a mount point in the calling process's namespace.
pub fn is_mountpoint(path: &Path) -> bool {
    mountpoints().iter().any(|m| m == path)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
