//! Waiting for a process to end through a pidfd (`pidfd_open(2)`): the
//! kernel wakes the wait when the process exits, so there is no timer loop
//! over `/proc` or `waitpid(WNOHANG)`, and a reused pid is never mistaken
//! for the process the descriptor was opened on.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A process held by its pidfd.
#[derive(Debug)]
pub struct Pidfd(OwnedFd);

impl Pidfd {
    /// The process `pid`, or `None` when no such process exists any more
    /// (`ESRCH`). A zombie still opens; it reads as exited.
    pub fn open(pid: i32) -> io::Result<Option<Pidfd>> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(nix::libc::EINVAL));
        }
        match crate::syscall::pidfd_open(pid) {
            Ok(fd) => Ok(Some(Pidfd(fd))),
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `limit` for the process to exit: true once it has (a
    /// zombie counts), false when `limit` passed first. A limit too far
    /// to represent ([`Duration::MAX`]) waits for as long as it takes.
    pub fn wait_exit(&self, limit: Duration) -> bool {
        // poll takes milliseconds in an i32: long limits wait in steps.
        const STEP: Duration = Duration::from_secs(3600);
        let deadline = Instant::now().checked_add(limit);
        loop {
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => STEP,
            };
            // Rounded up: a wait of 0.4 ms must not become a zero timeout
            // that returns at once, over and over.
            let millis = left.min(STEP).as_nanos().div_ceil(1_000_000);
            let timeout = PollTimeout::try_from(millis as i32).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(n) if n > 0 => return true,
                // A pidfd that cannot be polled is not something to spin on:
                // say "not yet" and let the caller's deadline decide.
                Err(e) if e != nix::errno::Errno::EINTR => return false,
                _ => {}
            }
            if left.is_zero() {
                return false;
            }
        }
    }

    /// True when the process has exited (a zombie counts), without waiting.
    pub fn has_exited(&self) -> bool {
        self.wait_exit(Duration::ZERO)
    }
}

/// Waits up to `limit` for `child` to exit and reaps it: its status, or
/// `None` while it runs on. The wait sleeps on a pidfd; only when none can
/// be opened (descriptors exhausted) does it look every 10 ms instead.
pub fn wait_child(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    match Pidfd::open(child.id() as i32) {
        Ok(Some(pidfd)) => {
            pidfd.wait_exit(limit);
        }
        Ok(None) => {}
        Err(_) => {
            let deadline = Instant::now().checked_add(limit);
            while matches!(child.try_wait(), Ok(None))
                && deadline.is_none_or(|d| Instant::now() < d)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    child.try_wait().ok().flatten()
}

/// Waits up to `limit` for process `pid` (held by `pidfd`, opened before
/// any signal so that a reused pid cannot stand in) to exit, then reaps it
/// if it is the caller's child: its wait status, when it was.
pub fn wait_and_reap(
    pidfd: &Pidfd,
    pid: i32,
    limit: Duration,
) -> Option<nix::sys::wait::WaitStatus> {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    if !pidfd.wait_exit(limit) {
        return None;
    }
    waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).ok()
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_when_the_process_exits_and_a_running_one_times_out() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pidfd = Pidfd::open(child.id() as i32)
            .expect("pidfd_open")
            .expect("the child runs");
        assert!(!pidfd.has_exited());
        assert!(!pidfd.wait_exit(Duration::from_millis(20)));
        child.kill().expect("kill");
        // Not yet reaped: a zombie reads as exited.
        assert!(pidfd.wait_exit(Duration::from_secs(30)));
        child.wait().expect("reap");
        assert!(pidfd.has_exited());
    }

    #[test]
    fn a_child_is_waited_for_and_reaped_with_its_status() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .expect("sh");
        let status = wait_child(&mut child, Duration::from_secs(30)).expect("exited");
        assert_eq!(status.code(), Some(7));
        let mut sleeper = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        assert!(wait_child(&mut sleeper, Duration::from_millis(20)).is_none());
        let pid = sleeper.id() as i32;
        let held = Pidfd::open(pid).expect("pidfd").expect("runs");
        sleeper.kill().expect("kill");
        let reaped = wait_and_reap(&held, pid, Duration::from_secs(30));
        assert!(
            matches!(reaped, Some(nix::sys::wait::WaitStatus::Signaled(..))),
            "{reaped:?}"
        );
        // Reaped already: the Child learns it could not wait.
        assert!(sleeper.try_wait().is_err());
    }

    #[test]
    fn a_pid_that_is_gone_opens_as_none_and_a_bad_one_is_refused() {
        let mut child = std::process::Command::new("true").spawn().expect("true");
        let pid = child.id() as i32;
        child.wait().expect("reap");
        assert!(Pidfd::open(pid).expect("pidfd_open").is_none());
        assert!(Pidfd::open(0).is_err());
        assert!(Pidfd::open(-1).is_err());
    }
}
