//! Accepts the `:authority` values that gRPC clients send on unix sockets
//! and that h2 refuses.
//!
//! gRPC-Go before its switch to `localhost` (the crictl, kubelet and critest
//! builds of many distributions), grpc-java, gRPC Python (`unix:` targets:
//! the path percent-encoded) and grpc-swift send the socket path, or
//! nothing, as `:authority`. h2's server turns the pseudo-header into an
//! [`http::uri::Authority`] when it builds the `Request`
//! (`server::Peer::convert_poll_message`), and answers any value that does
//! not parse with `RST_STREAM PROTOCOL_ERROR`; no h2, hyper or tonic option
//! relaxes it. CRI-O and containerd (grpc-go servers) accept these clients.
//!
//! [`AuthorityFix`] sits between the accepted socket and hyper. It parses
//! the client's byte stream (the connection preface, then frames) and
//! passes everything through untouched except header blocks (HEADERS and
//! its CONTINUATION frames), which it decodes with a decoder that keeps the
//! client's HPACK dynamic table. A block whose `:authority` parses, as
//! every block from crictl does, is forwarded byte for byte. A block whose
//! `:authority` does not is re-encoded with `localhost` in its place.
//!
//! Re-encoding writes literals without indexing: h2's decoder table then
//! stops receiving the client's insertions, so from that block on every
//! block of the connection is re-encoded (h2's stale table is never read
//! again). The dynamic table size updates that open a block are forwarded,
//! so that h2 still checks them against its own limit. What this module
//! cannot parse it hands to h2 unchanged, so that h2 answers as it would
//! have; only once blocks are being re-encoded does it fail the connection
//! itself.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack::{self, Decoder, Field, HpackError};

/// The largest header block (HEADERS plus CONTINUATION frames, as sent)
/// held in memory. h2 gives up far below it (hyper's 16 KiB header list
/// limit, at most a few CONTINUATION frames), so no block h2 would serve is
/// refused.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// The largest decoded header list (RFC 7541 entry sizes) held in memory.
const MAX_HEADER_LIST: usize = 1 << 20;

/// The dynamic table size the client's encoder may use: the
/// SETTINGS_HEADER_TABLE_SIZE the server advertises. ucri's server leaves it
/// at the protocol's default.
const HEADER_TABLE_SIZE: usize = 4096;

/// The payload size of the frames a re-encoded block is split into: the
/// smallest SETTINGS_MAX_FRAME_SIZE an HTTP/2 server may advertise.
const MAX_FRAME_PAYLOAD: usize = 16_384;

/// What replaces an `:authority` h2 would refuse (what gRPC-Go now sends).
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const PRIORITY_LEN: usize = 5;

/// Why a connection's client stream could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    /// A header block larger than [`MAX_HEADER_BLOCK`].
    #[error("the header block of stream {stream} exceeds {limit} bytes")]
    BlockTooLarge {
        /// The stream the block belongs to.
        stream: u32,
        /// [`MAX_HEADER_BLOCK`].
        limit: usize,
    },
    /// A HEADERS frame whose padding or priority is longer than itself.
    #[error("the HEADERS frame of stream {0} is shorter than its padding and priority")]
    BadHeadersFrame(u32),
    /// A frame other than the CONTINUATION a header block was waiting for.
    #[error(
        "expected a CONTINUATION of stream {stream}, got frame type {kind:#x} of stream {got}"
    )]
    ExpectedContinuation {
        /// The stream whose header block is open.
        stream: u32,
        /// The type of the frame that came instead.
        kind: u8,
        /// Its stream.
        got: u32,
    },
    /// A header block that does not decode.
    #[error("the header block of stream {stream}: {source}")]
    Hpack {
        /// The stream the block belongs to.
        stream: u32,
        /// What is wrong with it.
        #[source]
        source: HpackError,
    },
}

impl From<AuthorityError> for io::Error {
    fn from(e: AuthorityError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// A 9-byte HTTP/2 frame header.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(src: &[u8]) -> Option<FrameHead> {
        let head: &[u8; FRAME_HEADER_LEN] = src.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = *head;
        Some(FrameHead {
            len: usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2),
            kind,
            flags,
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        })
    }

    fn write(&self, out: &mut BytesMut) {
        out.put_uint(self.len as u64, 3);
        out.put_u8(self.kind);
        out.put_u8(self.flags);
        out.put_u32(self.stream);
    }
}

