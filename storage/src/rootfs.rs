//! Container root filesystems over image layers: kernel overlayfs mounted
//! inside the user namespace with `userxattr`, fuse-overlayfs where that is
//! unavailable, and plain copies (vfs) where neither works.
//!
//! ```text
//! ROOT/containers/<id>/rootfs.json   driver, layers, read-only flag
//! ROOT/containers/<id>/upper/        the writable layer (overlay drivers)
//! ROOT/containers/<id>/work/         overlay's work dir
//! ROOT/containers/<id>/merged/       the mountpoint handed to the OCI runtime
//! ROOT/l/<short>                     symlinks to layer diffs, so that many
//!                                    layers fit in overlay's option string
//! ```
//!
//! Must run with root inside the user namespace that owns the current mount
//! namespace (the daemon, or `ucri nsenter`).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::fsutil::{disk_usage, Usage};
use crate::unpack::{FUSE_OPAQUE_XATTR, OPAQUE_XATTR};

/// Length of the short layer link names under `l/`.
const SHORT_LINK: usize = 20;

/// Which driver makes root filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverKind {
    /// Kernel overlayfs with `userxattr`.
    Overlay,
    /// fuse-overlayfs.
    FuseOverlayfs,
    /// Full copies.
    Vfs,
}

impl std::fmt::Display for DriverKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DriverKind::Overlay => "overlay",
            DriverKind::FuseOverlayfs => "fuse-overlayfs",
            DriverKind::Vfs => "vfs",
        })
    }
}

/// Errors of the rootfs layer.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// Where.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An external program failed.
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        /// The program and its arguments.
        program: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A layer the container needs is not unpacked.
    #[error("layer {0} is not in the store")]
    MissingLayer(Digest),
    /// No rootfs record for this container.
    #[error("no root filesystem for container {0}")]
    NotFound(String),
    /// The requested driver cannot work here.
    #[error("storage driver {driver} is unavailable: {reason}")]
    Unavailable {
        /// The driver.
        driver: DriverKind,
        /// Why.
        reason: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Io { context, source }
}

/// What is recorded for a container's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsRecord {
    /// The container.
    pub id: String,
    /// The driver that made it.
    pub driver: DriverKind,
    /// Layer chain IDs, bottom first.
    pub layers: Vec<Digest>,
    /// Mounted read-only.
    pub readonly: bool,
    /// Ids shown shifted, for a pod with a user namespace of its own.
    #[serde(default)]
    pub shift: Option<IdShift>,
}

/// Files owned by id N in the layers are shown as owned by `uid + N` (and
/// `gid + N`), for N below `length`: container root is then the owner of its
/// root filesystem inside a pod user namespace that maps 0 to `uid`. The
/// kernel allows no idmapped mounts in a user namespace, so this is
/// fuse-overlayfs' `uidmapping`/`gidmapping`, as rootless podman does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdShift {
    /// Where container uid 0 is, in the daemon's namespace.
    pub uid: u32,
    /// Where container gid 0 is.
    pub gid: u32,
    /// How many ids are mapped.
    pub length: u32,
}

/// What [`Rootfs::recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Containers whose mount was missing and was made again.
    pub remounted: Vec<String>,
    /// Containers that no longer exist, unmounted and removed, and the
    /// leftovers of a removal or creation that a kill interrupted.
    pub removed: Vec<String>,
    /// Containers whose root filesystem could not be mounted again, and why
    /// (they stay on disk; their containers fail to start).
    pub failed: Vec<(String, String)>,
}

/// The container root filesystems under one store root.
#[derive(Debug)]
pub struct Rootfs {
    root: PathBuf,
    driver: DriverKind,
}

