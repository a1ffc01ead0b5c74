//! Importing images for air-gapped use, as `kind load` does: an OCI image
//! layout (directory or tar) or a `docker save` archive goes into the store
//! with its names. Every blob is verified against its digest on the way in.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use ucri_storage::digest::{chain_ids, Digest, HashingWriter};
use ucri_storage::stop::StopFlag;
use ucri_storage::store::{ImageLayer, ImageRecord, Store};

use super::reference::{self, ImageName, Parsed, DOCKER_HUB};
use super::{layer_sizes, ImageError, Images};

const REF_NAME: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME: &str = "io.containerd.image.name";
const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

#[derive(Debug, Deserialize)]
struct Index {
    manifests: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Entry,
    layers: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct DockerSaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigRootFs {
    rootfs: RootFs,
    #[serde(default)]
    config: Option<RunConfig>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RunConfig {
    #[serde(rename = "User", default)]
    user: Option<String>,
}

impl Images {
    /// Imports every image of the archive or layout at `path`; images named
    /// only by a tag get the repository `localhost/<file stem>`.
    pub async fn import(&self, path: PathBuf) -> Result<Vec<ImageRecord>, ImageError> {
        let _shared = self.gc.read().await;
        let store = self.store.clone();
        // A client that goes away drops this future: the guard stops the
        // copies and unpacks at their next read.
        let stop = StopFlag::default();
        let _stop_when_dropped = stop.raise_on_drop();
        let records = tokio::task::spawn_blocking(move || import_path(&store, &path, &stop))
            .await
            .map_err(|e| ImageError::Config(format!("import task: {e}")))??;
        drop(_shared);
        let mut added = Vec::new();
        for record in records {
            added.push(self.add(record)?);
        }
        if added.is_empty() {
            self.collect_garbage().await?;
        }
        Ok(added)
    }
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> ImageError {
    ImageError::InvalidArgument(format!("{}: {what}", path.display()))
}

fn import_path(
    store: &Store,
    path: &Path,
    stop: &StopFlag,
) -> Result<Vec<ImageRecord>, ImageError> {
    let meta = fs::metadata(path).map_err(|e| invalid(path, e))?;
    if meta.is_dir() {
        return import_dir(store, path, &default_repo(path), stop);
    }
    let work = store.temp_path("import");
    let result = extract(path, &work, stop)
        .and_then(|()| import_dir(store, &work, &default_repo(path), stop));
    let _ = fs::remove_dir_all(&work);
    result
}

fn default_repo(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "localhost/{}",
        if clean.is_empty() {
            "imported".into()
        } else {
            clean
        }
    )
}

/// Extracts a (possibly gzip-compressed) tar; the tar crate refuses entries
/// that would land outside `dest`.
fn extract(archive: &Path, dest: &Path, stop: &StopFlag) -> Result<(), ImageError> {
    fs::create_dir_all(dest).map_err(|e| invalid(dest, e))?;
    let mut file = fs::File::open(archive).map_err(|e| invalid(archive, e))?;
    let mut head = [0u8; 2];
    let n = file.read(&mut head).map_err(|e| invalid(archive, e))?;
    let file = stop.reader(fs::File::open(archive).map_err(|e| invalid(archive, e))?);
    let reader: Box<dyn Read> = if n == 2 && head == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    tar::Archive::new(reader)
        .unpack(dest)
        .map_err(|e| invalid(archive, format!("not a readable tar: {e}")))
}

fn import_dir(
    store: &Store,
    dir: &Path,
    repo: &str,
    stop: &StopFlag,
) -> Result<Vec<ImageRecord>, ImageError> {
    if dir.join("manifest.json").exists() {
        import_docker_save(store, dir, stop)
    } else if dir.join("index.json").exists() {
        import_oci_layout(store, dir, repo, stop)
    } else {
        Err(invalid(
            dir,
            "neither an OCI image layout (index.json) nor a docker save archive (manifest.json)",
        ))
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(|e| invalid(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| invalid(path, e))
}

fn import_oci_layout(
    store: &Store,
    dir: &Path,
    repo: &str,
    stop: &StopFlag,
) -> Result<Vec<ImageRecord>, ImageError> {
    let index: Index = read_json(&dir.join("index.json"))?;
    let mut records = Vec::new();
    for entry in &index.manifests {
        let names = oci_names(entry, repo)?;
        let manifest_entry = resolve_index_entry(dir, entry)?;
        let digest = parse_digest(dir, &manifest_entry.digest)?;
        let bytes = read_blob(dir, &digest)?;
        store.write_blob(&bytes, Some(&digest))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| invalid(dir, e))?;
        let blob_path = |d: &Digest| dir.join("blobs/sha256").join(d.hex());
        let descriptors: Vec<(PathBuf, String)> = manifest
            .layers
            .iter()
            .map(|l| {
                Ok((
                    blob_path(&parse_digest(dir, &l.digest)?),
                    l.media_type.clone(),
                ))
            })
            .collect::<Result<_, ImageError>>()?;
        let config_path = blob_path(&parse_digest(dir, &manifest.config.digest)?);
        records.push(store_image(
            store,
            &config_path,
            &descriptors,
            digest,
            names,
            stop,
        )?);
    }
    Ok(records)
}

/// Names from the annotations: a full reference, or a tag under `repo`.
fn oci_names(entry: &Entry, repo: &str) -> Result<Vec<ImageName>, ImageError> {
    let annotated = entry
        .annotations
        .get(CONTAINERD_NAME)
        .or_else(|| entry.annotations.get(REF_NAME));
    let Some(name) = annotated else {
        return Ok(vec![]);
    };
    let full = if name.contains('/') || name.contains(':') {
        name.clone()
    } else {
        format!("{repo}:{name}")
    };
    Ok(qualify(&full).into_iter().collect())
}

fn qualify(name: &str) -> Option<ImageName> {
    match reference::parse(name).ok()? {
        Parsed::Qualified(n) => Some(n),
        Parsed::Short {
            repository,
            tag,
            digest,
        } => Some(ImageName::new(DOCKER_HUB, &repository, tag, digest)),
    }
}

/// An index entry that is itself an index resolves to linux/<host arch>.
fn resolve_index_entry(dir: &Path, entry: &Entry) -> Result<Entry, ImageError> {
    if !entry.media_type.contains("index") && !entry.media_type.contains("manifest.list") {
        return Ok(Entry {
            media_type: entry.media_type.clone(),
            digest: entry.digest.clone(),
            annotations: Default::default(),
            platform: None,
        });
    }
    let nested: Index =
        serde_json::from_slice(&read_blob(dir, &parse_digest(dir, &entry.digest)?)?)
            .map_err(|e| invalid(dir, e))?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    nested
        .manifests
        .into_iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p["os"] == "linux" && p["architecture"] == arch)
        })
        .ok_or_else(|| invalid(dir, format!("no linux/{arch} image in the index")))
}

