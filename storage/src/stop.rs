//! Stopping store work that runs on a blocking thread (an unpack, a blob
//! copy) when whoever waits for it goes away: the waiting future holds a
//! guard that raises a flag when it is dropped, and the work's reader fails
//! at its next read.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that, once raised, makes every [`StopFlag::reader`] of it fail.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Raises the flag: readers made from it fail from their next read on.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// True once the flag is raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// A guard that raises the flag when it is dropped; held by the future
    /// that waits for the work, so that dropping the future (a cancelled
    /// RPC, an aborted task) stops the work too.
    pub fn raise_on_drop(&self) -> RaiseOnDrop {
        RaiseOnDrop(self.clone())
    }

    /// `inner`, failing at the first read after the flag is raised.
    pub fn reader<R: Read>(&self, inner: R) -> StopReader<R> {
        StopReader {
            inner,
            flag: self.clone(),
        }
    }
}

/// Raises its [`StopFlag`] when dropped.
#[derive(Debug)]
pub struct RaiseOnDrop(StopFlag);

impl Drop for RaiseOnDrop {
    fn drop(&mut self) {
        self.0.raise();
    }
}

/// A reader that fails once its [`StopFlag`] is raised.
#[derive(Debug)]
pub struct StopReader<R> {
    inner: R,
    flag: StopFlag,
}

impl<R: Read> Read for StopReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.flag.is_raised() {
            // Not `Interrupted`: `read_exact` and `io::copy` retry that.
            return Err(io::Error::other("stopped: its caller went away"));
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_fails_after_its_guard_is_dropped() {
        let flag = StopFlag::default();
        let guard = flag.raise_on_drop();
        let mut reader = flag.reader(&b"abcdef"[..]);
        let mut two = [0u8; 2];
        reader
            .read_exact(&mut two)
            .expect("reads while the guard lives");
        drop(guard);
        let err = io::copy(&mut reader, &mut io::sink()).expect_err("stopped");
        assert!(err.to_string().contains("stopped"), "{err}");
    }
}
