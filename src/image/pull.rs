//! Pulling over the OCI distribution API with `oci-client`: manifests
//! (Docker v2 schema 2, OCI, indexes and manifest lists resolved to
//! linux/<host arch>), blobs streamed to disk and verified by digest and size,
//! layers fetched concurrently and unpacked as each arrives.

use futures::StreamExt;

use oci_client::client::ClientProtocol;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::Deserialize;
use ucri_storage::digest::{chain_ids, Digest};
use ucri_storage::stop::StopFlag;
use ucri_storage::store::{ImageLayer, ImageRecord, StoreError};

use super::auth::{self, RequestAuth};
use super::clients::RegistryClients;
use super::reference::ImageName;
use super::registries::Endpoint;
use super::{now_nanos, store_error, ImageError, Images};
use crate::config::ImageLimits;

/// Layers downloaded at once per pull.
const CONCURRENT_LAYERS: usize = 3;

const ACCEPTED_MANIFESTS: [&str; 4] = [
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

#[derive(Debug, Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<RunConfig>,
    rootfs: RootFs,
}

#[derive(Debug, Deserialize)]
struct RunConfig {
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RootFs {
    diff_ids: Vec<String>,
}

impl Images {
    /// Tries each candidate name, each through its endpoints (mirrors
    /// first). `searched` candidates come from the search registries: when
    /// none works the error names them all.
    pub(super) async fn pull_candidates(
        &self,
        spec: &str,
        candidates: &[ImageName],
        searched: bool,
        auth: Option<&RequestAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let mut failures = Vec::new();
        for name in candidates {
            match self.pull_name(name, auth).await {
                Ok(record) => return Ok(record),
                Err(e) if !searched => return Err(e),
                Err(
                    e @ (ImageError::NotFound(_)
                    | ImageError::Unavailable(_)
                    | ImageError::Unauthenticated(_)),
                ) => failures.push(format!("{name}: {e}")),
                Err(e) => return Err(e),
            }
        }
        Err(ImageError::InvalidArgument(format!(
            "short name {spec:?} did not resolve to a pullable image; tried {}",
            failures.join("; ")
        )))
    }

