//! `ucri ctl exec`, `attach` and `port-forward`: the CRI call for a
//! streaming URL, then the project's own SPDY/3.1 (default) or WebSocket
//! client on it, with the local terminal in raw mode for `-t`.

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::{anyhow, Context};
use tonic::transport::Channel;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::{AttachRequest, ExecRequest, ExecSyncRequest, PortForwardRequest};
use ucri_stream::remote::{self, Io, Options, Transport};

/// The wire protocol for streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamTransport {
    /// SPDY/3.1, as crictl and kubelet use.
    Spdy,
    /// WebSocket (`v5.channel.k8s.io`).
    Websocket,
}

impl From<StreamTransport> for Transport {
    fn from(t: StreamTransport) -> Transport {
        match t {
            StreamTransport::Spdy => Transport::Spdy,
            StreamTransport::Websocket => Transport::WebSocket,
        }
    }
}

/// `exec` flags (crictl's).
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Run through ExecSync (output after the command ends) instead of streaming.
    #[arg(short, long)]
    pub sync: bool,
    /// Seconds before a `--sync` command is killed (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub timeout: i64,
    /// The streaming protocol.
    #[arg(long, value_enum, default_value = "spdy")]
    pub transport: StreamTransport,
    /// The container ID.
    pub id: String,
    /// The command.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// `attach` flags (crictl's).
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Send stdin to the container (it must have been created with stdin).
    #[arg(short, long)]
    pub interactive: bool,
    /// The container has a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// The streaming protocol.
    #[arg(long, value_enum, default_value = "spdy")]
    pub transport: StreamTransport,
    /// The container ID.
    pub id: String,
}

/// `port-forward` arguments (crictl's).
#[derive(Debug, clap::Args)]
pub struct PortForwardArgs {
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// The pod ID.
    pub pod: String,
    /// `[LOCAL_PORT:]REMOTE_PORT` (LOCAL_PORT 0 or empty: any free port).
    #[arg(required = true)]
    pub ports: Vec<String>,
}

type Client = RuntimeServiceClient<Channel>;

/// Runs `exec`; returns the command's exit code.
pub async fn exec(channel: Channel, args: ExecArgs) -> anyhow::Result<i32> {
    let mut client = Client::new(channel);
    if args.sync {
        return exec_sync(&mut client, args).await;
    }
    let request = ExecRequest {
        container_id: args.id,
        cmd: args.cmd,
        tty: args.tty,
        stdin: args.interactive,
        stdout: true,
        stderr: !args.tty,
    };
    let options = options(request.stdin, request.tty);
    let url = client.exec(request).await?.into_inner().url;
    stream(&url, args.transport.into(), options).await
}

async fn exec_sync(client: &mut Client, args: ExecArgs) -> anyhow::Result<i32> {
    let reply = client
        .exec_sync(ExecSyncRequest {
            container_id: args.id,
            cmd: args.cmd,
            timeout: args.timeout,
        })
        .await?
        .into_inner();
    use std::io::Write;
    std::io::stdout().write_all(&reply.stdout)?;
    std::io::stderr().write_all(&reply.stderr)?;
    Ok(reply.exit_code)
}

/// Runs `attach` until the container's output ends or Ctrl-C.
pub async fn attach(channel: Channel, args: AttachArgs) -> anyhow::Result<i32> {
    let request = AttachRequest {
        container_id: args.id,
        stdin: args.interactive,
        tty: args.tty,
        stdout: true,
        stderr: !args.tty,
    };
    let options = options(request.stdin, request.tty);
    let url = Client::new(channel).attach(request).await?.into_inner().url;
    stream(&url, args.transport.into(), options).await
}

/// What `ucri ctl` asks for: stdout always, stderr unless a terminal merges it.
fn options(stdin: bool, tty: bool) -> Options {
    Options {
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    }
}

