//! The agent process of one pod: receives the seccomp listeners of its
//! containers' processes from crun and answers their `connect(2)` calls.
//!
//! `ucri __socket-bypass SOCKET POLICY_JSON` prints `ready` once it listens.
//! A connection that brings a descriptor is a seccomp listener (crun sends
//! one per container and per exec); one that sends [`STATS_REQUEST`] gets
//! the [`Stats`] as JSON. Each listener is served by a thread until every
//! process behind it has exited.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::socket::{SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage};

use super::syscall::{self, Notification};
use super::{parse_sockaddr, Policy, Stats, STATS_REQUEST};

/// `AUDIT_ARCH_X86_64`: the only architecture whose `connect` is handled;
/// calls of others (32-bit compat) run unchanged.
const NATIVE_ARCH: u32 = if cfg!(target_arch = "x86_64") {
    0xc000_003e
} else {
    0xc000_00b7 // AUDIT_ARCH_AARCH64
};

/// Listeners served at once; more are refused (their processes then run
/// with the pod's path: crun's connect calls get ENOSYS, so never drop
/// silently: the count shows in the log).
const MAX_LISTENERS: usize = 4096;

/// Blocking connects waited on at once in their own threads; beyond that
/// they are waited on in the listener's thread.
const MAX_WAITING: usize = 256;

/// Log lines an agent writes at most (its log is a file in the pod dir).
const LOG_BUDGET: u64 = 200;

struct Shared {
    policy: Policy,
    bypassed: AtomicU64,
    kept: AtomicU64,
    fell_back: AtomicU64,
    listeners: AtomicUsize,
    waiting: AtomicUsize,
    logged: AtomicU64,
}

impl Shared {
    fn stats(&self) -> Stats {
        Stats {
            bypassed: self.bypassed.load(Ordering::Relaxed),
            kept: self.kept.load(Ordering::Relaxed),
            fell_back: self.fell_back.load(Ordering::Relaxed),
            listeners: self.listeners.load(Ordering::Relaxed) as u64,
        }
    }

    fn warn(&self, message: std::fmt::Arguments<'_>) {
        let n = self.logged.fetch_add(1, Ordering::Relaxed);
        if n < LOG_BUDGET {
            eprintln!("ucri socket bypass: {message}");
        } else if n == LOG_BUDGET {
            eprintln!("ucri socket bypass: further warnings are not logged");
        }
    }
}

/// Runs the agent role; the process's exit code.
pub fn run_agent() -> i32 {
    let mut args = std::env::args_os().skip(2);
    let (Some(socket), Some(policy)) = (args.next(), args.next()) else {
        eprintln!("usage: ucri {} SOCKET POLICY_JSON", super::AGENT_ARG);
        return 2;
    };
    let policy: Policy = match serde_json::from_slice(policy.as_encoded_bytes()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ucri socket bypass: the policy: {e}");
            return 2;
        }
    };
    match listen(Path::new(&socket)) {
        Ok(listener) => serve(listener, policy),
        Err(e) => {
            eprintln!("ucri socket bypass: listening on {socket:?}: {e}");
            1
        }
    }
}

/// Detaches from the daemon's session, binds the socket (only its owner
/// may connect), says `ready` and lets go of the daemon's pipe.
fn listen(socket: &Path) -> std::io::Result<UnixListener> {
    let _ = nix::unistd::setsid();
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    // Found by a restarted daemon even if the pod's record never was.
    ucri_rootless::rundir::write_atomic(
        &super::pid_file(socket),
        std::process::id().to_string().as_bytes(),
    )?;
    let mut out = std::io::stdout();
    out.write_all(b"ready\n")?;
    out.flush()?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    nix::unistd::dup2(null.as_raw_fd(), 1).map_err(std::io::Error::from)?;
    Ok(listener)
}

