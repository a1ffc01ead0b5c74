//! The socket bypass: pod connections to the outside get a socket made in
//! the host's network namespace instead of going through the user-mode
//! uplink helper (what bypass4netns does for nerdctl).
//!
//! A container's seccomp profile sends its `connect(2)` calls to a
//! per-pod agent (crun's `run.oci.seccomp.receiver`). For a destination
//! that leaves the node, the agent makes a socket of the same kind here,
//! copies the options that matter, connects it itself (to the address it
//! checked, so a racing thread in the container cannot redirect it), and
//! installs it in the container's process in place of the original
//! descriptor (`SECCOMP_IOCTL_NOTIF_ADDFD`). Everything else (loopback, the
//! pod network, services, the uplink's own addresses, a socket already
//! bound) runs unchanged in the pod's namespace. The agent is a detached
//! process, like conmon, so it outlives daemon restarts.

pub mod agent;
mod syscall;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::NetError;

/// The hidden argument that makes the binary run the agent.
pub const AGENT_ARG: &str = "__socket-bypass";

/// What a client writes to ask the agent for its [`Stats`].
pub const STATS_REQUEST: &[u8] = b"stats\n";

/// The crun annotation naming the Unix socket that receives a container's
/// seccomp listener.
pub const RECEIVER_ANNOTATION: &str = "run.oci.seccomp.receiver";

