//! hostPort on the host: the daemon listens on the host port in the host's
//! network namespace and forwards each TCP connection (spliced, zero-copy)
//! and each UDP flow to the pod, through sockets opened inside the uplink
//! namespace (the design rootlesskit's built-in port driver uses).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{io as io_err, NetError};

/// How long a UDP flow may stay idle before its socket is closed.
const UDP_FLOW_IDLE: Duration = Duration::from_secs(60);
/// How often blocked UDP loops look at their stop flag.
const UDP_POLL: Duration = Duration::from_millis(200);
/// How long connecting to the pod may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A transport protocol of a port mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (not forwarded).
    Sctp,
}

impl Protocol {
    /// The lowercase name CNI's portmap expects.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One hostPort mapping of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The protocol.
    pub protocol: Protocol,
    /// The port inside the pod.
    pub container_port: u16,
    /// The port on the host.
    pub host_port: u16,
    /// The host address to listen on ("" = all IPv4 addresses).
    pub host_ip: String,
}

impl PortMapping {
    fn listen_addr(&self) -> Result<SocketAddr, NetError> {
        let ip = if self.host_ip.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            self.host_ip.parse().map_err(|_| {
                NetError::InvalidArgument(format!("hostIP {:?} is not an IP address", self.host_ip))
            })?
        };
        Ok(SocketAddr::new(ip, self.host_port))
    }
}

/// The lowest port an unprivileged process may bind on this host.
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Checks mappings before anything is created: ports in range, no
/// privileged host ports, no SCTP, no duplicates.
pub fn validate(mappings: &[PortMapping]) -> Result<(), NetError> {
    let floor = unprivileged_port_start();
    let mut seen = std::collections::HashSet::new();
    for m in mappings.iter().filter(|m| m.host_port != 0) {
        if m.container_port == 0 {
            return Err(NetError::InvalidArgument(format!(
                "hostPort {} maps to container port 0",
                m.host_port
            )));
        }
        if m.host_port < floor {
            return Err(NetError::InvalidArgument(format!(
                "hostPort {} is below net.ipv4.ip_unprivileged_port_start ({floor}): a rootless \
                 runtime cannot bind it; use a port >= {floor} or lower that sysctl",
                m.host_port
            )));
        }
        if m.protocol == Protocol::Sctp {
            return Err(NetError::InvalidArgument(format!(
                "hostPort {}/sctp: SCTP host ports are not supported",
                m.host_port
            )));
        }
        m.listen_addr()?;
        if !seen.insert((m.protocol, m.host_ip.clone(), m.host_port)) {
            return Err(NetError::InvalidArgument(format!(
                "hostPort {}/{} is mapped twice",
                m.host_port,
                m.protocol.name()
            )));
        }
    }
    Ok(())
}

/// One listening socket and its thread.
#[derive(Debug)]
struct Exposed {
    stop: Arc<AtomicBool>,
    socket: ListeningSocket,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Clone)]
enum ListeningSocket {
    Tcp(Arc<TcpListener>),
    Udp(Arc<UdpSocket>),
}