/// A header block waiting for its END_HEADERS.
#[derive(Debug)]
struct Pending {
    stream: u32,
    end_stream: bool,
    priority: Option<Bytes>,
    /// Every frame of the block, as received.
    raw: BytesMut,
    /// The HPACK fragments, padding and priority removed.
    fragment: BytesMut,
}

impl Pending {
    /// Opens a block with its HEADERS frame (header included).
    fn start(head: FrameHead, frame: Bytes) -> Result<Pending, AuthorityError> {
        let bad = || AuthorityError::BadHeadersFrame(head.stream);
        let payload = frame.slice(FRAME_HEADER_LEN..);
        let (mut start, mut end) = (0, payload.len());
        if head.flags & PADDED != 0 {
            let pad = usize::from(*payload.first().ok_or_else(bad)?);
            start = 1;
            end = end.checked_sub(pad).ok_or_else(bad)?;
        }
        let mut priority = None;
        if head.flags & PRIORITY != 0 {
            priority = Some(payload.slice(start..(start + PRIORITY_LEN).min(payload.len())));
            start += PRIORITY_LEN;
        }
        if start > end {
            return Err(bad());
        }
        Ok(Pending {
            stream: head.stream,
            end_stream: head.flags & END_STREAM != 0,
            priority,
            fragment: BytesMut::from(&payload[start..end]),
            raw: BytesMut::from(&frame[..]),
        })
    }

    /// Adds a CONTINUATION frame (header included).
    fn extend(&mut self, frame: &[u8]) {
        self.raw.extend_from_slice(frame);
        self.fragment
            .extend_from_slice(&frame[FRAME_HEADER_LEN.min(frame.len())..]);
    }
}

/// Where the parser is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Expecting the connection preface.
    Preface,
    /// At a frame boundary.
    Frames,
    /// Inside the payload of a frame passed through: this many bytes left.
    Raw(usize),
    /// Not HTTP/2 as this module understands it: everything goes to h2 as is.
    Transparent,
}

/// The client-to-server half of the rewriting, without I/O: bytes in,
/// bytes for h2 out.
#[derive(Debug)]
pub struct Rewriter {
    phase: Phase,
    pending: Option<Pending>,
    decoder: Decoder,
    /// Set by the first re-encoded block: every later block is re-encoded.
    reencoding: bool,
}

impl Default for Rewriter {
    fn default() -> Rewriter {
        Rewriter::new()
    }
}

impl Rewriter {
    /// A rewriter for a new connection.
    pub fn new() -> Rewriter {
        Rewriter {
            phase: Phase::Preface,
            pending: None,
            decoder: Decoder::new(HEADER_TABLE_SIZE, MAX_HEADER_LIST),
            reencoding: false,
        }
    }

