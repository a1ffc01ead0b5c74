//! Serving the CRI services over HTTP/2 on the unix socket.
//!
//! hyper serves tonic's [`Routes`] directly instead of through
//! `tonic::transport::Server`, whose `grpc-timeout` handling answers an
//! expired deadline with CANCELLED ("Timeout expired"). gRPC servers answer
//! DEADLINE_EXCEEDED, and clients (critest, kubelet) check for it.
//! [`Deadline`] enforces the client's `grpc-timeout` that way; every
//! connection goes through [`AuthorityFix`] first.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tonic::body::Body;
use tonic::service::Routes;
use tracing::Instrument as _;

use super::authority::AuthorityFix;

/// The longest `grpc-timeout` value a client may send (the spec's 8 digits).
const MAX_TIMEOUT_DIGITS: usize = 8;

/// Serves `routes` on `listener`, at most `max_connections` connections at
/// once (more wait in the backlog), until `shutdown` resolves; then lets
/// open connections finish their RPCs for up to `grace`.
pub async fn serve(
    listener: tokio::net::UnixListener,
    routes: Routes,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
) {
    let service = tower::ServiceBuilder::new()
        .layer(tower::layer::layer_fn(Deadline))
        .layer(crate::metrics::RpcMetricsLayer)
        .service(routes);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        if slots.available_permits() == 0 {
            tracing::warn!(
                max_connections,
                "every CRI connection slot is taken; new clients wait until one closes"
            );
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(%e, "accepting a CRI connection failed; retrying");
                    tokio::time::sleep(crate::descriptors::ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(AuthorityFix::new(stream));
        let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, TowerToHyperService::new(service.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%e, "CRI connection ended with an error");
            }
            drop(slot);
        });
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "in-flight RPCs did not finish in time; exiting anyway"
        );
    }
}

/// Enforces the client's `grpc-timeout`: past it the RPC is dropped (its
/// work cancelled) and the answer is DEADLINE_EXCEEDED. Also opens the
/// per-RPC tracing span.
#[derive(Debug, Clone)]
pub struct Deadline<S>(S);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Deadline<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let span = tracing::info_span!("rpc", method = %request.uri().path());
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(parse_grpc_timeout);
        let future = self.0.call(request);
        Box::pin(
            async move {
                match timeout {
                    None => future.await,
                    Some(Err(why)) => Ok(tonic::Status::invalid_argument(why).into_http()),
                    Some(Ok(limit)) => match tokio::time::timeout(limit, future).await {
                        Ok(response) => response,
                        Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                            "deadline exceeded after {limit:?}"
                        ))
                        .into_http()),
                    },
                }
            }
            .instrument(span),
        )
    }
}

/// A `grpc-timeout` header value: at most 8 digits and a unit (H, M, S, m,
/// u, n), as the gRPC HTTP/2 protocol defines it.
fn parse_grpc_timeout(text: &str) -> Result<Duration, String> {
    let invalid = || format!("grpc-timeout {text:?} is not a valid timeout");
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    if digits.is_empty()
        || digits.len() > MAX_TIMEOUT_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let value: u64 = digits.parse().map_err(|_| invalid())?;
    match unit {
        "H" => Ok(Duration::from_secs(value * 3600)),
        "M" => Ok(Duration::from_secs(value * 60)),
        "S" => Ok(Duration::from_secs(value)),
        "m" => Ok(Duration::from_millis(value)),
        "u" => Ok(Duration::from_micros(value)),
        "n" => Ok(Duration::from_nanos(value)),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_parsed_with_every_unit_and_bad_ones_refused() {
        assert_eq!(parse_grpc_timeout("2H"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("10S"), Ok(Duration::from_secs(10)));
        assert_eq!(
            parse_grpc_timeout("99999m"),
            Ok(Duration::from_millis(99_999))
        );
        assert_eq!(parse_grpc_timeout("5u"), Ok(Duration::from_micros(5)));
        assert_eq!(parse_grpc_timeout("7n"), Ok(Duration::from_nanos(7)));
        for bad in ["", "S", "10", "10s", "123456789S", "-1S", "1.5S"] {
            assert!(parse_grpc_timeout(bad).is_err(), "{bad:?}");
        }
    }
}
