//! A SPDY/3.1 session over any byte stream: one reader task dispatching
//! incoming frames to streams, one writer task that owns the write half and
//! the header compressor and writes frames in the order they were queued.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadBuf};
use tokio::sync::{mpsc, oneshot, watch, AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tracing::debug;

use super::frame::{self, Frame, FLAG_FIN};
use super::headers::{HeaderCompressor, HeaderDecompressor};
use super::protocol::{
    Headers, Role, SpdyError, RST_CANCEL, RST_PROTOCOL_ERROR, RST_REFUSED_STREAM,
};

/// How long [`Session::open`] and [`Session::ping`] wait for the peer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest DATA payload this side sends.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;
/// DATA chunks buffered per stream before the session reader waits.
const STREAM_BUFFER_CHUNKS: usize = 64;
/// Bytes of DATA queued for writing before senders wait.
const SEND_BUDGET: usize = 1 << 20;
/// Peer-opened streams buffered before the session reader waits.
const INCOMING_QUEUE: usize = 32;
/// Streams open at once in one session: a peer's further SYN_STREAMs are
/// refused (RST_STREAM REFUSED_STREAM) until some end. Each stream holds a
/// buffer, and a port-forward stream a connection in the pod; one exec
/// needs at most five, a forwarded connection two.
pub const MAX_OPEN_STREAMS: usize = 256;
const IO_BUFFER: usize = 64 * 1024;

/// A session over any byte stream; spawns tokio tasks (one reader, one writer).
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

struct Inner {
    role: Role,
    cmds: mpsc::UnboundedSender<Cmd>,
    state: Mutex<State>,
    budget: Arc<Semaphore>,
    closed: watch::Sender<bool>,
    /// The writer task has stopped: nothing more can be sent.
    write_closed: AtomicBool,
    reader: Mutex<Option<AbortHandle>>,
}

struct State {
    next_stream: u32,
    next_ping: u32,
    last_peer_stream: u32,
    going_away: bool,
    streams: HashMap<u32, Entry>,
    pings: HashMap<u32, oneshot::Sender<()>>,
}

struct Entry {
    data: Option<mpsc::Sender<Bytes>>,
    reply: Option<oneshot::Sender<Result<Headers, SpdyError>>>,
    flags: Arc<StreamFlags>,
}

#[derive(Default)]
struct StreamFlags {
    fin_sent: AtomicBool,
    remote_fin: AtomicBool,
    replied: AtomicBool,
    reset: AtomicU32,
}

enum Cmd {
    Frame(Frame, Option<OwnedSemaphorePermit>),
    Shutdown(Option<oneshot::Sender<()>>),
}

impl Session {
    /// Starts a session over `io` (needs a tokio runtime). The receiver
    /// yields the streams the peer opens (SYN_STREAM).
    pub fn new<IO>(io: IO, role: Role) -> (Session, mpsc::Receiver<Stream>)
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::channel(INCOMING_QUEUE);
        let first = if role == Role::Client { 1 } else { 2 };
        let inner = Arc::new(Inner {
            role,
            cmds: cmd_tx,
            state: Mutex::new(State {
                next_stream: first,
                next_ping: first,
                last_peer_stream: 0,
                going_away: false,
                streams: HashMap::new(),
                pings: HashMap::new(),
            }),
            budget: Arc::new(Semaphore::new(SEND_BUDGET)),
            closed: watch::Sender::new(false),
            write_closed: AtomicBool::new(false),
            reader: Mutex::new(None),
        });
        tokio::spawn(writer_task(wr, cmd_rx, Arc::downgrade(&inner)));
        let reader = tokio::spawn(reader_task(rd, inner.clone(), in_tx));
        *lock(&inner.reader) = Some(reader.abort_handle());
        (Session { inner }, in_rx)
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// Opens a stream (SYN_STREAM) and waits up to 30 s for the peer's
    /// SYN_REPLY; a RST_STREAM instead fails with [`SpdyError::Reset`].
    pub async fn open(&self, headers: Headers) -> Result<Stream, SpdyError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (data_tx, data_rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
        let flags = Arc::new(StreamFlags::default());
        let id = self
            .inner
            .register(headers.clone(), data_tx, reply_tx, flags.clone())?;
        match tokio::time::timeout(REPLY_TIMEOUT, reply_rx).await {
            Err(_) => {
                self.inner.reset_stream(id, RST_CANCEL);
                Err(SpdyError::Timeout)
            }
            Ok(Err(_)) => Err(SpdyError::Closed),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(reply))) => Ok(Stream::new(&self.inner, id, headers, reply, data_rx, flags)),
        }
    }

    /// Sends a PING and waits (up to 30 s) for its echo; returns the round trip.
    pub async fn ping(&self) -> Result<Duration, SpdyError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut st = lock(&self.inner.state);
            let id = st.next_ping;
            st.next_ping = if id > 0x7fff_fffd {
                2 - (id & 1)
            } else {
                id + 2
            };
            st.pings.insert(id, tx);
            self.inner.queue(Frame::Ping { id }, None)?;
            id
        };
        let start = Instant::now();
        match tokio::time::timeout(REPLY_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(start.elapsed()),
            Ok(Err(_)) => Err(SpdyError::Closed),
            Err(_) => {
                lock(&self.inner.state).pings.remove(&id);
                Err(SpdyError::Timeout)
            }
        }
    }

    /// Sends GOAWAY after everything queued so far, flushes, shuts the write
    /// side down (waiting at most 30 s for a stalled peer) and ends the
    /// session: pending readers end, `closed()` resolves.
    pub async fn close(&self) {
        if self.is_closed() {
            return;
        }
        let last = {
            let mut st = lock(&self.inner.state);
            st.going_away = true;
            st.last_peer_stream
        };
        let goaway = Frame::GoAway {
            last_good_stream_id: last,
            status: 0,
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        if self.inner.queue(goaway, None).is_ok()
            && self.inner.cmds.send(Cmd::Shutdown(Some(ack_tx))).is_ok()
        {
            let _ = tokio::time::timeout(REPLY_TIMEOUT, ack_rx).await;
        }
        self.inner.finish();
    }

    /// Resolves when the session ends: peer EOF (with or without GOAWAY), a
    /// read error, or `close()`. A write error alone only stops sending
    /// (writers get `Closed`); what the peer already sent is still delivered.
    pub async fn closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn queue(&self, frame: Frame, permit: Option<OwnedSemaphorePermit>) -> Result<(), SpdyError> {
        if *self.closed.borrow() || self.write_closed.load(Ordering::SeqCst) {
            return Err(SpdyError::Closed);
        }
        self.cmds
            .send(Cmd::Frame(frame, permit))
            .map_err(|_| SpdyError::Closed)
    }

    /// Allocates a stream id, registers the stream and queues its SYN_STREAM
    /// under the state lock, so SYN_STREAMs go out in id order.
    fn register(
        &self,
        headers: Headers,
        data: mpsc::Sender<Bytes>,
        reply: oneshot::Sender<Result<Headers, SpdyError>>,
        flags: Arc<StreamFlags>,
    ) -> Result<u32, SpdyError> {
        let mut st = lock(&self.state);
        if st.going_away {
            return Err(SpdyError::Closed);
        }
        let id = st.next_stream;
        if id > 0x7fff_ffff {
            return Err(SpdyError::Protocol("stream ids exhausted".into()));
        }
        let syn = Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers,
        };
        self.queue(syn, None)?;
        st.next_stream += 2;
        st.streams.insert(
            id,
            Entry {
                data: Some(data),
                reply: Some(reply),
                flags,
            },
        );
        Ok(id)
    }

    fn is_peer_id(&self, id: u32) -> bool {
        let peer_odd = self.role == Role::Server;
        id != 0 && (id % 2 == 1) == peer_odd
    }

    /// Credits `len` received bytes back to the peer (stream and session).
    fn credit(&self, id: u32, len: usize) {
        let Ok(delta) = u32::try_from(len) else {
            return;
        };
        if delta == 0 {
            return;
        }
        if id != 0 {
            let _ = self.queue(
                Frame::WindowUpdate {
                    stream_id: id,
                    delta,
                },
                None,
            );
        }
        let _ = self.queue(
            Frame::WindowUpdate {
                stream_id: 0,
                delta,
            },
            None,
        );
    }

    fn reset_stream(&self, id: u32, status: u32) {
        let entry = lock(&self.state).streams.remove(&id);
        if let Some(e) = entry {
            e.flags.reset.store(status, Ordering::SeqCst);
        }
        let _ = self.queue(
            Frame::RstStream {
                stream_id: id,
                status,
            },
            None,
        );
    }

    /// Marks one direction of a stream closed; forgets fully closed streams.
    fn half_close(&self, id: u32, remote: bool) {
        let mut st = lock(&self.state);
        let Some(e) = st.streams.get_mut(&id) else {
            return;
        };
        if remote {
            e.data = None;
            e.flags.remote_fin.store(true, Ordering::SeqCst);
        } else {
            e.flags.fin_sent.store(true, Ordering::SeqCst);
        }
        let done = e.reply.is_none()
            && e.flags.remote_fin.load(Ordering::SeqCst)
            && e.flags.fin_sent.load(Ordering::SeqCst);
        if done {
            st.streams.remove(&id);
        }
    }

    /// Ends the session: readers end, waiters fail with `Closed`, the writer
    /// flushes what is queued and shuts down, the reader task stops.
    fn finish(&self) {
        let (streams, pings) = {
            let mut st = lock(&self.state);
            st.going_away = true;
            (
                std::mem::take(&mut st.streams),
                std::mem::take(&mut st.pings),
            )
        };
        drop((streams, pings));
        let _ = self.cmds.send(Cmd::Shutdown(None));
        self.budget.close();
        self.closed.send_replace(true);
        if let Some(reader) = lock(&self.reader).take() {
            reader.abort();
        }
    }
}