    async fn pull_name(
        &self,
        name: &ImageName,
        auth: Option<&RequestAuth>,
    ) -> Result<ImageRecord, ImageError> {
        let endpoints = self.registries()?.endpoints(name)?;
        let files = self.auth_files();
        let mut last = None;
        for endpoint in &endpoints {
            let credentials = auth::resolve(auth, &files, &endpoint.name);
            match self.pull_endpoint(name, endpoint, credentials).await {
                Ok(record) => return Ok(record),
                Err(e) if endpoint.mirror => {
                    tracing::info!(mirror = %endpoint.name, %e, "mirror failed; trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ImageError::NotFound(format!("no endpoint for {name}"))))
    }

    async fn pull_endpoint(
        &self,
        original: &ImageName,
        endpoint: &Endpoint,
        auth: RegistryAuth,
    ) -> Result<ImageRecord, ImageError> {
        let _shared = self.gc.read().await;
        let session = Session::open(endpoint, auth, self.limits, &self.clients).await?;
        let (manifest_digest, manifest) = session.manifest().await?;
        self.check_layer_count(&endpoint.name.to_string(), manifest.layers.len())?;
        let config_desc = manifest.config.as_ref().ok_or_else(|| {
            ImageError::Corrupt(format!("{}: manifest has no config", endpoint.name))
        })?;
        let config_digest = parse_digest(&config_desc.digest)?;
        let config_bytes = session
            .config_blob(&config_digest, config_desc.size)
            .await?;
        self.store
            .write_blob(&config_bytes, Some(&config_digest))
            .map_err(store_error)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| ImageError::Corrupt(format!("image config {config_digest}: {e}")))?;
        let layers = image_layers(&manifest, &config)?;
        // Every layer task runs to its end before the first error is
        // reported, so nothing is cancelled half-way.
        let fetches: Vec<_> = layers
            .iter()
            .map(|l| self.ensure_layer(&session, l))
            .collect();
        let results: Vec<Result<(), ImageError>> = futures::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_LAYERS)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        let record = ImageRecord {
            id: config_digest,
            repo_tags: original.tagged().into_iter().collect(),
            repo_digests: vec![original.with_digest(&manifest_digest)],
            manifest_digest,
            size: 0,
            layers,
            stored_at: now_nanos(),
            pinned: false,
            user: config.config.and_then(|c| c.user).unwrap_or_default(),
            removed: false,
        };
        let record = self.with_size(record);
        tracing::info!(image = %original, id = %record.id, "pulled");
        self.add(record)
    }

    fn with_size(&self, mut record: ImageRecord) -> ImageRecord {
        record.size = super::layer_sizes(&self.store, &record.layers);
        record
    }

    /// Downloads and unpacks one layer, once: a layer already unpacked is
    /// skipped, a blob already stored is unpacked from disk, anything else is
    /// streamed from the registry into the store and unpacked in one pass.
    async fn ensure_layer(&self, session: &Session, layer: &ImageLayer) -> Result<(), ImageError> {
        let _layer_lock = self
            .locks
            .get(&format!("layer:{}", layer.chain_id))
            .lock_owned()
            .await;
        if self.store.has_layer(&layer.chain_id) {
            return Ok(());
        }
        let _blob_lock = self
            .locks
            .get(&format!("blob:{}", layer.blob))
            .lock_owned()
            .await;
        let store = self.store.clone();
        let spec = layer.clone();
        if self.store.has_blob(&layer.blob) {
            // An aborted pull drops this future: the guard stops the unpack.
            let stop = StopFlag::default();
            let _stop_when_dropped = stop.raise_on_drop();
            let unpack = move || {
                store.unpack_layer(
                    &spec.blob,
                    &spec.media_type,
                    &spec.diff_id,
                    &spec.chain_id,
                    &stop,
                )
            };
            return run_blocking(unpack).await;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(INGEST_CHUNKS);
        let ingest =
            tokio::task::spawn_blocking(move || store.ingest_layer(ChannelReader::new(rx), &spec));
        let streamed = self.stream_blob(session, layer, tx).await;
        let ingested = ingest.await.map_err(|e| task_error("ingest", e))?;
        streamed?;
        ingested.map(|_| ()).map_err(store_error)
    }

    /// Sends the layer blob's bytes into `tx`, at most its declared size: a
    /// registry that sends more is cut off at the first extra byte. Stops
    /// early when the receiver gave up.
    async fn stream_blob(
        &self,
        session: &Session,
        layer: &ImageLayer,
        tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    ) -> Result<(), ImageError> {
        let digest = &layer.blob;
        let mut response = session.fetch_blob(digest).await?;
        let oversized = |sent: u64| {
            ImageError::Corrupt(format!(
                "blob {digest} from {}: the registry sent {sent} bytes or more, its manifest \
                 declares {}",
                session.reference, layer.size
            ))
        };
        if let Some(length) = response.content_length().filter(|&n| n > layer.size) {
            return Err(oversized(length));
        }
        let mut received = 0u64;
        let mut hasher = ucri_storage::digest::Hasher::default();
        let mut unpacking = true;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| download_error(digest, e))?
        {
            received += chunk.len() as u64;
            if received > layer.size {
                let _ = tx
                    .send(Err(std::io::Error::other("more bytes than declared")))
                    .await;
                return Err(oversized(received));
            }
            hasher.update(&chunk);
            if unpacking && tx.send(Ok(chunk)).await.is_err() {
                // The unpacker gave up. The rest of the blob tells a corrupt
                // download (DATA_LOSS) from a layer that is bad as published
                // (the unpacker's error), when little of it is left.
                if layer.size - received > VERDICT_MAX {
                    return Ok(());
                }
                unpacking = false;
            }
        }
        let (got, _) = hasher.finish();
        if &got != digest {
            return Err(ImageError::Corrupt(format!(
                "blob {digest} from {}: content hashes to {got}",
                session.reference
            )));
        }
        Ok(())
    }
}

/// Chunks in flight between the network and the unpacker.
const INGEST_CHUNKS: usize = 64;

/// How much of a blob is still read, only to check its digest, after the
/// unpacker refused its start: a bad layer as published and a corrupt
/// download fail with different codes.
const VERDICT_MAX: u64 = 64 << 20;

/// A blocking `Read` over chunks arriving on a channel.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: bytes::Bytes::new(),
        }
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<(), ImageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| task_error("unpack", e))?
        .map(|_| ())
        .map_err(store_error)
}

fn task_error(what: &str, e: tokio::task::JoinError) -> ImageError {
    ImageError::Store(StoreError::Io {
        context: format!("{what} task"),
        source: std::io::Error::other(e),
    })
}

