//! SPDY/3.1 framing, header compression, sessions and the HTTP/1.1 upgrade
//! client, compatible with github.com/moby/spdystream.

mod client;
mod dictionary;
pub mod frame;
pub mod headers;
mod protocol;
mod session;

pub use client::connect;
pub use dictionary::DICTIONARY;
pub use protocol::{
    Headers, Role, SpdyError, RST_CANCEL, RST_INTERNAL_ERROR, RST_INVALID_STREAM,
    RST_PROTOCOL_ERROR, RST_REFUSED_STREAM, UPGRADE,
};
pub use session::{Session, Stream, StreamReader, StreamWriter, MAX_OPEN_STREAMS};
