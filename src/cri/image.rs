//! The CRI ImageService: thin handlers over [`crate::image::Images`].

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::Instrument;
use ucri_cri_api::v1::image_service_server::ImageService;
use ucri_cri_api::v1::*;
use ucri_storage::store::ImageRecord;

use super::cri_service;
use crate::error::CriError;
use crate::image::auth::RequestAuth;
use crate::image::Images;
use crate::storage::Storage;

/// The ImageService implementation.
#[derive(Debug)]
pub struct CriImageService {
    images: Arc<Images>,
    storage: Arc<Storage>,
}

impl CriImageService {
    /// A service over `images`, reporting container filesystems of `storage`.
    pub fn new(images: Arc<Images>, storage: Arc<Storage>) -> Self {
        CriImageService { images, storage }
    }

    /// The images a list filter names (all without one).
    fn matching(&self, filter: Option<String>) -> Vec<ImageRecord> {
        match filter.filter(|f| !f.is_empty()) {
            Some(spec) => self
                .images
                .lookup(&spec)
                .map(|(r, _)| vec![r])
                .unwrap_or_default(),
            None => self.images.list(),
        }
    }
}

fn filesystem_usage(
    mountpoint: &std::path::Path,
    usage: ucri_storage::store::Usage,
) -> FilesystemUsage {
    let timestamp = crate::clock::now_nanos();
    FilesystemUsage {
        timestamp,
        fs_id: Some(FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(UInt64Value { value: usage.bytes }),
        inodes_used: Some(UInt64Value {
            value: usage.inodes,
        }),
    }
}

fn image_spec(spec: Option<&ImageSpec>) -> Result<&str, CriError> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(CriError::InvalidArgument("image spec is empty".into())),
    }
}

/// The CRI view of an image record.
pub fn to_cri(record: &ImageRecord) -> Image {
    let (uid, username) = split_user(&record.user);
    Image {
        id: record.id.to_string(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: record.id.to_string(),
            ..Default::default()
        }),
        pinned: record.pinned,
    }
}

/// `User` of an image config: a numeric uid (before any `:group`) or a name.
fn split_user(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or("");
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_owned()),
    }
}

fn verbose_info(images: &Images, record: &ImageRecord) -> HashMap<String, String> {
    let config = images
        .store()
        .read_blob(&record.id)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    let info = serde_json::json!({
        "imageSpec": config,
        "manifestDigest": record.manifest_digest.to_string(),
        "layers": record.layers,
    });
    HashMap::from([("info".to_owned(), info.to_string())])
}

fn request_auth(auth: Option<AuthConfig>) -> Option<RequestAuth> {
    auth.map(|a| RequestAuth {
        username: a.username,
        password: a.password,
        auth: a.auth,
        server_address: a.server_address,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    })
}

cri_service! {
    impl ImageService for CriImageService {
        type StreamImagesStream = super::runtime::ListStream<StreamImagesResponse>;

        async fn stream_images(&self, request: Request<StreamImagesRequest>) -> Result<Response<Self::StreamImagesStream>, Status> {
            let filter = request.into_inner().filter.and_then(|f| f.image).map(|s| s.image);
            let images: Vec<Image> = self.matching(filter).iter().map(to_cri).collect();
            Ok(Response::new(super::runtime::list_stream(images, |images| StreamImagesResponse { images })))
        }

        async fn list_images(&self, request: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
            let filter = request.into_inner().filter.and_then(|f| f.image).map(|s| s.image);
            Ok(Response::new(ListImagesResponse { images: self.matching(filter).iter().map(to_cri).collect() }))
        }

        async fn image_status(&self, request: Request<ImageStatusRequest>) -> Result<Response<ImageStatusResponse>, Status> {
            let request = request.into_inner();
            let spec = image_spec(request.image.as_ref())?;
            let found = self.images.lookup(spec).map(|(r, _)| r);
            let info = match (&found, request.verbose) {
                (Some(r), true) => verbose_info(&self.images, r),
                _ => HashMap::new(),
            };
            Ok(Response::new(ImageStatusResponse { image: found.as_ref().map(to_cri), info }))
        }

        async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
            let request = request.into_inner();
            let spec = image_spec(request.image.as_ref())?.to_owned();
            let auth = request_auth(request.auth);
            let span = tracing::info_span!("pull", image = %spec);
            let started = std::time::Instant::now();
            let record = self.images.pull(&spec, auth).instrument(span).await.map_err(CriError::from)?;
            crate::metrics::global().pulled(record.size, started.elapsed());
            Ok(Response::new(PullImageResponse { image_ref: record.id.to_string() }))
        }

        async fn remove_image(&self, request: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
            let request = request.into_inner();
            let spec = image_spec(request.image.as_ref())?;
            self.images.remove(spec).await.map_err(CriError::from)?;
            Ok(Response::new(RemoveImageResponse {}))
        }

        async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
            let store = self.images.store().root().to_owned();
            let containers = self.storage.rootfs().containers_dir();
            let images = filesystem_usage(&store, self.images.usage());
            let writable = filesystem_usage(&containers, ucri_storage::store::disk_usage(&containers));
            Ok(Response::new(ImageFsInfoResponse { image_filesystems: vec![images], container_filesystems: vec![writable] }))
        }
    }
    unimplemented {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_split_into_uid_or_name() {
        assert_eq!(split_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(split_user("0"), (Some(0), String::new()));
        assert_eq!(split_user("app"), (None, "app".to_owned()));
        assert_eq!(split_user("app:staff"), (None, "app".to_owned()));
        assert_eq!(split_user(""), (None, String::new()));
    }
}
