//! The client side of the HTTP/1.1 `Upgrade: SPDY/3.1` handshake.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::protocol::{Role, SpdyError, UPGRADE};
use super::session::{Session, Stream};

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// How much of an error response's body is reported.
const MAX_ERROR_BODY: usize = 4096;
/// How long to wait for an error response's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Client side of the HTTP/1.1 upgrade: connects to `url`
/// (`http://HOST:PORT/PATH?QUERY`, no TLS), sends `POST PATH HTTP/1.1` with
/// `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one
/// `X-Stream-Protocol-Version` per entry of `protocols` (preference order).
/// On 101 returns the client session, its incoming-stream receiver and the
/// negotiated `X-Stream-Protocol-Version` (empty if absent); any other
/// status fails with `Protocol("<status line>: <body up to 4 KiB>")`.
pub async fn connect(
    url: &str,
    protocols: &[&str],
) -> Result<(Session, mpsc::Receiver<Stream>, String), SpdyError> {
    let target = Target::parse(url)?;
    let mut tcp = TcpStream::connect(&target.addr).await?;
    let _ = tcp.set_nodelay(true);
    tcp.write_all(target.request(protocols).as_bytes()).await?;
    let (head, rest) = read_head(&mut tcp).await?;
    let resp = Response::parse(&head)?;
    if resp.code != 101 {
        let body = read_error_body(&mut tcp, rest, &resp).await;
        return Err(SpdyError::Protocol(format!(
            "{}: {}",
            resp.status_line, body
        )));
    }
    let protocol = resp
        .header("x-stream-protocol-version")
        .unwrap_or_default()
        .to_string();
    let (session, incoming) = Session::new(
        Prefixed {
            prefix: rest,
            io: tcp,
        },
        Role::Client,
    );
    Ok((session, incoming, protocol))
}

struct Target {
    addr: String,
    authority: String,
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, SpdyError> {
        let bad = || {
            SpdyError::Protocol(format!(
                "unsupported URL {url:?} (want http://HOST:PORT/PATH)"
            ))
        };
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(bad());
        }
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
        let addr = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path,
        })
    }

    fn request(&self, protocols: &[&str]) -> String {
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ucri\r\nContent-Length: 0\r\n\
             Connection: Upgrade\r\nUpgrade: {UPGRADE}\r\n",
            self.path, self.authority
        );
        for p in protocols {
            req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
        }
        req.push_str("\r\n");
        req
    }
}

/// Reads up to and including the blank line; returns the head and whatever
/// was read past it (the first bytes of the upgraded protocol).
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> Result<(String, Bytes), SpdyError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = Bytes::copy_from_slice(&buf[end + 4..]);
            buf.truncate(end);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(SpdyError::Protocol("response head too large".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Err(SpdyError::Protocol(
                "connection closed before the response head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Response {
    status_line: String,
    code: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    fn parse(head: &str) -> Result<Self, SpdyError> {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default().trim().to_string();
        let code = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| SpdyError::Protocol(format!("bad status line {status_line:?}")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Ok(Response {
            status_line,
            code,
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Best effort: the first 4 KiB of the body (de-chunked), lossily as text.
async fn read_error_body(tcp: &mut TcpStream, rest: Bytes, resp: &Response) -> String {
    let limit = resp
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .map_or(MAX_ERROR_BODY, |l| l.min(MAX_ERROR_BODY));
    let mut body = rest.to_vec();
    let read_more = async {
        let mut chunk = [0u8; 1024];
        while body.len() < limit {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(BODY_TIMEOUT, read_more).await;
    if resp
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    body.truncate(limit);
    String::from_utf8_lossy(&body).trim().to_string()
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let start = eol + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = &data[(end + 2).min(data.len())..];
    }
    out
}

/// An IO that first yields bytes already read past the response head.
struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = buf.remaining().min(this.prefix.len());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:1234/exec/abc?cmd=sh&tty=1").expect("url");
        assert_eq!(
            (t.addr.as_str(), t.path.as_str()),
            ("127.0.0.1:1234", "/exec/abc?cmd=sh&tty=1")
        );
        let t = Target::parse("http://example.com?x=1").expect("url");
        assert_eq!(
            (t.addr.as_str(), t.authority.as_str(), t.path.as_str()),
            ("example.com:80", "example.com", "/?x=1")
        );
        let t = Target::parse("http://[::1]:8080").expect("url");
        assert_eq!((t.addr.as_str(), t.path.as_str()), ("[::1]:8080", "/"));
        assert!(Target::parse("https://x/").is_err());
        assert!(Target::parse("http:///x").is_err());
    }

    #[test]
    fn builds_the_upgrade_request() {
        let t = Target::parse("http://h:1/p?q").expect("url");
        let req = t.request(&["v4.channel.k8s.io", "v3.channel.k8s.io"]);
        assert!(req.starts_with("POST /p?q HTTP/1.1\r\nHost: h:1\r\n"));
        assert!(req.contains("\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"));
        assert!(req.contains(
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n"
        ));
    }

    #[test]
    fn parses_responses_and_chunked_bodies() {
        let r = Response::parse(
            "HTTP/1.1 101 Switching Protocols\r\nX-Stream-Protocol-Version: v4\r\n",
        )
        .expect("head");
        assert_eq!(
            (r.code, r.header("x-stream-protocol-version")),
            (101, Some("v4"))
        );
        assert!(Response::parse("garbage").is_err());
        assert_eq!(
            dechunk(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
    }
}
