//! Where a pod's run-time files live: its namespace pins, `/dev/shm` and
//! the generated resolv.conf, hosts and hostname.

use std::path::{Path, PathBuf};

/// The run-time files of one pod.
#[derive(Debug, Clone)]
pub struct PodDir {
    root: PathBuf,
}

impl PodDir {
    /// The pod's directory under `runtime_root`.
    pub fn new(runtime_root: &Path, id: &str) -> PodDir {
        PodDir {
            root: runtime_root.join("pods").join(id),
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Pin file of namespace `kind` (`net`, `ipc`, `uts`).
    pub fn ns(&self, kind: &str) -> PathBuf {
        self.root.join("ns").join(kind)
    }

    /// The pod's `/dev/shm`.
    pub fn shm(&self) -> PathBuf {
        self.root.join("shm")
    }

    /// Generated `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> PathBuf {
        self.root.join("resolv.conf")
    }

    /// Generated `/etc/hosts`.
    pub fn hosts(&self) -> PathBuf {
        self.root.join("hosts")
    }

    /// Generated `/etc/hostname`.
    pub fn hostname_file(&self) -> PathBuf {
        self.root.join("hostname")
    }
}