async fn writer_task<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    inner: Weak<Inner>,
) {
    let mut w = BufWriter::with_capacity(IO_BUFFER, wr);
    let mut comp = HeaderCompressor::new();
    match write_loop(&mut w, &mut rx, &mut comp).await {
        Ok(Some(ack)) => {
            let _ = ack.send(());
        }
        Ok(None) => {}
        Err(e) => debug!(error = %e, "spdy: write failed"),
    }
    // A failed write does not end the session: what the peer already sent
    // is still read until EOF; only sending stops.
    if let Some(inner) = inner.upgrade() {
        inner.write_closed.store(true, Ordering::SeqCst);
        inner.budget.close();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    rx: &mut mpsc::UnboundedReceiver<Cmd>,
    comp: &mut HeaderCompressor,
) -> Result<Option<oneshot::Sender<()>>, SpdyError> {
    let mut buf = BytesMut::with_capacity(IO_BUFFER);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Frame(f, _permit) => {
                    buf.clear();
                    frame::encode(&f, comp, &mut buf)?;
                    w.write_all(&buf).await?;
                }
                Cmd::Shutdown(ack) => {
                    w.flush().await?;
                    w.shutdown().await?;
                    return Ok(ack);
                }
            }
            next = rx.try_recv().ok();
        }
        w.flush().await?;
    }
    Ok(None)
}

