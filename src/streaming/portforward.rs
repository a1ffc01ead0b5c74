//! PortForward's pod side: a TCP connection to `localhost:PORT` made inside
//! the pod's network namespace, copied to and from the client's streams.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::remotecommand::{Reader, Writer};
use crate::runtime::Lifecycle;

/// How long connecting inside the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `127.0.0.1:port` in pod `pod_id`'s network namespace; the
/// error says what went wrong in kubelet's words.
pub async fn connect(
    lifecycle: &Arc<Lifecycle>,
    pod_id: &str,
    port: u16,
) -> Result<tokio::net::TcpStream, String> {
    let failed =
        |e: &dyn std::fmt::Display| format!("error forwarding port {port} to pod {pod_id}: {e}");
    let lookup = lifecycle.clone();
    let id = pod_id.to_owned();
    let netns = tokio::task::spawn_blocking(move || lookup.pod_netns(&id))
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?
        .1;
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = super::netns::run_in_netns(netns, move || {
        std::net::TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
    })
    .await
    .map_err(|e| failed(&e))?;
    stream.set_nonblocking(true).map_err(|e| failed(&e))?;
    tokio::net::TcpStream::from_std(stream).map_err(|e| failed(&e))
}

/// Copies both ways until the pod closes its side, as kubelet's runtimes
/// do: the client's end of data half-closes the connection, and the pod's
/// end finishes the forward (a WebSocket client has no way to half-close).
pub async fn forward(conn: tokio::net::TcpStream, mut from_client: Reader, mut to_client: Writer) {
    let (mut pod_read, mut pod_write) = conn.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_client, &mut pod_write).await;
        let _ = pod_write.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pod_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to_client.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = to_client.flush().await;
            }
        }
    }
    let _ = to_client.shutdown().await;
    upstream.abort();
}
