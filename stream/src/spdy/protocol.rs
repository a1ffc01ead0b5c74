//! The SPDY/3.1 vocabulary every part of the session shares: the upgrade
//! token, header blocks, roles, RST_STREAM codes and the error type.

/// The Upgrade token.
pub const UPGRADE: &str = "SPDY/3.1";

/// Header block: (name, value) pairs in order; names lowercase on the wire.
pub type Headers = Vec<(String, String)>;

/// Which side of the session this is: clients open odd stream ids, servers even.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that initiated the connection (odd stream ids).
    Client,
    /// The side that accepted the connection (even stream ids).
    Server,
}

/// RST_STREAM status: PROTOCOL_ERROR.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: INVALID_STREAM.
pub const RST_INVALID_STREAM: u32 = 2;
/// RST_STREAM status: REFUSED_STREAM.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: CANCEL.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status: INTERNAL_ERROR.
pub const RST_INTERNAL_ERROR: u32 = 6;

/// Errors of the SPDY layer.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The underlying connection failed.
    #[error("spdy i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer (or the caller) violated the protocol.
    #[error("spdy protocol error: {0}")]
    Protocol(String),
    /// The peer reset the stream.
    #[error("spdy stream {stream} reset (status {status})")]
    Reset {
        /// The stream id.
        stream: u32,
        /// The RST_STREAM status code.
        status: u32,
    },
    /// The session (or the stream's sending side) is closed.
    #[error("spdy session closed")]
    Closed,
    /// The peer did not answer in time.
    #[error("spdy operation timed out")]
    Timeout,
}

impl From<SpdyError> for std::io::Error {
    fn from(e: SpdyError) -> Self {
        use std::io::ErrorKind;
        match e {
            SpdyError::Io(e) => e,
            SpdyError::Closed => std::io::Error::new(ErrorKind::BrokenPipe, e),
            SpdyError::Reset { .. } => std::io::Error::new(ErrorKind::ConnectionReset, e),
            SpdyError::Timeout => std::io::Error::new(ErrorKind::TimedOut, e),
            SpdyError::Protocol(_) => std::io::Error::new(ErrorKind::InvalidData, e),
        }
    }
}
