//! The streaming server: `Exec`, `Attach` and `PortForward` return a URL on
//! it with a single-use token; the client (kubelet's proxy, crictl, kubectl,
//! `ucri ctl`) upgrades that URL to SPDY/3.1 or WebSocket and streams.
//!
//! It listens on a loopback address in the daemon's network namespace and,
//! on the same address and port, in the uplink namespace, where a rootless
//! kubelet runs (usernetes).

mod capped;
mod negotiate;
mod netns;
pub mod portforward;
pub mod remotecommand;
mod spdy;
pub mod tokens;
mod websocket;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ucri_cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};

use crate::config::StreamingConfig;
use crate::runtime::{Lifecycle, LifecycleError};
use netns::run_in_netns;
use tokens::{StreamRequest, Tokens};

/// The running server's address and pending tokens.
#[derive(Debug)]
pub struct Streaming {
    tokens: Tokens,
    address: SocketAddr,
}

/// Why a streaming RPC was refused.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The container or pod cannot stream.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// No URL could be handed out (too many pending, or no randomness).
    #[error(transparent)]
    Token(#[from] tokens::TokenError),
}

impl Streaming {
    /// Where the server listens (and the URLs point).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Validates an Exec request against the running container and returns
    /// its URL.
    pub fn exec_url(
        &self,
        lifecycle: &Lifecycle,
        mut request: ExecRequest,
    ) -> Result<String, StreamingError> {
        if request.cmd.is_empty() {
            return Err(StreamingError::InvalidArgument(
                "Exec needs a command".into(),
            ));
        }
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        request.container_id = lifecycle.streamable_container(&request.container_id)?;
        self.url(StreamRequest::Exec(request))
    }

    /// Validates an Attach request and returns its URL.
    pub fn attach_url(
        &self,
        lifecycle: &Lifecycle,
        mut request: AttachRequest,
    ) -> Result<String, StreamingError> {
        check_streams(request.stdin, request.stdout, request.stderr, request.tty)?;
        request.container_id = lifecycle.streamable_container(&request.container_id)?;
        self.url(StreamRequest::Attach(request))
    }

    /// Validates a PortForward request against the running pod and returns
    /// its URL.
    pub fn port_forward_url(
        &self,
        lifecycle: &Lifecycle,
        mut request: PortForwardRequest,
    ) -> Result<String, StreamingError> {
        if let Some(port) = request.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(StreamingError::InvalidArgument(format!(
                "port {port} is not a valid TCP port"
            )));
        }
        request.pod_sandbox_id = lifecycle.pod_netns(&request.pod_sandbox_id)?.0;
        self.url(StreamRequest::PortForward(request))
    }

    fn url(&self, request: StreamRequest) -> Result<String, StreamingError> {
        let kind = request.kind();
        let token = self.tokens.insert(request)?;
        Ok(format!("http://{}/{kind}/{token}", self.address))
    }
}

/// kubelet's rules: some stream, and no separate stderr with a terminal.
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), StreamingError> {
    if !(stdin || stdout || stderr) {
        return Err(StreamingError::InvalidArgument(
            "one of stdin, stdout or stderr must be requested".into(),
        ));
    }
    if tty && stderr {
        return Err(StreamingError::InvalidArgument(
            "tty and stderr cannot both be requested (a terminal merges them)".into(),
        ));
    }
    Ok(())
}

/// What handlers share.
#[derive(Clone)]
struct Shared {
    streaming: Arc<Streaming>,
    lifecycle: Arc<Lifecycle>,
}

/// Binds the listeners and serves until the returned tasks are aborted.
pub async fn start(
    config: &StreamingConfig,
    lifecycle: Arc<Lifecycle>,
) -> anyhow::Result<(Arc<Streaming>, Vec<tokio::task::JoinHandle<()>>)> {
    let host = tokio::net::TcpListener::bind((config.address, config.port))
        .await
        .with_context(|| {
            format!(
                "binding the streaming server on {}:{}",
                config.address, config.port
            )
        })?;
    let address = host.local_addr()?;
    let streaming = Arc::new(Streaming {
        tokens: Tokens::new(std::time::Duration::from_secs(config.url_ttl_seconds)),
        address,
    });
    let shared = Shared {
        streaming: streaming.clone(),
        lifecycle: lifecycle.clone(),
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(crate::descriptors::share(
        config.max_connections,
        8,
        "streaming connections",
    )));
    let mut tasks = vec![tokio::spawn(serve(
        capped::CappedListener::new(host, slots.clone()),
        shared.clone(),
    ))];
    if config.in_uplink {
        match bind_in_uplink(&lifecycle.network().uplink_netns(), address).await {
            Ok(listener) => tasks.push(tokio::spawn(serve(
                capped::CappedListener::new(listener, slots),
                shared,
            ))),
            Err(e) => tracing::warn!(
                error = %format!("{e:#}"),
                "streaming server not reachable from the uplink namespace"
            ),
        }
    }
    tracing::info!(%address, "streaming server listening");
    Ok((streaming, tasks))
}

/// Binds `address` inside the uplink network namespace (from a thread of
/// its own, which setns moves there and then ends).
async fn bind_in_uplink(
    netns: &Path,
    address: SocketAddr,
) -> anyhow::Result<tokio::net::TcpListener> {
    let netns = netns.to_owned();
    let listener = run_in_netns(Some(netns.clone()), move || {
        std::net::TcpListener::bind(address)
    })
    .await
    .with_context(|| format!("binding {address} in {}", netns.display()))?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

async fn serve(listener: capped::CappedListener, shared: Shared) {
    let app = axum::Router::new()
        .route("/{kind}/{token}", axum::routing::any(handle))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "streaming server stopped");
    }
}

async fn handle(
    State(shared): State<Shared>,
    UrlPath((kind, token)): UrlPath<(String, String)>,
    request: Request,
) -> Response {
    let gone = || {
        (
            StatusCode::NOT_FOUND,
            "unknown, expired or already used streaming URL\n",
        )
            .into_response()
    };
    if !shared.streaming.tokens.is_pending(&kind, &token) {
        return gone();
    }
    // Only an upgrade may redeem a token: a plain GET (a browser, a probe)
    // must not burn it.
    if upgrade_of(&request).is_none() {
        return (
            StatusCode::BAD_REQUEST,
            "this URL must be upgraded to SPDY/3.1 or websocket\n",
        )
            .into_response();
    }
    let Some(stream) = shared.streaming.tokens.take(&kind, &token) else {
        return gone();
    };
    match upgrade_of(&request) {
        Some(Upgrade::WebSocket) => websocket::serve(shared.lifecycle, stream, request).await,
        Some(Upgrade::Spdy) => spdy::serve(shared.lifecycle, stream, request),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// The protocols a streaming URL upgrades to.
enum Upgrade {
    WebSocket,
    Spdy,
}

fn upgrade_of(request: &Request) -> Option<Upgrade> {
    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())?
        .to_ascii_lowercase();
    if upgrade == "websocket" {
        Some(Upgrade::WebSocket)
    } else if upgrade == ucri_stream::spdy::UPGRADE.to_ascii_lowercase() {
        Some(Upgrade::Spdy)
    } else {
        None
    }
}
