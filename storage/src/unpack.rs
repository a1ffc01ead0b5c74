//! Unpacking one image layer (a tar stream, possibly compressed) into an
//! empty directory, the way overlay-in-a-user-namespace wants it:
//! OCI whiteouts `.wh.NAME` become 0:0 character devices, opaque markers
//! `.wh..wh..opq` become the `user.overlay.opaque` xattr (and fuse-overlayfs'
//! `user.fuseoverlayfs.opaque`).
//!
//! Security: no entry ever writes outside the destination. Names with `..`
//! or a leading `/`, parents that are symlinks, and hard links that leave
//! the layer are rejected, and the whole layer with them.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{mknod, Mode, SFlag};
use nix::unistd::{Gid, Uid};

use crate::digest::{Digest, HashingReader};

/// Opaque-directory xattr read by kernel overlayfs mounted with `userxattr`.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// Opaque-directory xattr read by fuse-overlayfs.
pub const FUSE_OPAQUE_XATTR: &str = "user.fuseoverlayfs.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// From an OCI or Docker layer media type; `None` for unknown types.
    pub fn from_media_type(media_type: &str) -> Option<Compression> {
        let m = media_type;
        if m.ends_with("+gzip") || m.ends_with(".tar.gzip") {
            Some(Compression::Gzip)
        } else if m.ends_with("+zstd") || m.ends_with(".tar.zstd") {
            Some(Compression::Zstd)
        } else if m.ends_with(".tar") || m.ends_with("layer.v1.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// From the first bytes of the blob.
    pub fn sniff(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// Errors unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// Reading the archive or writing files failed.
    #[error("{context}: {source}")]
    Io {
        /// Where.
        context: String,
        /// The cause.
        source: io::Error,
    },
    /// The layer tries to write outside its root.
    #[error("layer rejected: entry {entry:?} {reason}")]
    Escape {
        /// The tar entry name.
        entry: String,
        /// Why it is unsafe.
        reason: &'static str,
    },
    /// An entry no layer may have (a whiteout of no file).
    #[error("layer rejected: entry {entry:?} {reason}")]
    Malformed {
        /// The tar entry name.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The layer is bigger than a limit allows.
    #[error("layer rejected: more than {limit} {what}")]
    TooLarge {
        /// Which limit.
        what: LimitKind,
        /// Its value.
        limit: u64,
    },
    /// A file belongs to an id the user namespace does not map.
    #[error(
        "{path} belongs to uid {uid} gid {gid}, which the user namespace does not map; \
         give the user a subordinate id range of 65536 ids (usermod --add-subuids/--add-subgids)"
    )]
    UnmappedOwner {
        /// The file.
        path: String,
        /// Its uid.
        uid: u64,
        /// Its gid.
        gid: u64,
    },
}

/// What a layer is measured by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Bytes of uncompressed tar.
    Bytes,
    /// Tar entries (files, directories, links, whiteouts).
    Entries,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::Bytes => "bytes uncompressed",
            LimitKind::Entries => "entries",
        })
    }
}

/// How big one layer may be once uncompressed: a layer is untrusted input
/// (a gzip bomb of a few MB unpacks to many GB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Most bytes of uncompressed tar.
    pub max_bytes: u64,
    /// Most tar entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    fn default() -> UnpackLimits {
        UnpackLimits {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// A reader that fails, and remembers it did, past `left` bytes.
struct Capped<'a, R> {
    inner: R,
    left: u64,
    tripped: &'a Cell<bool>,
}

impl<R: Read> Read for Capped<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte more than allowed is read to tell "exactly the limit"
        // from "over it".
        let want = buf
            .len()
            .min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            self.tripped.set(true);
            return Err(io::Error::other("the layer is over its size limit"));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
    let context = context.into();
    move |source| UnpackError::Io { context, source }
}

/// What an unpack produced.
#[derive(Debug, Clone)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar (must equal the config's diff_id).
    pub diff_id: Digest,
    /// Length of the uncompressed tar.
    pub tar_size: u64,
    /// Entries that could not be created rootless (device nodes), skipped.
    pub skipped: Vec<String>,
}

