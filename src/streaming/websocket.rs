//! The WebSocket transport: one binary message per write, its first byte the
//! channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; v5 adds 255,
//! the close signal `[255, channel]`). Port forwarding uses channels 2i (data)
//! and 2i+1 (error) for the i-th `port` query parameter, each opened with the
//! port number as two little-endian bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};

use super::remotecommand::{self, Outcome, Stdio, Version, Wanted};
use super::tokens::StreamRequest;
use crate::runtime::Lifecycle;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;
/// Buffer between a channel and its consumer.
const PIPE: usize = 64 * 1024;
/// How long queued output may take to drain at the end.
const DRAIN: Duration = Duration::from_secs(5);

/// Port forwarding subprotocols.
const PORT_FORWARD: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];

/// Answers the upgrade and runs the session on the socket.
pub async fn serve(lifecycle: Arc<Lifecycle>, stream: StreamRequest, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let offered = super::negotiate::header_values(&parts.headers, "sec-websocket-protocol");
    let supported: &[&'static str] = match stream {
        StreamRequest::PortForward(_) => &PORT_FORWARD,
        _ => &remotecommand::VERSIONS,
    };
    let chosen = match super::negotiate::negotiate(&offered, supported) {
        Ok(chosen) => chosen,
        Err(refusal) => return *refusal,
    };
    let ports = match &stream {
        StreamRequest::PortForward(_) => match query_ports(parts.uri.query().unwrap_or("")) {
            Ok(ports) => ports,
            Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
        },
        _ => Vec::new(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let upgrade = match chosen {
        Some(protocol) => upgrade.protocols([protocol]),
        None => upgrade,
    };
    let version = chosen.and_then(Version::parse).unwrap_or(Version::V1);
    upgrade.on_upgrade(move |socket| async move {
        match stream {
            StreamRequest::Exec(request) => {
                let wanted = Wanted::new(request.stdin, request.stdout, request.stderr, request.tty);
                let span = tracing::info_span!("exec_stream", container = %request.container_id, transport = "websocket");
                let session = remotecommand_session(socket, version, wanted, move |io, gone| {
                    remotecommand::run_exec(lifecycle, request, io, gone)
                });
                tracing::Instrument::instrument(session, span).await;
            }
            StreamRequest::Attach(request) => {
                let wanted = Wanted::new(request.stdin, request.stdout, request.stderr, request.tty);
                let span = tracing::info_span!("attach_stream", container = %request.container_id, transport = "websocket");
                let session = remotecommand_session(socket, version, wanted, move |io, gone| {
                    remotecommand::run_attach(lifecycle, request, io, gone)
                });
                tracing::Instrument::instrument(session, span).await;
            }
            StreamRequest::PortForward(request) => {
                let span = tracing::info_span!("port_forward_stream", pod = %request.pod_sandbox_id, transport = "websocket");
                let session = port_forward_session(socket, lifecycle, request.pod_sandbox_id, ports);
                tracing::Instrument::instrument(session, span).await;
            }
        }
    })
}

/// `port=80&port=8080` (kubelet also accepts `ports=80,8080`).
/// The most ports one WebSocket port-forward may name: each takes two
/// channels (data and error), and a channel is one byte.
const MAX_FORWARDED_PORTS: usize = 128;

fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let ports: Result<Vec<u16>, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "port" || *key == "ports")
        .flat_map(|(_, value)| value.split(',').map(str::to_owned).collect::<Vec<_>>())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {p:?}\n"))
        })
        .collect();
    let ports = ports?;
    if ports.is_empty() {
        return Err("query parameter \"port\" is required\n".into());
    }
    if ports.len() > MAX_FORWARDED_PORTS {
        return Err(format!(
            "{} ports asked for; one connection forwards at most {MAX_FORWARDED_PORTS}\n",
            ports.len()
        ));
    }
    Ok(ports)
}

