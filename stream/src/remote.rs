//! The client side of Kubernetes' streaming protocols, as kubectl and
//! crictl speak them: remotecommand (exec, attach) over SPDY/3.1 or
//! WebSocket, and port forwarding over either.

use std::sync::atomic::{AtomicU32, Ordering};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::spdy::{self, Session, SpdyError, StreamReader, StreamWriter};

/// A byte source for the remote side.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte sink for what the remote side sends.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// SPDY remotecommand versions, best first.
pub const SPDY_VERSIONS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// WebSocket remotecommand versions, best first.
pub const WS_VERSIONS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// The port forwarding protocol.
pub const PORT_FORWARD: &str = "portforward.k8s.io";

/// Which wire protocol to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// SPDY/3.1 (kubectl before 1.30, crictl).
    Spdy,
    /// WebSocket (`v5.channel.k8s.io`).
    WebSocket,
}

/// Why a remote command failed (not a non-zero exit, which is a result).
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The SPDY layer failed.
    #[error(transparent)]
    Spdy(#[from] SpdyError),
    /// The WebSocket layer failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The server reported a failure.
    #[error("{0}")]
    Remote(String),
    /// Local I/O failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The local ends of a remote command. `stdin` ends with its end of file;
/// each resize event is `(width, height)`.
#[derive(Default)]
pub struct Io {
    /// Sent to the process.
    pub stdin: Option<Reader>,
    /// The process's stdout (or terminal).
    pub stdout: Option<Writer>,
    /// The process's stderr.
    pub stderr: Option<Writer>,
    /// Terminal sizes to apply.
    pub resize: Option<mpsc::Receiver<(u16, u16)>>,
}

/// What the session asks for: the streams follow the CRI request the URL
/// came from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Send stdin.
    pub stdin: bool,
    /// Receive stdout.
    pub stdout: bool,
    /// Receive stderr (not with a terminal).
    pub stderr: bool,
    /// A terminal (resize events apply).
    pub tty: bool,
}

/// Runs a remote command (Exec or Attach URL) to its end: the exit code, or
/// the server's failure.
pub async fn run(
    url: &str,
    transport: Transport,
    options: Options,
    io: Io,
) -> Result<i32, RemoteError> {
    let versions: &[&str] = match transport {
        Transport::Spdy => &SPDY_VERSIONS,
        Transport::WebSocket => &WS_VERSIONS,
    };
    run_with(url, transport, versions, options, io).await
}

/// Like [`run`], offering only `versions` (best first): older clients'
/// behaviour, for tests and odd servers.
pub async fn run_with(
    url: &str,
    transport: Transport,
    versions: &[&str],
    options: Options,
    io: Io,
) -> Result<i32, RemoteError> {
    match transport {
        Transport::Spdy => run_spdy(url, versions, options, io).await,
        Transport::WebSocket => run_websocket(url, versions, options, io).await,
    }
}

/// Reads the exit code out of the v4+ error stream's `metav1.Status`
/// (older versions send plain text, and nothing on success).
pub fn parse_status(bytes: &[u8]) -> Result<i32, RemoteError> {
    if bytes.is_empty() {
        return Ok(0);
    }
    let Ok(status) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Err(RemoteError::Remote(
            String::from_utf8_lossy(bytes).into_owned(),
        ));
    };
    if status["status"] == "Success" {
        return Ok(0);
    }
    if status["reason"] == "NonZeroExitCode" {
        let causes = status["details"]["causes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let code = causes
            .iter()
            .find(|c| c["reason"] == "ExitCode")
            .and_then(|c| c["message"].as_str())
            .and_then(|m| m.parse().ok());
        if let Some(code) = code {
            return Ok(code);
        }
    }
    let message = status["message"]
        .as_str()
        .unwrap_or("remote command failed");
    Err(RemoteError::Remote(message.to_owned()))
}

async fn open(session: &Session, kind: &str) -> Result<spdy::Stream, SpdyError> {
    session
        .open(vec![("streamtype".to_owned(), kind.to_owned())])
        .await
}

