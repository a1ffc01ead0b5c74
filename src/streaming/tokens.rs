//! Single-use tokens for streaming URLs: Exec, Attach and PortForward store
//! their request under a random token that the client presents once, within
//! a minute (as CRI-O and containerd do).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ucri_cri_api::v1::{AttachRequest, ExecRequest, PortForwardRequest};

/// How many URLs may wait for their client at once.
pub const MAX_PENDING: usize = 1000;

/// A request waiting for its streaming connection.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    /// `Exec`.
    Exec(ExecRequest),
    /// `Attach`.
    Attach(AttachRequest),
    /// `PortForward`.
    PortForward(PortForwardRequest),
}

impl StreamRequest {
    /// The URL path segment of this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// Pending requests by token.
#[derive(Debug)]
pub struct Tokens {
    pending: Mutex<HashMap<String, (StreamRequest, Instant)>>,
    ttl: Duration,
}

/// Why no URL could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too many URLs are waiting for their clients.
    #[error("too many streaming requests in flight ({MAX_PENDING})")]
    TooManyPending,
    /// The kernel's generator could not be read: no predictable token.
    #[error("reading /dev/urandom for a streaming token: {0}")]
    NoRandomness(#[source] std::io::Error),
}

impl Tokens {
    /// Tokens that expire `ttl` after they were handed out.
    pub fn new(ttl: Duration) -> Tokens {
        Tokens {
            pending: Mutex::default(),
            ttl,
        }
    }

    /// Stores `request` under a new random token.
    pub fn insert(&self, request: StreamRequest) -> Result<String, TokenError> {
        let mut pending = self.lock();
        let now = Instant::now();
        pending.retain(|_, (_, expires)| *expires > now);
        if pending.len() >= MAX_PENDING {
            return Err(TokenError::TooManyPending);
        }
        let token = crate::random::hex(16).map_err(TokenError::NoRandomness)?;
        pending.insert(token.clone(), (request, now + self.ttl));
        Ok(token)
    }

    /// True when `token` is waiting, of `kind` and not expired (it stays).
    pub fn is_pending(&self, kind: &str, token: &str) -> bool {
        self.lock()
            .get(token)
            .is_some_and(|(request, expires)| *expires > Instant::now() && request.kind() == kind)
    }

    /// Takes the request stored under `token` if it is of `kind` and has not
    /// expired; a token works once.
    pub fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        let mut pending = self.lock();
        let (request, expires) = pending.remove(token)?;
        (expires > Instant::now() && request.kind() == kind).then_some(request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (StreamRequest, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> StreamRequest {
        StreamRequest::Exec(ExecRequest::default())
    }

    #[test]
    fn a_token_works_once_and_only_for_its_kind() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let token = tokens.insert(exec()).expect("insert");
        assert_eq!(token.len(), 32);
        assert!(tokens.take("exec", &token).is_some());
        assert!(tokens.take("exec", &token).is_none(), "reused token");
        let token = tokens.insert(exec()).expect("insert");
        assert!(tokens.take("attach", &token).is_none(), "wrong kind");
        assert!(
            tokens.take("exec", &token).is_none(),
            "a wrong-kind try spends it"
        );
        assert!(tokens.take("exec", "nonsense").is_none());
    }

    #[test]
    fn expired_tokens_are_refused_and_pending_ones_are_bounded() {
        let tokens = Tokens::new(Duration::from_secs(60));
        let token = tokens.insert(exec()).expect("insert");
        tokens.lock().get_mut(&token).expect("stored").1 = Instant::now();
        assert!(tokens.take("exec", &token).is_none());
        for _ in 0..MAX_PENDING {
            tokens.insert(exec()).expect("insert");
        }
        assert!(tokens.insert(exec()).is_err());
    }
}