impl Exposed {
    fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let ListeningSocket::Tcp(listener) = &self.socket {
            // Wakes the accept() blocked in the thread.
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The host ports of every pod.
#[derive(Debug)]
pub struct HostPorts {
    uplink: std::path::PathBuf,
    pods: Mutex<HashMap<String, Vec<Exposed>>>,
    /// Replies routing is in place in the uplink: TCP connections to pods
    /// come from the client's own address.
    client_addresses: Arc<AtomicBool>,
}

impl HostPorts {
    /// Forwards through sockets opened in the namespace pinned at `uplink`.
    pub fn new(uplink: &Path) -> HostPorts {
        HostPorts {
            uplink: uplink.to_owned(),
            pods: Mutex::new(HashMap::new()),
            client_addresses: Arc::new(AtomicBool::new(false)),
        }
    }

    /// From now on, forwarded TCP connections reach the pod from the
    /// client's own address (the uplink routes the replies back).
    pub fn show_client_addresses(&self) {
        self.client_addresses.store(true, Ordering::SeqCst);
    }

    /// Listens on every host port of `mappings` and forwards to `pod_ip`.
    /// All or nothing: when one port cannot be bound, none stays open.
    pub fn expose(
        &self,
        pod: &str,
        pod_ip: IpAddr,
        mappings: &[PortMapping],
    ) -> Result<(), NetError> {
        let uplink = File::open(&self.uplink).map_err(io_err(format!(
            "opening the uplink namespace {}",
            self.uplink.display()
        )))?;
        let uplink = Arc::new(uplink);
        let mut sockets = Vec::new();
        for m in mappings.iter().filter(|m| m.host_port != 0) {
            let addr = m.listen_addr()?;
            let in_use = |e: io::Error| {
                NetError::PortInUse(format!(
                    "cannot listen on host port {addr}/{}: {e}",
                    m.protocol.name()
                ))
            };
            let socket = match m.protocol {
                Protocol::Tcp => {
                    ListeningSocket::Tcp(Arc::new(TcpListener::bind(addr).map_err(in_use)?))
                }
                Protocol::Udp => {
                    let socket = UdpSocket::bind(addr).map_err(in_use)?;
                    socket
                        .set_read_timeout(Some(UDP_POLL))
                        .map_err(io_err("setting a UDP timeout"))?;
                    ListeningSocket::Udp(Arc::new(socket))
                }
                Protocol::Sctp => continue,
            };
            sockets.push((socket, SocketAddr::new(pod_ip, m.container_port)));
        }
        let exposed = sockets
            .into_iter()
            .map(|(socket, target)| {
                let forward = Forward {
                    target,
                    uplink: uplink.clone(),
                    client_addresses: self.client_addresses.clone(),
                };
                start(pod, socket, forward)
            })
            .collect::<Vec<_>>();
        if !exposed.is_empty() {
            tracing::info!(pod, ports = exposed.len(), %pod_ip, "host ports forwarded");
        }
        self.lock()
            .entry(pod.to_owned())
            .or_default()
            .extend(exposed);
        Ok(())
    }
}

/// Where one host port forwards to, and how.
#[derive(Clone)]
struct Forward {
    target: SocketAddr,
    uplink: Arc<File>,
    client_addresses: Arc<AtomicBool>,
}

fn start(pod: &str, socket: ListeningSocket, forward: Forward) -> Exposed {
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let name = format!("hostport-{}", &pod[..pod.len().min(12)]);
    let thread = match socket.clone() {
        ListeningSocket::Tcp(listener) => std::thread::Builder::new()
            .name(name)
            .spawn(move || accept_loop(&listener, &forward, &thread_stop)),
        ListeningSocket::Udp(socket) => std::thread::Builder::new()
            .name(name)
            .spawn(move || udp_loop(socket, forward.target, forward.uplink, thread_stop)),
    };
    Exposed {
        stop,
        socket,
        thread: thread.ok(),
    }
}

impl HostPorts {
    /// Stops listening on the pod's host ports (connections already
    /// forwarded end with the pod). Returns once the ports are free.
    pub fn unexpose(&self, pod: &str) {
        let exposed = self.lock().remove(pod).unwrap_or_default();
        for e in exposed {
            e.close();
        }
    }

    /// The pods that have host ports open.
    pub fn pods(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Exposed>>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn accept_loop(listener: &TcpListener, forward: &Forward, stop: &AtomicBool) {
    loop {
        match listener.accept() {
            Ok((client, from)) => {
                let forward = forward.clone();
                let _ = std::thread::Builder::new()
                    .name("hostport-conn".into())
                    .spawn(move || forward_connection(client, from, &forward));
            }
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::warn!(%e, "accepting a host port connection");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Runs on its own thread: joins the uplink namespace, dials the pod and
/// splices both directions.
fn forward_connection(client: TcpStream, from: SocketAddr, forward: &Forward) {
    let target = forward.target;
    if let Err(e) = ucri_rootless::enter::join_netns(&forward.uplink) {
        tracing::warn!(%e, "joining the uplink namespace to forward a host port");
        return;
    }
    let source = client_source(from, target, &forward.client_addresses);
    let connected = match source {
        Some(source) => connect_from(source, target).or_else(|e| {
            tracing::warn!(%e, %source, "connecting from the client's address; using the uplink's");
            TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
        }),
        None => TcpStream::connect_timeout(&target, CONNECT_TIMEOUT),
    };
    let pod = match connected {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(%e, %target, "the pod refused a forwarded connection");
            return;
        }
    };
    crate::splice::bridge(&client, &pod);
}

/// The address a forwarded connection comes from in the pod: the client's
/// own when the uplink routes replies back and the client is not on this
/// host's loopback (which the pod cannot answer); `None` = the uplink's.
fn client_source(from: SocketAddr, target: SocketAddr, enabled: &AtomicBool) -> Option<Ipv4Addr> {
    let (IpAddr::V4(client), IpAddr::V4(pod)) = (from.ip(), target.ip()) else {
        return None;
    };
    let usable = !client.is_loopback() && !client.is_unspecified() && !pod.is_loopback();
    (usable && enabled.load(Ordering::Relaxed)).then_some(client)
}

/// A connection to `target` from `source` (not an address of this
/// namespace: `IP_TRANSPARENT`), within [`CONNECT_TIMEOUT`].
fn connect_from(source: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let SocketAddr::V4(target) = target else {
        return Err(io::Error::other("an IPv6 pod address"));
    };
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::IpTransparent, &true)?;
    let timeout = nix::sys::time::TimeVal::new(CONNECT_TIMEOUT.as_secs() as i64, 0);
    socket::setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    socket::bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0)),
    )?;
    socket::connect(fd.as_raw_fd(), &SockaddrIn::from(target))?;
    let stream = TcpStream::from(fd);
    stream.set_write_timeout(None)?;
    Ok(stream)
}

type Flows = Arc<Mutex<HashMap<SocketAddr, UdpSocket>>>;

fn udp_loop(host: Arc<UdpSocket>, target: SocketAddr, uplink: Arc<File>, stop: Arc<AtomicBool>) {
    let flows: Flows = Arc::default();
    let mut threads = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let (n, client) = match host.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(%e, "receiving on a UDP host port");
                break;
            }
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&client)
            .and_then(|s| s.try_clone().ok());
        let flow = match existing {
            Some(s) => Some(s),
            None => {
                let (socket, thread) = open_flow(&host, client, target, &uplink, &flows, &stop);
                threads.extend(thread);
                socket
            }
        };
        if let Some(flow) = flow {
            let _ = flow.send(&buf[..n]);
        }
        threads.retain(|t: &JoinHandle<()>| !t.is_finished());
    }
    // Flow threads hold the host socket: the port is free once they end.
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        let _ = thread.join();
    }
}

