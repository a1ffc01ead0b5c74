//! Kubernetes' remotecommand protocol, independent of the transport: the
//! protocol versions, the status reported at the end, terminal sizes, and
//! running an Exec or Attach against the streams a transport delivers.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::runtime::streams::ExecProcess;
use crate::runtime::{Lifecycle, LifecycleError};
use ucri_stream::remote::{copy_then_close as pump, sink_or};

pub use ucri_stream::remote::{Reader, Writer};

/// How long output may keep flowing after the process exited (a background
/// child can hold the pipes or the terminal open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// conmon's attach socket packets: one type byte, then up to 8 KiB.
const ATTACH_PACKET: usize = 8192 + 1;

/// The remotecommand versions, best first (SPDY `X-Stream-Protocol-Version`
/// and WebSocket subprotocols).
pub const VERSIONS: [&str; 5] = [
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Which protocol generation the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `channel.k8s.io`.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON Status.
    V4,
    /// `v5.channel.k8s.io` (WebSocket): adds the close signal.
    V5,
}

impl Wanted {
    /// The streams of a CRI request (a terminal merges stderr into stdout).
    pub fn new(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Wanted {
        Wanted {
            stdin,
            stdout,
            stderr: stderr && !tty,
            tty,
        }
    }
}

impl Version {
    /// The version a protocol name denotes.
    pub fn parse(name: &str) -> Option<Version> {
        Some(match name {
            "v5.channel.k8s.io" => Version::V5,
            "v4.channel.k8s.io" => Version::V4,
            "v3.channel.k8s.io" => Version::V3,
            "v2.channel.k8s.io" => Version::V2,
            "channel.k8s.io" => Version::V1,
            _ => return None,
        })
    }

    /// Has a resize stream.
    pub fn resizes(self) -> bool {
        self >= Version::V3
    }
}

/// What the client asked to stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    /// stdin.
    pub stdin: bool,
    /// stdout.
    pub stdout: bool,
    /// stderr.
    pub stderr: bool,
    /// A terminal.
    pub tty: bool,
}

/// A terminal size, as the resize stream carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    /// Columns.
    pub width: u16,
    /// Rows.
    pub height: u16,
}

/// The streams a transport delivers for one Exec or Attach.
#[derive(Default)]
pub struct Stdio {
    /// From the client.
    pub stdin: Option<Reader>,
    /// To the client.
    pub stdout: Option<Writer>,
    /// To the client.
    pub stderr: Option<Writer>,
    /// Terminal size changes.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// How an Exec or Attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process exited with this code (0 for a finished attach).
    Exited(i32),
    /// It could not run, or the streaming failed.
    Failed(String),
}

impl Outcome {
    /// The `metav1.Status` JSON of the v4+ error stream.
    pub fn status_json(&self) -> String {
        let status = match self {
            Outcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(message) => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        };
        status.to_string()
    }

    /// What the error stream carries for `version` (nothing on success
    /// before v4).
    pub fn error_stream_bytes(&self, version: Version) -> Vec<u8> {
        match (version >= Version::V4, self) {
            (true, _) => self.status_json().into_bytes(),
            (false, Outcome::Exited(0)) => Vec::new(),
            (false, Outcome::Exited(code)) => {
                format!("command terminated with non-zero exit code: exit status {code}")
                    .into_bytes()
            }
            (false, Outcome::Failed(message)) => message.clone().into_bytes(),
        }
    }
}

/// Reads concatenated JSON terminal sizes from a resize stream.
pub fn resize_events(mut source: Reader) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut chunk = [0u8; 1024];
        while let Ok(n) = source.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&chunk[..n]);
            let mut sizes = serde_json::Deserializer::from_slice(&pending).into_iter();
            let mut used = 0;
            while let Some(Ok(size)) = sizes.next() {
                used = sizes.byte_offset();
                if tx.send(size).await.is_err() {
                    return;
                }
            }
            pending.drain(..used);
        }
    });
    rx
}