/// The outgoing side: every channel's bytes become messages on one queue,
/// which a task writes to the socket in order.
struct Outgoing {
    queue: mpsc::Sender<Message>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

impl Outgoing {
    /// A writer whose bytes go out on `channel`.
    fn channel(&mut self, channel: u8) -> Box<DuplexStream> {
        let (ours, mut theirs) = tokio::io::duplex(PIPE);
        let queue = self.queue.clone();
        self.pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            while let Ok(n) = theirs.read(&mut buf[1..]).await {
                if n == 0 {
                    break;
                }
                buf[0] = channel;
                let message = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..=n]));
                if queue.send(message).await.is_err() {
                    break;
                }
            }
        }));
        Box::new(ours)
    }

    async fn send(&self, channel: u8, data: &[u8]) {
        let mut message = Vec::with_capacity(data.len() + 1);
        message.push(channel);
        message.extend_from_slice(data);
        let _ = self.queue.send(Message::Binary(message.into())).await;
    }

    /// Waits for every channel's queued bytes.
    async fn drain(&mut self) {
        let pumps = std::mem::take(&mut self.pumps);
        let aborts: Vec<_> = pumps.iter().map(|p| p.abort_handle()).collect();
        if tokio::time::timeout(DRAIN, futures::future::join_all(pumps))
            .await
            .is_err()
        {
            // A channel whose writer never ended must not keep the socket open.
            for pump in aborts {
                pump.abort();
            }
        }
    }
}

/// Splits the socket: a writer task fed by [`Outgoing`], and a reader task
/// routing each incoming message to its channel's pipe. `gone` fires when
/// the client closed or vanished.
fn split(
    socket: WebSocket,
    mut inputs: HashMap<u8, DuplexStream>,
    close_signal: bool,
) -> (Outgoing, tokio::task::JoinHandle<()>, oneshot::Receiver<()>) {
    let (mut sink, mut source) = socket.split();
    let (queue, mut queued) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.send(message).await.is_err() {
                return;
            }
        }
        // A normal closure (1000): Go clients report a close without a
        // status code (1005) as an error on every stream.
        let normal = axum::extract::ws::CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
        let _ = sink.close().await;
    });
    let (gone_tx, gone) = oneshot::channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            match route(&data, close_signal) {
                Route::Nothing => {}
                Route::Close(channel) => {
                    inputs.remove(&channel);
                }
                Route::Data(channel, payload) => {
                    if let Some(pipe) = inputs.get_mut(&channel) {
                        if pipe.write_all(payload).await.is_err() {
                            inputs.remove(&channel);
                        }
                    }
                }
            }
        }
        let _ = gone_tx.send(());
    });
    (
        Outgoing {
            queue,
            pumps: Vec::new(),
        },
        writer,
        gone,
    )
}

/// What one message from the client asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    /// Bytes for a channel's pipe.
    Data(u8, &'a [u8]),
    /// The client closed its side of a channel (v5's close signal).
    Close(u8),
    /// Nothing: an empty message, or a close signal naming no channel.
    Nothing,
}

/// Reads a message of the channel protocol: its first byte names the
/// channel; with `close_signal` (v5), channel 255 closes the one named next.
fn route(data: &[u8], close_signal: bool) -> Route<'_> {
    match data.split_first() {
        None => Route::Nothing,
        Some((&CLOSE, rest)) if close_signal => {
            rest.first().map_or(Route::Nothing, |&c| Route::Close(c))
        }
        Some((&channel, payload)) => Route::Data(channel, payload),
    }
}

/// One Exec or Attach over the socket: channels per what was asked, the
/// outcome on the error channel, then a close.
async fn remotecommand_session<F, Fut>(socket: WebSocket, version: Version, wanted: Wanted, run: F)
where
    F: FnOnce(Stdio, futures::future::BoxFuture<'static, ()>) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let mut inputs = HashMap::new();
    let mut io = Stdio::default();
    if wanted.stdin {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        inputs.insert(STDIN, theirs);
        io.stdin = Some(Box::new(ours));
    }
    if wanted.tty && version.resizes() {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        inputs.insert(RESIZE, theirs);
        io.resize = Some(remotecommand::resize_events(Box::new(ours)));
    }
    let (mut out, writer, gone) = split(socket, inputs, version >= Version::V5);
    if wanted.stdout {
        io.stdout = Some(out.channel(STDOUT));
    }
    if wanted.stderr {
        io.stderr = Some(out.channel(STDERR));
    }
    // kubelet tells the client the streams are ready with an empty message
    // on the lowest channel it writes.
    let first = [(wanted.stdout, STDOUT), (wanted.stderr, STDERR)]
        .into_iter()
        .find_map(|(on, channel)| on.then_some(channel))
        .unwrap_or(ERROR);
    out.send(first, &[]).await;
    let gone = Box::pin(async move {
        let _ = gone.await;
    });
    let outcome = run(io, gone).await;
    out.drain().await;
    let report = outcome.error_stream_bytes(version);
    if !report.is_empty() {
        out.send(ERROR, &report).await;
    }
    drop(out);
    let _ = writer.await;
    tracing::debug!(?outcome, "stream ended");
}

