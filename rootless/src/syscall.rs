//! The only module of this crate allowed to use `unsafe`: adopting inherited
//! descriptors and running code between `fork` and `execve`.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Adopts the descriptors a parent passed on purpose: their numbers are in
/// environment variable `var`, comma-separated, in the order the parent
/// wrote them (the `_UCRI_*_FD` variables). Each is marked close-on-exec
/// again, so that programs this process starts (helpers that outlive it) do
/// not inherit the daemon's lock, socket or pipes.
pub fn adopt_inherited_fds(var: &str) -> io::Result<Vec<File>> {
    let numbers = std::env::var(var).map_err(|_| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{var} is not set: no descriptors were passed"),
        )
    })?;
    adopt_fd_list(&numbers)
}

/// [`adopt_inherited_fds`] of the numbers in `list`.
fn adopt_fd_list(list: &str) -> io::Result<Vec<File>> {
    list.split(',')
        .map(|n| match n.trim().parse::<RawFd>() {
            Ok(fd) => adopt_inherited_fd(fd),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{n:?} is not a descriptor number"),
            )),
        })
        .collect()
}

/// Takes ownership of `fd` after checking everything that can be checked
/// about it: not stdio, open, not adopted before, and not close-on-exec. The
/// last is what tells an inherited number from one this process opened:
/// only a descriptor without close-on-exec survives `execve`, and every
/// descriptor Rust's standard library (and nix, tokio, reqwest) opens has
/// it set. What stays unchecked is a descriptor some foreign code in this
/// process opened without `O_CLOEXEC`; the callers adopt at start-up,
/// before any runs.
fn adopt_inherited_fd(fd: RawFd) -> io::Result<File> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::collections::HashSet;
    use std::sync::Mutex;
    static CLAIMED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);
    let refuse = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("inherited descriptor {fd}: {why}"),
        ))
    };
    if fd < 3 {
        return refuse("stdio is not an inherited channel");
    }
    let mut claimed = CLAIMED.lock().unwrap_or_else(|p| p.into_inner());
    let claimed = claimed.get_or_insert_with(HashSet::new);
    if claimed.contains(&fd) {
        return refuse("already adopted");
    }
    // Fails with EBADF for a number that is not open.
    let flags = fcntl(fd, FcntlArg::F_GETFD).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("inherited descriptor {fd}: {e}"),
        )
    })?;
    if FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC) {
        return refuse("close-on-exec, so this process opened it: it has an owner already");
    }
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("inherited descriptor {fd}: {e}"),
        )
    })?;
    claimed.insert(fd);
    // SAFETY: `from_raw_fd` needs `fd` open and owned by nothing else. It is
    // open (F_GETFD succeeded); not stdio; not adopted before (CLAIMED,
    // under its lock until here); and it was not close-on-exec, so no
    // owner in this process opened it (see the doc comment for the one
    // case this cannot see). From here on the File is its only owner.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// One thing a child does between `fork` and `execve` (see
/// [`before_exec`]). Each is one or two system calls on values prepared
/// before the fork: nothing allocates or takes a lock, so the steps are
/// safe in the child of a multi-threaded process.
#[derive(Debug, Clone)]
pub enum PreExec {
    /// `setns(fd, flags)`.
    Setns(RawFd, nix::sched::CloneFlags),
    /// Clears `FD_CLOEXEC` on the descriptor, so that it survives `execve`.
    KeepAcrossExec(RawFd),
    /// `chdir` to the directory, or to `/` when that fails (a working
    /// directory that does not exist in the namespaces just joined).
    ChdirOrRoot(Option<std::ffi::CString>),
    /// `prctl(PR_SET_PDEATHSIG, signal)`.
    ParentDeathSignal(nix::sys::signal::Signal),
    /// Unblocks every signal (a parent that blocks the ones it forwards
    /// must not pass that on).
    UnblockAllSignals,
    /// Fails unless the parent is still this pid (it may have died before
    /// the death signal was armed).
    RequireParent(nix::unistd::Pid),
}

impl PreExec {
    fn run(&self) -> io::Result<()> {
        match self {
            PreExec::Setns(fd, flags) => setns_raw(*fd, *flags),
            PreExec::KeepAcrossExec(fd) => keep_across_exec(*fd),
            PreExec::ChdirOrRoot(dir) => {
                let back = dir.as_deref().map(nix::unistd::chdir);
                if !matches!(back, Some(Ok(()))) {
                    nix::unistd::chdir("/")?;
                }
                Ok(())
            }
            PreExec::ParentDeathSignal(signal) => Ok(nix::sys::prctl::set_pdeathsig(*signal)?),
            PreExec::UnblockAllSignals => Ok(nix::sys::signal::SigSet::all().thread_unblock()?),
            PreExec::RequireParent(parent) => {
                if nix::unistd::getppid() == *parent {
                    Ok(())
                } else {
                    // ESRCH: the parent is gone (an errno, so nothing allocates).
                    Err(io::Error::from_raw_os_error(libc::ESRCH))
                }
            }
        }
    }
}