fn serve(listener: UnixListener, policy: Policy) -> i32 {
    let shared = Arc::new(Shared {
        policy,
        bypassed: AtomicU64::new(0),
        kept: AtomicU64::new(0),
        fell_back: AtomicU64::new(0),
        listeners: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        logged: AtomicU64::new(0),
    });
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => take_client(&shared, stream),
            Err(e) => {
                shared.warn(format_args!("accept: {e}"));
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    0
}

/// One client: crun with a listener, or a stats request.
fn take_client(shared: &Arc<Shared>, mut stream: UnixStream) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let (payload, listener) = match receive_message(&stream) {
        Ok(message) => message,
        Err(e) => {
            shared.warn(format_args!("receiving from a client: {e}"));
            return;
        }
    };
    if let Some(listener) = listener {
        if shared.listeners.load(Ordering::Relaxed) >= MAX_LISTENERS {
            shared.warn(format_args!(
                "{MAX_LISTENERS} listeners already; refusing one (its connect calls fail)"
            ));
            return;
        }
        shared.listeners.fetch_add(1, Ordering::Relaxed);
        let for_thread = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("listener".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                serve_listener(&for_thread, listener);
                for_thread.listeners.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            shared.listeners.fetch_sub(1, Ordering::Relaxed);
            shared.warn(format_args!("starting a listener thread: {e}"));
        }
        return;
    }
    if payload.starts_with(STATS_REQUEST) {
        let reply = serde_json::to_vec(&shared.stats()).unwrap_or_default();
        let _ = stream.write_all(&reply);
        return;
    }
    let mut rest = Vec::new();
    let _ = (&stream).take(64).read_to_end(&mut rest);
    shared.warn(format_args!(
        "a client sent neither a listener nor a request"
    ));
}

/// The first message of a client: its bytes and the descriptor it carried.
fn receive_message(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let (len, fds) = {
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                fds.extend(received);
            }
        }
        (msg.bytes, fds)
    };
    buf.truncate(len);
    let mut owned = fds.into_iter().map(syscall::adopt_received);
    let first = owned.next();
    Ok((buf, first))
}

/// Answers the notifications of one listener until every process that
/// uses its filter has exited.
fn serve_listener(shared: &Arc<Shared>, listener: OwnedFd) {
    let listener = Arc::new(listener);
    loop {
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                shared.warn(format_args!("poll on a listener: {e}"));
                return;
            }
        }
        let revents = fds[0].revents().unwrap_or(nix::poll::PollFlags::empty());
        if !revents.contains(nix::poll::PollFlags::POLLIN) {
            // POLLHUP: no process uses the filter any more.
            return;
        }
        match syscall::receive(listener.as_fd()) {
            Ok(notification) => handle(shared, &listener, notification),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINTR)) => {}
            Err(e) => {
                shared.warn(format_args!("receiving a notification: {e}"));
                return;
            }
        }
    }
}

/// What to do with one `connect`.
enum Decision {
    /// Let it run in the pod's namespace.
    Keep,
    /// Connect this host-side socket to `SocketAddr` and install it at the
    /// caller's descriptor number.
    Bypass(Replacement),
}

struct Replacement {
    socket: OwnedFd,
    destination: SocketAddr,
    target_fd: RawFd,
    cloexec: bool,
    blocking: bool,
}

fn handle(shared: &Arc<Shared>, listener: &Arc<OwnedFd>, n: Notification) {
    let fd = listener.as_fd();
    let decision = if n.data.arch == NATIVE_ARCH && i64::from(n.data.nr) == libc::SYS_connect {
        decide(shared, fd, &n)
    } else {
        Ok(Decision::Keep)
    };
    match decision {
        Ok(Decision::Keep) => {
            let _ = syscall::let_it_run(fd, n.id);
        }
        Ok(Decision::Bypass(replacement)) => {
            if replacement.blocking && shared.waiting.fetch_add(1, Ordering::Relaxed) < MAX_WAITING
            {
                let (for_thread, listener) = (Arc::clone(shared), Arc::clone(listener));
                let waited = std::thread::Builder::new()
                    .name("connect".into())
                    .stack_size(128 * 1024)
                    .spawn(move || {
                        finish(&for_thread, listener.as_fd(), n.id, replacement);
                        for_thread.waiting.fetch_sub(1, Ordering::Relaxed);
                    });
                if waited.is_err() {
                    shared.waiting.fetch_sub(1, Ordering::Relaxed);
                    shared.fell_back.fetch_add(1, Ordering::Relaxed);
                    let _ = syscall::let_it_run(fd, n.id);
                }
            } else {
                if replacement.blocking {
                    shared.waiting.fetch_sub(1, Ordering::Relaxed);
                }
                finish(shared, fd, n.id, replacement);
            }
        }
        Err(e) => {
            shared.fell_back.fetch_add(1, Ordering::Relaxed);
            shared.warn(format_args!(
                "pid {}: {e}; the connection takes the pod's path",
                n.pid
            ));
            let _ = syscall::let_it_run(fd, n.id);
        }
    }
}

