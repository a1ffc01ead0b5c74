//! Session tests over in-memory duplex pipes: two sessions talking to each
//! other, and one session against a raw frame-level peer.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc::Receiver;
use ucri_stream::spdy::frame::{self, Frame, FLAG_FIN};
use ucri_stream::spdy::headers::{HeaderCompressor, HeaderDecompressor};
use ucri_stream::spdy::{Headers, Role, Session, SpdyError, Stream, StreamReader};

fn hs(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test step timed out")
}

fn pair() -> (Session, Receiver<Stream>, Session, Receiver<Stream>) {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let (client, client_in) = Session::new(a, Role::Client);
    let (server, server_in) = Session::new(b, Role::Server);
    (client, client_in, server, server_in)
}

/// Opens a stream from the client and accepts it on the server.
async fn open_pair(
    client: &Session,
    server_in: &mut Receiver<Stream>,
    headers: Headers,
) -> (Stream, Stream) {
    let opening = client.open(headers);
    let accepting = async {
        let s = server_in.recv().await.expect("incoming stream");
        s.reply(Headers::new()).await.expect("reply");
        s
    };
    let (c, s) = within(futures::future::join(opening, accepting)).await;
    (c.expect("open"), s)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31) as u8).wrapping_add(seed))
        .collect()
}

async fn drain(r: &mut StreamReader) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = r.next_chunk().await {
        out.extend_from_slice(&chunk);
    }
    out
}

