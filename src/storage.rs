//! Container root filesystems as the daemon uses them: the driver chosen at
//! start-up (and why), and recovery of mounts after a restart.

use std::path::Path;

use anyhow::Context;
use ucri_storage::rootfs::{self, DriverKind, Rootfs};

use crate::config::StorageDriver;

/// The root filesystem layer of the daemon.
#[derive(Debug)]
pub struct Storage {
    rootfs: Rootfs,
    reason: String,
}

impl Storage {
    /// Picks the driver (`auto` probes kernel overlay, then fuse-overlayfs,
    /// then falls back to vfs; an explicit choice must work). The lifecycle
    /// recovers the root filesystems, knowing which containers still exist.
    pub fn open(store_root: &Path, wanted: StorageDriver) -> anyhow::Result<Storage> {
        let (driver, reason) = choose(store_root, wanted)?;
        tracing::info!(%driver, reason = %reason, "container root filesystem driver");
        let rootfs = Rootfs::new(store_root, driver).context("preparing root filesystems")?;
        Ok(Storage { rootfs, reason })
    }

    /// The root filesystems.
    pub fn rootfs(&self) -> &Rootfs {
        &self.rootfs
    }

    /// Why this driver was chosen.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

fn choose(store_root: &Path, wanted: StorageDriver) -> anyhow::Result<(DriverKind, String)> {
    let explicit = match wanted {
        StorageDriver::Auto => return Ok(rootfs::choose_driver(store_root)),
        StorageDriver::Overlay => DriverKind::Overlay,
        StorageDriver::FuseOverlayfs => DriverKind::FuseOverlayfs,
        StorageDriver::Vfs => DriverKind::Vfs,
    };
    rootfs::check_driver(explicit, store_root)?;
    Ok((explicit, "set in the configuration (storage.driver)".into()))
}
