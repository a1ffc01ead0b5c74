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

    /// True when process `pid`'s user namespace is `ancestor` or one made
    /// inside it, at any depth (a pod's own user namespace, made in the
    /// daemon's, is inside the daemon's).
    pub fn user_namespace_within(pid: u32, ancestor: NsId) -> bool {
        /// User namespaces nest at most 32 deep.
        const MAX_DEPTH: usize = 33;
        let Ok(file) = std::fs::File::open(format!("/proc/{pid}/ns/user")) else {
            return false;
        };
        let mut ns: std::os::fd::OwnedFd = file.into();
        for _ in 0..MAX_DEPTH {
            let Ok(meta) = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&ns)) else {
                return false;
            };
            let id = NsId {
                dev: meta.st_dev,
                ino: meta.st_ino,
            };
            if id == ancestor {
                return true;
            }
            match crate::syscall::parent_user_namespace(std::os::fd::AsFd::as_fd(&ns)) {
                Ok(parent) => ns = parent,
                Err(_) => return false, // the initial namespace, or out of sight
            }
        }
        false
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
    fn a_process_is_within_its_own_user_namespace_and_not_a_child_of_it() {
        let pid = std::process::id();
        let own = NsId::of_process(pid, "user").expect("own user namespace");
        assert!(NsId::user_namespace_within(pid, own));
        let elsewhere = NsId {
            dev: own.dev,
            ino: own.ino.wrapping_add(1),
        };
        assert!(!NsId::user_namespace_within(pid, elsewhere));
    }

    #[test]
    fn own_namespace_matches_pid_view() {
        let pid = std::process::id();
        assert_eq!(
            NsId::of_process(pid, "user").expect("pid view"),
            NsId::of_path(Path::new("/proc/self/ns/user")).expect("self view")
        );
    }
}
