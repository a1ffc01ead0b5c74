//! The SPDY/3.1 transport, as kubelet speaks it: the client opens one stream
//! per channel, each named by its `streamtype` header (remotecommand: error,
//! stdin, stdout, stderr, resize; port forwarding: an error and a data
//! stream per connection, paired by `requestID`, with a `port` header).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use ucri_stream::spdy::{Role, Session, Stream, StreamWriter, UPGRADE};

use super::remotecommand::{self, Outcome, Stdio, Version, Wanted};
use super::tokens::StreamRequest;
use crate::runtime::Lifecycle;

/// How long the client may take to open the streams it announced.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The header naming what a stream carries.
const STREAM_TYPE: &str = "streamtype";

/// SPDY remotecommand versions (v5 exists only over WebSocket).
const REMOTECOMMAND: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The port forwarding protocol.
const PORT_FORWARD: [&str; 1] = ["portforward.k8s.io"];

/// Answers the upgrade with 101 and runs the session once hyper hands over
/// the connection.
pub fn serve(lifecycle: Arc<Lifecycle>, stream: StreamRequest, mut request: Request) -> Response {
    let offered = super::negotiate::header_values(request.headers(), "x-stream-protocol-version");
    let supported: &[&'static str] = match stream {
        StreamRequest::PortForward(_) => &PORT_FORWARD,
        _ => &REMOTECOMMAND,
    };
    let chosen = match super::negotiate::negotiate(&offered, supported) {
        Ok(chosen) => chosen,
        Err(refusal) => return *refusal,
    };
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => {
                tracing::info!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        let (session, incoming) = Session::new(io, Role::Server);
        let version = chosen.and_then(Version::parse).unwrap_or(Version::V1);
        run(lifecycle, stream, session, incoming, version).await;
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE));
    if let Some(chosen) = chosen {
        headers.insert(
            "X-Stream-Protocol-Version",
            HeaderValue::from_static(chosen),
        );
    }
    response
}

async fn run(
    lifecycle: Arc<Lifecycle>,
    stream: StreamRequest,
    session: Session,
    incoming: mpsc::Receiver<Stream>,
    version: Version,
) {
    use tracing::Instrument;
    match stream {
        StreamRequest::Exec(request) => {
            let wanted = Wanted::new(request.stdin, request.stdout, request.stderr, request.tty);
            let span = tracing::info_span!("exec_stream", container = %request.container_id, transport = "spdy");
            remotecommand_session(session, incoming, version, wanted, move |io, gone| {
                remotecommand::run_exec(lifecycle, request, io, gone)
            })
            .instrument(span)
            .await
        }
        StreamRequest::Attach(request) => {
            let wanted = Wanted::new(request.stdin, request.stdout, request.stderr, request.tty);
            let span = tracing::info_span!("attach_stream", container = %request.container_id, transport = "spdy");
            remotecommand_session(session, incoming, version, wanted, move |io, gone| {
                remotecommand::run_attach(lifecycle, request, io, gone)
            })
            .instrument(span)
            .await
        }
        StreamRequest::PortForward(request) => {
            let span = tracing::info_span!("port_forward_stream", pod = %request.pod_sandbox_id, transport = "spdy");
            port_forward_session(session, incoming, lifecycle, request.pod_sandbox_id)
                .instrument(span)
                .await
        }
    }
}

/// The stream types a remotecommand client opens for `wanted`.
fn expected_streams(wanted: Wanted, version: Version) -> HashSet<&'static str> {
    let mut expected = HashSet::from(["error"]);
    for (on, name) in [
        (wanted.stdin, "stdin"),
        (wanted.stdout, "stdout"),
        (wanted.stderr, "stderr"),
        (wanted.tty && version.resizes(), "resize"),
    ] {
        if on {
            expected.insert(name);
        }
    }
    expected
}

/// Replies to the client's streams until every expected one is open (or
/// the time is up); later streams are acknowledged and ignored.
async fn collect_streams(
    incoming: &mut mpsc::Receiver<Stream>,
    mut expected: HashSet<&'static str>,
) -> Result<HashMap<&'static str, Stream>, String> {
    let mut streams = HashMap::new();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !expected.is_empty() {
        let next = tokio::time::timeout_at(deadline, incoming.recv()).await;
        let stream = match next {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err("the client closed the connection".into()),
            Err(_) => {
                return Err(format!(
                    "timed out waiting for the client to open streams: {expected:?}"
                ))
            }
        };
        if stream.reply(Vec::new()).await.is_err() {
            return Err("the client closed the connection".into());
        }
        let kind = stream.header(STREAM_TYPE).unwrap_or_default().to_owned();
        match expected.take(kind.as_str()) {
            Some(kind) => {
                streams.insert(kind, stream);
            }
            None => tracing::debug!(kind, "ignoring an unexpected stream"),
        }
    }
    Ok(streams)
}

