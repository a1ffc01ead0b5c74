//! The image domain: pulling into the store, looking images up by id, tag
//! or digest, removing them, and accounting for the disk they use.

pub mod auth;
mod clients;
mod import;
pub mod lease;
mod pull;
pub mod reference;
pub mod registries;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tracing::Instrument;
use ucri_storage::digest::Digest;
use ucri_storage::store::{ImageLayer, ImageRecord, Store, StoreError, Usage};
use ucri_storage::unpack::{LimitKind, UnpackError, UnpackLimits};

use crate::config::ImageLimits;

use self::auth::{AuthFiles, RequestAuth};
use self::registries::{CandidateError, RegistriesConf, RegistriesError};

/// Errors of the image domain.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Malformed or unresolvable reference.
    #[error("{0}")]
    InvalidArgument(String),
    /// The image (or a manifest/blob of it) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The registry wants (other) credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The registry is blocked, or refused these credentials.
    #[error("{0}")]
    PermissionDenied(String),
    /// The registry cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// Content does not match its digest.
    #[error("{0}")]
    Corrupt(String),
    /// Configuration files are broken.
    #[error("{0}")]
    Config(String),
    /// The image exceeds a limit of `[image]`.
    #[error("{0}")]
    LimitExceeded(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CandidateError> for ImageError {
    fn from(e: CandidateError) -> ImageError {
        match e {
            CandidateError::Reference(r) => ImageError::InvalidArgument(r.to_string()),
            CandidateError::Registries(r) => r.into(),
        }
    }
}

impl From<RegistriesError> for ImageError {
    fn from(e: RegistriesError) -> ImageError {
        match e {
            RegistriesError::Blocked { .. } => ImageError::PermissionDenied(e.to_string()),
            RegistriesError::Unresolvable { .. } => ImageError::InvalidArgument(e.to_string()),
            RegistriesError::Invalid { .. } => ImageError::Config(e.to_string()),
        }
    }
}

/// How a lookup matched an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched {
    /// By image id (or id prefix).
    Id,
    /// By this `repo:tag`.
    Tag(String),
    /// By this `repo@digest`.
    Digest(String),
}

/// Async locks by key, so one blob or layer is fetched/unpacked once.
type KeyedLocks = crate::keyed_locks::KeyedLocks<tokio::sync::Mutex<()>>;

/// The image store with its index and pull machinery.
#[derive(Debug)]
pub struct Images {
    store: Arc<Store>,
    index: RwLock<BTreeMap<Digest, ImageRecord>>,
    locks: KeyedLocks,
    /// Pulls hold it shared; garbage collection exclusively.
    gc: tokio::sync::RwLock<()>,
    /// Held by [`Images::release_unused`] from its look at the records to
    /// the end of their collection.
    releasing: tokio::sync::Mutex<()>,
    config_home: PathBuf,
    home: PathBuf,
    /// The images containers are made from (see [`lease`]).
    leases: Arc<lease::LeaseTable>,
    limits: ImageLimits,
    /// registries.conf, read again only when one of its files changed.
    registries: registries::RegistriesCache,
    /// Registry clients kept from pull to pull.
    clients: clients::RegistryClients,
}

/// Ends a pull whose caller went away (the client cancelled, or its
/// deadline passed): the download stops, and garbage collection removes
/// what the pull had stored.
struct CancelOnDrop {
    task: Option<tokio::task::AbortHandle>,
    images: Arc<Images>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        task.abort();
        tracing::info!("pull cancelled by its caller");
        let images = self.images.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = images.collect_garbage().await {
                    tracing::warn!(%e, "cleaning up after a cancelled pull");
                }
            });
        }
    }
}

impl Images {
    /// Finds the image `spec` names and leases it, in one step: RemoveImage
    /// keeps its content until the lease is dropped.
    pub fn lease(&self, spec: &str) -> Option<(ImageRecord, lease::ImageLease)> {
        let mut leases = self.leases.lock();
        let (image, _) = self.lookup(spec)?;
        let lease = leases.take(&self.leases, &image.id);
        Some((image, lease))
    }

    /// Leases image `id` (removed images too), for the containers a
    /// restarted daemon finds; `None` when the store has no such image.
    pub fn lease_by_id(&self, id: &str) -> Option<lease::ImageLease> {
        let mut leases = self.leases.lock();
        let image = self
            .read_index()
            .values()
            .find(|r| r.id.to_string() == id)
            .map(|r| r.id.clone())?;
        Some(leases.take(&self.leases, &image))
    }