/// One connection to one endpoint, with the protocol and credentials that
/// worked.
struct Session {
    reference: Reference,
    auth: RegistryAuth,
    /// The HTTP client for manifests and blobs (`oci-client` reads a
    /// manifest whole however long it is, and pings again before every blob
    /// when the registry gave no token); `oci-client` only opens the session.
    http: reqwest::Client,
    scheme: &'static str,
    /// The bearer token the registry gave for pulling, if it gave one.
    token: Option<String>,
    limits: ImageLimits,
}

impl Session {
    /// Connects; insecure endpoints try HTTPS without verification first,
    /// then plain HTTP (as Docker does for insecure registries).
    async fn open(
        endpoint: &Endpoint,
        auth: RegistryAuth,
        limits: ImageLimits,
        clients: &RegistryClients,
    ) -> Result<Session, ImageError> {
        let reference = oci_reference(&endpoint.name);
        let mut protocols: Vec<(ClientProtocol, &'static str)> = if endpoint.insecure {
            vec![
                (ClientProtocol::Https, "https"),
                (ClientProtocol::Http, "http"),
            ]
        } else {
            vec![(ClientProtocol::Https, "https")]
        };
        let registry = &endpoint.name.registry;
        if let Some(scheme) = clients.answered_on(registry) {
            protocols.sort_by_key(|(_, s)| *s != scheme);
        }
        let mut last = None;
        for (protocol, scheme) in protocols {
            let client = clients.oci(endpoint, &auth, &protocol, scheme);
            let probe = client
                .auth(&reference, &auth, oci_client::RegistryOperation::Pull)
                .await;
            match probe {
                Err(OciDistributionError::RequestError(e)) => last = Some(e.to_string()),
                Err(e) => return Err(registry_error(&reference, e)),
                Ok(token) => {
                    if endpoint.insecure {
                        clients.remember_scheme(registry, scheme);
                    }
                    return Ok(Session {
                        reference,
                        auth,
                        http: clients
                            .http(endpoint.insecure)
                            .map_err(|e| ImageError::Unavailable(format!("an HTTP client: {e}")))?,
                        scheme,
                        token,
                        limits,
                    });
                }
            }
        }
        Err(ImageError::Unavailable(format!(
            "cannot reach registry {}: {}",
            endpoint.name.registry,
            last.unwrap_or_default()
        )))
    }

    /// The platform manifest: an index or list is resolved to linux/<arch>.
    async fn manifest(&self) -> Result<(Digest, Manifest), ImageError> {
        let (digest, manifest) = self.raw_manifest(&self.reference).await?;
        if manifest.manifests.is_empty() {
            return Ok((digest, manifest));
        }
        let chosen = choose_platform(&manifest.manifests)?;
        let by_digest = self.reference.clone_with_digest(chosen.digest.clone());
        self.raw_manifest(&by_digest).await
    }

    async fn raw_manifest(&self, reference: &Reference) -> Result<(Digest, Manifest), ImageError> {
        let bytes = self.fetch_manifest(reference).await?;
        let digest = Digest::of(&bytes);
        if let Some(wanted) = reference.digest() {
            if wanted != digest.to_string() {
                return Err(ImageError::Corrupt(format!(
                    "manifest of {reference}: got {digest}, asked for {wanted}"
                )));
            }
        }
        let manifest = serde_json::from_slice(&bytes)
            .map_err(|e| ImageError::Corrupt(format!("manifest of {reference}: {e}")))?;
        Ok((digest, manifest))
    }