/// Unpacks `blob` (compressed as `compression`) into the empty directory
/// `dest`, refusing the layer when it exceeds `limits`.
pub fn unpack_layer<R: Read>(
    blob: R,
    compression: Compression,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    let tar_stream: Box<dyn Read> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(blob).map_err(io_err("zstd"))?)
        }
    };
    let tripped = Cell::new(false);
    let capped = Capped {
        inner: tar_stream,
        left: limits.max_bytes,
        tripped: &tripped,
    };
    let too_large = |e: UnpackError| {
        if tripped.get() {
            UnpackError::TooLarge {
                what: LimitKind::Bytes,
                limit: limits.max_bytes,
            }
        } else {
            e
        }
    };
    let mut hashing = HashingReader::new(capped);
    let mut unpacker = Unpacker::new(dest);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(io_err("reading the layer tar"))
            .map_err(too_large)?;
        for (count, entry) in (1u64..).zip(entries) {
            if count > limits.max_entries {
                return Err(UnpackError::TooLarge {
                    what: LimitKind::Entries,
                    limit: limits.max_entries,
                });
            }
            let entry = entry
                .map_err(io_err("reading a tar entry"))
                .map_err(too_large)?;
            unpacker.entry(entry).map_err(too_large)?;
        }
    }
    unpacker.finish()?;
    let (diff_id, tar_size) = hashing
        .finish()
        .map_err(io_err("reading the layer tar"))
        .map_err(too_large)?;
    Ok(Unpacked {
        diff_id,
        tar_size,
        skipped: unpacker.skipped,
    })
}

struct Unpacker<'a> {
    root: &'a Path,
    skipped: Vec<String>,
    dir_times: HashMap<PathBuf, i64>,
}

impl<'a> Unpacker<'a> {
    fn new(root: &'a Path) -> Self {
        Unpacker {
            root,
            skipped: Vec::new(),
            dir_times: HashMap::new(),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(rel) = sanitize(&raw)? else {
            return Ok(()); // the root itself ("./")
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.ensure_parents(parent, &raw)?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == OPAQUE_MARKER {
            return mark_opaque(&self.root.join(parent));
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(parent, hidden, &raw);
        }
        let target = self.root.join(&rel);
        self.create(&mut entry, &target, &raw)
    }

    /// A whiteout entry `.wh.NAME` in `parent`: hides NAME of the layers
    /// below. `.wh..wh.*` names other than the opaque marker are aufs
    /// metadata (its hard-link directory), skipped as containerd skips them;
    /// a whiteout of no file (`.wh.`, `.wh..`, `.wh...`) would name the
    /// directory itself or its parent, and is refused.
    fn whiteout(&self, parent: &Path, hidden: &str, raw: &str) -> Result<(), UnpackError> {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            tracing::debug!(entry = raw, "skipping aufs whiteout metadata");
            return Ok(());
        }
        if matches!(hidden, "" | "." | "..") {
            return Err(UnpackError::Malformed {
                entry: raw.into(),
                reason: "is a whiteout of no file",
            });
        }
        make_whiteout(&self.root.join(parent).join(hidden))
    }

    /// Creates every missing parent as a directory; refuses to go through
    /// anything that is not a real directory (a symlink could lead outside).
    fn ensure_parents(&self, parent: &Path, entry: &str) -> Result<(), UnpackError> {
        let mut path = self.root.to_path_buf();
        for component in parent.components() {
            path.push(component);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(UnpackError::Escape {
                        entry: entry.into(),
                        reason: "goes through a symlink or a file",
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&path).map_err(io_err(format!("mkdir {}", path.display())))?;
                }
                Err(e) => return Err(io_err(format!("stat {}", path.display()))(e)),
            }
        }
        Ok(())
    }

    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        raw: &str,
    ) -> Result<(), UnpackError> {
        let header = entry.header().clone();
        let kind = header.entry_type();
        if !kind.is_dir() {
            remove_existing(target)?;
        }
        match kind {
            tar::EntryType::Directory => create_dir(target)?,
            tar::EntryType::Regular | tar::EntryType::Continuous => write_file(entry, target)?,
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(io_err("link name"))?
                    .unwrap_or_default();
                std::os::unix::fs::symlink(&link, target)
                    .map_err(io_err(format!("symlink {raw}")))?;
            }
            tar::EntryType::Link => return self.hard_link(entry, target, raw),
            tar::EntryType::Fifo => {
                mknod(target, SFlag::S_IFIFO, Mode::from_bits_truncate(0o600), 0)
                    .map_err(|e| io_err(format!("mkfifo {raw}"))(e.into()))?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                tracing::debug!(
                    entry = raw,
                    "skipping a device node: mknod is denied rootless"
                );
                self.skipped.push(raw.into());
                return Ok(());
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => return Ok(()),
            other => {
                tracing::debug!(entry = raw, ?other, "skipping an unsupported tar entry");
                self.skipped.push(raw.into());
                return Ok(());
            }
        }
        self.apply_metadata(entry, &header, target, raw)
    }

    fn hard_link<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        raw: &str,
    ) -> Result<(), UnpackError> {
        let link = entry
            .link_name_bytes()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        let link = link.unwrap_or_default();
        let escape = |reason| UnpackError::Escape {
            entry: raw.into(),
            reason,
        };
        let rel = sanitize(&link).map_err(|_| escape("is a hard link that leaves the layer"))?;
        let rel = rel.ok_or_else(|| escape("is a hard link to the layer root"))?;
        self.ensure_parents(rel.parent().unwrap_or(Path::new("")), raw)?;
        let source = self.root.join(&rel);
        match fs::symlink_metadata(&source) {
            Ok(m) if !m.is_dir() => {}
            _ => return Err(escape("is a hard link to something not in this layer")),
        }
        fs::hard_link(&source, target).map_err(io_err(format!("link {raw}")))
    }

    fn apply_metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        header: &tar::Header,
        target: &Path,
        raw: &str,
    ) -> Result<(), UnpackError> {
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        chown(target, uid, gid, raw)?;
        let is_symlink = header.entry_type().is_symlink();
        if !is_symlink {
            let mode = header.mode().unwrap_or(0o644) & 0o7777;
            fs::set_permissions(target, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {raw}")))?;
        }
        apply_xattrs(entry, target, raw);
        let mtime = header.mtime().unwrap_or(0) as i64;
        if header.entry_type().is_dir() {
            self.dir_times.insert(target.to_path_buf(), mtime);
        } else {
            set_mtime(target, mtime);
        }
        Ok(())
    }

    /// Directory times last: creating children changed them.
    fn finish(&mut self) -> Result<(), UnpackError> {
        for (dir, mtime) in self.dir_times.drain() {
            set_mtime(&dir, mtime);
        }
        Ok(())
    }
}