async fn run_spdy(
    url: &str,
    versions: &[&str],
    options: Options,
    io: Io,
) -> Result<i32, RemoteError> {
    let (session, _incoming, protocol) = spdy::connect(url, versions).await?;
    let (mut error, error_writer) = open(&session, "error").await?.split();
    let _ = error_writer.finish().await;
    let mut tasks = Vec::new();
    let mut inputs = Vec::new();
    if let (true, Some(stdin)) = (options.stdin, io.stdin) {
        let (_, writer) = open(&session, "stdin").await?.split();
        inputs.push(tokio::spawn(copy_then_close(stdin, Box::new(writer))));
    }
    if options.stdout {
        let (reader, _) = open(&session, "stdout").await?.split();
        tasks.push(tokio::spawn(copy_then_close(
            Box::new(reader),
            sink_or(io.stdout),
        )));
    }
    if options.stderr && !options.tty {
        let (reader, _) = open(&session, "stderr").await?.split();
        tasks.push(tokio::spawn(copy_then_close(
            Box::new(reader),
            sink_or(io.stderr),
        )));
    }
    // Like client-go, a terminal always gets a resize stream (v3+): the
    // server waits for it.
    let resizes = options.tty && protocol != "v2.channel.k8s.io" && protocol != "channel.k8s.io";
    if resizes {
        let (_, writer) = open(&session, "resize").await?.split();
        if let Some(resize) = io.resize {
            inputs.push(tokio::spawn(send_resizes(resize, writer)));
        }
    }
    let mut status = Vec::new();
    error.read_to_end(&mut status).await?;
    futures::future::join_all(tasks).await;
    for task in inputs {
        task.abort();
    }
    session.close().await;
    parse_final_status(&status, protocol == "v4.channel.k8s.io")
}

/// Like [`parse_status`]; with `always` (v4 and later) the server always
/// reports, so silence means it went away.
fn parse_final_status(bytes: &[u8], always: bool) -> Result<i32, RemoteError> {
    if always && bytes.is_empty() {
        return Err(RemoteError::Remote(
            "the stream ended without a status from the server".into(),
        ));
    }
    parse_status(bytes)
}

async fn send_resizes(mut resize: mpsc::Receiver<(u16, u16)>, writer: StreamWriter) {
    while let Some((width, height)) = resize.recv().await {
        let json = serde_json::json!({"Width": width, "Height": height}).to_string();
        if writer.send(json.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// `writer`, or a sink that drops what it gets.
pub fn sink_or(writer: Option<Writer>) -> Writer {
    writer.unwrap_or_else(|| Box::new(tokio::io::sink()))
}

/// Copies to end of file (or the first error, on either side), flushing as
/// it goes, then shuts the sink down: closing a pipe or half-closing a
/// stream.
pub async fn copy_then_close(mut from: Reader, mut to: Writer) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to a streaming URL (`http://` becomes `ws://`),
/// offering `protocols`; returns the socket and the chosen protocol.
pub async fn connect_websocket(
    url: &str,
    protocols: &[&str],
) -> Result<(WsStream, String), RemoteError> {
    let ws_url = url.replacen("http://", "ws://", 1);
    let mut request = ws_url
        .into_client_request()
        .map_err(|e| RemoteError::WebSocket(e.to_string()))?;
    let offered = protocols.join(", ");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        offered
            .parse()
            .map_err(|_| RemoteError::WebSocket("bad protocol list".into()))?,
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| RemoteError::WebSocket(describe_ws_error(e)))?;
    let protocol = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((socket, protocol))
}

fn describe_ws_error(e: tokio_tungstenite::tungstenite::Error) -> String {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .unwrap_or_default();
            format!("{}: {body}", response.status())
        }
        other => other.to_string(),
    }
}