impl Rootfs {
    /// Root filesystems under `store_root` made by `driver`.
    pub fn new(store_root: &Path, driver: DriverKind) -> Result<Rootfs, RootfsError> {
        for dir in ["containers", "l"] {
            let path = store_root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        }
        // Traversable, not listable: crun reaches `containers/ID/merged` from
        // inside a pod's own user namespace, as another id than ours.
        for (dir, mode) in [("containers", 0o711), ("l", 0o700)] {
            let path = store_root.join(dir);
            crate::set_mode(&path, mode).map_err(io_err(format!("securing {}", path.display())))?;
        }
        Ok(Rootfs {
            root: store_root.to_owned(),
            driver,
        })
    }

    /// The driver in use.
    pub fn driver(&self) -> DriverKind {
        self.driver
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// Where container root filesystems live (the container filesystem
    /// `ImageFsInfo` reports).
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// The mountpoint of container `id`'s root filesystem.
    pub fn mountpoint(&self, id: &str) -> PathBuf {
        self.dir(id).join("merged")
    }

    /// The writable layer of container `id` (the copy itself for vfs).
    pub fn upper(&self, id: &str) -> PathBuf {
        match self.driver {
            DriverKind::Vfs => self.mountpoint(id),
            _ => self.dir(id).join("upper"),
        }
    }

    /// Makes and mounts the root filesystem of container `id` over `layers`
    /// (chain IDs, bottom first). Nothing is left behind on failure.
    pub fn create(
        &self,
        id: &str,
        layers: &[Digest],
        readonly: bool,
    ) -> Result<PathBuf, RootfsError> {
        self.create_record(RootfsRecord {
            id: id.to_owned(),
            driver: self.driver,
            layers: self.visible_layers(layers),
            readonly,
            shift: None,
        })
    }

    /// `layers` (bottom first) without those an opaque layer root hides:
    /// a layer whose tar has a root-level `.wh..wh..opq` replaces
    /// everything below it, which overlayfs does not do for a layer's root
    /// (it reads the opaque mark on directories under it only).
    pub fn visible_layers(&self, layers: &[Digest]) -> Vec<Digest> {
        let diff = |l: &Digest| self.root.join("layers").join(l.hex()).join("diff");
        let start = layers
            .iter()
            .rposition(|l| is_opaque(&diff(l)))
            .unwrap_or(0);
        layers[start..].to_vec()
    }

    /// Like [`Rootfs::create`], with the ids shifted by `shift`: always
    /// fuse-overlayfs, whatever the store's driver.
    pub fn create_shifted(
        &self,
        id: &str,
        layers: &[Digest],
        shift: IdShift,
    ) -> Result<PathBuf, RootfsError> {
        if which_fuse_overlayfs().is_none() {
            return Err(RootfsError::Unavailable {
                driver: DriverKind::FuseOverlayfs,
                reason: "a pod with its own user namespace needs fuse-overlayfs \
                         (apt-get install fuse-overlayfs)"
                    .into(),
            });
        }
        self.create_record(RootfsRecord {
            id: id.to_owned(),
            driver: DriverKind::FuseOverlayfs,
            layers: self.visible_layers(layers),
            readonly: false,
            shift: Some(shift),
        })
    }

    fn create_record(&self, record: RootfsRecord) -> Result<PathBuf, RootfsError> {
        let id = record.id.clone();
        let id = id.as_str();
        let result = self.prepare(&record).and_then(|()| self.mount(&record));
        if result.is_err() {
            let _ = self.remove(id);
        }
        result.map(|()| self.mountpoint(id))
    }

    fn prepare(&self, record: &RootfsRecord) -> Result<(), RootfsError> {
        let dir = self.dir(&record.id);
        for sub in ["upper", "work", "merged"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io_err(format!("creating {}", dir.display())))?;
        }
        self.secure(&dir, record.shift)?;
        for layer in &record.layers {
            self.short_link(layer)?;
        }
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| io_err("encoding rootfs.json")(e.into()))?;
        crate::fsutil::write_file_atomic(&dir.join("rootfs.json"), &json)
            .map_err(io_err("writing rootfs.json"))
    }

    /// `l/<short>` → `../layers/<chain>/diff`, checked to exist.
    fn short_link(&self, layer: &Digest) -> Result<String, RootfsError> {
        let diff = self.root.join("layers").join(layer.hex()).join("diff");
        if !diff.is_dir() {
            return Err(RootfsError::MissingLayer(layer.clone()));
        }
        let name = layer.hex()[..SHORT_LINK].to_owned();
        let link = self.root.join("l").join(&name);
        if fs::symlink_metadata(&link).is_err() {
            let target = Path::new("../layers").join(layer.hex()).join("diff");
            match std::os::unix::fs::symlink(&target, &link) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(io_err(format!("linking {}", link.display()))(e))
                }
                _ => {}
            }
        }
        Ok(format!("l/{name}"))
    }

    /// The container's dir is the user's alone (0700): what the container
    /// writes is in `upper`, whose mode is that of the image's root. With a
    /// pod user namespace, crun reaches `merged` as the pod's root, so its
    /// group (the pod's gid 0) may traverse it (0710); no one else can.
    fn secure(&self, dir: &Path, shift: Option<IdShift>) -> Result<(), RootfsError> {
        let securing = || io_err(format!("securing {}", dir.display()));
        let mode = match shift {
            None => 0o700,
            Some(shift) => {
                std::os::unix::fs::chown(dir, None, Some(shift.gid)).map_err(securing())?;
                0o710
            }
        };
        crate::set_mode(dir, mode).map_err(securing())
    }

    fn mount(&self, record: &RootfsRecord) -> Result<(), RootfsError> {
        match record.driver {
            DriverKind::Overlay => self.mount_overlay(record, "mount"),
            DriverKind::FuseOverlayfs => self.mount_overlay(record, "fuse-overlayfs"),
            DriverKind::Vfs => self.copy_layers(record),
        }
    }

    /// Overlay options with lower dirs relative to the store root (the
    /// command runs there), top layer first.
    fn overlay_options(&self, record: &RootfsRecord, kernel: bool) -> Result<String, RootfsError> {
        self.overlay_options_from(record, kernel, Path::new(""))
    }

    /// Overlay options with lower dirs under `base` (the store root, or
    /// empty for paths relative to it).
    fn overlay_options_from(
        &self,
        record: &RootfsRecord,
        kernel: bool,
        base: &Path,
    ) -> Result<String, RootfsError> {
        let lowers: Vec<String> = record
            .layers
            .iter()
            .rev()
            .map(|l| {
                self.short_link(l)
                    .map(|link| base.join(link).display().to_string())
            })
            .collect::<Result<_, _>>()?;
        let dir = self.dir(&record.id);
        let mut options = format!("lowerdir={}", lowers.join(":"));
        if !record.readonly {
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                dir.join("upper").display(),
                dir.join("work").display()
            ));
        }
        if kernel {
            options.push_str(",userxattr");
        }
        if let Some(shift) = record.shift {
            // allow_other: the pod's processes run as other ids than ours.
            options.push_str(&format!(
                ",uidmapping=0:{uid}:{n},gidmapping=0:{gid}:{n},allow_other",
                uid = shift.uid,
                gid = shift.gid,
                n = shift.length
            ));
        }
        Ok(options)
    }

    fn mount_overlay(&self, record: &RootfsRecord, program: &str) -> Result<(), RootfsError> {
        let kernel = program == "mount";
        let options = self.overlay_options(record, kernel)?;
        let target = self.mountpoint(&record.id);
        if kernel {
            // mount(2) itself, with the lower dirs spelled out from the
            // store root, when they fit in the one page the kernel reads;
            // else mount(8), which runs in the store root and passes them
            // relative.
            let absolute = self.overlay_options_from(record, kernel, &self.root)?;
            if absolute.len() < MOUNT_DATA_MAX {
                let flags = if record.readonly {
                    nix::mount::MsFlags::MS_RDONLY
                } else {
                    nix::mount::MsFlags::empty()
                };
                return nix::mount::mount(
                    Some("overlay"),
                    &target,
                    Some("overlay"),
                    flags,
                    Some(absolute.as_str()),
                )
                .map_err(|e| {
                    io_err(format!(
                        "mounting overlay on {} ({absolute})",
                        target.display()
                    ))(e.into())
                });
            }
        }
        let mut cmd = Command::new(program);
        if kernel {
            cmd.args(["-t", "overlay", "overlay", "-o", &options]);
            if record.readonly {
                cmd.args(["-o", "ro"]);
            }
        } else {
            cmd.args(["-o", &options]);
        }
        cmd.arg(&target).current_dir(&self.root);
        run(&mut cmd)
    }

    /// vfs: copy the layers bottom-up into the mountpoint, applying whiteouts.
    fn copy_layers(&self, record: &RootfsRecord) -> Result<(), RootfsError> {
        let target = self.mountpoint(&record.id);
        for layer in &record.layers {
            let diff = self.root.join("layers").join(layer.hex()).join("diff");
            apply_layer(&diff, &target)?;
        }
        if record.readonly {
            run(Command::new("mount")
                .args(["--bind", "-o", "ro"])
                .arg(&target)
                .arg(&target))?;
        }
        Ok(())
    }

    /// Unmounts and deletes container `id`'s root filesystem; a missing one
    /// is fine (removal is idempotent).
    ///
    /// The record goes first: a root filesystem without one is being made
    /// or removed, and [`Rootfs::recover`] finishes the removal of what a
    /// kill interrupted.
    pub fn remove(&self, id: &str) -> Result<(), RootfsError> {
        let dir = self.dir(id);
        if !dir.exists() {
            return Ok(());
        }
        let target = self.mountpoint(id);
        while is_mounted(&target) {
            unmount(&target)?;
        }
        let record = dir.join("rootfs.json");
        match fs::remove_file(&record) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("removing {}", record.display()))(e));
            }
            _ => {}
        }
        fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))
    }

    /// True when container `id`'s root filesystem is mounted (vfs copies
    /// count as mounted when their record exists).
    pub fn is_mounted(&self, id: &str) -> bool {
        match self.record(id) {
            Ok(r) if r.driver == DriverKind::Vfs && !r.readonly => true,
            Ok(_) => is_mounted(&self.mountpoint(id)),
            Err(_) => false,
        }
    }

    /// The record of container `id`.
    pub fn record(&self, id: &str) -> Result<RootfsRecord, RootfsError> {
        let path = self.dir(id).join("rootfs.json");
        let bytes = fs::read(&path).map_err(|_| RootfsError::NotFound(id.to_owned()))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| io_err(format!("reading {}", path.display()))(e.into()))
    }

    /// Bytes and inodes of container `id`'s writable layer.
    pub fn usage(&self, id: &str) -> Usage {
        disk_usage(&self.upper(id))
    }

    /// The ids of every root filesystem in the store.
    pub fn ids(&self) -> Vec<String> {
        fs::read_dir(self.root.join("containers"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// After a restart: remounts the root filesystems of `live` containers
    /// whose mount is gone, and unmounts and removes those of containers that
    /// no longer exist.
    pub fn recover(&self, live: &HashSet<String>) -> Result<Recovery, RootfsError> {
        let mut report = Recovery::default();
        let containers = self.root.join("containers");
        let entries = fs::read_dir(&containers)
            .map_err(io_err(format!("listing {}", containers.display())))?;
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            let unfinished = matches!(self.record(&id), Err(RootfsError::NotFound(_)));
            if !live.contains(&id) || unfinished {
                self.remove(&id)?;
                report.removed.push(id);
                continue;
            }
            match self.remount(&id) {
                Ok(true) => report.remounted.push(id),
                Ok(false) => {}
                Err(e) => report.failed.push((id, e.to_string())),
            }
        }
        Ok(report)
    }

    /// Mounts container `id`'s root filesystem again if its mount is gone;
    /// true when it did.
    fn remount(&self, id: &str) -> Result<bool, RootfsError> {
        let record = self.record(id)?;
        // Containers made before their dirs were private become so.
        self.secure(&self.dir(id), record.shift)?;
        if self.is_mounted(id) {
            return Ok(false);
        }
        self.mount(&record)?;
        Ok(true)
    }

    /// Every mount under this store, from `/proc/self/mountinfo`.
    pub fn mounts_under_store(&self) -> Vec<PathBuf> {
        let root = self.root.display().to_string();
        mountpoints()
            .into_iter()
            .filter(|m| m.starts_with(&root))
            .collect()
    }
}

/// The kernel reads at most one page of mount options; below that with room.
const MOUNT_DATA_MAX: usize = 4000;

fn run(cmd: &mut Command) -> Result<(), RootfsError> {
    let describe = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(io_err(format!("running {describe}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(RootfsError::Command {
        program: describe,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

fn unmount(target: &Path) -> Result<(), RootfsError> {
    match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::Error::EBUSY) => nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io_err(format!("unmounting {}", target.display()))(e.into())),
        Err(e) => Err(io_err(format!("unmounting {}", target.display()))(e.into())),
    }
}

/// Mountpoints of the calling process's mount namespace.
pub fn mountpoints() -> Vec<PathBuf> {
    ucri_rootless::mounts::mountpoints()
}

fn is_mounted(target: &Path) -> bool {
    mountpoints().iter().any(|m| m == target)
}

/// Copies one layer's diff over `target`: 0:0 char devices delete what they
/// name, opaque directories are emptied first.
fn apply_layer(diff: &Path, target: &Path) -> Result<(), RootfsError> {
    let entries = fs::read_dir(diff).map_err(io_err(format!("reading {}", diff.display())))?;
    for entry in entries.flatten() {
        let src = entry.path();
        let dst = target.join(entry.file_name());
        let meta = fs::symlink_metadata(&src).map_err(io_err(format!("stat {}", src.display())))?;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            remove_any(&dst)?;
            continue;
        }
        if meta.is_dir() {
            copy_dir(&src, &dst)?;
            apply_layer(&src, &dst)?;
        } else {
            remove_any(&dst)?;
            copy_entry(&src, &dst)?;
        }
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> bool {
    [OPAQUE_XATTR, FUSE_OPAQUE_XATTR]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

/// Creates (or, for opaque source dirs, empties) `dst` with `src`'s metadata.
fn copy_dir(src: &Path, dst: &Path) -> Result<(), RootfsError> {
    match fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() && is_opaque(src) => {
            fs::remove_dir_all(dst).map_err(io_err(format!("emptying {}", dst.display())))?
        }
        Ok(m) if m.is_dir() => return copy_metadata_only(src, dst),
        Ok(_) => remove_any(dst)?,
        Err(_) => {}
    }
    fs::create_dir(dst).map_err(io_err(format!("mkdir {}", dst.display())))?;
    copy_metadata_only(src, dst)
}

/// Gives directory `dst` the owner, mode, xattrs and times of `src`
/// (not its contents). Overlay's opaque markers are not copied.
fn copy_metadata_only(src: &Path, dst: &Path) -> Result<(), RootfsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(src).map_err(io_err(format!("stat {}", src.display())))?;
    let owner = (
        Some(nix::unistd::Uid::from_raw(meta.uid())),
        Some(nix::unistd::Gid::from_raw(meta.gid())),
    );
    nix::unistd::fchownat(
        None,
        dst,
        owner.0,
        owner.1,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io_err(format!("chown {}", dst.display()))(e.into()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io_err(format!("chmod {}", dst.display())))?;
    for name in xattr::list(src).into_iter().flatten() {
        let name = name.to_string_lossy().into_owned();
        if name == OPAQUE_XATTR || name == FUSE_OPAQUE_XATTR {
            continue;
        }
        if let Ok(Some(value)) = xattr::get(src, &name) {
            let _ = xattr::set(dst, &name, &value);
        }
    }
    let time = |s: i64, ns: i64| nix::sys::time::TimeSpec::new(s, ns);
    let _ = nix::sys::stat::utimensat(
        None,
        dst,
        &time(meta.atime(), meta.atime_nsec()),
        &time(meta.mtime(), meta.mtime_nsec()),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
    Ok(())
}

/// Copies a file, symlink or special file with ownership, mode, times and
/// xattrs (reflink where the filesystem can).
fn copy_entry(src: &Path, dst: &Path) -> Result<(), RootfsError> {
    run(Command::new("cp")
        .args(["-a", "--reflink=auto", "--no-dereference"])
        .arg(src)
        .arg(dst))
}

fn remove_any(path: &Path) -> Result<(), RootfsError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return Ok(()),
    }
    .map_err(io_err(format!("removing {}", path.display())))
}

/// Layer chain IDs used by any container root filesystem under
/// `store_root`, which garbage collection must keep.
pub fn layers_in_use(store_root: &Path) -> HashSet<Digest> {
    let containers = store_root.join("containers");
    fs::read_dir(containers)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("rootfs.json")).ok())
        .filter_map(|b| serde_json::from_slice::<RootfsRecord>(&b).ok())
        .flat_map(|r| r.layers)
        .collect()
}