/// Streams a remote command with this process's stdio.
async fn stream(url: &str, transport: Transport, options: Options) -> anyhow::Result<i32> {
    let raw = if options.tty && options.stdin {
        RawTerminal::enter()
    } else {
        None
    };
    let io = Io {
        stdin: options
            .stdin
            .then(|| Box::new(tokio::io::stdin()) as remote::Reader),
        stdout: Some(Box::new(tokio::io::stdout())),
        stderr: Some(Box::new(tokio::io::stderr())),
        resize: options.tty.then(terminal_sizes).flatten(),
    };
    let result = remote::run(url, transport, options, io).await;
    drop(raw);
    Ok(result?)
}

/// The local terminal's size now and after each SIGWINCH, as `(width,
/// height)`; `None` when stdout is no terminal.
fn terminal_sizes() -> Option<tokio::sync::mpsc::Receiver<(u16, u16)>> {
    let size = || {
        ucri_rootless::syscall::window_size(std::io::stdout().as_fd())
            .map(|(rows, cols)| (cols, rows))
    };
    let first = size()?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let _ = tx.try_send(first);
    tokio::spawn(async move {
        let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        else {
            return;
        };
        while winch.recv().await.is_some() {
            if let Some(size) = size() {
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        }
    });
    Some(rx)
}

/// The local terminal in raw mode until dropped.
struct RawTerminal(nix::sys::termios::Termios);

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.0);
    }
}

/// Runs `port-forward` until Ctrl-C: one local listener per mapping, each
/// accepted connection forwarded over one SPDY session.
pub async fn port_forward(channel: Channel, args: PortForwardArgs) -> anyhow::Result<i32> {
    let mappings = args
        .ports
        .iter()
        .map(|p| parse_mapping(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = PortForwardRequest {
        pod_sandbox_id: args.pod,
        port: mappings
            .iter()
            .map(|(_, remote)| i32::from(*remote))
            .collect(),
    };
    let url = Client::new(channel)
        .port_forward(request)
        .await?
        .into_inner()
        .url;
    let forward = std::sync::Arc::new(remote::SpdyPortForward::connect(&url).await?);
    let mut listeners = Vec::new();
    for (local, remote_port) in mappings {
        let listener = tokio::net::TcpListener::bind((args.address, local))
            .await
            .with_context(|| format!("listening on {}:{local}", args.address))?;
        println!(
            "Forwarding from {} -> {remote_port}",
            listener.local_addr()?
        );
        listeners.push(tokio::spawn(accept_loop(
            listener,
            remote_port,
            forward.clone(),
        )));
    }
    let lost = tokio::select! {
        interrupted = tokio::signal::ctrl_c() => {
            interrupted?;
            false
        }
        () = forward.closed() => true,
    };
    for listener in listeners {
        listener.abort();
    }
    forward.close().await;
    if lost {
        // kubectl exits too when the connection to the pod is gone.
        return Err(anyhow!("lost the connection to the streaming server"));
    }
    Ok(0)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    port: u16,
    forward: std::sync::Arc<remote::SpdyPortForward>,
) {
    while let Ok((conn, peer)) = listener.accept().await {
        // Like kubectl; a closed stdout must not stop the forwarding.
        let _ = writeln!(std::io::stdout(), "Handling connection for {port}");
        let forward = forward.clone();
        tokio::spawn(async move {
            if let Err(e) = remote::forward_connection(&forward, port, conn).await {
                eprintln!("port {port} (from {peer}): {e}");
            }
        });
    }
}

/// `8080` or `18080:8080` (or `:8080`, any local port).
fn parse_mapping(text: &str) -> anyhow::Result<(u16, u16)> {
    let (local, remote) = match text.split_once(':') {
        Some((local, remote)) => (local, remote),
        None => (text, text),
    };
    let remote: u16 = remote
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| anyhow!("invalid remote port in {text:?}"))?;
    let local = if local.is_empty() {
        0
    } else {
        local
            .parse()
            .map_err(|_| anyhow!("invalid local port in {text:?}"))?
    };
    Ok((local, remote))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse_like_crictl() {
        assert_eq!(parse_mapping("8080").expect("plain"), (8080, 8080));
        assert_eq!(parse_mapping("18080:80").expect("pair"), (18080, 80));
        assert_eq!(parse_mapping(":80").expect("any local"), (0, 80));
        assert!(parse_mapping("x:80").is_err());
        assert!(parse_mapping("80:0").is_err());
    }
}