    /// Opens the store under `root`, loads the records and removes content
    /// that no image references (left by an interrupted pull).
    pub fn open(root: PathBuf, home: PathBuf, limits: ImageLimits) -> Result<Images, ImageError> {
        let store = Store::open(root)?.with_unpack_limits(UnpackLimits {
            max_bytes: limits.layer_size_max,
            max_entries: limits.layer_entries_max,
        });
        let records = store.load_images()?;
        let removed = store.collect_garbage(&records)?;
        if removed > 0 {
            tracing::info!(removed, "removed content left by interrupted pulls");
        }
        let index = records.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(Images {
            store: Arc::new(store),
            index: RwLock::new(index),
            locks: KeyedLocks::default(),
            gc: tokio::sync::RwLock::new(()),
            releasing: tokio::sync::Mutex::new(()),
            config_home: home.join(".config"),
            home,
            leases: Arc::default(),
            limits,
            registries: registries::RegistriesCache::default(),
            clients: clients::RegistryClients::default(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Refuses an image of more layers than `[image] layers_max`.
    fn check_layer_count(&self, what: &str, layers: usize) -> Result<(), ImageError> {
        let max = self.limits.layers_max;
        if layers as u64 > max {
            return Err(ImageError::LimitExceeded(format!(
                "{what} has {layers} layers, more than [image] layers_max ({max})"
            )));
        }
        Ok(())
    }

    fn registries(&self) -> Result<Arc<RegistriesConf>, ImageError> {
        Ok(self.registries.load(&self.config_home)?)
    }

    fn auth_files(&self) -> AuthFiles {
        AuthFiles::standard(&self.home)
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Digest, ImageRecord>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Digest, ImageRecord>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Every image (not those removed while in use).
    pub fn list(&self) -> Vec<ImageRecord> {
        self.read_index()
            .values()
            .filter(|r| !r.removed)
            .cloned()
            .collect()
    }

    /// Every record, those removed while in use too: what garbage
    /// collection keeps.
    fn records(&self) -> Vec<ImageRecord> {
        self.read_index().values().cloned().collect()
    }

    /// Finds a local image by id, id prefix, `repo:tag` or `repo@digest`
    /// (short names resolve as for pulls, plus Docker Hub).
    pub fn lookup(&self, spec: &str) -> Option<(ImageRecord, Matched)> {
        // A name with its registry is its own one candidate: registries.conf
        // (a directory read and a stat per file to see that it is unchanged)
        // is only for short names.
        let candidates = match reference::parse(spec) {
            Ok(reference::Parsed::Qualified(name)) => vec![name],
            _ => self.registries().unwrap_or_default().local_candidates(spec),
        };
        let index = self.read_index();
        let live = || index.values().filter(|r| !r.removed);
        for name in candidates {
            if let Some(digest) = &name.digest {
                let wanted = name.with_digest(digest);
                if let Some(r) = live().find(|r| r.repo_digests.contains(&wanted)) {
                    return Some((r.clone(), Matched::Digest(wanted)));
                }
            } else if let Some(tagged) = name.tagged() {
                if let Some(r) = live().find(|r| r.repo_tags.contains(&tagged)) {
                    return Some((r.clone(), Matched::Tag(tagged)));
                }
            }
        }
        lookup_by_id(&index, spec).map(|r| (r.clone(), Matched::Id))
    }

    /// Pulls `spec` (with the request's credentials, if any) on a task of
    /// its own: a client that hangs up does not cancel it half-way.
    pub async fn pull(
        self: &Arc<Self>,
        spec: &str,
        auth: Option<RequestAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let images = self.clone();
        let spec = spec.to_owned();
        let task = tokio::spawn(
            async move { images.pull_now(&spec, auth.as_ref()).await }.in_current_span(),
        );
        let mut cancel = CancelOnDrop {
            task: Some(task.abort_handle()),
            images: self.clone(),
        };
        let result = task.await;
        cancel.task = None;
        result.map_err(|e| {
            ImageError::Store(StoreError::Io {
                context: "pull task".into(),
                source: std::io::Error::other(e),
            })
        })?
    }

    async fn pull_now(
        &self,
        spec: &str,
        auth: Option<&RequestAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let registries = self.registries()?;
        let candidates = registries.candidates(spec)?;
        let searched = registries.is_search(spec);
        let result = self
            .pull_candidates(spec, &candidates, searched, auth)
            .await;
        if result.is_err() {
            self.collect_garbage().await?;
        }
        result
    }

    /// Removes what `spec` names: a tag of an image with several names only
    /// loses that name; otherwise the image goes, with content nothing else
    /// uses. Removing an absent image succeeds (CRI says it is idempotent).
    pub async fn remove(&self, spec: &str) -> Result<(), ImageError> {
        let Some((image, matched)) = self.lookup(spec) else {
            return Ok(());
        };
        let names = image.repo_tags.len() + image.repo_digests.len();
        if let Matched::Tag(tag) = &matched {
            if names > 1 && image.repo_tags.len() > 1 {
                return self.untag(&image, tag);
            }
        }
        {
            // Held while deciding and deleting: no lease is taken meanwhile.
            let leases = self.leases.lock();
            if leases.is_leased(&image.id) {
                return self.hide(&image);
            }
            self.store.delete_image(&image.id)?;
            self.write_index().remove(&image.id);
        }
        self.collect_garbage().await
    }

    /// Removes an image that containers still use: its names go and it is
    /// no longer found, its content stays for them (containerd does the same).
    fn hide(&self, image: &ImageRecord) -> Result<(), ImageError> {
        let mut hidden = image.clone();
        hidden.repo_tags.clear();
        hidden.repo_digests.clear();
        hidden.removed = true;
        self.store.save_image(&hidden)?;
        self.write_index().insert(hidden.id.clone(), hidden);
        tracing::info!(image = %image.id, "image removed; its content stays while containers use it");
        Ok(())
    }

    /// Deletes the images removed while in use that no container uses any
    /// more, with their content (after a container is removed).
    ///
    /// One release runs at a time, records and collection together: a
    /// second caller that finds the records gone has waited for their
    /// content to go too (RemovePodSandbox and the container clean-up both
    /// call this). With nothing to release, it waits only for a release
    /// under way, never for a pull.
    pub async fn release_unused(&self) -> Result<(), ImageError> {
        let _one_at_a_time = self.releasing.lock().await;
        {
            let leases = self.leases.lock();
            let unused: Vec<ImageRecord> = self
                .records()
                .into_iter()
                .filter(|r| r.removed && !leases.is_leased(&r.id))
                .collect();
            if unused.is_empty() {
                return Ok(());
            }
            for image in &unused {
                self.store.delete_image(&image.id)?;
                self.write_index().remove(&image.id);
            }
        }
        self.collect_garbage().await
    }

    fn untag(&self, image: &ImageRecord, tag: &str) -> Result<(), ImageError> {
        let mut updated = image.clone();
        updated.repo_tags.retain(|t| t != tag);
        self.store.save_image(&updated)?;
        self.write_index().insert(updated.id.clone(), updated);
        Ok(())
    }

    /// Records a pulled image under its names, moving tags from images
    /// that had them.
    fn add(&self, mut record: ImageRecord) -> Result<ImageRecord, ImageError> {
        let mut index = self.write_index();
        if let Some(existing) = index.get(&record.id) {
            merge_names(&mut record, existing);
            record.stored_at = existing.stored_at;
        }
        for other in index.values_mut().filter(|r| r.id != record.id) {
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| !record.repo_tags.contains(t));
            if other.repo_tags.len() != before {
                self.store.save_image(other)?;
            }
        }
        self.store.save_image(&record)?;
        index.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    async fn collect_garbage(&self) -> Result<(), ImageError> {
        let _exclusive = self.gc.write().await;
        let keep = self.records();
        self.store.collect_garbage(&keep)?;
        Ok(())
    }

    /// Disk use of the store.
    pub fn usage(&self) -> Usage {
        self.store.usage()
    }
}

fn merge_names(record: &mut ImageRecord, existing: &ImageRecord) {
    for t in &existing.repo_tags {
        if !record.repo_tags.contains(t) {
            record.repo_tags.push(t.clone());
        }
    }
    for d in &existing.repo_digests {
        if !record.repo_digests.contains(d) {
            record.repo_digests.push(d.clone());
        }
    }
}

fn lookup_by_id<'a>(
    index: &'a BTreeMap<Digest, ImageRecord>,
    spec: &str,
) -> Option<&'a ImageRecord> {
    let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
    if hex.len() < 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut matches = index
        .values()
        .filter(|r| !r.removed && r.id.hex().starts_with(hex));
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

pub(crate) use crate::clock::now_nanos;

/// Store failures: content mismatches are corruption, crafted layers are
/// invalid images, the rest internal.
pub(crate) fn store_error(e: StoreError) -> ImageError {
    match e {
        StoreError::Mismatch { .. } => ImageError::Corrupt(e.to_string()),
        StoreError::Unpack(u @ (UnpackError::Escape { .. } | UnpackError::Malformed { .. })) => {
            ImageError::InvalidArgument(u.to_string())
        }
        StoreError::Unpack(u @ UnpackError::TooLarge { what, .. }) => {
            let key = match what {
                LimitKind::Bytes => "layer_size_max",
                LimitKind::Entries => "layer_entries_max",
            };
            ImageError::LimitExceeded(format!("{u} ([image] {key})"))
        }
        StoreError::Unpack(u @ UnpackError::UnmappedOwner { .. }) => {
            ImageError::Config(u.to_string())
        }
        other => ImageError::Store(other),
    }
}

/// Sum of the unpacked layers' tar sizes.
pub(crate) fn layer_sizes(store: &Store, layers: &[ImageLayer]) -> u64 {
    layers
        .iter()
        .filter_map(|l| std::fs::read(store.layer_dir(&l.chain_id).join("layer.json")).ok())
        .filter_map(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .filter_map(|v| v["tar_size"].as_u64())
        .sum()
}