    /// GETs a manifest, reading at most `[image] manifest_max` bytes of it.
    async fn fetch_manifest(&self, reference: &Reference) -> Result<Vec<u8>, ImageError> {
        let url = manifest_url(self.scheme, reference);
        let request = self
            .authorized_get(&url)
            .header(http::header::ACCEPT, ACCEPTED_MANIFESTS.join(", "));
        let unreachable = |e: reqwest::Error| ImageError::Unavailable(format!("{url}: {e}"));
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let body = read_at_most(response, ERROR_BODY_MAX)
                .await
                .unwrap_or_default();
            return Err(status_error(reference, status, &body.unwrap_or_default()));
        }
        let max = self.limits.manifest_max;
        read_at_most(response, max)
            .await
            .map_err(unreachable)?
            .ok_or_else(|| {
                ImageError::LimitExceeded(format!(
                    "manifest of {reference} is larger than [image] manifest_max ({max} bytes)"
                ))
            })
    }

    /// A GET of `url` with the session's credentials: the bearer token the
    /// registry gave, else the request's own.
    fn authorized_get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match (&self.token, &self.auth) {
            (Some(token), _) | (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, RegistryAuth::Anonymous) => request,
        }
    }

    /// GETs blob `digest` with the credentials the session opened with, so
    /// that a registry that hands out no token is not asked again for each
    /// blob (`oci-client` pings `/v2/` before every blob when it holds no
    /// token). Redirects are followed; reqwest drops the credentials on one
    /// to another host. The caller checks size and digest.
    async fn fetch_blob(&self, digest: &Digest) -> Result<reqwest::Response, ImageError> {
        let url = format!(
            "{}://{}/v2/{}/blobs/{digest}",
            self.scheme,
            self.reference.resolve_registry(),
            self.reference.repository()
        );
        let response = self
            .authorized_get(&url)
            .send()
            .await
            .map_err(|e| ImageError::Unavailable(format!("{url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_at_most(response, ERROR_BODY_MAX)
                .await
                .unwrap_or_default();
            return Err(status_error(
                &self.reference,
                status,
                &body.unwrap_or_default(),
            ));
        }
        Ok(response)
    }

    /// The image config in memory, verified: at most its declared size and
    /// `[image] config_max`.
    async fn config_blob(&self, digest: &Digest, declared: i64) -> Result<Vec<u8>, ImageError> {
        let max = self.limits.config_max;
        let declared = u64::try_from(declared)
            .map_err(|_| ImageError::Corrupt(format!("config {digest}: negative size")))?;
        if declared > max {
            return Err(ImageError::LimitExceeded(format!(
                "config {digest} of {} declares {declared} bytes, more than [image] config_max \
                 ({max} bytes)",
                self.reference
            )));
        }
        let mut response = self.fetch_blob(digest).await?;
        let mut out = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| download_error(digest, e))?
        {
            if (out.len() + chunk.len()) as u64 > declared {
                return Err(ImageError::Corrupt(format!(
                    "config {digest} from {}: more than its declared {declared} bytes",
                    self.reference
                )));
            }
            out.extend_from_slice(&chunk);
        }
        let got = Digest::of(&out);
        if &got != digest {
            return Err(ImageError::Corrupt(format!(
                "blob {digest} from {}: content hashes to {got}",
                self.reference
            )));
        }
        Ok(out)
    }
}

/// How much of an error response's body is kept for the message.
const ERROR_BODY_MAX: u64 = 1024;

/// The body, or `None` when it is longer than `max` bytes (read no further).
async fn read_at_most(
    mut response: reqwest::Response,
    max: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > max) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if (body.len() + chunk.len()) as u64 > max {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// `/v2/<repository>/manifests/<digest or tag>` on the reference's registry.
fn manifest_url(scheme: &str, reference: &Reference) -> String {
    let tag_or_digest = reference.digest().or(reference.tag()).unwrap_or("latest");
    format!(
        "{scheme}://{}/v2/{}/manifests/{tag_or_digest}",
        reference.resolve_registry(),
        reference.repository()
    )
}

/// A registry's refusal, by HTTP status.
fn status_error(reference: &Reference, status: reqwest::StatusCode, body: &[u8]) -> ImageError {
    let context = format!(
        "{reference}: the registry answered {status}: {}",
        String::from_utf8_lossy(body).trim()
    );
    match status.as_u16() {
        401 => ImageError::Unauthenticated(context),
        403 => ImageError::PermissionDenied(context),
        404 => ImageError::NotFound(context),
        _ => ImageError::Unavailable(context),
    }
}

fn oci_reference(name: &ImageName) -> Reference {
    match (&name.tag, &name.digest) {
        (_, Some(d)) => Reference::with_digest(
            name.registry.clone(),
            name.repository.clone(),
            d.to_string(),
        ),
        (Some(t), None) => {
            Reference::with_tag(name.registry.clone(), name.repository.clone(), t.clone())
        }
        (None, None) => Reference::with_tag(
            name.registry.clone(),
            name.repository.clone(),
            "latest".into(),
        ),
    }
}

/// The OCI platform name of the host's architecture.
fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        "arm" => ("arm", Some("v7")),
        "x86" => ("386", None),
        "powerpc64" => ("ppc64le", None),
        other => (other, None),
    }
}

