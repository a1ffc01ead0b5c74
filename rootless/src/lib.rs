//! The rootless bootstrap of ucri: subordinate ids, the user and mount
//! namespaces (kept alive by a holder process), the parent/child launch with
//! its typed handshake, and helpers to run code inside namespaces.
//!
//! Everything here runs before any async runtime exists: joining a user
//! namespace is only allowed to a single-threaded process.

pub mod enter;
pub mod handshake;
pub mod holder;
pub mod idmap;
pub mod launch;
pub mod mounts;
pub mod node_dirs;
pub mod nsid;
pub mod pidfd;
pub mod rundir;
pub mod subid;
pub mod syscall;

use std::path::{Path, PathBuf};

/// Finds `program` in `$PATH` (or returns it if it is already a path that exists).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