/// The entry name as a relative path with only normal components; `None`
/// for the root itself. Absolute names and `..` are rejected.
fn sanitize(raw: &str) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape {
                    entry: raw.into(),
                    reason: "contains `..`",
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Escape {
                    entry: raw.into(),
                    reason: "is an absolute path",
                })
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

fn remove_existing(target: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(target),
        Ok(_) => fs::remove_file(target),
        Err(_) => Ok(()),
    }
    .map_err(io_err(format!("replacing {}", target.display())))
}

fn create_dir(target: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            remove_existing(target)?;
            fs::create_dir(target).map_err(io_err(format!("mkdir {}", target.display())))
        }
        Err(_) => fs::create_dir(target).map_err(io_err(format!("mkdir {}", target.display()))),
    }
}

fn write_file<R: Read>(entry: &mut tar::Entry<'_, R>, target: &Path) -> Result<(), UnpackError> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(target)
        .map_err(io_err(format!("create {}", target.display())))?;
    io::copy(entry, &mut file).map_err(io_err(format!("write {}", target.display())))?;
    Ok(())
}

fn chown(target: &Path, uid: u64, gid: u64, raw: &str) -> Result<(), UnpackError> {
    let to_id = |v: u64| u32::try_from(v).ok();
    let (Some(u), Some(g)) = (to_id(uid), to_id(gid)) else {
        return Err(UnpackError::UnmappedOwner {
            path: raw.into(),
            uid,
            gid,
        });
    };
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    match nix::unistd::fchownat(
        None,
        target,
        Some(Uid::from_raw(u)),
        Some(Gid::from_raw(g)),
        flags,
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => Err(UnpackError::UnmappedOwner {
            path: raw.into(),
            uid,
            gid,
        }),
        Err(e) => Err(io_err(format!("chown {raw}"))(e.into())),
    }
}

