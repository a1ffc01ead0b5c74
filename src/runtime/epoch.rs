//! Whether the runtime dir is the one the state records were written with.
//!
//! State records live in the data dir and survive a reboot; what they point
//! at in the runtime dir (a tmpfs: the OCI runtime's state, exit files,
//! namespace pins, CNI leases) and every process do not. One random epoch is
//! kept in both places: when the runtime dir's is missing or different, the
//! runtime dir was lost, by a reboot (the kernel's boot id changed) or by a
//! wipe, and recovery reads every container as exited and every pod as not
//! ready instead of asking the OCI runtime about state it no longer has.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state::{io, StateError};

/// What the state dir remembers of the runtime dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EpochRecord {
    /// The runtime dir's epoch.
    epoch: String,
    /// The kernel's boot id when it was made.
    boot_id: String,
}

/// What became of the runtime dir since the state was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeDirFate {
    /// The same runtime dir (or the first start: nothing to lose).
    Kept,
    /// It was lost; `rebooted` when the boot id changed too.
    Lost {
        /// The node rebooted (else the runtime dir was emptied).
        rebooted: bool,
    },
}

impl RuntimeDirFate {
    /// Why containers ended, for their status message.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            RuntimeDirFate::Kept => None,
            RuntimeDirFate::Lost { rebooted: true } => {
                Some("the node rebooted; the container's processes ended with it")
            }
            RuntimeDirFate::Lost { rebooted: false } => Some(
                "ucri's runtime directory was emptied; the container's runtime state went with it",
            ),
        }
    }
}

/// The epoch files of one state dir and one runtime dir.
#[derive(Debug)]
pub struct Epoch {
    record: PathBuf,
    marker: PathBuf,
}

impl Epoch {
    /// Epoch files in `state_dir` and `runtime_dir`.
    pub fn new(state_dir: &Path, runtime_dir: &Path) -> Epoch {
        Epoch {
            record: state_dir.join("epoch.json"),
            marker: runtime_dir.join("state-epoch"),
        }
    }

    /// Compares the two; nothing is written (see [`Epoch::renew`]).
    pub fn fate(&self) -> Result<RuntimeDirFate, StateError> {
        let Some(record) = self.read_record()? else {
            return Ok(RuntimeDirFate::Kept);
        };
        if self.read_marker()?.as_deref() == Some(record.epoch.as_str()) {
            return Ok(RuntimeDirFate::Kept);
        }
        let rebooted = boot_id().is_some_and(|now| now != record.boot_id);
        Ok(RuntimeDirFate::Lost { rebooted })
    }

    /// Makes both files name one epoch: the runtime dir's when it has one,
    /// else a new one. Called once recovery has recorded what a loss meant,
    /// so a crash before this only repeats that recovery.
    pub fn renew(&self) -> Result<(), StateError> {
        let epoch = match self.read_marker()? {
            Some(epoch) => epoch,
            None => {
                let epoch = crate::random::hex(16).map_err(io("making an epoch"))?;
                write(&self.marker, epoch.as_bytes())?;
                epoch
            }
        };
        let record = EpochRecord {
            epoch,
            boot_id: boot_id().unwrap_or_default(),
        };
        let data = serde_json::to_vec(&record)?;
        write(&self.record, &data)
    }

    fn read_record(&self) -> Result<Option<EpochRecord>, StateError> {
        let Some(bytes) = read_optional(&self.record)? else {
            return Ok(None);
        };
        // An unreadable record says nothing: treat it as absent, and
        // renew() rewrites it.
        Ok(serde_json::from_slice(&bytes).ok())
    }

    fn read_marker(&self) -> Result<Option<String>, StateError> {
        Ok(read_optional(&self.marker)?
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|e| !e.is_empty()))
    }
}

/// The kernel's boot id.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), StateError> {
    ucri_rootless::rundir::write_atomic(path, data)
        .map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_runtime_dir_is_kept_and_a_wiped_one_is_lost() {
        let state = tempfile::tempdir().expect("tmp");
        let run = tempfile::tempdir().expect("tmp");
        let epoch = Epoch::new(state.path(), run.path());
        assert_eq!(
            epoch.fate().expect("fate"),
            RuntimeDirFate::Kept,
            "first start"
        );
        epoch.renew().expect("renew");
        assert_eq!(epoch.fate().expect("fate"), RuntimeDirFate::Kept);
        std::fs::remove_file(run.path().join("state-epoch")).expect("wipe");
        assert_eq!(
            epoch.fate().expect("fate"),
            RuntimeDirFate::Lost { rebooted: false },
            "same boot, emptied runtime dir"
        );
        epoch.renew().expect("renew");
        assert_eq!(epoch.fate().expect("fate"), RuntimeDirFate::Kept);
        let mut record: EpochRecord =
            serde_json::from_slice(&std::fs::read(state.path().join("epoch.json")).expect("read"))
                .expect("JSON");
        record.boot_id = "another-boot".into();
        record.epoch = "older".into();
        std::fs::write(
            state.path().join("epoch.json"),
            serde_json::to_vec(&record).expect("JSON"),
        )
        .expect("write");
        assert_eq!(
            epoch.fate().expect("fate"),
            RuntimeDirFate::Lost { rebooted: true }
        );
    }
}