/// Reads the destination and the caller's socket, and prepares the
/// replacement when both call for the bypass.
fn decide(
    shared: &Shared,
    listener: BorrowedFd<'_>,
    n: &Notification,
) -> std::io::Result<Decision> {
    let (target_fd, address, length) = (n.data.args[0] as RawFd, n.data.args[1], n.data.args[2]);
    let mut raw = [0u8; 128];
    let Some(raw) = raw.get_mut(..length as usize).filter(|r| r.len() >= 2) else {
        return Ok(Decision::Keep);
    };
    let pid = n.pid as i32;
    let read = syscall::read_memory(pid, address, raw)?;
    if !syscall::still_valid(listener, n.id) {
        return Ok(Decision::Keep);
    }
    let Some(destination) = parse_sockaddr(&raw[..read]) else {
        return Ok(Decision::Keep);
    };
    if !shared.policy.bypasses(destination.ip()) {
        shared.kept.fetch_add(1, Ordering::Relaxed);
        return Ok(Decision::Keep);
    }
    match replacement_for(pid, target_fd, destination)? {
        Some(replacement) => Ok(Decision::Bypass(replacement)),
        None => {
            shared.kept.fetch_add(1, Ordering::Relaxed);
            Ok(Decision::Keep)
        }
    }
}

/// Socket options copied from the caller's socket to the replacement.
const COPIED_OPTIONS: &[(i32, i32)] = &[
    (libc::SOL_SOCKET, libc::SO_REUSEADDR),
    (libc::SOL_SOCKET, libc::SO_REUSEPORT),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_BROADCAST),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE),
    (libc::SOL_SOCKET, libc::SO_LINGER),
    (libc::SOL_SOCKET, libc::SO_RCVTIMEO),
    (libc::SOL_SOCKET, libc::SO_SNDTIMEO),
    (libc::SOL_SOCKET, libc::SO_PRIORITY),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
];
const COPIED_TCP_OPTIONS: &[i32] = &[
    libc::TCP_NODELAY,
    libc::TCP_KEEPIDLE,
    libc::TCP_KEEPINTVL,
    libc::TCP_KEEPCNT,
    libc::TCP_USER_TIMEOUT,
    libc::TCP_NOTSENT_LOWAT,
];