fn apply_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, target: &Path, raw: &str) {
    let Ok(Some(extensions)) = entry.pax_extensions() else {
        return;
    };
    for ext in extensions.flatten() {
        let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
            continue;
        };
        if let Err(e) = xattr::set(target, name, ext.value_bytes()) {
            tracing::debug!(entry = raw, xattr = name, %e, "skipping an xattr the user namespace may not set");
        }
    }
}

fn set_mtime(target: &Path, mtime: i64) {
    let t = nix::sys::time::TimeSpec::new(mtime, 0);
    let _ = nix::sys::stat::utimensat(
        None,
        target,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

/// A whiteout as overlayfs understands it: a 0:0 character device.
fn make_whiteout(target: &Path) -> Result<(), UnpackError> {
    remove_existing(target)?;
    mknod(target, SFlag::S_IFCHR, Mode::empty(), 0)
        .map_err(|e| io_err(format!("whiteout {}", target.display()))(e.into()))
}

fn mark_opaque(dir: &Path) -> Result<(), UnpackError> {
    for name in [OPAQUE_XATTR, FUSE_OPAQUE_XATTR] {
        xattr::set(dir, name, b"y").map_err(io_err(format!("marking {} opaque", dir.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_rejects_escapes_and_normalizes() {
        assert_eq!(sanitize("./a/b").expect("ok"), Some(PathBuf::from("a/b")));
        assert_eq!(sanitize("./").expect("ok"), None);
        assert!(sanitize("../x").is_err());
        assert!(sanitize("a/../../x").is_err());
        assert!(sanitize("/etc/passwd").is_err());
    }

    #[test]
    fn compression_from_media_types_and_magic() {
        use Compression::*;
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar"),
            Some(None)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Gzip)
        );
        assert_eq!(
            Compression::from_media_type("application/json"),
            Option::None
        );
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Gzip);
        assert_eq!(Compression::sniff(b"ustar"), None);
    }

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().expect("tar")
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(nix::unistd::getuid().as_raw().into());
        h.set_gid(nix::unistd::getgid().as_raw().into());
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).expect("append");
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(nix::unistd::getuid().as_raw().into());
        h.set_gid(nix::unistd::getgid().as_raw().into());
        h.set_entry_type(kind);
        b.append_link(&mut h, name, target).expect("append link");
    }

    #[test]
    fn regular_files_links_and_diff_id() {
        let data = tar_with(|b| {
            file(b, "dir/a.txt", b"hello");
            link(b, tar::EntryType::Symlink, "dir/sym", "a.txt");
            link(b, tar::EntryType::Link, "dir/hard", "dir/a.txt");
        });
        let dest = tempfile::tempdir().expect("tmp");
        let out = unpack_layer(
            &data[..],
            Compression::None,
            dest.path(),
            &UnpackLimits::default(),
        )
        .expect("unpack");
        assert_eq!(out.diff_id, Digest::of(&data));
        assert_eq!(
            fs::read(dest.path().join("dir/hard")).expect("read"),
            b"hello"
        );
        assert_eq!(
            fs::read_link(dest.path().join("dir/sym")).expect("link"),
            Path::new("a.txt")
        );
    }

    #[test]
    fn a_symlink_parent_cannot_lead_outside() {
        let outside = tempfile::tempdir().expect("tmp");
        let data = tar_with(|b| {
            link(
                b,
                tar::EntryType::Symlink,
                "evil",
                &outside.path().display().to_string(),
            );
            file(b, "evil/escaped.txt", b"x");
        });
        let dest = tempfile::tempdir().expect("tmp");
        let err = unpack_layer(
            &data[..],
            Compression::None,
            dest.path(),
            &UnpackLimits::default(),
        )
        .expect_err("rejected");
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
        assert!(!outside.path().join("escaped.txt").exists());
    }

    #[test]
    fn hard_links_out_of_the_layer_are_rejected() {
        let data = tar_with(|b| link(b, tar::EntryType::Link, "x", "../../etc/passwd"));
        let dest = tempfile::tempdir().expect("tmp");
        let err = unpack_layer(
            &data[..],
            Compression::None,
            dest.path(),
            &UnpackLimits::default(),
        )
        .expect_err("rejected");
        assert!(err.to_string().contains("hard link"), "{err}");
    }

    #[test]
    fn a_layer_over_its_byte_or_entry_limit_is_refused_and_one_at_it_is_not() {
        let data = tar_with(|b| {
            file(b, "a", &[7u8; 10_000]);
            file(b, "b", b"x");
        });
        let unpack = |limits: UnpackLimits| {
            let dest = tempfile::tempdir().expect("tmp");
            unpack_layer(&data[..], Compression::None, dest.path(), &limits)
        };
        let exact = UnpackLimits {
            max_bytes: data.len() as u64,
            max_entries: 2,
        };
        unpack(exact).expect("exactly at both limits");
        let err = unpack(UnpackLimits {
            max_bytes: data.len() as u64 - 1,
            ..exact
        })
        .expect_err("one byte over");
        assert!(
            matches!(
                err,
                UnpackError::TooLarge {
                    what: LimitKind::Bytes,
                    ..
                }
            ),
            "{err}"
        );
        let err = unpack(UnpackLimits {
            max_entries: 1,
            ..exact
        })
        .expect_err("one entry over");
        assert!(
            matches!(
                err,
                UnpackError::TooLarge {
                    what: LimitKind::Entries,
                    limit: 1
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn whiteouts_of_no_file_are_refused_and_remove_nothing() {
        for name in [".wh.", ".wh..", ".wh...", "dir/.wh.", "dir/.wh.."] {
            let root = tempfile::tempdir().expect("tmp");
            let dest = root.path().join("layer");
            fs::create_dir(&dest).expect("dest");
            fs::write(root.path().join("neighbour"), b"x").expect("neighbour");
            let data = tar_with(|b| {
                file(b, "dir/kept", b"x");
                file(b, name, b"");
            });
            let err = unpack_layer(
                &data[..],
                Compression::None,
                &dest,
                &UnpackLimits::default(),
            )
            .expect_err(name);
            assert!(
                matches!(err, UnpackError::Malformed { .. }),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("whiteout of no file"), "{err}");
            assert!(
                root.path().join("neighbour").exists(),
                "{name} removed a neighbour"
            );
            assert!(
                dest.join("dir/kept").exists(),
                "{name} removed its own directory"
            );
        }
    }

    #[test]
    fn aufs_whiteout_metadata_is_skipped() {
        let data = tar_with(|b| {
            file(b, ".wh..wh.plnk", b"");
            file(b, "dir/.wh..wh.aufs", b"");
            file(b, "dir/a", b"x");
        });
        let dest = tempfile::tempdir().expect("tmp");
        unpack_layer(
            &data[..],
            Compression::None,
            dest.path(),
            &UnpackLimits::default(),
        )
        .expect("aufs metadata is no error");
        assert!(dest.path().join("dir/a").exists());
        assert!(!dest.path().join("dir/.wh..wh.aufs").exists());
        for left in [".wh..wh.plnk", "plnk", "dir/aufs", ".wh.plnk"] {
            assert!(!dest.path().join(left).exists(), "{left}");
        }
    }

    mod properties {
        //! Fuzzing by properties: layers of hostile entries (`..`, absolute
        //! names, symlinks and hard links pointing anywhere, whiteouts,
        //! opaque markers, in any order) and arbitrary bytes. Whatever the
        //! unpacker answers, nothing appears outside the destination.
        use super::*;
        use proptest::prelude::*;

        /// Raw names, written into the header as they are (the tar
        /// crate's builder refuses `..`, an attacker's does not).
        fn name() -> impl Strategy<Value = String> {
            let part = prop_oneof![
                4 => Just("a".to_owned()),
                2 => Just("b".to_owned()),
                1 => Just("..".to_owned()),
                1 => Just(".".to_owned()),
                1 => Just("".to_owned()),
                1 => Just(".wh.a".to_owned()),
                1 => Just(".wh..wh..opq".to_owned()),
                1 => Just(".wh.".to_owned()),
                1 => Just(".wh..".to_owned()),
                1 => Just(".wh...".to_owned()),
                1 => "[a-z]{1,3}",
            ];
            (
                proptest::bool::weighted(0.2),
                proptest::collection::vec(part, 1..4),
            )
                .prop_map(|(absolute, parts)| {
                    let joined = parts.join("/");
                    if absolute {
                        format!("/{joined}")
                    } else {
                        joined
                    }
                })
        }

        #[derive(Debug, Clone)]
        enum Kind {
            File,
            Dir,
            Symlink(String),
            HardLink(String),
        }

        fn entry() -> impl Strategy<Value = (String, Kind)> {
            let kind = prop_oneof![
                Just(Kind::File),
                Just(Kind::Dir),
                name().prop_map(Kind::Symlink),
                Just(Kind::Symlink("../outside".to_owned())),
                name().prop_map(Kind::HardLink),
            ];
            (name(), kind)
        }

        /// The tar of `entries`; absolute link targets are moved under
        /// `outside`, so that following one is seen there.
        fn raw_tar(entries: &[(String, Kind)], outside: &Path) -> Vec<u8> {
            let mut out = Vec::new();
            let relocate = |t: &str| match t.strip_prefix('/') {
                Some(rest) => format!("{}/{rest}", outside.display()),
                None => t.to_owned(),
            };
            for (name, kind) in entries {
                let kind = match kind {
                    Kind::Symlink(t) => Kind::Symlink(relocate(t)),
                    Kind::HardLink(t) => Kind::HardLink(relocate(t)),
                    other => other.clone(),
                };
                let mut h = tar::Header::new_old();
                let (entry_type, link, data): (_, &str, &[u8]) = match &kind {
                    Kind::File => (tar::EntryType::Regular, "", b"data"),
                    Kind::Dir => (tar::EntryType::Directory, "", b""),
                    Kind::Symlink(t) => (tar::EntryType::Symlink, t, b""),
                    Kind::HardLink(t) => (tar::EntryType::Link, t, b""),
                };
                let bytes = h.as_old_mut();
                let n = name.len().min(99);
                assert!(link.len() < 100, "link target {link:?} fits the old header");
                bytes.name[..n].copy_from_slice(&name.as_bytes()[..n]);
                let l = link.len().min(99);
                bytes.linkname[..l].copy_from_slice(&link.as_bytes()[..l]);
                h.set_entry_type(entry_type);
                h.set_size(data.len() as u64);
                h.set_mode(0o755);
                h.set_uid(nix::unistd::getuid().as_raw().into());
                h.set_gid(nix::unistd::getgid().as_raw().into());
                h.set_cksum();
                out.extend_from_slice(h.as_bytes());
                out.extend_from_slice(data);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
            out.extend_from_slice(&[0u8; 1024]);
            out
        }

        /// Every path under `root`, relative to it.
        fn tree(root: &Path) -> Vec<PathBuf> {
            let mut out = Vec::new();
            let mut stack = vec![root.to_path_buf()];
            while let Some(dir) = stack.pop() {
                for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = e.path();
                    out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(path);
                    }
                }
            }
            out
        }

        proptest! {
            // 512 unless PROPTEST_CASES says otherwise: an escape needs a
            // link and then an entry under it, which 256 cases can miss.
            #![proptest_config(ProptestConfig::with_cases(
                std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(512)
            ))]

            #[test]
            fn hostile_layers_write_nothing_outside_the_destination(
                entries in proptest::collection::vec(entry(), 1..12),
            ) {
                let root = tempfile::tempdir().expect("tmp");
                let dest = root.path().join("layer");
                fs::create_dir(&dest).expect("dest");
                let outside = root.path().join("outside");
                fs::create_dir(&outside).expect("outside");
                fs::write(outside.join("kept"), b"x").expect("a file outside");
                let data = raw_tar(&entries, &outside);
                let _ = unpack_layer(&data[..], Compression::None, &dest, &UnpackLimits::default());
                let escaped: Vec<PathBuf> = tree(root.path())
                    .into_iter()
                    .filter(|p| {
                        !p.starts_with("layer")
                            && p != Path::new("outside")
                            && p != Path::new("outside/kept")
                    })
                    .collect();
                prop_assert!(escaped.is_empty(), "written outside: {:?}", escaped);
                prop_assert!(outside.join("kept").exists(), "removed outside the destination");
            }

            #[test]
            fn arbitrary_bytes_never_panic_the_unpacker(
                data in proptest::collection::vec(any::<u8>(), 0..4096),
                compression in prop_oneof![
                    Just(Compression::None),
                    Just(Compression::Gzip),
                    Just(Compression::Zstd),
                ],
            ) {
                let dest = tempfile::tempdir().expect("tmp");
                let _ = unpack_layer(&data[..], compression, dest.path(), &UnpackLimits::default());
            }
        }
    }
}
