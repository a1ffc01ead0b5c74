//! The admin socket: ucri's own operations that CRI has no RPC for
//! (`ucri ctl import`). One JSON request line, one JSON response line, on
//! `<runtime dir>/admin.sock` (mode 0600: the user only).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use tracing::Instrument;

use crate::error::CriError;
use crate::image::Images;

/// A request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AdminRequest {
    /// Import an OCI layout (dir or tar) or a docker save archive.
    Import {
        /// Absolute path, as the daemon sees it.
        path: PathBuf,
    },
}

/// An imported image.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportedImage {
    /// Image ID.
    pub id: String,
    /// Its names.
    pub repo_tags: Vec<String>,
}

/// A response.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AdminResponse {
    /// Images were imported.
    Imported {
        /// Them.
        images: Vec<ImportedImage>,
    },
    /// The request failed.
    Error {
        /// The gRPC-style code name.
        code: String,
        /// What went wrong.
        message: String,
    },
}

/// Where the admin socket lives.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("admin.sock")
}

/// Binds the admin socket (replacing a stale one) with mode 0600.
pub fn bind(runtime_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(runtime_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves requests until the task is dropped.
pub async fn serve(listener: UnixListener, images: Arc<Images>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let images = images.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &images).await {
                tracing::warn!(%e, "admin connection failed");
            }
        });
    }
}

async fn handle(stream: UnixStream, images: &Images) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let response = match serde_json::from_str::<AdminRequest>(&line) {
        Ok(request) => execute(request, images).await,
        Err(e) => error_response(CriError::InvalidArgument(format!("bad admin request: {e}"))),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await
}

async fn execute(request: AdminRequest, images: &Images) -> AdminResponse {
    match request {
        AdminRequest::Import { path } => {
            let span = tracing::info_span!("import", path = %path.display());
            match images.import(path).instrument(span).await {
                Ok(records) => AdminResponse::Imported {
                    images: records
                        .into_iter()
                        .map(|r| ImportedImage {
                            id: r.id.to_string(),
                            repo_tags: r.repo_tags,
                        })
                        .collect(),
                },
                Err(e) => error_response(e.into()),
            }
        }
    }
}

fn error_response(e: CriError) -> AdminResponse {
    let status = tonic::Status::from(e);
    AdminResponse::Error {
        code: format!("{:?}", status.code()),
        message: status.message().to_owned(),
    }
}

/// Client side: sends one request and reads the response.
pub async fn call(runtime_dir: &Path, request: &AdminRequest) -> anyhow::Result<AdminResponse> {
    let path = socket_path(runtime_dir);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to {}: {e} (is `ucri daemon` running?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    Ok(serde_json::from_str(&reply)?)
}
