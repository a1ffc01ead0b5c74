//! The only module of the socket bypass allowed to use `unsafe`: the seccomp
//! user-notification ioctls (`seccomp_unotify(2)`), `pidfd_open`,
//! `pidfd_getfd` and reading a process's memory. Each function wraps one
//! system call and returns `io::Error` for its errno.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `struct seccomp_data`: the system call a notification is about.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SeccompData {
    /// The system call number.
    pub nr: i32,
    /// `AUDIT_ARCH_*` of the calling process.
    pub arch: u32,
    /// Where the call was made.
    pub instruction_pointer: u64,
    /// The raw arguments.
    pub args: [u64; 6],
}

/// `struct seccomp_notif`: one intercepted system call.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Notification {
    /// The cookie that names it in the answer.
    pub id: u64,
    /// The calling thread, in the listener's PID namespace.
    pub pid: u32,
    /// Unused by the kernel so far.
    pub flags: u32,
    /// The call.
    pub data: SeccompData,
}

#[repr(C)]
struct Response {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

#[repr(C)]
struct AddFd {
    id: u64,
    flags: u32,
    srcfd: u32,
    newfd: u32,
    newfd_flags: u32,
}

// The ioctl numbers of <linux/seccomp.h>: _IOWR('!', 0, seccomp_notif),
// _IOWR('!', 1, seccomp_notif_resp), _IOW('!', 2, __u64) and
// _IOW('!', 3, seccomp_notif_addfd).
const NOTIF_RECV: u64 = ioc(3, 0, std::mem::size_of::<Notification>());
const NOTIF_SEND: u64 = ioc(3, 1, std::mem::size_of::<Response>());
const NOTIF_ID_VALID: u64 = ioc(1, 2, std::mem::size_of::<u64>());
const NOTIF_ADDFD: u64 = ioc(1, 3, std::mem::size_of::<AddFd>());
const USER_NOTIF_FLAG_CONTINUE: u32 = 1;
const ADDFD_FLAG_SETFD: u32 = 1;

/// `_IOC(dir, '!', nr, size)` with dir 1 = write, 2 = read, 3 = both.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'!' as u64) << 8) | nr
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Waits for the next notification (`SECCOMP_IOCTL_NOTIF_RECV`). `ENOENT`
/// means the caller died before it could be read.
pub fn receive(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    let mut notification = Notification::default();
    // SAFETY: the kernel writes one `struct seccomp_notif` (this repr(C)
    // layout, zeroed as it requires) into memory we own for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            NOTIF_RECV as _,
            &mut notification as *mut Notification,
        )
    };
    check(rc.into())?;
    Ok(notification)
}

/// Whether notification `id` is still pending: its caller has not died or
/// been interrupted (`SECCOMP_IOCTL_NOTIF_ID_VALID`). Checked after reading
/// the caller's memory, so the pid was not reused in between.
pub fn still_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the kernel reads one u64 from memory we own.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_ID_VALID as _, &id as *const u64) };
    rc == 0
}

fn send(listener: BorrowedFd<'_>, response: &Response) -> io::Result<()> {
    // SAFETY: the kernel reads one `struct seccomp_notif_resp` from memory
    // we own for the call.
    let rc = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            NOTIF_SEND as _,
            response as *const Response,
        )
    };
    check(rc.into()).map(drop)
}

/// Lets the intercepted call run as if it had not been intercepted.
pub fn let_it_run(listener: BorrowedFd<'_>, id: u64) -> io::Result<()> {
    send(
        listener,
        &Response {
            id,
            val: 0,
            error: 0,
            flags: USER_NOTIF_FLAG_CONTINUE,
        },
    )
}

/// Answers the intercepted call: it returns `value`, or fails with `errno`
/// when that is not 0.
pub fn answer(listener: BorrowedFd<'_>, id: u64, value: i64, errno: i32) -> io::Result<()> {
    send(
        listener,
        &Response {
            id,
            val: value,
            error: -errno,
            flags: 0,
        },
    )
}

/// Installs `socket` in the caller's descriptor table at number `target`,
/// replacing what was there as dup2 would (`SECCOMP_IOCTL_NOTIF_ADDFD` with
/// `SECCOMP_ADDFD_FLAG_SETFD`).
pub fn install_fd(
    listener: BorrowedFd<'_>,
    id: u64,
    socket: BorrowedFd<'_>,
    target: RawFd,
    cloexec: bool,
) -> io::Result<()> {
    let add = AddFd {
        id,
        flags: ADDFD_FLAG_SETFD,
        srcfd: socket.as_raw_fd() as u32,
        newfd: target as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the kernel reads one `struct seccomp_notif_addfd` from memory
    // we own; it duplicates `socket` into the caller, which we keep open.
    let rc = unsafe { libc::ioctl(listener.as_raw_fd(), NOTIF_ADDFD as _, &add as *const AddFd) };
    check(rc.into()).map(drop)
}

pub use ucri_rootless::syscall::pidfd_open;

/// A duplicate of descriptor `target` of the process behind `pidfd`
/// (`pidfd_getfd(2)`), close-on-exec.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = check(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) })?;
    // SAFETY: the kernel just made this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads `buf.len()` bytes at address `address` of process `pid`
/// (`process_vm_readv(2)`); the number of bytes read.
pub fn read_memory(pid: i32, address: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: address as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec covers exactly `buf`, which we own mutably; the
    // remote one is only read by the kernel, which checks it against the
    // other process's mappings.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    check(n as libc::c_long).map(|n| n as usize)
}

/// A new close-on-exec socket (`socket(2)`) in this process's network
/// namespace, with raw domain, type and protocol numbers.
pub fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    check(fd.into())?;
    // SAFETY: the kernel just made this descriptor for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket option's raw value (`getsockopt(2)`) into `buf`; its length.
pub fn get_option(
    socket: BorrowedFd<'_>,
    level: i32,
    name: i32,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf`, which we own
    // mutably, and stores the length it wrote in `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    check(rc.into())?;
    Ok(len as usize)
}

/// Sets a socket option from its raw value (`setsockopt(2)`).
pub fn set_option(socket: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `value.len()` bytes from `value`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    check(rc.into()).map(drop)
}

/// Owns a descriptor the kernel just installed in this process with
/// `SCM_RIGHTS` (nix's `recvmsg` hands them over as numbers).
pub fn adopt_received(fd: RawFd) -> OwnedFd {
    // SAFETY: the number came with a message this process received; the
    // kernel made it for us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
