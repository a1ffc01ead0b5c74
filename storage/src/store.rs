//! The on-disk store: blobs by digest, layers unpacked once per chain ID,
//! image records. Everything becomes visible by `rename` only when complete,
//! so an interrupted pull leaves nothing half-visible; `tmp/` is emptied and
//! unreferenced content collected when the store opens.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>          manifests, configs, compressed layers
//! ROOT/layers/<chain-hex>/diff/    an unpacked layer (overlay lower dir)
//! ROOT/layers/<chain-hex>/layer.json
//! ROOT/images/<id-hex>.json        image records
//! ROOT/tmp/                        work in progress
//! ```

use std::collections::HashSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, HashingWriter};
pub use crate::fsutil::{disk_usage, write_file_atomic, Usage};
use crate::stop::StopFlag;
use crate::unpack::{unpack_layer, Compression, UnpackError, UnpackLimits};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// Where.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Content did not match its digest or size.
    #[error("{what}: expected {expected}, got {actual}")]
    Mismatch {
        /// What was checked.
        what: String,
        /// The expected digest or size.
        expected: String,
        /// What the content has.
        actual: String,
    },
    /// A layer could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    /// The work was stopped through its [`StopFlag`]; it left nothing.
    #[error("stopped: its caller went away")]
    Stopped,
    /// A record on disk is unreadable.
    #[error("corrupt record {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
    let context = context.into();
    move |source| StoreError::Io { context, source }
}

/// One layer of an image, as the image record keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageLayer {
    /// Digest of the (compressed) blob.
    pub blob: Digest,
    /// The blob's media type.
    pub media_type: String,
    /// The blob's size.
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// The chain ID naming the unpacked layer.
    pub chain_id: Digest,
}

/// An image in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image ID: the digest of its config.
    pub id: Digest,
    /// `registry/repo:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:…` names.
    pub repo_digests: Vec<String>,
    /// Digest of the manifest (for one platform).
    pub manifest_digest: Digest,
    /// Layers, bottom first.
    pub layers: Vec<ImageLayer>,
    /// Unpacked size in bytes (sum of the layers' tar sizes).
    pub size: u64,
    /// When the image was stored, in Unix nanoseconds.
    pub stored_at: i64,
    /// Pinned images are never garbage-collected by kubelet.
    #[serde(default)]
    pub pinned: bool,
    /// The config's `User` (`uid[:gid]` or a name), empty when unset.
    #[serde(default)]
    pub user: String,
    /// Removed (RemoveImage) while containers still used it: hidden from
    /// every lookup, its content kept until the last of them is removed, as
    /// containerd's leases do.
    #[serde(default)]
    pub removed: bool,
}

impl ImageRecord {
    /// The blobs this image needs (manifest, config, layers).
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, &self.id]
            .into_iter()
            .chain(self.layers.iter().map(|l| &l.blob))
    }
}

/// A layer's own record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Its chain ID.
    pub chain_id: Digest,
    /// Its diff ID.
    pub diff_id: Digest,
    /// Length of its uncompressed tar.
    pub tar_size: u64,
}

/// The store rooted at one directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    counter: AtomicU64,
    limits: UnpackLimits,
}