/// An IP network, `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, unmapped(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_match(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_match(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        net[full] & mask == ip[full] & mask
    }
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text.split_once('/').unwrap_or((text, ""));
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network (address/prefix)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?
        };
        Ok(Cidr { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(text: String) -> Result<Cidr, String> {
        text.parse()
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> String {
        cidr.to_string()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Which destinations a pod's connections reach through the bypass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Networks that stay on the pod's path: the pod network, the service
    /// network, the uplink's own addresses (its gateway and resolver).
    pub keep: Vec<Cidr>,
}

impl Policy {
    /// Whether a connection to `ip` goes through the bypass: it leaves the
    /// node (not loopback, link-local, multicast or unspecified) and is in
    /// none of the kept networks.
    pub fn bypasses(&self, ip: IpAddr) -> bool {
        let ip = unmapped(ip);
        let special = match ip {
            IpAddr::V4(v4) => {
                v4.is_loopback()
                    || v4.is_unspecified()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || v4.octets()[0] == 0
            }
            IpAddr::V6(v6) => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        };
        !special && !self.keep.iter().any(|net| net.contains(ip))
    }
}

/// A destination in the raw `struct sockaddr` a `connect(2)` was given:
/// `AF_INET` or `AF_INET6` (with flow info and scope), else `None`.
pub fn parse_sockaddr(raw: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(raw.get(..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(raw.get(2..4)?.try_into().ok()?);
    match i32::from(family) {
        libc::AF_INET => {
            let octets: [u8; 4] = raw.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(raw.get(4..8)?.try_into().ok()?);
            let octets: [u8; 16] = raw.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(raw.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                Ipv6Addr::from(octets),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// What an agent has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Connections made through the bypass.
    pub bypassed: u64,
    /// Connections left on the pod's path (by the policy or the socket's
    /// state).
    pub kept: u64,
    /// Bypasses that could not be made, so the connection went the pod's way.
    pub fell_back: u64,
    /// Container processes whose `connect` calls it receives now.
    pub listeners: u64,
}

/// Starts the agent of one pod: `exe` re-executed with [`AGENT_ARG`],
/// listening on `socket`, its warnings in `log`. Returns once it listens;
/// its pid. It is a detached process that outlives the daemon; end it with
/// [`stop_agent`].
pub fn start_agent(
    exe: &Path,
    socket: &Path,
    policy: &Policy,
    log: &Path,
) -> Result<i32, NetError> {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(crate::error::io("opening the socket bypass log"))?;
    let policy = serde_json::to_string(policy).map_err(|e| NetError::Helper(e.to_string()))?;
    let mut child = Command::new(exe)
        .arg(AGENT_ARG)
        .arg(socket)
        .arg(policy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .map_err(crate::error::io("starting the socket bypass agent"))?;
    let pid = child.id() as i32;
    let mut line = String::new();
    let ready = child
        .stdout
        .take()
        .map(|out| BufReader::new(out).read_line(&mut line))
        .is_some_and(|r| r.is_ok() && line.trim() == "ready");
    if !ready {
        let _ = child.kill();
        let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let last = text.lines().last().unwrap_or("").to_owned();
        return Err(NetError::Helper(format!(
            "the socket bypass agent did not start ({status}): {last}"
        )));
    }
    Ok(pid)
}

/// Where the agent serving `socket` writes its pid.
pub fn pid_file(socket: &Path) -> std::path::PathBuf {
    let mut name = socket.as_os_str().to_owned();
    name.push(".pid");
    name.into()
}

/// Ends the agent `pid` of `socket`, once `/proc` shows it still is that
/// agent (after a restart or reboot the pid may be another process's), and
/// removes its socket and pid file.
pub fn stop_agent(socket: &Path, pid: i32) {
    if pid > 0 && is_agent_of(socket, pid) {
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        // Our child unless the daemon restarted since; then init reaps it.
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(pid_file(socket));
}

/// Ends the agent of `socket` that its pid file names (one whose pod was
/// never recorded, or is gone).
pub fn stop_agent_by_pid_file(socket: &Path) {
    let pid = std::fs::read_to_string(pid_file(socket))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0);
    stop_agent(socket, pid);
}

/// Whether `pid` is the agent serving `socket`: its arguments name it.
pub fn is_agent_of(socket: &Path, pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|&b| b == 0);
    args.any(|a| a == AGENT_ARG.as_bytes())
        && args.next() == Some(socket.as_os_str().as_encoded_bytes())
}

/// Asks the agent on `socket` what it has done.
pub fn query_stats(socket: &Path) -> Result<Stats, NetError> {
    let mut stream = UnixStream::connect(socket)
        .map_err(crate::error::io("connecting to the socket bypass agent"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(crate::error::io("setting a timeout"))?;
    stream
        .write_all(STATS_REQUEST)
        .map_err(crate::error::io("asking the socket bypass agent"))?;
    let mut reply = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .map_err(crate::error::io("reading the socket bypass agent's reply"))?;
    serde_json::from_slice(&reply)
        .map_err(|e| NetError::Helper(format!("the socket bypass agent's reply: {e}")))
}

/// Whether this kernel can run the bypass: seccomp user notification and
/// `pidfd_getfd` (Linux 5.6, with ADDFD from 5.9). `Err` says what lacks.
pub fn kernel_support() -> Result<(), String> {
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail")
        .map_err(|e| format!("reading /proc/sys/kernel/seccomp/actions_avail: {e}"))?;
    if !actions.split_whitespace().any(|a| a == "user_notif") {
        return Err("the kernel has no seccomp user notification".into());
    }
    let me =
        syscall::pidfd_open(std::process::id() as i32).map_err(|e| format!("pidfd_open: {e}"))?;
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    syscall::pidfd_getfd(
        std::os::fd::AsFd::as_fd(&me),
        std::os::fd::AsRawFd::as_raw_fd(&null),
    )
    .map(drop)
    .map_err(|e| format!("pidfd_getfd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(keep: &[&str]) -> Policy {
        Policy {
            keep: keep.iter().map(|c| c.parse().expect("cidr")).collect(),
        }
    }

    #[test]
    fn only_destinations_off_the_node_and_outside_the_kept_networks_are_bypassed() {
        let p = policy(&["10.88.0.0/16", "10.96.0.0/12", "10.0.2.0/24", "fd00::/8"]);
        for outside in [
            "192.0.2.10",
            "10.231.0.2",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:192.0.2.1",
        ] {
            assert!(p.bypasses(outside.parse().expect("ip")), "{outside}");
        }
        for kept in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "10.88.3.4",
            "10.96.0.1",
            "10.111.255.255",
            "10.0.2.3",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "fd00::5",
            "::ffff:127.0.0.1",
            "::ffff:10.88.0.7",
        ] {
            assert!(!p.bypasses(kept.parse().expect("ip")), "{kept}");
        }
    }

    #[test]
    fn networks_parse_and_print_and_bad_ones_say_why() {
        let c: Cidr = "10.96.0.0/12".parse().expect("cidr");
        assert_eq!(c.to_string(), "10.96.0.0/12");
        assert!(c.contains("10.100.0.1".parse().expect("ip")));
        assert!(!c.contains("10.112.0.1".parse().expect("ip")));
        let host: Cidr = "192.0.2.1".parse().expect("a bare address");
        assert_eq!(host.to_string(), "192.0.2.1/32");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("fd00::/129".parse::<Cidr>().is_err());
        assert!("example.com/8".parse::<Cidr>().is_err());
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
    }

    #[test]
    fn sockaddrs_are_read_as_the_kernel_lays_them_out() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8099u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[10, 231, 0, 2]);
        assert_eq!(
            parse_sockaddr(&v4),
            Some("10.231.0.2:8099".parse().expect("addr"))
        );
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().expect("ip").octets());
        assert_eq!(
            parse_sockaddr(&v6),
            Some("[2001:db8::1]:443".parse().expect("addr"))
        );
        assert_eq!(parse_sockaddr(&v6[..20]), None, "a short AF_INET6 address");
        let mut unix = vec![0u8; 20];
        unix[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(parse_sockaddr(&unix), None);
        assert_eq!(parse_sockaddr(&[]), None);
    }
}