fn import_docker_save(
    store: &Store,
    dir: &Path,
    stop: &StopFlag,
) -> Result<Vec<ImageRecord>, ImageError> {
    let entries: Vec<DockerSaveEntry> = read_json(&dir.join("manifest.json"))?;
    let mut records = Vec::new();
    for entry in entries {
        let config_path = dir.join(&entry.config);
        let layers: Vec<(PathBuf, String)> = entry
            .layers
            .iter()
            .map(|l| (dir.join(l), DOCKER_TAR.to_owned()))
            .collect();
        let names: Vec<ImageName> = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| qualify(t))
            .collect();
        let manifest = synthesize_manifest(&config_path, &layers)?;
        let manifest_digest = store.write_blob(&manifest, None)?;
        records.push(store_image(
            store,
            &config_path,
            &layers,
            manifest_digest,
            names,
            stop,
        )?);
    }
    Ok(records)
}

/// docker save has no registry manifest; an OCI one is made for the record.
fn synthesize_manifest(config: &Path, layers: &[(PathBuf, String)]) -> Result<Vec<u8>, ImageError> {
    let describe = |path: &Path, media: &str| -> Result<serde_json::Value, ImageError> {
        let bytes = fs::read(path).map_err(|e| invalid(path, e))?;
        Ok(
            serde_json::json!({"mediaType": media, "digest": Digest::of(&bytes).to_string(), "size": bytes.len()}),
        )
    };
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|(p, m)| describe(p, m))
        .collect::<Result<_, _>>()?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": describe(config, "application/vnd.oci.image.config.v1+json")?,
        "layers": layer_descs,
    });
    Ok(serde_json::to_vec(&manifest).unwrap_or_default())
}