/// Runs an Exec: the process in the container, its streams copied to and
/// from the client until it exits. `gone` resolves when the client left,
/// which kills the process.
pub async fn run_exec(
    lifecycle: Arc<Lifecycle>,
    request: ucri_cri_api::v1::ExecRequest,
    io: Stdio,
    gone: impl std::future::Future<Output = ()>,
) -> Outcome {
    let (id, cmd, tty, stdin) = (
        request.container_id,
        request.cmd,
        request.tty,
        request.stdin,
    );
    let spawned = tokio::task::spawn_blocking(move || lifecycle.spawn_exec(&id, cmd, tty, stdin))
        .await
        .map_err(|e| LifecycleError::Internal(e.to_string()))
        .and_then(|r| r);
    let mut process = match spawned {
        Ok(process) => process,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let copies = match connect_process(&mut process, io) {
        Ok(copies) => copies,
        Err(e) => {
            process.kill();
            let _ = process.wait().await;
            return Outcome::Failed(format!("connecting the exec's streams: {e}"));
        }
    };
    finish_exec(process, copies, gone).await
}

/// Background copies of one exec's streams.
struct Copies {
    input: Vec<tokio::task::JoinHandle<()>>,
    output: Vec<tokio::task::JoinHandle<()>>,
}

impl Copies {
    async fn finish(self) {
        let aborts: Vec<_> = self.output.iter().map(|t| t.abort_handle()).collect();
        let outputs = futures::future::join_all(self.output);
        if tokio::time::timeout(OUTPUT_GRACE, outputs).await.is_err() {
            tracing::debug!("output still open after the process exited; closing it");
            for task in aborts {
                task.abort();
            }
        }
        for task in self.input {
            task.abort();
        }
    }
}

async fn finish_exec(
    process: ExecProcess,
    copies: Copies,
    gone: impl std::future::Future<Output = ()>,
) -> Outcome {
    let pid_holder = ProcessKiller(process.kill_handle());
    let wait = process.wait();
    tokio::pin!(wait, gone);
    let waited = tokio::select! {
        result = &mut wait => result,
        () = &mut gone => {
            tracing::info!("client went away: killing the exec'd process");
            pid_holder.kill();
            wait.await
        }
    };
    copies.finish().await;
    match waited {
        Ok((code, runtime_err)) if code != 0 && !runtime_err.is_empty() => {
            Outcome::Failed(format!("exit code {code}: {runtime_err}"))
        }
        Ok((code, _)) => Outcome::Exited(code),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Kills an exec'd process by pid file.
struct ProcessKiller(std::path::PathBuf);

impl ProcessKiller {
    fn kill(&self) {
        crate::runtime::streams::kill_by_pid_file(&self.0);
    }
}

fn connect_process(process: &mut ExecProcess, io: Stdio) -> std::io::Result<Copies> {
    let Stdio {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let mut copies = Copies {
        input: Vec::new(),
        output: Vec::new(),
    };
    if let Some(master) = process.terminal.take() {
        connect_terminal(master, stdin, stdout, resize, &mut copies)?;
        return Ok(copies);
    }
    if let (Some(from), Some(to)) = (stdin, process.stdin.take()) {
        copies.input.push(tokio::spawn(pump(from, Box::new(to))));
    }
    if let Some(out) = process.stdout.take() {
        copies
            .output
            .push(tokio::spawn(pump(Box::new(out), sink_or(stdout))));
    }
    if let Some(err) = process.stderr.take() {
        copies
            .output
            .push(tokio::spawn(pump(Box::new(err), sink_or(stderr))));
    }
    Ok(copies)
}

/// Wires a terminal's master side: output to stdout, stdin to it, resize
/// events to `TIOCSWINSZ`.
fn connect_terminal(
    master: OwnedFd,
    stdin: Option<Reader>,
    stdout: Option<Writer>,
    resize: Option<mpsc::Receiver<TerminalSize>>,
    copies: &mut Copies,
) -> std::io::Result<()> {
    let reader = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
    let writer = tokio::fs::File::from_std(std::fs::File::from(master.try_clone()?));
    copies.output.push(tokio::spawn(pump(
        Box::new(TerminalReader(reader)),
        sink_or(stdout),
    )));
    if let Some(stdin) = stdin {
        copies
            .input
            .push(tokio::spawn(pump(stdin, Box::new(writer))));
    }
    if let Some(mut resize) = resize {
        copies.input.push(tokio::spawn(async move {
            while let Some(size) = resize.recv().await {
                if let Err(e) =
                    ucri_rootless::syscall::set_window_size(master.as_fd(), size.height, size.width)
                {
                    tracing::debug!(error = %e, "resizing the terminal");
                }
            }
        }));
    }
    Ok(())
}

/// A terminal's master side reads EIO once the last process holding the
/// other side is gone: that is its end of file.
struct TerminalReader(tokio::fs::File);

impl AsyncRead for TerminalReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// Runs an Attach: the container's output from conmon's attach socket to the
/// client, the client's stdin into it, terminal resizes to conmon's control
/// FIFO, until the container's output ends or the client leaves.
pub async fn run_attach(
    lifecycle: Arc<Lifecycle>,
    request: ucri_cri_api::v1::AttachRequest,
    io: Stdio,
    gone: impl std::future::Future<Output = ()>,
) -> Outcome {
    let id = request.container_id.clone();
    let socket = tokio::task::spawn_blocking(move || lifecycle.attach_socket(&id))
        .await
        .map_err(|e| LifecycleError::Internal(e.to_string()))
        .and_then(|r| r);
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let ctl = socket.ctl.clone();
    let fd = Arc::new(socket.socket);
    let Stdio {
        stdin,
        stdout,
        stderr,
        resize,
    } = io;
    let mut background = Vec::new();
    if let Some(stdin) = stdin {
        background.push(tokio::spawn(attach_input(stdin, fd.clone())));
    }
    if let Some(resize) = resize {
        background.push(tokio::spawn(attach_resizes(resize, ctl)));
    }
    let output = attach_output(fd.clone(), stdout, stderr);
    tokio::pin!(output, gone);
    let result = tokio::select! {
        result = &mut output => result,
        () = &mut gone => Ok(()),
    };
    // Wakes the reader thread if it still waits.
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    for task in background {
        task.abort();
    }
    match result {
        Ok(()) => Outcome::Exited(0),
        Err(e) => Outcome::Failed(format!("attach: {e}")),
    }
}

/// Reads conmon's packets on a thread of its own (a blocking
/// `SOCK_SEQPACKET` socket): type 2 is stdout, 3 stderr.
fn attach_packets(fd: Arc<OwnedFd>) -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; ATTACH_PACKET];
        let packet = nix::sys::socket::recv(
            fd.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .map_err(std::io::Error::from)
        .map(|n| {
            buf.truncate(n);
            buf
        });
        let end = matches!(&packet, Ok(p) if p.is_empty()) || packet.is_err();
        if tx.blocking_send(packet).is_err() || end {
            return;
        }
    });
    rx
}

async fn attach_output(
    fd: Arc<OwnedFd>,
    mut stdout: Option<Writer>,
    mut stderr: Option<Writer>,
) -> std::io::Result<()> {
    let mut packets = attach_packets(fd);
    while let Some(packet) = packets.recv().await {
        let packet = packet?;
        let Some((&kind, data)) = packet.split_first() else {
            break;
        };
        let sink = match kind {
            2 => stdout.as_mut(),
            3 => stderr.as_mut(),
            _ => None,
        };
        if let Some(sink) = sink {
            sink.write_all(data).await?;
            sink.flush().await?;
        }
    }
    for sink in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
        let _ = sink.shutdown().await;
    }
    Ok(())
}