impl Store {
    /// Opens (creating) the store and empties `tmp/` of interrupted work.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let store = Store {
            root: root.into(),
            counter: AtomicU64::new(0),
            limits: UnpackLimits::default(),
        };
        let tmp = store.root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(format!("emptying {}", tmp.display())))?;
        }
        for dir in ["blobs/sha256", "layers", "images", "tmp"] {
            let path = store.root.join(dir);
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        }
        // Content is the user's alone: images can come from private
        // registries. The store root is only traversable (see rootfs).
        for (dir, mode) in [
            ("", 0o711),
            ("blobs", 0o700),
            ("layers", 0o700),
            ("images", 0o700),
            ("tmp", 0o700),
        ] {
            let path = store.root.join(dir);
            crate::set_mode(&path, mode).map_err(io_err(format!("securing {}", path.display())))?;
        }
        Ok(store)
    }

    /// The same store, refusing layers that exceed `limits` when unpacking.
    pub fn with_unpack_limits(mut self, limits: UnpackLimits) -> Store {
        self.limits = limits;
        self
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// True when the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).exists()
    }

    /// A fresh path under `tmp/` for work in progress.
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Stores `data` as a blob; it must hash to `expected` when given.
    pub fn write_blob(&self, data: &[u8], expected: Option<&Digest>) -> Result<Digest, StoreError> {
        let tmp = self.temp_path("blob");
        let mut writer = self.blob_writer(&tmp)?;
        writer.write_all(data).map_err(io_err("writing a blob"))?;
        self.commit_blob(writer, &tmp, expected, None)
    }

    /// A hashing writer on a new temp file; finish with [`Store::commit_blob`].
    pub fn blob_writer(&self, tmp: &Path) -> Result<HashingWriter<fs::File>, StoreError> {
        let file = fs::File::create(tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        Ok(HashingWriter::new(file))
    }

    /// Verifies what `writer` wrote to `tmp` against `expected` digest and
    /// size, then moves it into place. On mismatch the temp file is removed.
    pub fn commit_blob(
        &self,
        writer: HashingWriter<fs::File>,
        tmp: &Path,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Digest, StoreError> {
        let (file, digest, size) = writer.finish();
        let result = verify(&digest, size, expected, expected_size).and_then(|()| {
            file.sync_all().map_err(io_err("fsync blob"))?;
            fs::rename(tmp, self.blob_path(&digest)).map_err(io_err("storing blob"))
        });
        if result.is_err() {
            let _ = fs::remove_file(tmp);
        }
        result.map(|()| digest)
    }

    /// Reads a whole blob (manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(io_err(format!("reading {}", path.display())))
    }

    /// The directory of the unpacked layer `chain_id`.
    pub fn layer_dir(&self, chain_id: &Digest) -> PathBuf {
        self.root.join("layers").join(chain_id.hex())
    }

    /// The overlay lower directory of layer `chain_id`.
    pub fn layer_diff(&self, chain_id: &Digest) -> PathBuf {
        self.layer_dir(chain_id).join("diff")
    }

    /// True when the layer is unpacked.
    pub fn has_layer(&self, chain_id: &Digest) -> bool {
        self.layer_dir(chain_id).join("layer.json").exists()
    }

    /// Unpacks blob `blob` as layer `chain_id`, checking its diff ID; once
    /// `stop` is raised it fails with [`StoreError::Stopped`] at its next
    /// read and leaves nothing behind.
    pub fn unpack_layer(
        &self,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
        chain_id: &Digest,
        stop: &StopFlag,
    ) -> Result<LayerRecord, StoreError> {
        let work = self.temp_path("layer");
        let result = self.unpack_into(&work, blob, media_type, diff_id, chain_id, stop);
        if result.is_err() {
            let _ = fs::remove_dir_all(&work);
        }
        match result {
            Err(_) if stop.is_raised() => Err(StoreError::Stopped),
            other => other,
        }
    }

    fn unpack_into(
        &self,
        work: &Path,
        blob: &Digest,
        media_type: &str,
        diff_id: &Digest,
        chain_id: &Digest,
        stop: &StopFlag,
    ) -> Result<LayerRecord, StoreError> {
        let diff = work.join("diff");
        fs::create_dir_all(&diff).map_err(io_err("creating a layer dir"))?;
        let path = self.blob_path(blob);
        let file = fs::File::open(&path).map_err(io_err(format!("opening {}", path.display())))?;
        let compression = compression_of(media_type, &path)?;
        let reader = std::io::BufReader::with_capacity(1 << 20, stop.reader(file));
        let out = unpack_layer(reader, compression, &diff, &self.limits)?;
        check_diff_id(&out, diff_id, blob)?;
        self.finish_layer(work, chain_id, diff_id, out.tar_size)
    }

    /// Writes the layer record into `work` and moves it into place.
    fn finish_layer(
        &self,
        work: &Path,
        chain_id: &Digest,
        diff_id: &Digest,
        tar_size: u64,
    ) -> Result<LayerRecord, StoreError> {
        let record = LayerRecord {
            chain_id: chain_id.clone(),
            diff_id: diff_id.clone(),
            tar_size,
        };
        write_json(&work.join("layer.json"), &record)?;
        let dest = self.layer_dir(chain_id);
        fs::rename(work, &dest).map_err(io_err(format!("storing layer {}", dest.display())))?;
        Ok(record)
    }

    /// Receives a layer blob as a byte stream and, in the same pass, stores
    /// it and unpacks it: the blob's digest and size and the layer's diff ID
    /// are verified before either becomes visible.
    pub fn ingest_layer<R: Read>(
        &self,
        blob: R,
        layer: &ImageLayer,
    ) -> Result<LayerRecord, StoreError> {
        let tmp_blob = self.temp_path("ingest");
        let work = self.temp_path("layer");
        let result = self.ingest_into(blob, layer, &tmp_blob, &work);
        if result.is_err() {
            let _ = fs::remove_file(&tmp_blob);
            let _ = fs::remove_dir_all(&work);
        }
        result
    }

    fn ingest_into<R: Read>(
        &self,
        blob: R,
        layer: &ImageLayer,
        tmp_blob: &Path,
        work: &Path,
    ) -> Result<LayerRecord, StoreError> {
        let diff = work.join("diff");
        fs::create_dir_all(&diff).map_err(io_err("creating a layer dir"))?;
        let mut writer = self.blob_writer(tmp_blob)?;
        let mut tee = BufReader::with_capacity(
            1 << 20,
            TeeReader {
                inner: blob,
                copy: &mut writer,
            },
        );
        let head = tee.fill_buf().map_err(io_err("reading the layer"))?;
        let compression = Compression::from_media_type(&layer.media_type)
            .unwrap_or_else(|| Compression::sniff(head));
        let out = unpack_layer(&mut tee, compression, &diff, &self.limits)?;
        std::io::copy(&mut tee, &mut std::io::sink()).map_err(io_err("reading the layer"))?;
        drop(tee);
        check_diff_id(&out, &layer.diff_id, &layer.blob)?;
        self.commit_blob(writer, tmp_blob, Some(&layer.blob), Some(layer.size))?;
        self.finish_layer(work, &layer.chain_id, &layer.diff_id, out.tar_size)
    }

    /// Saves an image record atomically.
    pub fn save_image(&self, image: &ImageRecord) -> Result<(), StoreError> {
        write_json(&self.image_path(&image.id), image)
    }

    /// Removes an image record (not its content: see [`Store::collect_garbage`]).
    pub fn delete_image(&self, id: &Digest) -> Result<(), StoreError> {
        match fs::remove_file(self.image_path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing image")(e)),
            _ => Ok(()),
        }
    }

    fn image_path(&self, id: &Digest) -> PathBuf {
        self.root.join("images").join(format!("{}.json", id.hex()))
    }

    /// Every image record.
    pub fn load_images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let entries = fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
        let mut images = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text =
                    fs::read(&path).map_err(io_err(format!("reading {}", path.display())))?;
                let image = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                images.push(image);
            }
        }
        Ok(images)
    }

    /// Deletes every blob and layer that no image in `keep` and no
    /// container root filesystem references.
    /// Returns how many entries were removed.
    pub fn collect_garbage(&self, keep: &[ImageRecord]) -> Result<usize, StoreError> {
        let blobs: HashSet<String> = keep
            .iter()
            .flat_map(|i| i.blobs())
            .map(|d| d.hex().to_owned())
            .collect();
        let in_use = crate::rootfs::layers_in_use(&self.root);
        let layers: HashSet<String> = keep
            .iter()
            .flat_map(|i| &i.layers)
            .map(|l| &l.chain_id)
            .chain(in_use.iter())
            .map(|d| d.hex().to_owned())
            .collect();
        // Each step runs even when one before it failed, so that one entry
        // that cannot go does not leave the rest (or the links) behind.
        let mut first_error = None;
        let mut removed = 0;
        for (dir, keep) in [("blobs/sha256", &blobs), ("layers", &layers)] {
            let (count, error) = remove_unlisted(&self.root.join(dir), keep);
            removed += count;
            first_error = first_error.or(error);
        }
        first_error = first_error.or(self.remove_dangling_links().err());
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }

    /// Removes the short `l/` links (overlay lowerdir names) whose layer is
    /// gone.
    fn remove_dangling_links(&self) -> Result<(), StoreError> {
        let dir = self.root.join("l");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let link = entry.path();
            if fs::symlink_metadata(&link).is_ok() && fs::metadata(&link).is_err() {
                fs::remove_file(&link).map_err(io_err(format!("removing {}", link.display())))?;
            }
        }
        Ok(())
    }

    /// Disk use of the whole store.
    pub fn usage(&self) -> Usage {
        disk_usage(&self.root)
    }
}

