//! gRPC clients that send the unix socket path (raw, percent-encoded, or
//! nothing) as the HTTP/2 `:authority` are served, as CRI-O and containerd
//! serve them: older gRPC-Go builds of crictl and the kubelet, grpc-java,
//! gRPC Python and grpc-swift do this.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{require, Sandbox};

/// The virtualenv `packaging/setup-host.sh --test` installs grpcio into.
const GRPC_VENV_PYTHON: &str = "/opt/ucri-test-venv/bin/python";

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// An HTTP/2 client that writes its own HPACK, so that it can send any
/// `:authority` (h2, hyper and tonic only send valid ones).
struct RawClient {
    conn: UnixStream,
    next_stream: u32,
}

/// How the server answered one request.
#[derive(Debug)]
enum Answer {
    /// The DATA frames' payload.
    Data(Vec<u8>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY with this error code.
    GoAway(u32),
}

impl RawClient {
    fn connect(socket: &Path) -> RawClient {
        let mut conn = UnixStream::connect(socket).expect("connect to the CRI socket");
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        conn.write_all(PREFACE).expect("preface");
        conn.write_all(&frame(SETTINGS, 0, 0, &[]))
            .expect("settings");
        RawClient {
            conn,
            next_stream: 1,
        }
    }

    /// Sends a `Version` RPC whose `:authority` is the encoded field
    /// `authority` and returns how the server answered.
    fn version(&mut self, authority: &[u8]) -> Answer {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        block.extend(literal(4, b"/runtime.v1.RuntimeService/Version"));
        block.extend_from_slice(authority);
        block.extend(literal(31, b"application/grpc"));
        block.extend(new_name_literal(b"te", b"trailers"));
        let mut out = frame(HEADERS, END_HEADERS, stream, &block);
        // An empty VersionRequest, gRPC-framed: uncompressed, length 0.
        out.extend(frame(DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]));
        self.conn.write_all(&out).expect("send request");
        self.answer(stream)
    }

    fn answer(&mut self, stream: u32) -> Answer {
        let mut data = Vec::new();
        loop {
            let (ty, flags, id, payload) = self.read_frame();
            match ty {
                SETTINGS if flags & ACK == 0 => {
                    self.conn
                        .write_all(&frame(SETTINGS, ACK, 0, &[]))
                        .expect("settings ack");
                }
                GOAWAY => return Answer::GoAway(be32(&payload[4..8])),
                RST_STREAM if id == stream => return Answer::Reset(be32(&payload)),
                DATA if id == stream => data.extend_from_slice(&payload),
                HEADERS if id == stream && flags & END_STREAM != 0 => return Answer::Data(data),
                _ => {}
            }
        }
    }

    fn read_frame(&mut self) -> (u8, u8, u32, Vec<u8>) {
        let mut head = [0u8; 9];
        self.conn.read_exact(&mut head).expect("frame header");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        self.conn.read_exact(&mut payload).expect("frame payload");
        (head[3], head[4], be32(&head[5..9]) & 0x7fff_ffff, payload)
    }
}

fn be32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes"))
}

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([ty, flags]);
    out.extend(stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn integer(first: u8, n: u32, mut value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![first | value as u8];
    }
    let mut out = vec![first | max as u8];
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
    out
}

fn string(value: &[u8]) -> Vec<u8> {
    let mut out = integer(0, 7, value.len());
    out.extend_from_slice(value);
    out
}

/// A literal without indexing whose name is static table entry `index`.
fn literal(index: usize, value: &[u8]) -> Vec<u8> {
    let mut out = integer(0x00, 4, index);
    out.extend(string(value));
    out
}

/// A literal with incremental indexing whose name is static entry `index`.
fn indexed_literal(index: usize, value: &[u8]) -> Vec<u8> {
    let mut out = integer(0x40, 6, index);
    out.extend(string(value));
    out
}

fn new_name_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    out.extend(string(name));
    out.extend(string(value));
    out
}

fn percent_encoded(path: &str) -> String {
    path.replace('/', "%2F")
}

fn assert_served(answer: Answer, what: &str) {
    match answer {
        Answer::Data(data) => assert!(
            data.windows(4).any(|w| w == b"ucri"),
            "{what}: the Version reply does not name ucri: {data:?}"
        ),
        Answer::Reset(code) => panic!("{what}: the daemon reset the stream, error code {code}"),
        Answer::GoAway(code) => {
            panic!("{what}: the daemon closed the connection, error code {code}")
        }
    }
}

#[test]
fn socket_path_percent_encoded_and_empty_authorities_are_served() {
    let mut sandbox = Sandbox::new("authority-raw");
    let _daemon = sandbox.start_daemon();
    let socket = sandbox.socket();
    let path = socket.to_str().expect("socket path is UTF-8");
    let mut client = RawClient::connect(&socket);
    // Enters `:authority: PATH` into the client's (and the server's) dynamic
    // table as entry 62...
    let answer = client.version(&indexed_literal(1, path.as_bytes()));
    assert_served(answer, "the socket path");
    // ...which this request refers to by index alone.
    assert_served(client.version(&[0x80 | 62]), "the socket path by index");
    let encoded = percent_encoded(path);
    assert_served(
        client.version(&literal(1, encoded.as_bytes())),
        "the percent-encoded socket path",
    );
    assert_served(client.version(&literal(1, b"")), "an empty authority");
    assert_served(client.version(&literal(1, b"localhost")), "localhost");
    assert_served(client.version(&[0x80 | 62]), "the dynamic entry again");
}

#[test]
fn a_valid_authority_is_served_on_a_fresh_connection() {
    let mut sandbox = Sandbox::new("authority-valid");
    let _daemon = sandbox.start_daemon();
    let mut client = RawClient::connect(&sandbox.socket());
    assert_served(
        client.version(&indexed_literal(1, b"localhost")),
        "localhost",
    );
    assert_served(client.version(&[0x80 | 62]), "localhost by index");
}

#[test]
fn grpc_python_with_default_options_is_served() {
    require(
        Path::new(GRPC_VENV_PYTHON).exists(),
        "grpcio in /opt/ucri-test-venv; run `packaging/setup-host.sh --test` as root",
    );
    let mut sandbox = Sandbox::new("authority-python");
    let _daemon = sandbox.start_daemon();
    // Raw bytes in and out: b'' is an empty VersionRequest.
    let script = "import sys, grpc\n\
        channel = grpc.insecure_channel('unix:' + sys.argv[1])\n\
        version = channel.unary_unary('/runtime.v1.RuntimeService/Version')\n\
        sys.stdout.write(version(b'', timeout=10).hex())\n";
    let out = Command::new(GRPC_VENV_PYTHON)
        .arg("-c")
        .arg(script)
        .arg(sandbox.socket())
        .output()
        .expect("run python");
    let text = common::describe(&out);
    assert!(out.status.success(), "grpcio's Version failed: {text}");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(
        reply.contains(&hex::encode("ucri")),
        "grpcio's Version reply does not name ucri: {text}"
    );
}