/// The driver the `auto` setting picks, and why: kernel overlay when a probe
/// mount works, else fuse-overlayfs when it and /dev/fuse are usable, else vfs.
pub fn choose_driver(scratch: &Path) -> (DriverKind, String) {
    match probe_here(scratch) {
        Ok(()) => (DriverKind::Overlay, "kernel overlayfs mounts in the user namespace (userxattr)".into()),
        Err(overlay) => match fuse_usable() {
            Ok(()) => (DriverKind::FuseOverlayfs, format!("kernel overlay unavailable ({overlay}); fuse-overlayfs works")),
            Err(fuse) => (DriverKind::Vfs, format!("kernel overlay unavailable ({overlay}); fuse-overlayfs unavailable ({fuse}): copying layers (slow)")),
        },
    }
}

/// Checks that `driver` can work here.
pub fn check_driver(driver: DriverKind, scratch: &Path) -> Result<(), RootfsError> {
    let result = match driver {
        DriverKind::Overlay => probe_here(scratch),
        DriverKind::FuseOverlayfs => fuse_usable(),
        DriverKind::Vfs => Ok(()),
    };
    result.map_err(|reason| RootfsError::Unavailable { driver, reason })
}

fn probe_here(scratch: &Path) -> Result<(), String> {
    let dir = scratch.join(format!(".rootfs-probe-{}", std::process::id()));
    let result = crate::probe::try_overlay_mount(&dir).map_err(|e| e.to_string());
    let _ = fs::set_permissions(
        dir.join("work/work"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    );
    let _ = fs::remove_dir_all(&dir);
    result
}

fn fuse_usable() -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("fuse-overlayfs").exists()))
        .unwrap_or(false);
    if !found {
        return Err("fuse-overlayfs is not installed".into());
    }
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(|_| ())
        .map_err(|e| format!("/dev/fuse: {e}"))
}

/// fuse-overlayfs on PATH, if installed.
fn which_fuse_overlayfs() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("fuse-overlayfs"))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opaque_layer_root_hides_the_layers_below_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let rootfs = Rootfs::new(dir.path(), DriverKind::Vfs).expect("rootfs");
        let layers: Vec<Digest> = ["a", "b", "c", "d"]
            .iter()
            .map(|s| Digest::of(s.as_bytes()))
            .collect();
        for l in &layers {
            fs::create_dir_all(dir.path().join("layers").join(l.hex()).join("diff")).expect("diff");
        }
        assert_eq!(
            rootfs.visible_layers(&layers),
            layers,
            "no opaque root: every layer"
        );
        let opaque = dir.path().join("layers").join(layers[2].hex()).join("diff");
        xattr::set(&opaque, OPAQUE_XATTR, b"y").expect("user xattrs on the test's file system");
        assert_eq!(
            rootfs.visible_layers(&layers),
            layers[2..].to_vec(),
            "c replaces a and b"
        );
    }
}