/// The host-side socket that replaces the caller's, or `None` when the
/// caller's socket must stay (not TCP/UDP over IP, already bound or
/// connected, a family that does not fit the destination).
fn replacement_for(
    pid: i32,
    target_fd: RawFd,
    destination: SocketAddr,
) -> std::io::Result<Option<Replacement>> {
    let tgid = thread_group_of(pid)?;
    let pidfd = syscall::pidfd_open(tgid)?;
    let original = match syscall::pidfd_getfd(pidfd.as_fd(), target_fd) {
        Ok(fd) => fd,
        // Not a descriptor of the caller's: the kernel says so itself.
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => return Ok(None),
        Err(e) => return Err(e),
    };
    let original = original.as_fd();
    let Ok(domain) = int_option(original, libc::SOL_SOCKET, libc::SO_DOMAIN) else {
        return Ok(None); // not a socket
    };
    let kind = int_option(original, libc::SOL_SOCKET, libc::SO_TYPE)?;
    let protocol = int_option(original, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let fits = match domain {
        libc::AF_INET => destination.is_ipv4(),
        libc::AF_INET6 => true,
        _ => false,
    };
    if !fits || !matches!(kind, libc::SOCK_STREAM | libc::SOCK_DGRAM) || is_bound(original) {
        return Ok(None);
    }
    let status = nix::fcntl::fcntl(original.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(std::io::Error::from)?;
    let blocking = status & libc::O_NONBLOCK == 0;
    let socket = syscall::socket(domain, kind, protocol)?;
    copy_options(original, socket.as_fd(), domain, kind)?;
    if !blocking {
        nix::fcntl::fcntl(
            socket.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(Some(Replacement {
        socket,
        destination,
        target_fd,
        cloexec: is_cloexec(tgid, target_fd),
        blocking,
    }))
}

/// Connects the replacement, installs it when that worked or is in
/// progress, and answers the caller with what `connect` returned.
fn finish(shared: &Shared, listener: BorrowedFd<'_>, id: u64, r: Replacement) {
    let connected = connect(r.socket.as_fd(), r.destination);
    let errno = match connected {
        Ok(()) => 0,
        Err(nix::errno::Errno::EINPROGRESS) => libc::EINPROGRESS,
        Err(e) => {
            // The connection itself failed (refused, unreachable): the
            // caller's socket stays as it was and gets the error.
            let _ = syscall::answer(listener, id, 0, e as i32);
            shared.bypassed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if !syscall::still_valid(listener, id) {
        return; // the caller was interrupted or died; the socket goes
    }
    match syscall::install_fd(listener, id, r.socket.as_fd(), r.target_fd, r.cloexec) {
        Ok(()) => {
            shared.bypassed.fetch_add(1, Ordering::Relaxed);
            let _ = syscall::answer(listener, id, 0, errno);
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => {
            shared.fell_back.fetch_add(1, Ordering::Relaxed);
            shared.warn(format_args!(
                "installing the socket: {e}; the pod's path is used"
            ));
            let _ = syscall::let_it_run(listener, id);
        }
    }
}

fn connect(socket: BorrowedFd<'_>, destination: SocketAddr) -> nix::Result<()> {
    loop {
        let done = match destination {
            SocketAddr::V4(v4) => {
                nix::sys::socket::connect(socket.as_raw_fd(), &SockaddrIn::from(v4))
            }
            SocketAddr::V6(v6) => {
                nix::sys::socket::connect(socket.as_raw_fd(), &SockaddrIn6::from(v6))
            }
        };
        if done != Err(nix::errno::Errno::EINTR) {
            return done;
        }
    }
}

fn int_option(socket: BorrowedFd<'_>, level: i32, name: i32) -> std::io::Result<i32> {
    let mut buf = [0u8; 4];
    syscall::get_option(socket, level, name, &mut buf)?;
    Ok(i32::from_ne_bytes(buf))
}

fn copy_options(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    domain: i32,
    kind: i32,
) -> std::io::Result<()> {
    let mut options: Vec<(i32, i32)> = COPIED_OPTIONS.to_vec();
    if kind == libc::SOCK_STREAM {
        options.extend(COPIED_TCP_OPTIONS.iter().map(|&o| (libc::IPPROTO_TCP, o)));
    }
    if domain == libc::AF_INET {
        options.push((libc::IPPROTO_IP, libc::IP_TOS));
    } else {
        options.push((libc::IPPROTO_IPV6, libc::IPV6_TCLASS));
    }
    for (level, name) in options {
        let mut value = [0u8; 64];
        let Ok(len) = syscall::get_option(from, level, name, &mut value) else {
            continue; // an option this kernel does not have
        };
        let _ = syscall::set_option(to, level, name, &value[..len]);
    }
    if domain == libc::AF_INET6 {
        // Decides which destinations the socket can reach: must match.
        let mut value = [0u8; 4];
        let len = syscall::get_option(from, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &mut value)?;
        syscall::set_option(to, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &value[..len])?;
    }
    Ok(())
}

/// Whether the socket has a local address of its own (bound or connected).
fn is_bound(socket: BorrowedFd<'_>) -> bool {
    let Ok(local) = nix::sys::socket::getsockname::<SockaddrStorage>(socket.as_raw_fd()) else {
        return true;
    };
    if let Some(v4) = local.as_sockaddr_in() {
        return v4.port() != 0 || v4.ip() != std::net::Ipv4Addr::UNSPECIFIED;
    }
    if let Some(v6) = local.as_sockaddr_in6() {
        return v6.port() != 0 || !v6.ip().is_unspecified();
    }
    local.family().is_none()
}

/// The process a thread belongs to (`Tgid:` in its status).
fn thread_group_of(tid: i32) -> std::io::Result<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no Tgid in /proc/{tid}/status")))
}

/// Whether the caller's descriptor is close-on-exec (its fdinfo flags).
fn is_cloexec(pid: i32, fd: RawFd) -> bool {
    let path: PathBuf = format!("/proc/{pid}/fdinfo/{fd}").into();
    std::fs::read_to_string(path)
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|v| i64::from_str_radix(v.trim(), 8).ok())
        })
        .is_some_and(|flags| flags & i64::from(libc::O_CLOEXEC) != 0)
}