async fn reader_task<R: AsyncRead + Unpin>(
    rd: R,
    inner: Arc<Inner>,
    incoming: mpsc::Sender<Stream>,
) {
    let mut r = BufReader::with_capacity(IO_BUFFER, rd);
    let mut dec = HeaderDecompressor::new();
    let mut d = Dispatcher { inner, incoming };
    loop {
        match frame::read_frame(&mut r, &mut dec).await {
            Ok(Some(f)) => d.dispatch(f).await,
            Ok(None) => {
                debug!("spdy: peer closed the connection");
                break;
            }
            Err(e) => {
                debug!(error = %e, "spdy: read failed");
                break;
            }
        }
    }
    d.inner.finish();
}

struct Dispatcher {
    inner: Arc<Inner>,
    incoming: mpsc::Sender<Stream>,
}

impl Dispatcher {
    async fn dispatch(&mut self, f: Frame) {
        match f {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => self.on_data(stream_id, flags, data).await,
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => self.on_syn_stream(stream_id, flags, headers).await,
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => self.on_reply(stream_id, flags, headers),
            Frame::RstStream { stream_id, status } => self.on_reset(stream_id, status),
            Frame::Ping { id } => self.on_ping(id),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                debug!(last_good_stream_id, status, "spdy: GOAWAY");
                lock(&self.inner.state).going_away = true;
            }
            Frame::Headers { stream_id, .. } => debug!(stream_id, "spdy: ignoring HEADERS"),
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => {}
        }
    }

    async fn on_data(&mut self, id: u32, flags: u8, data: Bytes) {
        let len = data.len();
        let tx = match lock(&self.inner.state).streams.get(&id) {
            Some(e) => e.data.clone(),
            None => {
                debug!(stream = id, "spdy: DATA for unknown stream");
                self.inner.credit(0, len);
                return;
            }
        };
        let delivered = match tx {
            Some(tx) if len > 0 => tx.send(data).await.is_ok(),
            _ => false,
        };
        if !delivered {
            // Nobody will read it: give the window back at once.
            self.inner.credit(id, len);
        }
        if flags & FLAG_FIN != 0 {
            self.inner.half_close(id, true);
        }
    }

    async fn on_syn_stream(&mut self, id: u32, flags: u8, headers: Headers) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_CHUNKS);
        let sflags = Arc::new(StreamFlags::default());
        let fin = flags & FLAG_FIN != 0;
        sflags.remote_fin.store(fin, Ordering::SeqCst);
        let refused = {
            let mut st = lock(&self.inner.state);
            if !self.inner.is_peer_id(id) || id <= st.last_peer_stream {
                Some(RST_PROTOCOL_ERROR)
            } else if st.going_away {
                Some(RST_REFUSED_STREAM)
            } else if st.streams.len() >= MAX_OPEN_STREAMS {
                st.last_peer_stream = id;
                Some(RST_REFUSED_STREAM)
            } else {
                st.last_peer_stream = id;
                let data = (!fin).then_some(tx);
                st.streams.insert(
                    id,
                    Entry {
                        data,
                        reply: None,
                        flags: sflags.clone(),
                    },
                );
                None
            }
        };
        if let Some(status) = refused {
            debug!(stream = id, status, "spdy: refusing SYN_STREAM");
            let _ = self.inner.queue(
                Frame::RstStream {
                    stream_id: id,
                    status,
                },
                None,
            );
            return;
        }
        let stream = Stream::new(&self.inner, id, headers, Headers::new(), rx, sflags);
        if self.incoming.send(stream).await.is_err() {
            self.inner.reset_stream(id, RST_REFUSED_STREAM);
        }
    }

    fn on_reply(&mut self, id: u32, flags: u8, headers: Headers) {
        let reply = lock(&self.inner.state)
            .streams
            .get_mut(&id)
            .and_then(|e| e.reply.take());
        let Some(reply) = reply else {
            debug!(stream = id, "spdy: SYN_REPLY for unknown stream");
            return;
        };
        let _ = reply.send(Ok(headers));
        if flags & FLAG_FIN != 0 {
            self.inner.half_close(id, true);
        }
    }

    fn on_reset(&mut self, id: u32, status: u32) {
        let Some(mut e) = lock(&self.inner.state).streams.remove(&id) else {
            debug!(stream = id, "spdy: RST_STREAM for unknown stream");
            return;
        };
        e.flags.reset.store(status.max(1), Ordering::SeqCst);
        if let Some(reply) = e.reply.take() {
            let _ = reply.send(Err(SpdyError::Reset { stream: id, status }));
        }
    }

    fn on_ping(&mut self, id: u32) {
        let own_parity = u32::from(self.inner.role == Role::Client);
        if id % 2 != own_parity {
            let _ = self.inner.queue(Frame::Ping { id }, None);
        } else if let Some(waiter) = lock(&self.inner.state).pings.remove(&id) {
            let _ = waiter.send(());
        }
    }
}