/// Has the child of `cmd` run `steps`, in order, after `fork` and before
/// `execve`; the first that fails fails the spawn with its error.
pub fn before_exec(cmd: &mut Command, steps: Vec<PreExec>) {
    let hook = move || steps.iter().try_for_each(PreExec::run);
    // SAFETY: between fork and exec the hook only iterates a vector built
    // before the fork and makes the system calls of `PreExec::run`; none of
    // them allocates or takes a lock, and a failed step's error is an errno
    // (`io::Error::from_raw_os_error`), which allocates nothing either.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// A pidfd for `pid` (`pidfd_open(2)`, Linux 5.3), close-on-exec: readable
/// once the process has exited, and never another process's, even if the
/// pid is reused.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this descriptor for us; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The parent of the user namespace `ns` refers to (`ioctl_ns(2)`
/// `NS_GET_PARENT`), as a new descriptor; `EPERM` for the initial one.
pub fn parent_user_namespace(ns: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    /// `_IO(0xb7, 0x2)` of `<linux/nsfs.h>`.
    const NS_GET_PARENT: nix::libc::c_ulong = 0xb702;
    // SAFETY: the ioctl takes no argument; it returns a new descriptor or -1.
    let fd = unsafe { nix::libc::ioctl(ns.as_raw_fd(), NS_GET_PARENT as _) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just made this descriptor for us; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The two sides of [`fork`].
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(nix::unistd::Pid),
    /// In the child.
    Child,
}

/// Forks the calling process.
///
/// Only for single-threaded callers (the parent before any thread exists):
/// the child then may allocate freely before it execs or exits.
pub fn fork() -> io::Result<Forked> {
    assert_single_threaded()?;
    // SAFETY: the process has exactly one thread (checked above), so no lock
    // can be held by a thread that does not exist in the child.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Fails unless the calling process has exactly one thread, which `fork`
/// without exec and `setns(CLONE_NEWUSER)` require.
pub fn assert_single_threaded() -> io::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    match threads {
        Some(1) => Ok(()),
        other => Err(io::Error::other(format!(
            "namespace set-up needs a single-threaded process, found {other:?} threads"
        ))),
    }
}

/// `setns(2)` on a raw descriptor, usable between fork and exec.
pub fn setns_raw(fd: RawFd, flags: nix::sched::CloneFlags) -> io::Result<()> {
    // SAFETY: setns only reads its integer arguments; a bad descriptor gives EBADF.
    let rc = unsafe { libc::setns(fd, flags.bits()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Clears `FD_CLOEXEC` on a raw descriptor so it survives `execve`.
pub fn keep_across_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) only changes the descriptor flags of `fd`.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Ends the calling (forked) process at once, without running destructors
/// that belong to the parent's state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Lets SIGPIPE end the process, as it ends other Unix tools: a client
/// whose output goes to `head` then stops quietly instead of panicking on
/// its next write. Never for the daemon, which must outlive closed sockets.
pub fn die_on_broken_pipe() {
    // SAFETY: resetting a signal's disposition to its default installs no
    // handler, so no Rust code can run in signal context.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// True when `path` carries the extended attribute `name` (e.g. file
/// capabilities in `security.capability`).
pub fn has_xattr(path: &std::path::Path, name: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(path), Ok(name)) = (
        std::ffi::CString::new(path.as_os_str().as_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the
    // call; a zero size with a null buffer only asks for the value's length.
    let rc = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    rc >= 0
}

/// Receives one descriptor passed with `SCM_RIGHTS` on a Unix socket (how
/// `crun --console-socket` hands over a terminal's master side).
pub fn receive_fd(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let fds = msg.cmsgs().map_err(io::Error::from)?.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds.into_iter().next(),
        _ => None,
    });
    let fd = fds.ok_or_else(|| io::Error::other("no descriptor came with the message"))?;
    // SAFETY: the kernel just installed `fd` in this process for us; nothing
    // else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Sets a terminal's window size (`TIOCSWINSZ`), which also signals the
/// foreground process group with `SIGWINCH`.
pub fn set_window_size(tty: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives for the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A terminal's window size (`TIOCGWINSZ`) as `(rows, columns)`, or `None`
/// when `tty` is not a terminal.
pub fn window_size(tty: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer, which lives for the call.
    let rc = unsafe { libc::ioctl(tty.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some((size.ws_row, size.ws_col))
}

/// Sets the interface `name` of the calling thread's network namespace up
/// (`SIOCGIFFLAGS`, then `SIOCSIFFLAGS` with `IFF_UP`): what `ip link set
/// NAME up` does, without a process.
pub fn set_link_up(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("not an interface name: {name:?}"),
        ));
    }
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into the
    // ifreq, which lives for the call; the socket is open.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    unsafe {
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the name and flags from the ifreq, which
    // lives for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, IntoRawFd};

    #[test]
    fn an_inherited_descriptor_is_adopted_once_and_only_when_open() {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        assert!(adopt_fd_list("0").is_err(), "stdio");
        assert!(adopt_fd_list("987654").is_err(), "not open");
        assert!(adopt_fd_list("x").is_err(), "not a number");
        let owned = File::open("/dev/null").expect("open");
        let err = adopt_fd_list(&owned.as_raw_fd().to_string()).expect_err("owned already");
        assert!(err.to_string().contains("close-on-exec"), "{err}");
        // What a parent passes: open and without close-on-exec.
        let fd = File::open("/dev/null").expect("open").into_raw_fd();
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).expect("clear FD_CLOEXEC");
        let files = adopt_fd_list(&fd.to_string()).expect("adopted");
        let flags = fcntl(fd, FcntlArg::F_GETFD).expect("F_GETFD");
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).expect("clear it again");
        assert!(adopt_fd_list(&fd.to_string()).is_err(), "a second owner");
        drop(files);
        drop(owned);
    }
}
