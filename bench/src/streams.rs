//! The streaming server's figures: exec round trip (Exec + SPDY or
//! WebSocket until the exit status, next to ExecSync) and port-forward
//! download throughput (SPDY and WebSocket, next to the hostPort forwarder),
//! measured interleaved in one run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;
use ucri_cri_api::v1::*;
use ucri_stream::remote::{self, Io, Options, Transport};

use crate::args::Args;
use crate::measure::{
    container_config, exec_sync_true, pod_config, remove_pod, start_pod_with, summary,
};

type Client = RuntimeServiceClient<Channel>;

/// The pod's web server port and the hostPort in front of it.
const HTTP_PORT: i32 = 8080;
const HOST_PORT: i32 = 18181;

/// Exec round trips and port-forward throughput.
pub async fn run(client: &mut Client, args: &Args) -> anyhow::Result<Value> {
    let megabytes = if args.pods < 10 { 16 } else { 128 };
    let script = format!(
        "mkdir -p /www && dd if=/dev/zero of=/www/big bs=1M count={megabytes} 2>/dev/null && exec httpd -f -p {HTTP_PORT} -h /www"
    );
    let (pod, id) = start(client, args, &script).await?;
    let result = measure(client, args, &pod, &id, megabytes).await;
    remove_pod(client, &pod).await?;
    result
}

async fn measure(
    client: &mut Client,
    args: &Args,
    pod: &str,
    id: &str,
    megabytes: u64,
) -> anyhow::Result<Value> {
    wait_for_http(client, id).await?;
    let (mut spdy, mut ws, mut sync) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.execs {
        spdy.push(exec_round_trip(client, id, Transport::Spdy).await?);
        ws.push(exec_round_trip(client, id, Transport::WebSocket).await?);
        sync.push(exec_sync_true(client, id).await?);
    }
    let bytes = megabytes << 20;
    let rounds = if args.pods < 10 { 1 } else { 3 };
    let (mut via_spdy, mut via_ws, mut via_host) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        via_spdy.push(gbits(bytes, forward_spdy(client, pod, bytes).await?));
        via_ws.push(gbits(bytes, forward_ws(client, pod, bytes).await?));
        via_host.push(gbits(bytes, host_port(bytes).await?));
    }
    Ok(json!({
        "execSpdy": summary(&mut spdy),
        "execWebSocket": summary(&mut ws),
        "execSync": summary(&mut sync),
        "transferMiB": megabytes,
        "rounds": rounds,
        "portForwardSpdyGbps": median(&mut via_spdy),
        "portForwardWebSocketGbps": median(&mut via_ws),
        "hostPortGbps": median(&mut via_host),
    }))
}

async fn start(client: &mut Client, args: &Args, script: &str) -> anyhow::Result<(String, String)> {
    let mut sandbox = pod_config(args, "streams");
    sandbox.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: HTTP_PORT,
        host_port: HOST_PORT,
        host_ip: String::new(),
    }];
    let container = container_config(args, &["sh", "-c", script]);
    let (pod, id, _) = start_pod_with(client, sandbox, container, true).await?;
    Ok((pod, id))
}

/// Waits until httpd answers inside the pod (the file is written first).
async fn wait_for_http(client: &mut Client, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let probe = client
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("timeout 2 wget -q --spider http://127.0.0.1:{HTTP_PORT}/big"),
                ],
                timeout: 10,
            })
            .await?
            .into_inner();
        if probe.exit_code == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            let status = client
                .container_status(ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                })
                .await?
                .into_inner()
                .status;
            bail!(
                "httpd did not come up in the streaming pod: probe exit {} {:?} {:?}; container {:?}",
                probe.exit_code,
                String::from_utf8_lossy(&probe.stdout),
                String::from_utf8_lossy(&probe.stderr),
                status.map(|s| (s.state, s.exit_code, s.reason, s.message, s.log_path))
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exec RPC, upgrade, `true`, exit status.
async fn exec_round_trip(
    client: &mut Client,
    id: &str,
    transport: Transport,
) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let url = client
        .exec(ExecRequest {
            container_id: id.into(),
            cmd: vec!["true".into()],
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .url;
    let options = Options {
        stdout: true,
        stderr: true,
        ..Options::default()
    };
    let code = remote::run(&url, transport, options, Io::default()).await?;
    if code != 0 {
        bail!("exec of true over {transport:?} exited {code}");
    }
    Ok(t.elapsed())
}

const REQUEST: &[u8] = b"GET /big HTTP/1.0\r\n\r\n";

fn forward_url(pod: &str) -> PortForwardRequest {
    PortForwardRequest {
        pod_sandbox_id: pod.into(),
        port: vec![HTTP_PORT],
    }
}

/// Downloads the file through a SPDY port-forward; the time to its end.
async fn forward_spdy(client: &mut Client, pod: &str, bytes: u64) -> anyhow::Result<Duration> {
    let url = client
        .port_forward(forward_url(pod))
        .await?
        .into_inner()
        .url;
    let forward = remote::SpdyPortForward::connect(&url).await?;
    let t = Instant::now();
    let remote::ForwardedConnection {
        mut reader, writer, ..
    } = forward.open(HTTP_PORT as u16).await?;
    writer.send(REQUEST).await?;
    let got = drain(&mut reader).await?;
    let elapsed = t.elapsed();
    forward.close().await;
    check(got, bytes, "SPDY port-forward")?;
    Ok(elapsed)
}

/// The same through a WebSocket port-forward.
async fn forward_ws(client: &mut Client, pod: &str, bytes: u64) -> anyhow::Result<Duration> {
    let url = client
        .port_forward(forward_url(pod))
        .await?
        .into_inner()
        .url;
    let t = Instant::now();
    let mut forward = remote::WsPortForward::connect(&url, &[HTTP_PORT as u16]).await?;
    forward.send(0, REQUEST).await?;
    let mut got = 0u64;
    while let Some(chunk) = forward.data[0].recv().await {
        got += chunk.len() as u64;
    }
    let elapsed = t.elapsed();
    check(got, bytes, "WebSocket port-forward")?;
    Ok(elapsed)
}

/// The same through the hostPort forwarder (the daemon's splice path).
async fn host_port(bytes: u64) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", HOST_PORT as u16))
        .await
        .context("connecting to the hostPort")?;
    tokio::io::AsyncWriteExt::write_all(&mut conn, REQUEST).await?;
    let got = drain(&mut conn).await?;
    let elapsed = t.elapsed();
    check(got, bytes, "hostPort")?;
    Ok(elapsed)
}

async fn drain(reader: &mut (impl AsyncReadExt + Unpin)) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(got);
        }
        got += n as u64;
    }
}

/// The body plus a response head of some hundred bytes must have arrived.
fn check(got: u64, body: u64, what: &str) -> anyhow::Result<()> {
    if got < body || got > body + 1024 {
        bail!("{what}: {got} bytes for a body of {body}");
    }
    Ok(())
}

fn gbits(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let gbps = values.get(values.len() / 2).copied().unwrap_or(0.0);
    (gbps * 100.0).round() / 100.0
}
