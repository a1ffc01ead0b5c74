//! Locating CNI plugins in the configured plugin directories.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The plugins ucri's default network needs (bridge + host-local IPAM,
/// portmap for hostPort semantics inside the uplink). Loopback comes up
/// in every pod without a plugin.
pub const REQUIRED_CNI_PLUGINS: [&str; 3] = ["bridge", "host-local", "portmap"];

/// For each plugin name, the first executable with that name in `dirs`.
pub fn find_plugins(dirs: &[PathBuf], names: &[&str]) -> BTreeMap<String, Option<PathBuf>> {
    names
        .iter()
        .map(|name| {
            let found = dirs
                .iter()
                .map(|d| d.join(name))
                .find(|p| is_executable_file(p));
            (name.to_string(), found)
        })
        .collect()
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_directory_wins_and_non_executables_are_skipped() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let write = |p: PathBuf, mode: u32| {
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        write(a.join("bridge"), 0o644);
        write(b.join("bridge"), 0o755);
        write(a.join("loopback"), 0o755);
        write(b.join("loopback"), 0o755);
        let found = find_plugins(&[a.clone(), b.clone()], &["bridge", "loopback", "portmap"]);
        assert_eq!(found["bridge"], Some(b.join("bridge")));
        assert_eq!(found["loopback"], Some(a.join("loopback")));
        assert_eq!(found["portmap"], None);
    }
}
