//! The daemon's open-file descriptors: raised to the hard limit at start,
//! and shared out so that clients cannot take those pods and monitors need.

use std::time::Duration;

/// How long an accept loop waits after accepting failed (descriptors
/// exhausted) before it tries again, instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Raises the open-file limit to its hard limit (children inherit it): a
/// node's connections, pods and monitors need more than the usual 1024.
pub fn raise_to_hard_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(%e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(%e, "cannot read the open-file limit"),
    }
}

/// How many `what` may be open at once: `configured`, but at most
/// 1/`divisor` of the open-file limit, and at least one.
pub fn share(configured: u64, divisor: u64, what: &str) -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    let part = getrlimit(Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft / divisor.max(1))
        .unwrap_or(128);
    let cap = configured.min(part).max(1);
    tracing::info!(cap, configured, what, "served at once");
    usize::try_from(cap).unwrap_or(usize::MAX)
}