async fn run_websocket(
    url: &str,
    versions: &[&str],
    options: Options,
    io: Io,
) -> Result<i32, RemoteError> {
    let (socket, protocol) = connect_websocket(url, versions).await?;
    let close_signal = protocol == "v5.channel.k8s.io";
    let (mut sink, mut source) = socket.split();
    let (queue, mut queued) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(message) = queued.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut inputs = Vec::new();
    if let (true, Some(stdin)) = (options.stdin, io.stdin) {
        inputs.push(tokio::spawn(ws_stdin(stdin, queue.clone(), close_signal)));
    }
    if let (true, Some(mut resize)) = (options.tty, io.resize) {
        let queue = queue.clone();
        inputs.push(tokio::spawn(async move {
            while let Some((width, height)) = resize.recv().await {
                let json = serde_json::json!({"Width": width, "Height": height}).to_string();
                let _ = queue.send(channel_message(4, json.as_bytes())).await;
            }
        }));
    }
    let (mut stdout, mut stderr) = (sink_or(io.stdout), sink_or(io.stderr));
    let mut status = Vec::new();
    while let Some(message) = source.next().await {
        let data = match message.map_err(|e| RemoteError::WebSocket(e.to_string()))? {
            Message::Binary(data) => data.to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            1 => stdout.write_all(payload).await?,
            2 => stderr.write_all(payload).await?,
            3 => status.extend_from_slice(payload),
            _ => {}
        }
        stdout.flush().await?;
    }
    let _ = stdout.shutdown().await;
    let _ = stderr.shutdown().await;
    for task in inputs {
        task.abort();
    }
    drop(queue);
    let _ = writer.await;
    parse_final_status(
        &status,
        matches!(protocol.as_str(), "v4.channel.k8s.io" | "v5.channel.k8s.io"),
    )
}

async fn ws_stdin(mut stdin: Reader, queue: mpsc::Sender<Message>, close_signal: bool) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if queue.send(channel_message(0, &buf[..n])).await.is_err() {
            return;
        }
    }
    if close_signal {
        let _ = queue.send(Message::Binary(vec![255, 0].into())).await;
    }
}

fn channel_message(channel: u8, data: &[u8]) -> Message {
    let mut message = Vec::with_capacity(data.len() + 1);
    message.push(channel);
    message.extend_from_slice(data);
    Message::Binary(message.into())
}

/// A SPDY port forwarding session: each [`SpdyPortForward::open`] is one TCP
/// connection to a port of the pod.
pub struct SpdyPortForward {
    session: Session,
    next_request: AtomicU32,
}

/// One forwarded connection: data both ways, and the server's error report
/// (empty when the connection worked).
pub struct ForwardedConnection {
    /// Data from the pod.
    pub reader: StreamReader,
    /// Data to the pod; shutting it down half-closes the connection.
    pub writer: StreamWriter,
    /// The error stream.
    pub error: StreamReader,
}

impl SpdyPortForward {
    /// Upgrades a PortForward URL.
    pub async fn connect(url: &str) -> Result<SpdyPortForward, RemoteError> {
        let (session, _incoming, _) = spdy::connect(url, &[PORT_FORWARD]).await?;
        Ok(SpdyPortForward {
            session,
            next_request: AtomicU32::new(0),
        })
    }

    /// Opens a connection to `port` in the pod.
    pub async fn open(&self, port: u16) -> Result<ForwardedConnection, RemoteError> {
        let request = self
            .next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let headers = |kind: &str| {
            vec![
                ("streamtype".to_owned(), kind.to_owned()),
                ("port".to_owned(), port.to_string()),
                ("requestid".to_owned(), request.clone()),
            ]
        };
        let (error, error_writer) = self.session.open(headers("error")).await?.split();
        let _ = error_writer.finish().await;
        let (reader, writer) = self.session.open(headers("data")).await?.split();
        Ok(ForwardedConnection {
            reader,
            writer,
            error,
        })
    }

    /// Ends the session.
    pub async fn close(&self) {
        self.session.close().await;
    }

    /// Resolves when the session ended (the server went away).
    pub async fn closed(&self) {
        self.session.closed().await;
    }
}