/// One SPDY stream: the headers it was opened with, a reader and a writer.
pub struct Stream {
    id: u32,
    headers: Headers,
    reply_headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    fn new(
        inner: &Arc<Inner>,
        id: u32,
        headers: Headers,
        reply_headers: Headers,
        rx: mpsc::Receiver<Bytes>,
        flags: Arc<StreamFlags>,
    ) -> Self {
        let reader = StreamReader {
            id,
            rx,
            pending: Bytes::new(),
            inner: inner.clone(),
        };
        let writer = StreamWriter {
            id,
            inner: inner.clone(),
            flags,
            acquire: Mutex::new(None),
        };
        Stream {
            id,
            headers,
            reply_headers,
            reader,
            writer,
        }
    }

    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The peer's SYN_REPLY headers (empty for streams the peer opened).
    pub fn reply_headers(&self) -> &Headers {
        &self.reply_headers
    }

    /// Accepts a stream the peer opened (SYN_REPLY). Only once per stream.
    pub async fn reply(&self, headers: Headers) -> Result<(), SpdyError> {
        if !self.writer.inner.is_peer_id(self.id) {
            return Err(SpdyError::Protocol(format!(
                "stream {} was opened by this side",
                self.id
            )));
        }
        if self.writer.flags.replied.swap(true, Ordering::SeqCst) {
            return Err(SpdyError::Protocol(format!(
                "stream {} already replied",
                self.id
            )));
        }
        let reply = Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers,
        };
        self.writer.inner.queue(reply, None)
    }

    /// Splits the stream into its receiving and sending halves.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }
}

