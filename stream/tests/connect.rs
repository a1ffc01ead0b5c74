//! `spdy::connect` against tiny hand-written HTTP/1.1 upgrade servers.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ucri_stream::spdy::frame::{self, Frame};
use ucri_stream::spdy::headers::{HeaderCompressor, HeaderDecompressor};
use ucri_stream::spdy::{connect, Headers, Role, Session, SpdyError};

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test step timed out")
}

/// Reads the request head (up to the blank line) byte by byte.
async fn read_request(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("request byte");
        head.push(b[0]);
    }
    String::from_utf8(head).expect("utf-8 head")
}

const SWITCHING: &str =
    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
                         X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n";

/// Answers the upgrade, then echoes every stream's data back until its FIN.
async fn echo_server(listener: TcpListener) -> String {
    let (mut tcp, _) = listener.accept().await.expect("accept");
    let request = read_request(&mut tcp).await;
    tcp.write_all(SWITCHING.as_bytes()).await.expect("101");
    let (_session, mut incoming) = Session::new(tcp, Role::Server);
    let stream = incoming.recv().await.expect("stream");
    stream.reply(Headers::new()).await.expect("reply");
    let (mut rd, wr) = stream.split();
    while let Some(chunk) = rd.next_chunk().await {
        wr.send(&chunk).await.expect("echo");
    }
    wr.finish().await.expect("finish");
    request
}

#[tokio::test]
async fn upgrades_negotiates_and_carries_streams() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(echo_server(listener));
    let url = format!("http://{addr}/exec/abc?command=sh&stdin=1");
    let (session, _incoming, protocol) =
        within(connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]))
            .await
            .expect("connect");
    assert_eq!(protocol, "v4.channel.k8s.io");
    let stream = within(session.open(vec![("streamType".into(), "stdin".into())]))
        .await
        .expect("open");
    let (mut rd, wr) = stream.split();
    wr.send(b"ping over spdy").await.expect("send");
    wr.finish().await.expect("finish");
    let mut echoed = Vec::new();
    within(rd.read_to_end(&mut echoed)).await.expect("read");
    assert_eq!(echoed, b"ping over spdy");
    let request = within(server).await.expect("server task");
    assert!(
        request.starts_with("POST /exec/abc?command=sh&stdin=1 HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(
        request.contains(&format!("\r\nHost: {addr}\r\n")),
        "{request}"
    );
    assert!(request.contains("\r\nConnection: Upgrade\r\n"), "{request}");
    assert!(request.contains("\r\nUpgrade: SPDY/3.1\r\n"), "{request}");
    let versions: Vec<&str> = request
        .lines()
        .filter_map(|l| l.strip_prefix("X-Stream-Protocol-Version: "))
        .collect();
    assert_eq!(versions, vec!["v4.channel.k8s.io", "v3.channel.k8s.io"]);
    session.close().await;
}

#[tokio::test]
async fn a_refused_upgrade_reports_status_and_body() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        read_request(&mut tcp).await;
        let resp =
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 24\r\n\r\n\
                    exec is not allowed here";
        tcp.write_all(resp.as_bytes()).await.expect("403");
    });
    let err = within(connect(
        &format!("http://{addr}/exec/x"),
        &["v4.channel.k8s.io"],
    ))
    .await
    .err()
    .expect("connect must fail");
    match err {
        SpdyError::Protocol(msg) => {
            assert_eq!(msg, "HTTP/1.1 403 Forbidden: exec is not allowed here")
        }
        other => panic!("unexpected error {other}"),
    }
}

#[tokio::test]
async fn bytes_sent_right_after_the_101_reach_the_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        read_request(&mut tcp).await;
        // The 101 head and the first frame in one write.
        let mut buf = BytesMut::from(SWITCHING.as_bytes());
        frame::encode(
            &Frame::Ping { id: 2 },
            &mut HeaderCompressor::new(),
            &mut buf,
        )
        .expect("encode");
        tcp.write_all(&buf).await.expect("write");
        frame::read_frame(&mut tcp, &mut HeaderDecompressor::new())
            .await
            .expect("read")
    });
    let (session, _incoming, protocol) = within(connect(&format!("http://{addr}"), &[]))
        .await
        .expect("connect");
    assert_eq!(protocol, "v4.channel.k8s.io");
    assert_eq!(
        within(server).await.expect("server task"),
        Some(Frame::Ping { id: 2 })
    );
    within(session.closed()).await;
}

#[tokio::test]
async fn connection_failures_are_io_errors() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let res = within(connect(&format!("http://{addr}/"), &[])).await;
    assert!(matches!(res, Err(SpdyError::Io(_))));
}