/// The client's stdin into the attach socket; its end half-closes the
/// socket, which makes conmon close the container's stdin (`--stdin-once`).
async fn attach_input(mut stdin: Reader, fd: Arc<OwnedFd>) {
    let mut buf = vec![0u8; 8192];
    loop {
        let n = match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = buf[..n].to_vec();
        let socket = fd.clone();
        let sent = tokio::task::spawn_blocking(move || {
            nix::sys::socket::send(
                socket.as_raw_fd(),
                &chunk,
                nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
            )
        })
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            return;
        }
    }
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Write);
}

/// Terminal sizes to conmon's control FIFO: `1 HEIGHT WIDTH`.
async fn attach_resizes(mut resize: mpsc::Receiver<TerminalSize>, ctl: std::path::PathBuf) {
    while let Some(size) = resize.recv().await {
        let ctl = ctl.clone();
        let message = format!("1 {} {}\n", size.height, size.width);
        let written = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
                .open(&ctl)
                .and_then(|mut fifo| fifo.write_all(message.as_bytes()))
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::debug!(error = %e, "resizing the attached terminal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_what_kubectl_parses() {
        let ok: serde_json::Value =
            serde_json::from_str(&Outcome::Exited(0).status_json()).expect("json");
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_str(&Outcome::Exited(3).status_json()).expect("json");
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert!(Outcome::Exited(0)
            .error_stream_bytes(Version::V3)
            .is_empty());
        assert_eq!(
            Outcome::Failed("no".into()).error_stream_bytes(Version::V2),
            b"no"
        );
    }

    #[test]
    fn versions_parse_in_order() {
        let parsed: Vec<Version> = VERSIONS.iter().filter_map(|v| Version::parse(v)).collect();
        assert_eq!(
            parsed,
            [
                Version::V5,
                Version::V4,
                Version::V3,
                Version::V2,
                Version::V1
            ]
        );
        assert!(Version::V3.resizes() && !Version::V2.resizes());
        assert_eq!(Version::parse("v6.channel.k8s.io"), None);
    }

    #[tokio::test]
    async fn resize_events_are_read_from_concatenated_json() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut events = resize_events(Box::new(server));
        client
            .write_all(b"{\"Width\":80,\"Height\":24}\n{\"Width\":1")
            .await
            .expect("write");
        client.write_all(b"00,\"Height\":30}").await.expect("write");
        drop(client);
        assert_eq!(
            events.recv().await,
            Some(TerminalSize {
                width: 80,
                height: 24
            })
        );
        assert_eq!(
            events.recv().await,
            Some(TerminalSize {
                width: 100,
                height: 30
            })
        );
        assert_eq!(events.recv().await, None);
    }
}