fn verify(
    digest: &Digest,
    size: u64,
    expected: Option<&Digest>,
    expected_size: Option<u64>,
) -> Result<(), StoreError> {
    if let Some(want) = expected_size.filter(|w| *w != size) {
        return Err(StoreError::Mismatch {
            what: "blob size".into(),
            expected: want.to_string(),
            actual: size.to_string(),
        });
    }
    match expected {
        Some(want) if want != digest => Err(StoreError::Mismatch {
            what: "blob digest".into(),
            expected: want.to_string(),
            actual: digest.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Checks the layer's diff ID, and says which entries it could not create.
fn check_diff_id(
    out: &crate::unpack::Unpacked,
    diff_id: &Digest,
    blob: &Digest,
) -> Result<(), StoreError> {
    if !out.skipped.is_empty() {
        tracing::warn!(
            layer = %blob,
            count = out.skipped.len(),
            entries = ?out.skipped.iter().take(10).collect::<Vec<_>>(),
            "layer entries that cannot be made without root (device nodes) were left out"
        );
    }
    if &out.diff_id == diff_id {
        return Ok(());
    }
    Err(StoreError::Mismatch {
        what: format!("diff ID of layer {blob}"),
        expected: diff_id.to_string(),
        actual: out.diff_id.to_string(),
    })
}

/// Copies everything read from `inner` into `copy` (the blob file).
struct TeeReader<'a, R, W> {
    inner: R,
    copy: &'a mut W,
}

impl<R: Read, W: Write> Read for TeeReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn compression_of(media_type: &str, blob: &Path) -> Result<Compression, StoreError> {
    if let Some(c) = Compression::from_media_type(media_type) {
        return Ok(c);
    }
    let mut head = [0u8; 4];
    let mut file = fs::File::open(blob).map_err(io_err("opening blob"))?;
    let n = std::io::Read::read(&mut file, &mut head).map_err(io_err("reading blob"))?;
    Ok(Compression::sniff(&head[..n]))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let data = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    write_file_atomic(path, &data).map_err(io_err(format!("writing {}", path.display())))
}

/// Removes every entry of `dir` not named in `keep`, going on past an entry
/// it cannot remove: how many went, and the first error.
fn remove_unlisted(dir: &Path, keep: &HashSet<String>) -> (usize, Option<StoreError>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return (0, Some(io_err(format!("listing {}", dir.display()))(e))),
    };
    let (mut removed, mut first_error) = (0, None);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        let path = entry.path();
        let result = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "cannot remove unreferenced store content");
                first_error =
                    first_error.or(Some(io_err(format!("removing {}", path.display()))(e)));
            }
        }
    }
    (removed, first_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_and_tmp_is_emptied_on_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let d = store.write_blob(b"hello", None).expect("write");
        assert!(store.has_blob(&d));
        let wrong = Digest::of(b"other");
        let err = store
            .write_blob(b"hello!", Some(&wrong))
            .expect_err("mismatch");
        assert!(err.to_string().contains("expected"), "{err}");
        fs::write(store.temp_path("junk"), b"x").expect("junk");
        drop(store);
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(
            fs::read_dir(store.root().join("tmp")).expect("tmp").count(),
            0
        );
    }

    #[test]
    fn garbage_collection_keeps_only_referenced_content() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let manifest = store.write_blob(b"m", None).expect("m");
        let config = store.write_blob(b"c", None).expect("c");
        let orphan = store.write_blob(b"orphan", None).expect("o");
        let image = ImageRecord {
            id: config.clone(),
            repo_tags: vec!["x:latest".into()],
            repo_digests: vec![],
            manifest_digest: manifest.clone(),
            layers: vec![],
            size: 0,
            stored_at: 0,
            pinned: false,
            user: String::new(),
            removed: false,
        };
        store.save_image(&image).expect("save");
        assert_eq!(store.load_images().expect("load"), vec![image.clone()]);
        let dangling = dir.path().join("l/0123456789abcdef0123");
        std::fs::create_dir_all(dir.path().join("l")).expect("mkdir l");
        std::os::unix::fs::symlink("../layers/gone/diff", &dangling).expect("link");
        assert_eq!(store.collect_garbage(&[image]).expect("gc"), 1);
        assert!(
            std::fs::symlink_metadata(&dangling).is_err(),
            "dangling l/ links go"
        );
        assert!(!store.has_blob(&orphan) && store.has_blob(&manifest) && store.has_blob(&config));
        assert!(store.usage().inodes > 0);
    }

    #[test]
    fn a_stopped_unpack_fails_and_leaves_nothing() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (its layer's files belong to other uids: chown)"
        );
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "f", &b"hello"[..])
            .expect("entry");
        let layer = tar.into_inner().expect("tar");
        let blob = store.write_blob(&layer, None).expect("blob");
        let diff_id = Digest::of(&layer);
        let stop = StopFlag::default();
        stop.raise();
        let err = store
            .unpack_layer(
                &blob,
                "application/vnd.oci.image.layer.v1.tar",
                &diff_id,
                &diff_id,
                &stop,
            )
            .expect_err("stopped");
        assert!(matches!(err, StoreError::Stopped), "{err}");
        assert!(!store.has_layer(&diff_id));
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        let unstopped = StopFlag::default();
        store
            .unpack_layer(
                &blob,
                "application/vnd.oci.image.layer.v1.tar",
                &diff_id,
                &diff_id,
                &unstopped,
            )
            .expect("the same unpack, not stopped, succeeds");
        assert!(store.has_layer(&diff_id));
    }

    #[test]
    fn garbage_collection_goes_on_past_a_step_that_fails() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let layer = dir.path().join("layers/0123abcd");
        std::fs::create_dir_all(layer.join("diff")).expect("mkdir layer");
        std::fs::create_dir_all(dir.path().join("l")).expect("mkdir l");
        let link = dir.path().join("l/ABCDEFGHIJKLMNOPQRST");
        std::os::unix::fs::symlink("../layers/0123abcd/diff", &link).expect("link");
        std::fs::remove_dir_all(dir.path().join("blobs/sha256")).expect("break blobs/");
        let err = store
            .collect_garbage(&[])
            .expect_err("blobs/ cannot be listed");
        assert!(err.to_string().contains("blobs"), "{err}");
        assert!(!layer.exists(), "the layers are still collected");
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "and their links, once dangling, still go"
        );
    }
}