    /// Consumes what it can of `input` and appends what h2 should read to
    /// `out`; what is left in `input` waits for more bytes.
    pub fn feed(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<(), AuthorityError> {
        loop {
            let progress = match self.phase {
                Phase::Preface => self.preface(input, out),
                Phase::Frames => self.frame(input, out)?,
                Phase::Raw(left) => self.raw(left, input, out),
                Phase::Transparent => {
                    out.extend_from_slice(&input.split());
                    false
                }
            };
            if !progress {
                return Ok(());
            }
        }
    }

    /// How many bytes may go from the socket straight to h2, bypassing
    /// [`Rewriter::feed`] (frame payloads passed through), if any.
    pub fn passthrough_budget(&self) -> Option<usize> {
        match self.phase {
            Phase::Raw(left) => Some(left),
            Phase::Transparent => Some(usize::MAX),
            _ => None,
        }
    }

    /// Records that `n` bytes of [`Rewriter::passthrough_budget`] went to h2.
    pub fn passed_through(&mut self, n: usize) {
        if let Phase::Raw(left) = self.phase {
            self.phase = match left.saturating_sub(n) {
                0 => Phase::Frames,
                rest => Phase::Raw(rest),
            };
        }
    }

    /// At end of file: hands over whatever is held (an unfinished header
    /// block, a partial frame) as sent.
    pub fn end_of_input(&mut self, input: &mut BytesMut, out: &mut BytesMut) {
        if let Some(pending) = self.pending.take() {
            out.extend_from_slice(&pending.raw);
        }
        out.extend_from_slice(&input.split());
        self.phase = Phase::Transparent;
    }

    fn preface(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> bool {
        let n = input.len().min(PREFACE.len());
        if input[..n] != PREFACE[..n] {
            self.phase = Phase::Transparent;
            return true;
        }
        if n < PREFACE.len() {
            return false;
        }
        out.extend_from_slice(&input.split_to(n));
        self.phase = Phase::Frames;
        true
    }

    fn raw(&mut self, left: usize, input: &mut BytesMut, out: &mut BytesMut) -> bool {
        let n = left.min(input.len());
        out.extend_from_slice(&input.split_to(n));
        self.passed_through(n);
        n == left
    }

    /// Handles the frame at the front of `input`, once enough of it is there.
    fn frame(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<bool, AuthorityError> {
        let Some(head) = FrameHead::parse(input) else {
            return Ok(false);
        };
        if let Some(pending) = &self.pending {
            if head.kind != CONTINUATION || head.stream != pending.stream {
                let error = AuthorityError::ExpectedContinuation {
                    stream: pending.stream,
                    kind: head.kind,
                    got: head.stream,
                };
                return self.give_up(error, out).map(|()| true);
            }
        } else if head.kind != HEADERS {
            out.extend_from_slice(&input.split_to(FRAME_HEADER_LEN));
            self.phase = Phase::Raw(head.len);
            return Ok(true);
        }
        if head.len > MAX_HEADER_BLOCK {
            let error = AuthorityError::BlockTooLarge {
                stream: head.stream,
                limit: MAX_HEADER_BLOCK,
            };
            return self.give_up(error, out).map(|()| true);
        }
        if input.len() < FRAME_HEADER_LEN + head.len {
            return Ok(false);
        }
        let frame = input.split_to(FRAME_HEADER_LEN + head.len).freeze();
        self.header_frame(head, frame, out)?;
        Ok(true)
    }

    /// Adds a whole HEADERS or CONTINUATION frame to the open block.
    fn header_frame(
        &mut self,
        head: FrameHead,
        frame: Bytes,
        out: &mut BytesMut,
    ) -> Result<(), AuthorityError> {
        let pending = match self.pending.take() {
            Some(mut pending) => {
                pending.extend(&frame);
                pending
            }
            None => match Pending::start(head, frame.clone()) {
                Ok(pending) => pending,
                Err(error) => {
                    out.extend_from_slice(&frame);
                    return self.give_up(error, out);
                }
            },
        };
        if pending.raw.len() > MAX_HEADER_BLOCK {
            let error = AuthorityError::BlockTooLarge {
                stream: pending.stream,
                limit: MAX_HEADER_BLOCK,
            };
            self.pending = Some(pending);
            return self.give_up(error, out);
        }
        self.pending = Some(pending);
        match head.flags & END_HEADERS {
            0 => Ok(()),
            _ => self.finish(out),
        }
    }

    /// Decodes the complete block, then forwards or re-encodes it.
    fn finish(&mut self, out: &mut BytesMut) -> Result<(), AuthorityError> {
        let Some(mut pending) = self.pending.take() else {
            return Ok(());
        };
        let fragment = std::mem::take(&mut pending.fragment).freeze();
        let block = match self.decoder.decode(&fragment) {
            Ok(block) => block,
            Err(source) => {
                let stream = pending.stream;
                self.pending = Some(pending);
                return self.give_up(AuthorityError::Hpack { stream, source }, out);
            }
        };
        let refused = block.fields.iter().any(refused_authority);
        if !refused && !self.reencoding {
            out.extend_from_slice(&pending.raw);
            return Ok(());
        }
        if !self.reencoding {
            tracing::debug!(
                stream = pending.stream,
                "replacing an :authority h2 refuses with localhost; re-encoding this connection's header blocks from now on"
            );
            self.reencoding = true;
        }
        write_block(&pending, &reencode(&block), out);
        Ok(())
    }

    /// Stops parsing: what is held and what follows reach h2 as sent, so
    /// that it answers as it would without this module. Once blocks were
    /// re-encoded h2's table no longer matches the client's: an error.
    fn give_up(&mut self, error: AuthorityError, out: &mut BytesMut) -> Result<(), AuthorityError> {
        if self.reencoding {
            return Err(error);
        }
        tracing::debug!(%error, "passing the rest of the connection to h2 as sent");
        if let Some(pending) = self.pending.take() {
            out.extend_from_slice(&pending.raw);
        }
        self.phase = Phase::Transparent;
        Ok(())
    }
}

/// True for an `:authority` field that h2 would refuse.
fn refused_authority(field: &Field) -> bool {
    field.name == ":authority" && http::uri::Authority::try_from(&field.value[..]).is_err()
}

/// The block as literals without indexing, refused authorities replaced.
fn reencode(block: &hpack::Block) -> Vec<u8> {
    let mut out = Vec::new();
    for &size in &block.size_updates {
        hpack::encode_size_update(&mut out, size);
    }
    for field in &block.fields {
        if refused_authority(field) {
            let replaced = Field {
                value: Bytes::from_static(REPLACEMENT_AUTHORITY),
                ..field.clone()
            };
            hpack::encode_field(&mut out, &replaced);
        } else {
            hpack::encode_field(&mut out, field);
        }
    }
    out
}

/// Frames `hpack` as one HEADERS frame (END_STREAM and priority kept,
/// padding dropped) and as many CONTINUATION frames as it takes.
fn write_block(pending: &Pending, hpack: &[u8], out: &mut BytesMut) {
    let priority = pending.priority.as_deref().unwrap_or_default();
    let (first, rest) = hpack.split_at(hpack.len().min(MAX_FRAME_PAYLOAD - priority.len()));
    let mut continuations = rest.chunks(MAX_FRAME_PAYLOAD).peekable();
    let mut flags = if pending.end_stream { END_STREAM } else { 0 };
    if pending.priority.is_some() {
        flags |= PRIORITY;
    }
    if continuations.peek().is_none() {
        flags |= END_HEADERS;
    }
    write_frame(out, HEADERS, flags, pending.stream, &[priority, first]);
    while let Some(chunk) = continuations.next() {
        let flags = match continuations.peek() {
            None => END_HEADERS,
            Some(_) => 0,
        };
        write_frame(out, CONTINUATION, flags, pending.stream, &[chunk]);
    }
}

fn write_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    FrameHead {
        len,
        kind,
        flags,
        stream,
    }
    .write(out);
    for part in parts {
        out.extend_from_slice(part);
    }
}

/// An accepted CRI connection whose client-to-server bytes go through a
/// [`Rewriter`]; writes go to the socket unchanged.
#[derive(Debug)]
pub struct AuthorityFix<S> {
    inner: S,
    rewriter: Rewriter,
    input: BytesMut,
    output: BytesMut,
    eof: bool,
}

/// How much is read from the socket at a time into the parse buffer.
const READ_CHUNK: usize = 8192;

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> AuthorityFix<S> {
        AuthorityFix {
            inner,
            rewriter: Rewriter::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AuthorityFix<S> {
    /// Reads more of the socket into `input`; notes end of file.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let len = self.input.len();
        self.input.resize(len + READ_CHUNK, 0);
        let mut buf = ReadBuf::new(&mut self.input[len..]);
        let result = Pin::new(&mut self.inner).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.input.truncate(len + n);
        ready!(result)?;
        self.eof = n == 0;
        Poll::Ready(Ok(()))
    }

    /// Reads a frame payload that passes through straight into `buf`.
    fn read_direct(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        budget: usize,
    ) -> Poll<io::Result<()>> {
        let room = buf.initialize_unfilled_to(budget.min(buf.remaining()));
        let mut direct = ReadBuf::new(room);
        ready!(Pin::new(&mut self.inner).poll_read(cx, &mut direct))?;
        let n = direct.filled().len();
        buf.advance(n);
        self.rewriter.passed_through(n);
        self.eof = n == 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            this.rewriter.feed(&mut this.input, &mut this.output)?;
            if !this.output.is_empty() {
                continue;
            }
            if this.eof {
                // A truncated frame: h2 sees what the client sent, then EOF.
                this.rewriter
                    .end_of_input(&mut this.input, &mut this.output);
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            match this.rewriter.passthrough_budget() {
                Some(budget) if this.input.is_empty() && budget > 0 => {
                    return this.read_direct(cx, buf, budget);
                }
                _ => ready!(this.fill(cx))?,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for AuthorityFix<S>
{
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What gRPC Python 1.85.3 sent on `unix:/run/user/1000/ucri/ucri.sock`:
    /// preface, SETTINGS, WINDOW_UPDATE, SETTINGS ACK, then two Version
    /// calls; the first block enters every field into the dynamic table
    /// (`:authority: run%2Fuser%2F1000%2Fucri%2Fucri.sock`), the second is
    /// nine indexed references to it.
    const GRPC_PYTHON: &[&str] = &[
        "505249202a20485454502f322e300d0a0d0a534d0d0a0d0a00002404000000000000020000000000",
        "0300000000000400400000000500400000000600004000fe0300000001000004080000000000003f",
        "000100000004010000000000010501040000000140053a70617468222f72756e74696d652e76312e",
        "52756e74696d65536572766963652f56657273696f6e400a3a617574686f726974792472756e2532",
        "46757365722532463130303025324675637269253246756372692e736f636b8386400c636f6e7465",
        "6e742d74797065106170706c69636174696f6e2f677270634002746508747261696c657273401467",
        "7270632d6163636570742d656e636f64696e67176964656e746974792c206465666c6174652c2067",
        "7a6970400c677270632d74696d656f7574023353400a757365722d6167656e7430677270632d7079",
        "74686f6e2f312e38352e3320677270632d632f35382e302e3020286c696e75783b20636874747032",
        "29000004080000000001000000050000050001000000010000000000000009010400000003c4c383",
        "86c2c1c0bfbe00000408000000000300000005000005000100000003000000000000000408000000",
        "00000000000a",
    ];

    fn recorded() -> Vec<u8> {
        hex::decode(GRPC_PYTHON.concat()).expect("hex")
    }

    /// A frame as h2 sees it: header blocks assembled and decoded.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Seen {
        Frame(u8, u8, u32, Vec<u8>),
        Headers {
            stream: u32,
            end_stream: bool,
            priority: Option<Vec<u8>>,
            fields: Vec<(Bytes, Bytes)>,
        },
    }

    /// Splits an HTTP/2 client stream into frames.
    fn frames(stream: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
        let mut rest = stream.strip_prefix(PREFACE).expect("preface");
        let mut out = Vec::new();
        while let Some(head) = FrameHead::parse(rest) {
            let end = FRAME_HEADER_LEN + head.len;
            out.push((head, rest[FRAME_HEADER_LEN..end].to_vec()));
            rest = &rest[end..];
        }
        assert!(rest.is_empty(), "a partial frame at the end");
        out
    }

    /// Decodes a client stream the way h2 does, with its own decoder.
    fn seen(stream: &[u8]) -> Vec<Seen> {
        let mut decoder = Decoder::new(HEADER_TABLE_SIZE, MAX_HEADER_LIST);
        let mut out = Vec::new();
        let mut open: Option<Pending> = None;
        for (head, payload) in frames(stream) {
            let mut frame = BytesMut::new();
            head.write(&mut frame);
            frame.extend_from_slice(&payload);
            match (head.kind, open.as_mut()) {
                (HEADERS, None) => {
                    open = Some(Pending::start(head, frame.freeze()).expect("HEADERS"))
                }
                (CONTINUATION, Some(p)) => p.extend(&frame),
                (_, None) => out.push(Seen::Frame(head.kind, head.flags, head.stream, payload)),
                (_, Some(_)) => panic!("a frame inside a header block"),
            }
            if head.flags & END_HEADERS != 0 && matches!(head.kind, HEADERS | CONTINUATION) {
                let p = open.take().expect("open block");
                let block = decoder.decode(&p.fragment.freeze()).expect("h2 decodes it");
                out.push(Seen::Headers {
                    stream: p.stream,
                    end_stream: p.end_stream,
                    priority: p.priority.map(|b| b.to_vec()),
                    fields: block
                        .fields
                        .into_iter()
                        .map(|f| (f.name, f.value))
                        .collect(),
                });
            }
        }
        out
    }

    /// The client's frames with each refused authority made `localhost`.
    fn fixed(seen: Vec<Seen>) -> Vec<Seen> {
        let localhost = Bytes::from_static(REPLACEMENT_AUTHORITY);
        seen.into_iter()
            .map(|s| match s {
                Seen::Headers {
                    stream,
                    end_stream,
                    priority,
                    fields,
                } => Seen::Headers {
                    stream,
                    end_stream,
                    priority,
                    fields: fields
                        .into_iter()
                        .map(|(name, value)| {
                            let field = Field {
                                name: name.clone(),
                                value: value.clone(),
                                sensitive: false,
                            };
                            match refused_authority(&field) {
                                true => (name, localhost.clone()),
                                false => (name, value),
                            }
                        })
                        .collect(),
                },
                other => other,
            })
            .collect()
    }

    fn rewrite(input: &[u8]) -> Vec<u8> {
        let mut rewriter = Rewriter::new();
        let (mut input, mut out) = (BytesMut::from(input), BytesMut::new());
        rewriter.feed(&mut input, &mut out).expect("rewrite");
        assert!(input.is_empty(), "all input consumed");
        out.to_vec()
    }

    /// Feeds one byte at a time, as a slow socket would deliver it.
    fn rewrite_bytewise(input: &[u8]) -> Vec<u8> {
        let mut rewriter = Rewriter::new();
        let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
        for &byte in input {
            pending.put_u8(byte);
            rewriter.feed(&mut pending, &mut out).expect("rewrite");
        }
        out.to_vec()
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_frame(&mut out, kind, flags, stream, &[payload]);
        out.to_vec()
    }

    fn field(name: &str, value: &[u8]) -> Field {
        Field {
            name: Bytes::copy_from_slice(name.as_bytes()),
            value: Bytes::copy_from_slice(value),
            sensitive: false,
        }
    }

    /// A request block with `authority` as a literal without indexing.
    fn request_block(authority: &[u8]) -> Vec<u8> {
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        for f in [
            field(":path", b"/runtime.v1.RuntimeService/Version"),
            field(":authority", authority),
            field("content-type", b"application/grpc"),
        ] {
            hpack::encode_field(&mut block, &f);
        }
        block
    }

    /// Preface, SETTINGS, then `frames`.
    fn client(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        out.extend(frame(0x4, 0, 0, &[]));
        for f in frames {
            out.extend_from_slice(f);
        }
        out
    }

    fn authority_of(seen: &[Seen], stream: u32) -> Bytes {
        seen.iter()
            .find_map(|s| match s {
                Seen::Headers {
                    stream: id, fields, ..
                } if *id == stream => fields
                    .iter()
                    .find(|(n, _)| n == ":authority")
                    .map(|(_, v)| v.clone()),
                _ => None,
            })
            .expect("an :authority")
    }

    #[test]
    fn grpc_python_blocks_get_localhost_and_keep_the_dynamic_table_in_step() {
        let input = recorded();
        let output = rewrite(&input);
        let h2 = seen(&output);
        assert_eq!(h2, fixed(seen(&input)));
        assert_eq!(authority_of(&h2, 1), "localhost");
        // The second call only referred to the first's table entries.
        assert_eq!(authority_of(&h2, 3), "localhost");
        assert_eq!(rewrite_bytewise(&input), output);
    }

    #[test]
    fn the_raw_path_its_percent_encoding_and_empty_are_replaced() {
        for authority in [
            b"/run/user/1000/ucri/ucri.sock".as_slice(),
            b"%2Frun%2Fuser%2F1000%2Fucri%2Fucri.sock",
            b"",
        ] {
            let input = client(&[frame(HEADERS, END_HEADERS, 1, &request_block(authority))]);
            let h2 = seen(&rewrite(&input));
            assert_eq!(authority_of(&h2, 1), "localhost", "{authority:?}");
            assert_eq!(h2, fixed(seen(&input)));
        }
    }

    #[test]
    fn a_valid_authority_passes_byte_for_byte() {
        // Enters `:authority: localhost` into the table, then refers to it,
        // with a DATA frame in between.
        let mut first = vec![0x83, 0x86, 0x41, 9];
        first.extend_from_slice(b"localhost");
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &first),
            frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 0]),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &[0x83, 0x86, 0xbe]),
        ]);
        assert_eq!(rewrite(&input), input);
        assert_eq!(authority_of(&seen(&input), 3), "localhost");
    }

