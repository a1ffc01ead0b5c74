//! Namespace identity: the (device, inode) pair of an nsfs file.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Identity of a namespace, stable for its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NsId {
    /// Device of the nsfs file.
    pub dev: u64,
    /// Inode of the nsfs file (what `readlink /proc/PID/ns/X` shows).
    pub ino: u64,
}

impl NsId {
    /// Identity of the namespace that `path` (an nsfs file or /proc link) refers to.
    pub fn of_path(path: &Path) -> std::io::Result<NsId> {
        let meta = std::fs::metadata(path)?;
        Ok(NsId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Identity of namespace `kind` (`user`, `mnt`, `net`…) of process `pid`.
    pub fn of_process(pid: u32, kind: &str) -> std::io::Result<NsId> {
        NsId::of_path(Path::new(&format!("/proc/{pid}/ns/{kind}")))
    }

    /// Identity of namespace `kind` of the calling thread.
    pub fn of_self(kind: &str) -> std::io::Result<NsId> {
        NsId::of_path(Path::new(&format!("/proc/thread-self/ns/{kind}")))
    }
}

/// True when the calling process is in the initial user namespace.
pub fn in_initial_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_matches_pid_view() {
        let pid = std::process::id();
        assert_eq!(
            NsId::of_process(pid, "user").expect("pid view"),
            NsId::of_path(Path::new("/proc/self/ns/user")).expect("self view")
        );
    }
}