/// Forwards one local connection through `forward` to `port`; returns the
/// server's error report, if any.
pub async fn forward_connection(
    forward: &SpdyPortForward,
    port: u16,
    local: tokio::net::TcpStream,
) -> Result<(), RemoteError> {
    let ForwardedConnection {
        reader,
        writer,
        mut error,
    } = forward.open(port).await?;
    let (local_read, local_write) = local.into_split();
    let up = tokio::spawn(copy_then_close(Box::new(local_read), Box::new(writer)));
    let down = copy_then_close(Box::new(reader), Box::new(local_write));
    let mut report = Vec::new();
    let (_, read) = tokio::join!(down, error.read_to_end(&mut report));
    up.abort();
    read?;
    if report.is_empty() {
        Ok(())
    } else {
        Err(RemoteError::Remote(
            String::from_utf8_lossy(&report).into_owned(),
        ))
    }
}

/// A WebSocket port forwarding session: channel 2i carries port i's data,
/// 2i+1 its errors.
pub struct WsPortForward {
    /// Per port: data from the pod.
    pub data: Vec<mpsc::Receiver<Vec<u8>>>,
    /// Per port: the error report.
    pub errors: Vec<mpsc::Receiver<Vec<u8>>>,
    queue: mpsc::Sender<Message>,
}

impl WsPortForward {
    /// Upgrades a PortForward URL for `ports` (each connected at once).
    pub async fn connect(url: &str, ports: &[u16]) -> Result<WsPortForward, RemoteError> {
        let query: Vec<String> = ports.iter().map(|p| format!("port={p}")).collect();
        let url = format!("{url}?{}", query.join("&"));
        let (socket, _) = connect_websocket(&url, &["v4.channel.k8s.io"]).await?;
        let (mut sink, mut source) = socket.split();
        let (queue, mut queued) = mpsc::channel::<Message>(64);
        tokio::spawn(async move {
            while let Some(message) = queued.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        let (mut data_tx, mut data) = (Vec::new(), Vec::new());
        let (mut error_tx, mut errors) = (Vec::new(), Vec::new());
        for _ in ports {
            let (tx, rx) = mpsc::channel(64);
            data_tx.push(tx);
            data.push(rx);
            let (tx, rx) = mpsc::channel(64);
            error_tx.push(tx);
            errors.push(rx);
        }
        tokio::spawn(async move {
            // The first message on each channel is its port number.
            let mut seen = std::collections::HashSet::new();
            while let Some(Ok(message)) = source.next().await {
                let Message::Binary(bytes) = message else {
                    continue;
                };
                let Some((&channel, payload)) = bytes.split_first() else {
                    continue;
                };
                if seen.insert(channel) {
                    continue;
                }
                let index = usize::from(channel / 2);
                let target = if channel % 2 == 0 {
                    data_tx.get(index)
                } else {
                    error_tx.get(index)
                };
                if let Some(tx) = target {
                    let _ = tx.send(payload.to_vec()).await;
                }
            }
        });
        Ok(WsPortForward {
            data,
            errors,
            queue,
        })
    }

    /// Sends bytes to the pod on port index `index`.
    pub async fn send(&self, index: usize, data: &[u8]) -> Result<(), RemoteError> {
        self.queue
            .send(channel_message((index * 2) as u8, data))
            .await
            .map_err(|_| RemoteError::WebSocket("connection closed".into()))
    }

    /// Closes the socket.
    pub async fn close(&self) {
        let _ = self.queue.send(Message::Close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_give_exit_codes_or_errors() {
        assert_eq!(parse_status(b"").expect("empty"), 0);
        assert_eq!(
            parse_status(br#"{"metadata":{},"status":"Success"}"#).expect("success"),
            0
        );
        let failed = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(parse_status(failed).expect("exit code"), 7);
        let err = parse_status(br#"{"status":"Failure","message":"no such container"}"#);
        assert!(matches!(err, Err(RemoteError::Remote(m)) if m == "no such container"));
        assert!(matches!(parse_status(b"plain"), Err(RemoteError::Remote(m)) if m == "plain"));
    }
}