/// Starts a flow thread in the uplink namespace with a socket connected to
/// the pod; it relays replies to `client` until the flow is idle.
fn open_flow(
    host: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    uplink: &Arc<File>,
    flows: &Flows,
    stop: &Arc<AtomicBool>,
) -> (Option<UdpSocket>, Option<JoinHandle<()>>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (host, uplink, flows, stop) = (host.clone(), uplink.clone(), flows.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("hostport-udp".into())
        .spawn(move || {
            let socket = match connect_udp_in(&uplink, target) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%e, %target, "opening a UDP flow to the pod");
                    let _ = tx.send(None);
                    return;
                }
            };
            let _ = tx.send(socket.try_clone().ok());
            if let Ok(clone) = socket.try_clone() {
                flows
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client, clone);
            }
            relay_replies(&socket, &host, client, &stop);
            flows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&client);
        })
        .ok();
    let socket = thread.as_ref().and_then(|_| rx.recv().ok().flatten());
    (socket, thread)
}

fn connect_udp_in(uplink: &File, target: SocketAddr) -> io::Result<UdpSocket> {
    ucri_rootless::enter::join_netns(uplink)?;
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(UDP_POLL))?;
    Ok(socket)
}

fn relay_replies(pod: &UdpSocket, host: &UdpSocket, client: SocketAddr, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    let mut idle = Duration::ZERO;
    while idle < UDP_FLOW_IDLE && !stop.load(Ordering::SeqCst) {
        match pod.recv(&mut buf) {
            Ok(n) => {
                idle = Duration::ZERO;
                let _ = host.send_to(&buf[..n], client);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                idle += UDP_POLL;
            }
            Err(_) => idle += UDP_POLL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            protocol: Protocol::Tcp,
            container_port,
            host_port,
            host_ip: String::new(),
        }
    }

    /// Forwarding through this process's own network namespace as the
    /// "uplink" (joining it needs CAP_SYS_ADMIN: the suite runs as root).
    #[test]
    fn tcp_connections_and_udp_flows_are_forwarded_and_the_ports_closed() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (setns into its own network namespace)"
        );
        let ports = HostPorts::new(Path::new("/proc/self/ns/net"));
        let tcp_server = TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp_server = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let free = |udp: bool| {
            if udp {
                UdpSocket::bind("127.0.0.1:0")
                    .expect("ok")
                    .local_addr()
                    .expect("ok")
                    .port()
            } else {
                TcpListener::bind("127.0.0.1:0")
                    .expect("ok")
                    .local_addr()
                    .expect("ok")
                    .port()
            }
        };
        let (tcp_port, udp_port) = (free(false), free(true));
        let mappings = [
            PortMapping {
                protocol: Protocol::Tcp,
                container_port: tcp_server.local_addr().expect("ok").port(),
                host_port: tcp_port,
                host_ip: "127.0.0.1".into(),
            },
            PortMapping {
                protocol: Protocol::Udp,
                container_port: udp_server.local_addr().expect("ok").port(),
                host_port: udp_port,
                host_ip: "127.0.0.1".into(),
            },
        ];
        ports
            .expose("pod", IpAddr::V4(Ipv4Addr::LOCALHOST), &mappings)
            .expect("expose");
        let echo = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = tcp_server.accept().expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).expect("read");
            conn.write_all(&got).expect("echo");
        });
        let mut client = TcpStream::connect(("127.0.0.1", tcp_port)).expect("connect");
        {
            use std::io::{Read, Write};
            client.write_all(b"ping over tcp").expect("write");
            client
                .shutdown(std::net::Shutdown::Write)
                .expect("shutdown");
            let mut reply = String::new();
            client.read_to_string(&mut reply).expect("read");
            assert_eq!(reply, "ping over tcp");
        }
        echo.join().expect("echo thread");

        let udp_client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        udp_client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("ok");
        udp_client
            .send_to(b"ping over udp", ("127.0.0.1", udp_port))
            .expect("send");
        let mut buf = [0u8; 64];
        let (n, from) = udp_server
            .recv_from(&mut buf)
            .expect("the pod got the datagram");
        assert_eq!(&buf[..n], b"ping over udp");
        udp_server.send_to(b"pong", from).expect("reply");
        let n = udp_client.recv(&mut buf).expect("the reply came back");
        assert_eq!(&buf[..n], b"pong");

        ports.unexpose("pod");
        assert!(
            TcpStream::connect(("127.0.0.1", tcp_port)).is_err(),
            "TCP port closed"
        );
        UdpSocket::bind(("127.0.0.1", udp_port)).expect("the UDP port is free again");
        assert!(ports.pods().is_empty());
    }

    #[test]
    fn privileged_duplicate_and_sctp_ports_are_refused() {
        let floor = unprivileged_port_start();
        if floor > 1 {
            let err = validate(&[tcp(floor - 1, 80)])
                .expect_err("an error")
                .to_string();
            assert!(err.contains("ip_unprivileged_port_start"), "{err}");
        }
        assert!(validate(&[tcp(40000, 80), tcp(40000, 81)])
            .expect_err("an error")
            .to_string()
            .contains("mapped twice"));
        let sctp = PortMapping {
            protocol: Protocol::Sctp,
            ..tcp(40001, 80)
        };
        assert!(validate(&[sctp]).is_err());
        let bad_ip = PortMapping {
            host_ip: "nope".into(),
            ..tcp(40002, 80)
        };
        assert!(validate(&[bad_ip]).is_err());
        assert!(validate(&[tcp(0, 80), tcp(40003, 80)]).is_ok());
    }
}