#[tokio::test]
async fn streams_arrive_in_order_with_their_headers() {
    let (client, _ci, _server, mut server_in) = pair();
    let server_side = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let s = server_in.recv().await.expect("stream");
            let kind = s.header("StreamType").expect("streamtype").to_string();
            assert_eq!(s.header("requestid"), Some("7"));
            s.reply(hs(&[("X-Kind", &kind)])).await.expect("reply");
            seen.push((s.id(), kind));
        }
        seen
    });
    let mut ids = Vec::new();
    for kind in ["error", "stdout", "stderr"] {
        let s = within(client.open(hs(&[("streamType", kind), ("requestID", "7")])))
            .await
            .expect("open");
        assert_eq!(s.reply_headers(), &hs(&[("x-kind", kind)]));
        assert_eq!(s.header("streamtype"), Some(kind));
        ids.push(s.id());
    }
    assert_eq!(ids, vec![1, 3, 5]);
    let seen = within(server_side).await.expect("server task");
    let expected: Vec<(u32, String)> = vec![
        (1, "error".into()),
        (3, "stdout".into()),
        (5, "stderr".into()),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_megabyte_flows_both_ways_at_once() {
    let (client, _ci, _server, mut server_in) = pair();
    let (c, s) = open_pair(&client, &mut server_in, hs(&[("streamtype", "data")])).await;
    let (mut c_rd, mut c_wr) = c.split();
    let (mut s_rd, s_wr) = s.split();
    let up = pattern(1 << 20, 1);
    let down = pattern(1 << 20, 2);
    let (up2, down2) = (up.clone(), down.clone());
    let c_send = tokio::spawn(async move {
        c_wr.write_all(&up2).await.expect("client write");
        c_wr.shutdown().await.expect("client FIN");
    });
    let s_send = tokio::spawn(async move {
        s_wr.send(&down2).await.expect("server send");
        s_wr.finish().await.expect("server FIN");
    });
    let c_recv = tokio::spawn(async move {
        let mut got = Vec::new();
        c_rd.read_to_end(&mut got).await.expect("client read");
        got
    });
    let s_recv = tokio::spawn(async move { drain(&mut s_rd).await });
    within(async {
        c_send.await.expect("client sender");
        s_send.await.expect("server sender");
        assert!(
            c_recv.await.expect("client reader") == down,
            "server to client data differs"
        );
        assert!(
            s_recv.await.expect("server reader") == up,
            "client to server data differs"
        );
    })
    .await;
}

#[tokio::test]
async fn fin_ends_the_other_sides_reader_only() {
    let (client, _ci, _server, mut server_in) = pair();
    let (c, s) = open_pair(&client, &mut server_in, Headers::new()).await;
    let (mut c_rd, c_wr) = c.split();
    let (mut s_rd, s_wr) = s.split();
    c_wr.send(b"hello").await.expect("send");
    c_wr.finish().await.expect("finish");
    c_wr.finish().await.expect("finish is idempotent");
    assert!(matches!(c_wr.send(b"late").await, Err(SpdyError::Closed)));
    assert_eq!(within(drain(&mut s_rd)).await, b"hello");
    // The server can still write until it sends its own FIN.
    s_wr.send(b"world").await.expect("send after peer FIN");
    s_wr.finish().await.expect("finish");
    assert_eq!(within(drain(&mut c_rd)).await, b"world");
}

#[tokio::test]
async fn a_reset_instead_of_a_reply_fails_open() {
    let (client, _ci, _server, mut server_in) = pair();
    let server_side = tokio::spawn(async move {
        let s = server_in.recv().await.expect("stream");
        let (_rd, wr) = s.split();
        wr.reset(3).await;
    });
    match within(client.open(hs(&[("streamtype", "data")]))).await {
        Err(SpdyError::Reset {
            stream: 1,
            status: 3,
        }) => {}
        other => panic!("expected a reset, got {:?}", other.map(|s| s.id())),
    }
    within(server_side).await.expect("server task");
}

#[tokio::test]
async fn a_reset_during_transfer_ends_the_reader_and_fails_writes() {
    let (client, _ci, _server, mut server_in) = pair();
    let (c, s) = open_pair(&client, &mut server_in, Headers::new()).await;
    let (mut c_rd, c_wr) = c.split();
    let (_s_rd, s_wr) = s.split();
    s_wr.reset(5).await;
    assert!(within(c_rd.next_chunk()).await.is_none());
    within(async {
        loop {
            match c_wr.send(b"x").await {
                Err(SpdyError::Reset {
                    stream: 1,
                    status: 5,
                }) => break,
                Ok(()) => tokio::task::yield_now().await,
                Err(e) => panic!("unexpected {e}"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn sessions_ping_each_other() {
    let (client, _ci, server, _si) = pair();
    within(client.ping()).await.expect("client ping");
    within(server.ping()).await.expect("server ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_flushes_queued_data_then_the_peer_ends() {
    let (client, _ci, server, mut server_in) = pair();
    let (c, s) = open_pair(&client, &mut server_in, Headers::new()).await;
    let (_c_rd, c_wr) = c.split();
    let (mut s_rd, _s_wr) = s.split();
    let reader = tokio::spawn(async move { drain(&mut s_rd).await });
    let data = pattern(300 * 1024, 9);
    c_wr.send(&data).await.expect("queue data");
    within(client.close()).await;
    assert!(client.is_closed());
    assert!(matches!(c_wr.send(b"x").await, Err(SpdyError::Closed)));
    let got = within(reader).await.expect("reader");
    assert!(got == data, "got {} of {} bytes", got.len(), data.len());
    within(server.closed()).await;
    assert!(within(server_in.recv()).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_end_ends_pending_reads_and_opens() {
    let (client, _ci, server, mut server_in) = pair();
    let (c, _s) = open_pair(&client, &mut server_in, Headers::new()).await;
    let (mut c_rd, c_wr) = c.split();
    let pending_read = tokio::spawn(async move { c_rd.next_chunk().await });
    let opener = client.clone();
    let pending_open =
        tokio::spawn(async move { opener.open(Headers::new()).await.map(|s| s.id()) });
    // The server takes the second stream but never answers it, then closes.
    let unanswered = within(server_in.recv()).await.expect("second stream");
    assert_eq!(unanswered.id(), 3);
    within(server.close()).await;
    assert!(within(pending_read).await.expect("read task").is_none());
    assert!(matches!(
        within(pending_open).await.expect("open task"),
        Err(SpdyError::Closed)
    ));
    within(client.closed()).await;
    assert!(matches!(c_wr.send(b"x").await, Err(SpdyError::Closed)));
    assert!(matches!(
        client.open(Headers::new()).await,
        Err(SpdyError::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_reader_does_not_block_the_session() {
    let (client, _ci, _server, mut server_in) = pair();
    let (c1, s1) = open_pair(&client, &mut server_in, Headers::new()).await;
    let (c2, s2) = open_pair(&client, &mut server_in, Headers::new()).await;
    drop(s1.split().0);
    let (_r1, w1) = c1.split();
    // Far more than the 64-chunk per-stream buffer.
    within(w1.send(&pattern(4 << 20, 3)))
        .await
        .expect("send to dropped reader");
    let (_r2, w2) = c2.split();
    w2.send(b"still flowing").await.expect("send");
    w2.finish().await.expect("finish");
    let (mut r2, _) = s2.split();
    assert_eq!(within(drain(&mut r2)).await, b"still flowing");
}

/// A frame-level peer for checking the wire behaviour of one session.
struct Raw {
    io: DuplexStream,
    comp: HeaderCompressor,
    dec: HeaderDecompressor,
}

impl Raw {
    fn new(role: Role) -> (Raw, Session, Receiver<Stream>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (session, incoming) = Session::new(b, role);
        let raw = Raw {
            io: a,
            comp: HeaderCompressor::new(),
            dec: HeaderDecompressor::new(),
        };
        (raw, session, incoming)
    }

    async fn send(&mut self, f: Frame) {
        let mut buf = BytesMut::new();
        frame::encode(&f, &mut self.comp, &mut buf).expect("encode");
        self.io.write_all(&buf).await.expect("raw write");
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv(&mut self) -> Frame {
        loop {
            let f = within(frame::read_frame(&mut self.io, &mut self.dec))
                .await
                .expect("raw read")
                .expect("a frame");
            if !matches!(f, Frame::WindowUpdate { .. }) {
                return f;
            }
        }
    }
}

fn syn(stream_id: u32, flags: u8, headers: Headers) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags,
        headers,
    }
}

#[tokio::test]
async fn pings_from_the_peer_are_echoed_and_own_pings_answered() {
    let (mut raw, client, _incoming) = Raw::new(Role::Client);
    raw.send(Frame::Ping { id: 2 }).await;
    assert_eq!(raw.recv().await, Frame::Ping { id: 2 });
    let pinger = client.clone();
    let ping = tokio::spawn(async move { pinger.ping().await });
    assert_eq!(raw.recv().await, Frame::Ping { id: 1 });
    raw.send(Frame::Ping { id: 1 }).await;
    within(ping)
        .await
        .expect("ping task")
        .expect("ping answered");
}

#[tokio::test]
async fn a_syn_stream_with_fin_is_half_closed_at_once() {
    let (mut raw, _server, mut incoming) = Raw::new(Role::Server);
    raw.send(syn(1, FLAG_FIN, hs(&[("streamtype", "error")])))
        .await;
    let s = within(incoming.recv()).await.expect("stream");
    assert_eq!(s.header("streamType"), Some("error"));
    s.reply(Headers::new()).await.expect("reply");
    let (mut rd, wr) = s.split();
    assert!(within(rd.next_chunk()).await.is_none());
    wr.send(b"boom").await.expect("write to half-closed stream");
    wr.finish().await.expect("finish");
    assert_eq!(
        raw.recv().await,
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            headers: Headers::new()
        }
    );
    assert_eq!(
        raw.recv().await,
        Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"boom")
        }
    );
    assert_eq!(
        raw.recv().await,
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::new()
        }
    );
}

#[tokio::test]
async fn consumed_data_is_credited_back_with_window_updates() {
    let (mut raw, _server, mut incoming) = Raw::new(Role::Server);
    raw.send(syn(1, 0, Headers::new())).await;
    let s = within(incoming.recv()).await.expect("stream");
    s.reply(Headers::new()).await.expect("reply");
    assert!(matches!(
        raw.recv().await,
        Frame::SynReply { stream_id: 1, .. }
    ));
    raw.send(Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::from(vec![7u8; 1000]),
    })
    .await;
    let (mut rd, _wr) = s.split();
    assert_eq!(within(rd.next_chunk()).await.expect("chunk").len(), 1000);
    let mut updates = Vec::new();
    while updates.len() < 2 {
        let f = within(frame::read_frame(&mut raw.io, &mut raw.dec))
            .await
            .expect("read")
            .expect("frame");
        if let Frame::WindowUpdate { stream_id, delta } = f {
            updates.push((stream_id, delta));
        }
    }
    updates.sort();
    assert_eq!(updates, vec![(0, 1000), (1, 1000)]);
}

#[tokio::test]
async fn frames_for_unknown_streams_and_types_are_ignored() {
    let (mut raw, _server, mut incoming) = Raw::new(Role::Server);
    raw.send(Frame::Data {
        stream_id: 99,
        flags: 0,
        data: Bytes::from_static(b"stray"),
    })
    .await;
    raw.send(Frame::SynReply {
        stream_id: 77,
        flags: 0,
        headers: hs(&[("a", "b")]),
    })
    .await;
    raw.send(Frame::Unknown {
        kind: 0x20,
        flags: 0,
        payload: Bytes::from_static(b"??"),
    })
    .await;
    raw.send(Frame::WindowUpdate {
        stream_id: 0,
        delta: 10,
    })
    .await;
    raw.send(Frame::Headers {
        stream_id: 5,
        flags: 0,
        headers: hs(&[("c", "d")]),
    })
    .await;
    // The header context stayed in step: a later SYN_STREAM still decodes.
    raw.send(syn(1, 0, hs(&[("streamtype", "data"), ("a", "b")])))
        .await;
    let s = within(incoming.recv()).await.expect("stream");
    assert_eq!(s.headers(), &hs(&[("streamtype", "data"), ("a", "b")]));
    raw.send(Frame::Ping { id: 5 }).await;
    assert_eq!(raw.recv().await, Frame::Ping { id: 5 });
}

#[tokio::test]
async fn a_peer_eof_ends_the_session() {
    let (mut raw, server, mut incoming) = Raw::new(Role::Server);
    raw.send(syn(1, 0, Headers::new())).await;
    let s = within(incoming.recv()).await.expect("stream");
    let (mut rd, wr) = s.split();
    drop(raw);
    assert!(within(rd.next_chunk()).await.is_none());
    within(server.closed()).await;
    assert!(matches!(wr.send(b"x").await, Err(SpdyError::Closed)));
}

#[tokio::test]
async fn close_sends_goaway_and_shuts_down_the_write_side() {
    let (mut raw, client, _incoming) = Raw::new(Role::Client);
    within(client.close()).await;
    assert_eq!(
        raw.recv().await,
        Frame::GoAway {
            last_good_stream_id: 0,
            status: 0
        }
    );
    let next = within(frame::read_frame(&mut raw.io, &mut raw.dec))
        .await
        .expect("read");
    assert!(next.is_none(), "EOF after GOAWAY");
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Session>();
    send_sync::<Stream>();
    send_sync::<StreamReader>();
    send_sync::<ucri_stream::spdy::StreamWriter>();
    send_sync::<SpdyError>();
}

/// A peer may hold at most MAX_OPEN_STREAMS streams open at once: the next
/// SYN_STREAM is refused, and once one of the open ones ends, a new one is
/// accepted again. (Each stream holds a buffer, and a port-forward stream a
/// connection in the pod: there used to be no bound.)
#[tokio::test]
async fn streams_beyond_the_open_limit_are_refused_until_one_ends() {
    use ucri_stream::spdy::{MAX_OPEN_STREAMS, RST_REFUSED_STREAM};
    let (mut raw, _server, mut incoming) = Raw::new(Role::Server);
    // Holds every accepted stream (none is dropped) and returns their ids.
    let keeper = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Some(s) = incoming.recv().await {
            open.push(s);
            if open.len() == MAX_OPEN_STREAMS + 1 {
                break;
            }
        }
        open.iter().map(Stream::id).collect::<Vec<u32>>()
    });
    let ids: Vec<u32> = (0..MAX_OPEN_STREAMS as u32).map(|n| 2 * n + 1).collect();
    for id in &ids {
        raw.send(syn(*id, 0, Headers::new())).await;
    }
    let over = 2 * MAX_OPEN_STREAMS as u32 + 1;
    raw.send(syn(over, 0, Headers::new())).await;
    assert_eq!(
        raw.recv().await,
        Frame::RstStream {
            stream_id: over,
            status: RST_REFUSED_STREAM
        },
        "one stream over the limit is refused"
    );
    raw.send(Frame::RstStream {
        stream_id: ids[0],
        status: 5,
    })
    .await;
    let again = over + 2;
    raw.send(syn(again, 0, Headers::new())).await;
    let accepted = within(keeper).await.expect("keeper");
    assert_eq!(accepted.len(), MAX_OPEN_STREAMS + 1);
    assert_eq!(
        accepted.last(),
        Some(&again),
        "accepted again once one ended"
    );
    assert!(!accepted.contains(&over));
}