    #[test]
    fn blocks_after_a_replacement_are_re_encoded_for_h2s_stale_table() {
        // Block 1 inserts the path; block 2 inserts a valid authority and
        // refers to entry 62 (itself), which h2's table would not have.
        let mut first = vec![0x83, 0x86, 0x41, 29];
        first.extend_from_slice(b"/run/user/1000/ucri/ucri.sock");
        let mut second = vec![0x83, 0x86, 0x41, 4];
        second.extend_from_slice(b"host");
        second.extend([0xbe, 0xbf]);
        let input = client(&[
            frame(HEADERS, END_HEADERS | END_STREAM, 1, &first),
            frame(HEADERS, END_HEADERS | END_STREAM, 3, &second),
        ]);
        let h2 = seen(&rewrite(&input));
        assert_eq!(h2, fixed(seen(&input)));
        let Some(Seen::Headers { fields, .. }) = h2.last() else {
            panic!("no second block");
        };
        let values: Vec<_> = fields.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(values, ["POST", "http", "host", "host", "localhost"]);
    }

    #[test]
    fn continuation_frames_are_assembled() {
        let block = request_block(b"/run/ucri.sock");
        let (a, rest) = block.split_at(10);
        let (b, c) = rest.split_at(20);
        let split = [
            frame(HEADERS, 0, 1, a),
            frame(CONTINUATION, 0, 1, b),
            frame(CONTINUATION, END_HEADERS, 1, c),
        ];
        let input = client(&split);
        let h2 = seen(&rewrite(&input));
        assert_eq!(authority_of(&h2, 1), "localhost");
        assert_eq!(h2, fixed(seen(&input)));
        assert_eq!(rewrite_bytewise(&input), rewrite(&input));
        // Valid: the frames go through as they came.
        let block = request_block(b"localhost");
        let (a, b) = block.split_at(10);
        let valid = client(&[
            frame(HEADERS, 0, 1, a),
            frame(CONTINUATION, END_HEADERS, 1, b),
        ]);
        assert_eq!(rewrite(&valid), valid);
    }