/// Acknowledges streams opened after the expected ones, so the client never
/// waits for a reply.
fn acknowledge_rest(mut incoming: mpsc::Receiver<Stream>) {
    tokio::spawn(async move {
        while let Some(stream) = incoming.recv().await {
            let _ = stream.reply(Vec::new()).await;
        }
    });
}

async fn remotecommand_session<F, Fut>(
    session: Session,
    mut incoming: mpsc::Receiver<Stream>,
    version: Version,
    wanted: Wanted,
    run: F,
) where
    F: FnOnce(Stdio, futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut streams = match collect_streams(&mut incoming, expected_streams(wanted, version)).await
    {
        Ok(streams) => streams,
        Err(message) => {
            tracing::info!(%message, "stream setup failed");
            session.close().await;
            return;
        }
    };
    acknowledge_rest(incoming);
    let mut io = Stdio::default();
    if let Some(stdin) = streams.remove("stdin") {
        io.stdin = Some(Box::new(stdin.split().0));
    }
    if let Some(stdout) = streams.remove("stdout") {
        io.stdout = Some(Box::new(stdout.split().1));
    }
    if let Some(stderr) = streams.remove("stderr") {
        io.stderr = Some(Box::new(stderr.split().1));
    }
    if let Some(resize) = streams.remove("resize") {
        io.resize = Some(remotecommand::resize_events(Box::new(resize.split().0)));
    }
    let error = streams.remove("error").map(|s| s.split().1);
    let watcher = session.clone();
    let gone = Box::pin(async move { watcher.closed().await });
    let outcome = run(io, gone).await;
    if let Some(error) = error {
        report(&error, &outcome.error_stream_bytes(version)).await;
    }
    tracing::debug!(?outcome, "stream ended");
    session.close().await;
}

async fn report(error: &StreamWriter, bytes: &[u8]) {
    if !bytes.is_empty() {
        let _ = error.send(bytes).await;
    }
    let _ = error.finish().await;
}

/// Port forwarding: pairs each connection's error and data streams by
/// `requestID` and forwards it to the pod, until the client hangs up.
async fn port_forward_session(
    session: Session,
    mut incoming: mpsc::Receiver<Stream>,
    lifecycle: Arc<Lifecycle>,
    pod_id: String,
) {
    let mut halves: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        if stream.reply(Vec::new()).await.is_err() {
            break;
        }
        let request_id = stream.header("requestid").unwrap_or_default().to_owned();
        let entry = halves.entry(request_id.clone()).or_default();
        match stream.header(STREAM_TYPE) {
            Some("error") => entry.0 = Some(stream),
            Some("data") => entry.1 = Some(stream),
            other => {
                tracing::debug!(?other, "ignoring a stream of unknown type");
                continue;
            }
        }
        if let (Some(_), Some(_)) = entry {
            if let Some((Some(error), Some(data))) = halves.remove(&request_id) {
                tokio::spawn(forward_pair(lifecycle.clone(), pod_id.clone(), error, data));
            }
        }
    }
    session.close().await;
}

async fn forward_pair(lifecycle: Arc<Lifecycle>, pod_id: String, error: Stream, data: Stream) {
    let port = data
        .header("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let (_, error) = error.split();
    let (from_client, to_client) = data.split();
    let Some(port) = port else {
        report(&error, b"invalid or missing port header").await;
        let _ = to_client.finish().await;
        return;
    };
    match super::portforward::connect(&lifecycle, &pod_id, port).await {
        Ok(conn) => {
            super::portforward::forward(conn, Box::new(from_client), Box::new(to_client)).await;
            let _ = error.finish().await;
        }
        Err(message) => {
            tracing::info!(port, %message, "port forward failed");
            report(&error, message.as_bytes()).await;
            let mut to_client = to_client;
            let _ = to_client.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_streams_follow_the_request_and_version() {
        let tty = Wanted {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        };
        assert_eq!(
            expected_streams(tty, Version::V4),
            HashSet::from(["error", "stdin", "stdout", "resize"])
        );
        assert_eq!(
            expected_streams(tty, Version::V2),
            HashSet::from(["error", "stdin", "stdout"])
        );
        let plain = Wanted {
            stdout: true,
            stderr: true,
            ..Wanted::default()
        };
        assert_eq!(
            expected_streams(plain, Version::V4),
            HashSet::from(["error", "stdout", "stderr"])
        );
    }
}
