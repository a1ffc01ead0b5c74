//! Cancellation of blocking work when the RPC that asked for it goes away.
//!
//! tonic drops a handler's future when its client resets the stream or the
//! deadline passes, but work handed to `spawn_blocking` keeps running. The
//! handler keeps a [`CancelOnDrop`]; the blocking side polls the matching
//! [`Cancellation`]'s descriptor beside whatever it waits on. Dropping the
//! guard closes one end of a socket pair, so the other end reads as ready:
//! no flag to miss, no polling interval.

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

/// Kept by the async side; dropping it cancels the matching [`Cancellation`].
#[derive(Debug)]
pub struct CancelOnDrop {
    _peer: UnixStream,
}

/// The blocking side's view: ready to read once its guard is gone.
#[derive(Debug)]
pub struct Cancellation(UnixStream);

/// A new guard and the cancellation it controls.
pub fn cancellation() -> std::io::Result<(CancelOnDrop, Cancellation)> {
    let (guard, watched) = UnixStream::pair()?;
    Ok((CancelOnDrop { _peer: guard }, Cancellation(watched)))
}

impl Cancellation {
    /// The descriptor to poll for `POLLIN` (end of file once cancelled).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn is_cancelled(c: &Cancellation) -> bool {
        let mut fds = [PollFd::new(c.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).expect("poll") > 0
    }

    #[test]
    fn dropping_the_guard_cancels_and_nothing_else_does() {
        let (guard, cancellation) = cancellation().expect("socket pair");
        assert!(!is_cancelled(&cancellation));
        assert!(!is_cancelled(&cancellation), "asking does not cancel");
        drop(guard);
        assert!(is_cancelled(&cancellation));
    }
}