    #[test]
    fn padding_is_dropped_and_priority_kept() {
        let mut payload = vec![3]; // pad length
        payload.extend([0x80, 0, 0, 0, 15]); // exclusive on stream 0, weight 16
        payload.extend(request_block(b""));
        payload.extend([0, 0, 0]);
        let flags = END_HEADERS | END_STREAM | PADDED | PRIORITY;
        let input = client(&[frame(HEADERS, flags, 1, &payload)]);
        let output = rewrite(&input);
        let (head, _) = frames(&output).pop().expect("a frame");
        assert_eq!(head.flags, END_HEADERS | END_STREAM | PRIORITY);
        let h2 = seen(&output);
        assert_eq!(h2, fixed(seen(&input)));
        let Some(Seen::Headers { priority, .. }) = h2.last() else {
            panic!("no block");
        };
        assert_eq!(priority.as_deref(), Some([0x80, 0, 0, 0, 15].as_slice()));
    }

    #[test]
    fn a_re_encoded_block_is_split_into_frames_h2_accepts() {
        // Huffman coding makes the client's block smaller than its
        // re-encoding: 40 000 '0's (5 bits each) take 25 000 bytes.
        let mut block = request_block(b"");
        // Name "x", value Huffman-coded in 127 + 24 873 bytes.
        block.extend([0x00, 0x01, b'x', 0xff, 0xa9, 0xc2, 0x01]);
        block.extend(std::iter::repeat_n(0u8, 25_000));
        let (a, b) = block.split_at(16_000);
        let input = client(&[
            frame(HEADERS, 0, 1, a),
            frame(CONTINUATION, END_HEADERS, 1, b),
        ]);
        let output = rewrite(&input);
        let sizes: Vec<usize> = frames(&output).iter().map(|(h, _)| h.len).collect();
        assert!(sizes.iter().all(|&n| n <= MAX_FRAME_PAYLOAD), "{sizes:?}");
        assert!(sizes.len() >= 4, "{sizes:?}");
        assert_eq!(seen(&output), fixed(seen(&input)));
    }