fn choose_platform(entries: &[Descriptor]) -> Result<&Descriptor, ImageError> {
    let (arch, variant) = host_platform();
    let linux_arch = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == arch)
    };
    let exact = entries.iter().filter(linux_arch).find(|d| {
        let v = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        v.is_none() || v == variant
    });
    exact
        .or_else(|| entries.iter().find(linux_arch))
        .ok_or_else(|| {
            let available: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            ImageError::NotFound(format!(
                "no linux/{arch} image in the index (it has: {})",
                available.join(", ")
            ))
        })
}

fn image_layers(manifest: &Manifest, config: &ImageConfig) -> Result<Vec<ImageLayer>, ImageError> {
    let diff_ids: Vec<Digest> = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| parse_digest(d))
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Corrupt(format!(
            "manifest has {} layers but the config lists {} diff IDs",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let chains = chain_ids(&diff_ids);
    manifest
        .layers
        .iter()
        .zip(diff_ids.into_iter().zip(chains))
        .map(|(desc, (diff_id, chain_id))| {
            Ok(ImageLayer {
                blob: parse_digest(&desc.digest)?,
                media_type: desc.media_type.clone(),
                size: u64::try_from(desc.size)
                    .map_err(|_| ImageError::Corrupt("negative layer size".into()))?,
                diff_id,
                chain_id,
            })
        })
        .collect()
}

/// A download cut short.
fn download_error(digest: &Digest, e: reqwest::Error) -> ImageError {
    ImageError::Unavailable(format!("downloading {digest}: {e}"))
}

fn parse_digest(s: &str) -> Result<Digest, ImageError> {
    s.parse()
        .map_err(|e: ucri_storage::digest::BadDigest| ImageError::Corrupt(e.to_string()))
}

/// Maps a distribution error to the image error kinds.
fn registry_error(reference: &Reference, e: OciDistributionError) -> ImageError {
    let context = format!("{reference}: {e}");
    match &e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthenticated(context),
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::NotFound(context),
        OciDistributionError::ServerError { code, .. } => match code {
            401 => ImageError::Unauthenticated(context),
            403 => ImageError::PermissionDenied(context),
            404 => ImageError::NotFound(context),
            _ => ImageError::Unavailable(context),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|err| format!("{:?}", err.code))
                .collect();
            let has = |c: &str| codes.iter().any(|x| x.eq_ignore_ascii_case(c));
            if has("Unauthorized") {
                ImageError::Unauthenticated(context)
            } else if has("Denied") {
                ImageError::PermissionDenied(context)
            } else if has("ManifestUnknown") || has("NameUnknown") || has("BlobUnknown") {
                ImageError::NotFound(context)
            } else {
                ImageError::Unavailable(context)
            }
        }
        OciDistributionError::RequestError(_) => ImageError::Unavailable(context),
        OciDistributionError::DigestError(_) => ImageError::Corrupt(context),
        _ => ImageError::Unavailable(context),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        //! Fuzzing by properties: manifests, indexes and configs from any
        //! bytes are read or refused without a panic; an image's layers are
        //! accepted exactly when the manifest and the config agree.
        use super::*;
        use proptest::prelude::*;

        fn digest_text() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
                1 => "\\PC{0,20}",
            ]
        }

        proptest! {
            #[test]
            fn any_bytes_are_read_or_refused(data in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Ok(manifest) = serde_json::from_slice::<Manifest>(&data) {
                    let _ = choose_platform(&manifest.manifests);
                }
                let _ = serde_json::from_slice::<ImageConfig>(&data);
            }

            #[test]
            fn layers_are_accepted_exactly_when_manifest_and_config_agree(
                blobs in proptest::collection::vec((digest_text(), -2i64..1000), 0..5),
                diff_ids in proptest::collection::vec(digest_text(), 0..5),
            ) {
                let manifest = Manifest {
                    config: None,
                    layers: blobs
                        .iter()
                        .map(|(digest, size)| Descriptor {
                            media_type: String::new(),
                            digest: digest.clone(),
                            size: *size,
                            platform: None,
                        })
                        .collect(),
                    manifests: Vec::new(),
                };
                let config = ImageConfig {
                    config: None,
                    rootfs: RootFs { diff_ids: diff_ids.clone() },
                };
                let valid = |d: &String| d.parse::<Digest>().is_ok();
                let agree = blobs.len() == diff_ids.len()
                    && blobs.iter().all(|(d, size)| valid(d) && *size >= 0)
                    && diff_ids.iter().all(valid);
                prop_assert_eq!(image_layers(&manifest, &config).is_ok(), agree);
            }
        }
    }
}
