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
    Ok(parse_mountpoints(&std::fs::read_to_string("/proc/self/mountinfo")?).collect())
}

/// Mount points in `mountinfo`'s text.
fn parse_mountpoints(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
}

/// Waits until `path` is a mount point of the calling process's namespace:
/// `Ok(true)` once it is, `Ok(false)` at `deadline` or as soon as
/// `give_up()` says so (it is asked at least every 100 ms). The kernel wakes
/// the wait when the mount table changes (`POLLPRI` on
/// `/proc/self/mountinfo`); no timer polls it.
pub fn wait_for_mountpoint(
    path: &Path,
    deadline: std::time::Instant,
    mut give_up: impl FnMut() -> bool,
) -> std::io::Result<bool> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::{Read, Seek};
    use std::os::fd::AsFd;
    let mut table = std::fs::File::open("/proc/self/mountinfo")?;
    let mut text = String::new();
    loop {
        // Reading this open file is also what re-arms its event.
        text.clear();
        table.rewind()?;
        table.read_to_string(&mut text)?;
        if parse_mountpoints(&text).any(|m| m == path) {
            return Ok(true);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || give_up() {
            return Ok(false);
        }
        let wait_ms = left.as_millis().clamp(1, 100) as u16;
        let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
        match poll(&mut fds, PollTimeout::from(wait_ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn the_wait_ends_on_a_mount_point_at_the_deadline_or_when_told_to() {
        let soon = || Instant::now() + Duration::from_secs(5);
        assert!(wait_for_mountpoint(Path::new("/"), soon(), || false).expect("read"));
        let started = Instant::now();
        let never = Path::new("/nonexistent/ucri-mount");
        let short = Instant::now() + Duration::from_millis(150);
        assert!(!wait_for_mountpoint(never, short, || false).expect("read"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the deadline ends it"
        );
        let mut asked = 0;
        let gave_up = wait_for_mountpoint(never, soon(), || {
            asked += 1;
            asked == 3
        })
        .expect("read");
        assert!(!gave_up && asked == 3, "give_up ends it");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "asked at least every 100 ms"
        );
    }
}