    #[test]
    fn size_updates_reach_h2_when_blocks_are_re_encoded() {
        let mut block = vec![0x20]; // size update to 0
        block.extend(request_block(b""));
        let input = client(&[frame(HEADERS, END_HEADERS, 1, &block)]);
        let output = rewrite(&input);
        let (_, payload) = frames(&output).pop().expect("a frame");
        assert_eq!(payload[0], 0x20);
    }

    #[test]
    fn what_does_not_parse_goes_to_h2_as_sent() {
        // A bad table index, then a good block: both untouched.
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &[0x83, 0xff, 0x10]),
            frame(HEADERS, END_HEADERS, 3, &request_block(b"")),
        ]);
        assert_eq!(rewrite(&input), input);
        // Not HTTP/2 at all.
        let http1 = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(rewrite(http1), http1);
        // A frame other than CONTINUATION inside a header block.
        let input = client(&[
            frame(HEADERS, 0, 1, &request_block(b"")),
            frame(0x0, 0, 1, b"x"),
        ]);
        assert_eq!(rewrite(&input), input);
        // Padding longer than the frame.
        let input = client(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82])]);
        assert_eq!(rewrite(&input), input);
    }

    #[test]
    fn after_a_replacement_a_bad_block_fails_the_connection() {
        let input = client(&[
            frame(HEADERS, END_HEADERS, 1, &request_block(b"")),
            frame(HEADERS, END_HEADERS, 3, &[0x83, 0xff, 0x10]),
        ]);
        let mut rewriter = Rewriter::new();
        let (mut input, mut out) = (BytesMut::from(&input[..]), BytesMut::new());
        let result = rewriter.feed(&mut input, &mut out);
        assert!(
            matches!(result, Err(AuthorityError::Hpack { stream: 3, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn a_block_over_the_cap_is_not_held() {
        let len = MAX_HEADER_BLOCK + 1;
        let mut input = PREFACE.to_vec();
        input.extend([
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            HEADERS,
            END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        let mut rewriter = Rewriter::new();
        let (mut buf, mut out) = (BytesMut::from(&input[..]), BytesMut::new());
        rewriter
            .feed(&mut buf, &mut out)
            .expect("given up, not failed");
        assert_eq!(out.to_vec(), input);
        assert_eq!(rewriter.passthrough_budget(), Some(usize::MAX));
    }

    #[tokio::test]
    async fn at_end_of_file_h2_gets_an_unfinished_block_as_sent() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut input = client(&[frame(HEADERS, 0, 1, &request_block(b""))]);
        input.extend([0, 0, 9, CONTINUATION]); // part of a frame header
        let (mut client, server) = tokio::io::duplex(4096);
        client.write_all(&input).await.expect("write");
        drop(client);
        let mut got = Vec::new();
        let mut fixed = AuthorityFix::new(server);
        fixed.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, input);
    }

    #[tokio::test]
    async fn the_adapter_reads_what_the_rewriter_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut input = recorded();
        input.extend(frame(0x0, 0, 5, &vec![7u8; 100_000]));
        let expected = rewrite(&input);
        let (mut client, server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            for chunk in input.chunks(777) {
                client.write_all(chunk).await.expect("write");
            }
        });
        let mut fixed = AuthorityFix::new(server);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(got, expected);
    }
}
