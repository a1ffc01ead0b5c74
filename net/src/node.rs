//! The node namespace (the uplink, where kubelet and host-network pods run)
//! as the rest of the machine sees it, the usernetes layout:
//!
//! - **its address**: the node's InternalIP (the host's own address unless
//!   configured) is assigned inside the namespace, so kubelet accepts it as
//!   `--node-ip` and pods reach the node's services at it;
//! - **published node ports**: the ports the control plane dials (kubelet's
//!   10250) are listened on in the host's namespace and forwarded to the node
//!   namespace's loopback, as host ports are;
//! - **host loopback services**: ports of the host's 127.0.0.1 (an API server,
//!   a registry) answer on the node namespace's 127.0.0.1 too, relayed by the
//!   daemon, so a kubeconfig that says `https://127.0.0.1:6443` works inside.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::NetError;
use crate::hostport::{HostPorts, PortMapping, Protocol};

/// The key under which published node ports are kept among host ports.
const NODE_PORTS_KEY: &str = "node";
/// How long dialling the host's loopback may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the node namespace shows of the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOptions {
    /// The node's address, assigned inside the node namespace (None: none).
    pub address: Option<IpAddr>,
    /// TCP ports published on the host and forwarded to the node
    /// namespace's loopback (kubelet's 10250).
    pub published_ports: Vec<u16>,
    /// TCP ports of the host's loopback that answer on the node namespace's
    /// loopback (an API server's 6443).
    pub host_loopback_ports: Vec<u16>,
}

/// The host's own address: the source address the host's routing table
/// picks for the default route. Finding it sends nothing (a UDP `connect`
/// only looks the route up). None on a host without a default route.
pub fn host_address() -> Option<IpAddr> {
    let probe = |bind: IpAddr, far: IpAddr| -> Option<IpAddr> {
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).ok()?;
        socket.connect(SocketAddr::new(far, 9)).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
    };
    // Documentation addresses (RFC 5737, RFC 3849): any routable address
    // works, as no packet is sent.
    probe(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1)),
    )
    .or_else(|| {
        probe(
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        )
    })
}

/// The node namespace's links to the host, as set up at start.
#[derive(Debug)]
pub struct NodeLinks {
    options: NodeOptions,
    /// What could not be set up, for `ucri info` and Status.
    problems: Vec<String>,
}

impl NodeLinks {
    /// Assigns the address, publishes the node ports and opens the host
    /// loopback relays. A part that fails is logged and reported by
    /// [`NodeLinks::problems`]; the others still come up.
    pub fn open(options: NodeOptions, netns: &Path, host_ports: &HostPorts) -> NodeLinks {
        let mut problems = Vec::new();
        if let Some(address) = options.address {
            if let Err(e) = assign_address(netns, address) {
                problems.push(e.to_string());
            }
        }
        if let Err(e) = publish(host_ports, &options.published_ports) {
            problems.push(e.to_string());
        }
        for &port in &options.host_loopback_ports {
            if let Err(e) = relay_host_loopback(netns, port) {
                problems.push(e.to_string());
            }
        }
        for problem in &problems {
            tracing::error!(%problem, "the node namespace is not fully linked to the host");
        }
        if problems.is_empty() && options != NodeOptions::default() {
            tracing::info!(?options, "node namespace linked to the host");
        }
        NodeLinks { options, problems }
    }

    /// The node's address, if it has one.
    pub fn address(&self) -> Option<IpAddr> {
        self.options.address
    }

    /// What failed at start.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// What `ucri info` and verbose status show.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "address": self.options.address,
            "publishedPorts": self.options.published_ports,
            "hostLoopbackPorts": self.options.host_loopback_ports,
            "problems": self.problems,
        })
    }
}

/// `ip address replace ADDRESS/32 dev lo` in the node namespace: idempotent,
/// so a daemon restart (the namespace outlives it) changes nothing.
fn assign_address(netns: &Path, address: IpAddr) -> Result<(), NetError> {
    let prefix = if address.is_ipv4() { 32 } else { 128 };
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "address",
        "replace",
        &format!("{address}/{prefix}"),
        "dev",
        "lo",
    ]);
    if address.is_ipv6() {
        cmd.arg("nodad");
    }
    let _ns = ucri_rootless::enter::command_in_netns(&mut cmd, netns)
        .map_err(crate::error::io("entering the node namespace"))?;
    let out = cmd
        .output()
        .map_err(crate::error::io("running ip address replace"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError::Plugin {
        plugin: "ip".into(),
        command: format!("address replace {address}/{prefix} dev lo"),
        message: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

fn publish(host_ports: &HostPorts, ports: &[u16]) -> Result<(), NetError> {
    let mappings: Vec<PortMapping> = ports
        .iter()
        .map(|&port| PortMapping {
            protocol: Protocol::Tcp,
            container_port: port,
            host_port: port,
            host_ip: String::new(),
        })
        .collect();
    if mappings.is_empty() {
        return Ok(());
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    host_ports
        .expose(NODE_PORTS_KEY, loopback, &mappings)
        .map_err(|e| match e {
            NetError::PortInUse(why) => {
                NetError::PortInUse(format!("publishing a node port: {why}"))
            }
            other => other,
        })
}

/// Listens on 127.0.0.1:`port` inside the node namespace and relays every
/// connection to the host's 127.0.0.1:`port`, for the daemon's lifetime.
fn relay_host_loopback(netns: &Path, port: u16) -> Result<(), NetError> {
    let address = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
    let listener = bind_in_netns(netns.to_owned(), address).map_err(|e| {
        NetError::PortInUse(format!(
            "cannot listen on {address} in the node namespace to reach the host's: {e}"
        ))
    })?;
    std::thread::Builder::new()
        .name(format!("host-lo-{port}"))
        .spawn(move || accept_loop(&listener, address))
        .map_err(crate::error::io("starting a host loopback relay"))?;
    Ok(())
}

/// Binds in `netns` from a short-lived thread; the socket stays in that
/// namespace, the daemon's threads stay in theirs.
fn bind_in_netns(netns: PathBuf, address: SocketAddr) -> io::Result<TcpListener> {
    ucri_rootless::enter::run_in_netns_thread(&netns, || TcpListener::bind(address))?
}

fn accept_loop(listener: &TcpListener, host: SocketAddr) {
    loop {
        match listener.accept() {
            Ok((client, _)) => {
                let _ = std::thread::Builder::new()
                    .name("host-lo-conn".into())
                    .spawn(move || relay_to_host(client, host));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(%e, %host, "accepting a host loopback connection");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn relay_to_host(client: TcpStream, host: SocketAddr) {
    let upstream = match TcpStream::connect_timeout(&host, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%e, %host, "the host refused a relayed connection");
            return;
        }
    };
    crate::splice::bridge(&client, &upstream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_address_is_neither_loopback_nor_unspecified() {
        let ip = host_address().expect("this test needs a host with a default route");
        assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    }
}