/// Copies the config and layer blobs in (verifying digests), unpacks the
/// layers and returns the image record.
fn store_image(
    store: &Store,
    config_path: &Path,
    layers: &[(PathBuf, String)],
    manifest_digest: Digest,
    names: Vec<ImageName>,
    stop: &StopFlag,
) -> Result<ImageRecord, ImageError> {
    let config_bytes = fs::read(config_path).map_err(|e| invalid(config_path, e))?;
    let expected = config_path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            format!("sha256:{}", n.trim_end_matches(".json"))
                .parse()
                .ok()
        });
    let id = store.write_blob(&config_bytes, expected.as_ref())?;
    let config: ConfigRootFs =
        serde_json::from_slice(&config_bytes).map_err(|e| invalid(config_path, e))?;
    let diff_ids: Vec<Digest> = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| parse_digest(config_path, d))
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != layers.len() {
        return Err(invalid(
            config_path,
            "layer count does not match the config's diff_ids",
        ));
    }
    let mut image_layers = Vec::new();
    for (((path, media), diff_id), chain_id) in
        layers.iter().zip(&diff_ids).zip(chain_ids(&diff_ids))
    {
        let (blob, size) = copy_blob(store, path, stop)?;
        if !store.has_layer(&chain_id) {
            store
                .unpack_layer(&blob, media, diff_id, &chain_id, stop)
                .map_err(super::store_error)?;
        }
        image_layers.push(ImageLayer {
            blob,
            media_type: media.clone(),
            size,
            diff_id: diff_id.clone(),
            chain_id,
        });
    }
    Ok(ImageRecord {
        id: id.clone(),
        repo_tags: names.iter().filter_map(ImageName::tagged).collect(),
        repo_digests: names
            .iter()
            .map(|n| n.with_digest(&manifest_digest))
            .collect(),
        manifest_digest,
        size: layer_sizes(store, &image_layers),
        layers: image_layers,
        stored_at: super::now_nanos(),
        pinned: false,
        user: config.config.and_then(|c| c.user).unwrap_or_default(),
        removed: false,
    })
}

/// Streams a file into the store; a blob named by its digest (OCI layouts)
/// must match it.
fn copy_blob(store: &Store, path: &Path, stop: &StopFlag) -> Result<(Digest, u64), ImageError> {
    let expected: Option<Digest> = path
        .parent()
        .filter(|p| p.ends_with("blobs/sha256"))
        .and_then(|_| path.file_name()?.to_str().map(|h| format!("sha256:{h}")))
        .and_then(|d| d.parse().ok());
    let tmp = store.temp_path("import-blob");
    let mut writer: HashingWriter<fs::File> = store.blob_writer(&tmp)?;
    let mut file = stop.reader(fs::File::open(path).map_err(|e| invalid(path, e))?);
    let size = std::io::copy(&mut file, &mut writer).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        invalid(path, e)
    })?;
    let digest = store
        .commit_blob(writer, &tmp, expected.as_ref(), None)
        .map_err(super::store_error)?;
    Ok((digest, size))
}

fn read_blob(dir: &Path, digest: &Digest) -> Result<Vec<u8>, ImageError> {
    let path = dir.join("blobs/sha256").join(digest.hex());
    let bytes = fs::read(&path).map_err(|e| invalid(&path, e))?;
    if &Digest::of(&bytes) != digest {
        return Err(ImageError::Corrupt(format!(
            "{}: content does not match its digest",
            path.display()
        )));
    }
    Ok(bytes)
}

fn parse_digest(path: &Path, s: &str) -> Result<Digest, ImageError> {
    s.parse().map_err(|e| invalid(path, e))
}