/// Receives the stream's DATA; ends (None / EOF) at the peer's FIN, at
/// RST_STREAM or when the session ends.
pub struct StreamReader {
    id: u32,
    rx: mpsc::Receiver<Bytes>,
    pending: Bytes,
    inner: Arc<Inner>,
}

impl StreamReader {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next chunk of data, or `None` at the end of the stream.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.pending.is_empty() {
            return Some(std::mem::take(&mut self.pending));
        }
        let chunk = self.rx.recv().await?;
        self.inner.credit(self.id, chunk.len());
        Some(chunk)
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match ready!(this.rx.poll_recv(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(chunk) => {
                    this.inner.credit(this.id, chunk.len());
                    this.pending = chunk;
                }
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

type Acquire = (
    usize,
    BoxFuture<'static, Result<OwnedSemaphorePermit, AcquireError>>,
);

/// Sends DATA on the stream. Clone-able; `poll_shutdown` sends FIN.
pub struct StreamWriter {
    id: u32,
    inner: Arc<Inner>,
    flags: Arc<StreamFlags>,
    /// In-flight wait for send budget (AsyncWrite only; Mutex keeps it Sync).
    acquire: Mutex<Option<Acquire>>,
}

impl Clone for StreamWriter {
    fn clone(&self) -> Self {
        StreamWriter {
            id: self.id,
            inner: self.inner.clone(),
            flags: self.flags.clone(),
            acquire: Mutex::new(None),
        }
    }
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `data` as DATA frames of at most 32 KiB, waiting while too much
    /// is queued for the connection.
    pub async fn send(&self, data: &[u8]) -> Result<(), SpdyError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.check()?;
            let permit = self
                .inner
                .budget
                .clone()
                .acquire_many_owned(chunk.len() as u32)
                .await
                .map_err(|_| SpdyError::Closed)?;
            self.queue_data(Bytes::copy_from_slice(chunk), permit)?;
        }
        Ok(())
    }

    /// Half-closes the stream (empty DATA frame with FLAG_FIN). Idempotent.
    pub async fn finish(&self) -> Result<(), SpdyError> {
        self.finish_now()
    }

    /// Aborts the stream (RST_STREAM with `status`; 0 becomes CANCEL). The
    /// stream's reader ends.
    pub async fn reset(&self, status: u32) {
        let status = if status == 0 { RST_CANCEL } else { status };
        self.inner.reset_stream(self.id, status);
    }

    fn check(&self) -> Result<(), SpdyError> {
        match self.flags.reset.load(Ordering::SeqCst) {
            0 if self.flags.fin_sent.load(Ordering::SeqCst) => Err(SpdyError::Closed),
            0 => Ok(()),
            status => Err(SpdyError::Reset {
                stream: self.id,
                status,
            }),
        }
    }

    fn queue_data(&self, data: Bytes, permit: OwnedSemaphorePermit) -> Result<(), SpdyError> {
        self.inner.queue(
            Frame::Data {
                stream_id: self.id,
                flags: 0,
                data,
            },
            Some(permit),
        )
    }

    fn finish_now(&self) -> Result<(), SpdyError> {
        if self.flags.reset.load(Ordering::SeqCst) != 0
            || self.flags.fin_sent.swap(true, Ordering::SeqCst)
        {
            return Ok(());
        }
        let fin = Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        };
        let res = self.inner.queue(fin, None);
        self.inner.half_close(self.id, false);
        res
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.check()?;
        let slot = this
            .acquire
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        let (want, fut) = slot.get_or_insert_with(|| {
            let n = buf.len().min(MAX_DATA_CHUNK);
            (
                n,
                Box::pin(this.inner.budget.clone().acquire_many_owned(n as u32)),
            )
        });
        let permit = ready!(fut.as_mut().poll(cx));
        let n = (*want).min(buf.len());
        *slot = None;
        let permit = permit.map_err(|_| io::Error::from(SpdyError::Closed))?;
        this.queue_data(Bytes::copy_from_slice(&buf[..n]), permit)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames are handed to the writer task, which flushes when idle.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.finish_now().map_err(io::Error::from))
    }
}