/// Port forwarding over the socket: one connection per requested port.
async fn port_forward_session(
    socket: WebSocket,
    lifecycle: Arc<Lifecycle>,
    pod_id: String,
    ports: Vec<u16>,
) {
    let mut inputs = HashMap::new();
    let mut readers = Vec::new();
    for index in 0..ports.len() {
        let (ours, theirs) = tokio::io::duplex(PIPE);
        inputs.insert(data_channel(index), theirs);
        readers.push(ours);
    }
    let (mut out, writer, _gone) = split(socket, inputs, false);
    let mut forwards = Vec::new();
    for ((index, port), reader) in ports.iter().enumerate().zip(readers) {
        let (data, error) = (data_channel(index), data_channel(index) + 1);
        out.send(data, &port.to_le_bytes()).await;
        out.send(error, &port.to_le_bytes()).await;
        let to_client = out.channel(data);
        let mut errors = out.channel(error);
        let (lifecycle, pod_id, port) = (lifecycle.clone(), pod_id.clone(), *port);
        forwards.push(tokio::spawn(async move {
            match super::portforward::connect(&lifecycle, &pod_id, port).await {
                Ok(conn) => super::portforward::forward(conn, Box::new(reader), to_client).await,
                Err(message) => {
                    tracing::info!(port, %message, "port forward failed");
                    let _ = errors.write_all(message.as_bytes()).await;
                }
            }
            let _ = errors.shutdown().await;
        }));
    }
    futures::future::join_all(forwards).await;
    out.drain().await;
    drop(out);
    let _ = writer.await;
}

fn data_channel(index: usize) -> u8 {
    (index * 2) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query() {
        assert_eq!(query_ports("port=80&port=8080"), Ok(vec![80, 8080]));
        assert_eq!(query_ports("ports=80,81"), Ok(vec![80, 81]));
        assert!(query_ports("port=0").is_err());
        assert!(query_ports("port=x").is_err());
        assert!(query_ports("").is_err());
        let most: Vec<String> = (1..=128).map(|p| p.to_string()).collect();
        assert_eq!(
            query_ports(&format!("ports={}", most.join(","))).map(|p| p.len()),
            Ok(128)
        );
        let over: Vec<String> = (1..=129).map(|p| p.to_string()).collect();
        let err = query_ports(&format!("ports={}", over.join(","))).expect_err("129 ports");
        assert!(err.contains("at most 128"), "{err}");
    }

    mod properties {
        //! Fuzzing by properties: the channel protocol and the port query
        //! take any bytes and any text without panicking, and read back
        //! what a client sends.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_message_routes_to_its_channel(
                data in proptest::collection::vec(any::<u8>(), 0..64),
                close_signal in any::<bool>(),
            ) {
                let routed = route(&data, close_signal);
                match data.as_slice() {
                    [] => prop_assert_eq!(routed, Route::Nothing),
                    [CLOSE] if close_signal => prop_assert_eq!(routed, Route::Nothing),
                    [CLOSE, c, ..] if close_signal => prop_assert_eq!(routed, Route::Close(*c)),
                    [c, rest @ ..] => prop_assert_eq!(routed, Route::Data(*c, rest)),
                }
            }

            #[test]
            fn any_query_is_read_without_panicking(query in "\\PC{0,64}") {
                let _ = query_ports(&query);
            }

            #[test]
            fn the_ports_a_client_asks_for_come_back(ports in proptest::collection::vec(1u16.., 1..5)) {
                let query: Vec<String> = ports.iter().map(|p| format!("port={p}")).collect();
                prop_assert_eq!(query_ports(&query.join("&")), Ok(ports));
            }
        }
    }
}
