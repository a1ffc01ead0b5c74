//! Exec, Attach and PortForward through the streaming server of the real
//! daemon, driven by the project's own SPDY/3.1 and WebSocket clients.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::cri::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ucri_cri_api::v1::*;
use ucri_stream::remote::{self, Io, Options, RemoteError, Transport};

const BOTH: [Transport; 2] = [Transport::Spdy, Transport::WebSocket];

/// Collects what a stream writes.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture")).into_owned()
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a remote command printed and how it ended.
struct Ran {
    result: Result<i32, RemoteError>,
    stdout: String,
    stderr: String,
}

fn exec_request(id: &str, cmd: &[&str], stdin: bool, tty: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

fn exec_url(sb: &Sandbox, request: ExecRequest) -> Result<String, tonic::Status> {
    block_on(async {
        client(sb)
            .await
            .exec(request)
            .await
            .map(|r| r.into_inner().url)
    })
}

fn options(stdin: bool, tty: bool) -> Options {
    Options {
        stdin,
        stdout: true,
        stderr: !tty,
        tty,
    }
}

/// Streams `url` with `stdin` as input and `size` as the terminal size.
fn stream(
    url: &str,
    transport: Transport,
    options: Options,
    stdin: Option<&[u8]>,
    size: Option<(u16, u16)>,
) -> Ran {
    let (stdout, stderr) = (Capture::default(), Capture::default());
    let input: Option<remote::Reader> =
        stdin.map(|bytes| Box::new(std::io::Cursor::new(bytes.to_vec())) as remote::Reader);
    let resize = size.map(|size| {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.try_send(size).expect("resize");
        // The sender stays alive with the runtime's tasks: leak it for the test.
        std::mem::forget(tx);
        rx
    });
    let io = Io {
        stdin: input,
        stdout: Some(Box::new(stdout.clone())),
        stderr: Some(Box::new(stderr.clone())),
        resize,
    };
    let result = block_on(async {
        tokio::time::timeout(
            Duration::from_secs(60),
            remote::run(url, transport, options, io),
        )
        .await
        .expect("the stream hung")
    });
    Ran {
        result,
        stdout: stdout.text(),
        stderr: stderr.text(),
    }
}

/// A running container in a pod of its own.
fn running(e: &Env, name: &str, config: ContainerConfig) -> (String, String) {
    let pod_config = pod_config(&e.sb, name);
    let pod = run_pod(&e.sb, &pod_config).expect("RunPodSandbox");
    let id = create(&e.sb, &pod, config, &pod_config).expect("CreateContainer");
    start(&e.sb, &id).expect("StartContainer");
    wait_state(&e.sb, &id, ContainerState::ContainerRunning);
    (pod, id)
}

#[test]
fn exec_streams_output_exit_codes_stdin_and_a_resized_terminal() {
    let e = env("stream-exec");
    let (pod, id) = running(
        &e,
        "exec",
        container_config(&e.image, "exec", "exec sleep 3600"),
    );
    for transport in BOTH {
        let what = format!("{transport:?}");
        let url =
            exec_url(&e.sb, exec_request(&id, &["echo", "hello"], false, false)).expect("Exec");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let ran = stream(&url, transport, options(false, false), None, None);
        assert_eq!(ran.result.expect(&what), 0);
        assert_eq!(ran.stdout, "hello\n", "{what}");

        let failing = exec_request(
            &id,
            &["sh", "-c", "echo out; echo oops >&2; exit 3"],
            false,
            false,
        );
        let ran = stream(
            &exec_url(&e.sb, failing).expect("Exec"),
            transport,
            options(false, false),
            None,
            None,
        );
        assert_eq!(ran.result.expect(&what), 3, "{what}: the exit code arrives");
        assert_eq!(
            (ran.stdout.as_str(), ran.stderr.as_str()),
            ("out\n", "oops\n"),
            "{what}"
        );

        let cat = exec_request(&id, &["sh", "-c", "tr a-z A-Z; echo end"], true, false);
        let ran = stream(
            &exec_url(&e.sb, cat).expect("Exec"),
            transport,
            options(true, false),
            Some(b"from stdin\n"),
            None,
        );
        assert_eq!(ran.result.expect(&what), 0);
        assert_eq!(
            ran.stdout, "FROM STDIN\nend\n",
            "{what}: stdin reached the process and closed"
        );

        let tty = exec_request(&id, &["sh", "-c", "sleep 1; stty size; tty"], true, true);
        let ran = stream(
            &exec_url(&e.sb, tty).expect("Exec"),
            transport,
            options(true, true),
            Some(b""),
            Some((111, 33)),
        );
        assert_eq!(ran.result.expect(&what), 0);
        assert!(
            ran.stdout.contains("33 111"),
            "{what}: stty size after resize: {:?}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("/dev/pts/"),
            "{what}: a terminal: {:?}",
            ran.stdout
        );
        assert!(
            ran.stdout.contains("\r\n"),
            "{what}: terminal line endings: {:?}",
            ran.stdout
        );

        let missing = exec_request(&id, &["/no/such/program"], false, false);
        let ran = stream(
            &exec_url(&e.sb, missing).expect("Exec"),
            transport,
            options(false, false),
            None,
            None,
        );
        let code = ran.result.expect(&what);
        assert!(code != 0, "{what}: a missing program fails");
    }
    older_protocol_versions_still_work(&e, &id);
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// SPDY v1–v3 (plain-text errors, resize from v3) and WebSocket v4 (no
/// close signal), as older clients offer them.
fn older_protocol_versions_still_work(e: &Env, id: &str) {
    let run = |transport,
               version: &str,
               request: ExecRequest,
               stdin: Option<&[u8]>,
               size: Option<(u16, u16)>| {
        let url = exec_url(&e.sb, request.clone()).expect("Exec");
        let stdout = Capture::default();
        let io = Io {
            stdin: stdin.map(|b| Box::new(std::io::Cursor::new(b.to_vec())) as remote::Reader),
            stdout: Some(Box::new(stdout.clone())),
            stderr: None,
            resize: size.map(|size| {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.try_send(size).expect("resize");
                std::mem::forget(tx);
                rx
            }),
        };
        let opts = options(request.stdin, request.tty);
        let result = block_on(remote::run_with(&url, transport, &[version], opts, io));
        (result, stdout.text())
    };
    for version in ["v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"] {
        let (result, out) = run(
            Transport::Spdy,
            version,
            exec_request(id, &["echo", "old"], false, false),
            None,
            None,
        );
        assert_eq!(
            (result.expect(version), out.as_str()),
            (0, "old\n"),
            "{version}"
        );
        let failing = exec_request(id, &["sh", "-c", "exit 3"], false, false);
        let err = run(Transport::Spdy, version, failing, None, None)
            .0
            .expect_err(version);
        assert!(
            err.to_string().contains("non-zero exit code"),
            "{version}: plain text: {err}"
        );
    }
    let tty = exec_request(id, &["sh", "-c", "sleep 1; stty size"], true, true);
    let (result, out) = run(
        Transport::Spdy,
        "v3.channel.k8s.io",
        tty,
        Some(b""),
        Some((70, 21)),
    );
    assert_eq!(result.expect("v3 tty"), 0);
    assert!(out.contains("21 70"), "v3 has the resize stream: {out:?}");
    // v4 cannot signal the end of stdin: the command stops after one line.
    let line = exec_request(
        id,
        &["sh", "-c", "read l; echo $l | tr a-z A-Z"],
        true,
        false,
    );
    let (result, out) = run(
        Transport::WebSocket,
        "v4.channel.k8s.io",
        line,
        Some(b"four\n"),
        None,
    );
    assert_eq!((result.expect("ws v4"), out.as_str()), (0, "FOUR\n"));
}

#[test]
fn bad_streaming_requests_get_protocol_errors_and_tokens_work_once() {
    let e = env_with_config("stream-bad", "[streaming]\nurl_ttl_seconds = 1\n");
    let (pod, id) = running(
        &e,
        "bad",
        container_config(&e.image, "bad", "exec sleep 3600"),
    );
    let status = exec_url(
        &e.sb,
        exec_request("no-such-container", &["true"], false, false),
    )
    .expect_err("missing");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let mut nothing = exec_request(&id, &["true"], false, false);
    nothing.stdout = false;
    nothing.stderr = false;
    let status = exec_url(&e.sb, nothing).expect_err("no streams");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let status = exec_url(&e.sb, exec_request(&id, &[], false, false)).expect_err("no command");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // A used token is gone; so is one older than its lifetime.
    let url = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    assert_eq!(
        stream(&url, Transport::Spdy, options(false, false), None, None)
            .result
            .expect("first use"),
        0
    );
    for transport in BOTH {
        let again = stream(&url, transport, options(false, false), None, None);
        let err = again.result.expect_err("reused token").to_string();
        assert!(err.contains("404"), "{transport:?}: {err}");
    }
    let url = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    std::thread::sleep(Duration::from_millis(1500));
    let err = stream(&url, Transport::Spdy, options(false, false), None, None)
        .result
        .expect_err("expired");
    assert!(err.to_string().contains("404"), "{err}");

    // Malformed upgrades: no upgrade at all, and a protocol nobody speaks.
    let url = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    // A plain GET (a browser, a curl of the URL) and a plain POST.
    for method in ["GET", "POST"] {
        let plain = raw_http(&url, method, "");
        assert!(plain.starts_with("HTTP/1.1 400"), "{method}: {plain}");
    }
    assert_eq!(
        stream(&url, Transport::Spdy, options(false, false), None, None)
            .result
            .expect("a plain GET does not burn the token"),
        0
    );
    let url = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    let unknown = raw_http(&url, "POST", "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v9.channel.k8s.io\r\n");
    assert!(unknown.starts_with("HTTP/1.1 403"), "{unknown}");
    let url = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    let garbage = raw_http(&url, "POST", "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n");
    assert!(garbage.starts_with("HTTP/1.1 101"), "{garbage}");

    // A container that stops under a running exec ends the stream; then it
    // cannot be streamed to.
    let long = exec_url(&e.sb, exec_request(&id, &["sleep", "300"], false, false)).expect("Exec");
    let running = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let ran = stream(&long, Transport::Spdy, options(false, false), None, None);
        (ran.result, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    stop(&e.sb, &id, 0).expect("StopContainer");
    let (result, took) = running.join().expect("exec thread");
    assert!(
        took < Duration::from_secs(30),
        "the exec outlived its container by {took:?}"
    );
    assert!(
        !matches!(result, Ok(0)),
        "a killed exec does not report success: {result:?}"
    );
    let status = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect_err("stopped");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    let attach = block_on(async {
        client(&e.sb)
            .await
            .attach(AttachRequest {
                container_id: id.clone(),
                stdout: true,
                ..Default::default()
            })
            .await
    });
    assert_eq!(
        attach.expect_err("stopped").code(),
        tonic::Code::FailedPrecondition
    );
    assert!(e._daemon.log_text().contains("streaming server listening"));
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// Sends a bare `method` request to `url` with `headers`, then garbage after the head
/// (as a broken client would), and returns what came back.
fn raw_http(url: &str, method: &str, headers: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (addr, path) = rest.split_at(rest.find('/').expect("path"));
    block_on(async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut answer))
            .await
            .expect("an answer, not a hung connection")
            .expect("read");
        // Garbage instead of SPDY frames must end the session, not hang it.
        let _ = conn
            .write_all(b"\x80\x03\x00\x01garbage-that-is-no-frame")
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
}

#[test]
fn attach_reaches_a_running_shell_and_ends_when_it_exits() {
    let e = env("stream-attach");
    let mut config = container_config(&e.image, "shell", "");
    config.command = vec!["/bin/sh".into()];
    config.stdin = true;
    config.stdin_once = false;
    let (pod, id) = running(&e, "attach", config);
    for (transport, marker) in [(Transport::Spdy, "first"), (Transport::WebSocket, "second")] {
        let url = block_on(async {
            client(&e.sb)
                .await
                .attach(AttachRequest {
                    container_id: id.clone(),
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    tty: false,
                })
                .await
                .expect("Attach")
                .into_inner()
                .url
        });
        let exit = if marker == "second" { "exit 0\n" } else { "" };
        let script = format!("echo attached-{marker} $((40 + 2))\necho to-stderr >&2\n{exit}");
        let ran = attach_until(
            &url,
            transport,
            script.as_bytes(),
            exit.is_empty(),
            &format!("attached-{marker} 42"),
        );
        assert!(
            ran.0.contains(&format!("attached-{marker} 42")),
            "{transport:?}: {:?}",
            ran.0
        );
        if !exit.is_empty() {
            assert_eq!(
                ran.2.expect("attach ends cleanly when the container exits"),
                0
            );
            assert!(
                ran.1.contains("to-stderr"),
                "{transport:?}: stderr {:?}",
                ran.1
            );
        }
    }
    let status = wait_state(&e.sb, &id, ContainerState::ContainerExited);
    assert_eq!(status.exit_code, 0);

    // A container with a terminal: attach resizes it through conmon.
    let mut config = container_config(&e.image, "terminal", "");
    config.command = vec!["/bin/sh".into()];
    (config.stdin, config.tty) = (true, true);
    let sandbox = pod_config(&e.sb, "attach");
    let tty_id = create(&e.sb, &pod, config, &sandbox).expect("CreateContainer");
    start(&e.sb, &tty_id).expect("StartContainer");
    wait_state(&e.sb, &tty_id, ContainerState::ContainerRunning);
    let url = block_on(async {
        client(&e.sb)
            .await
            .attach(AttachRequest {
                container_id: tty_id.clone(),
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true,
            })
            .await
            .expect("Attach")
            .into_inner()
            .url
    });
    let (out, _, _) = attach_with(
        &url,
        Transport::Spdy,
        b"stty size\n",
        true,
        "19 77",
        Some((77, 19)),
    );
    assert!(
        out.contains("19 77"),
        "the attached terminal was resized: {out:?}"
    );
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// Attaches with `input` on stdin; when `detach`, leaves once `marker` shows.
fn attach_until(
    url: &str,
    transport: Transport,
    input: &[u8],
    detach: bool,
    marker: &str,
) -> (String, String, Result<i32, RemoteError>) {
    attach_with(url, transport, input, detach, marker, None)
}

/// Like [`attach_until`]; with `size`, as a terminal of that size.
fn attach_with(
    url: &str,
    transport: Transport,
    input: &[u8],
    detach: bool,
    marker: &str,
    size: Option<(u16, u16)>,
) -> (String, String, Result<i32, RemoteError>) {
    let (stdout, stderr) = (Capture::default(), Capture::default());
    let (mut feed, stdin) = tokio::io::duplex(4096);
    let io = Io {
        stdin: Some(Box::new(stdin)),
        stdout: Some(Box::new(stdout.clone())),
        stderr: Some(Box::new(stderr.clone())),
        resize: size.map(|size| {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.try_send(size).expect("resize");
            std::mem::forget(tx);
            rx
        }),
    };
    let opts = Options {
        stdin: true,
        stdout: true,
        stderr: size.is_none(),
        tty: size.is_some(),
    };
    let result = block_on(async {
        let run = tokio::spawn({
            let url = url.to_owned();
            async move { remote::run(&url, transport, opts, io).await }
        });
        // Let the streams open before the shell gets its input.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Err(e) = feed.write_all(input).await {
            let ended = run.await.expect("join");
            panic!("attach ended before its input ({e}): {ended:?}");
        }
        if detach {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !stdout.text().contains(marker) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            run.abort();
            return Ok(0);
        }
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("attach hung after the container exited")
            .expect("join")
    });
    (stdout.text(), stderr.text(), result)
}

fn port_forward_url(sb: &Sandbox, pod: &str, ports: &[i32]) -> String {
    block_on(async {
        client(sb)
            .await
            .port_forward(PortForwardRequest {
                pod_sandbox_id: pod.into(),
                port: ports.to_vec(),
            })
            .await
            .expect("PortForward")
            .into_inner()
            .url
    })
}

const HTTPD: &str = "mkdir -p /www && echo served-on-8080 > /www/index.html && \
    mkdir -p /www2 && echo served-on-8081 > /www2/index.html && \
    httpd -p 8081 -h /www2 && exec httpd -f -p 8080 -h /www";

#[test]
fn port_forward_reaches_httpd_in_the_pod_over_spdy_and_websocket() {
    let e = env("stream-pf");
    let (pod, _) = running(&e, "pf", container_config(&e.image, "httpd", HTTPD));
    wait_for_httpd(&e, &pod);

    // SPDY: two connections at once, to two ports, on one session.
    let url = port_forward_url(&e.sb, &pod, &[8080, 8081]);
    block_on(async {
        let forward = remote::SpdyPortForward::connect(&url)
            .await
            .expect("upgrade");
        let (a, b) = tokio::join!(http_get_spdy(&forward, 8080), http_get_spdy(&forward, 8081));
        assert!(a.contains("200 OK") && a.contains("served-on-8080"), "{a}");
        assert!(b.contains("served-on-8081"), "{b}");
        let again = http_get_spdy(&forward, 8080).await;
        assert!(
            again.contains("served-on-8080"),
            "a third connection: {again}"
        );
        let mut refused = forward.open(9).await.expect("open");
        let mut report = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            refused.error.read_to_string(&mut report),
        )
        .await
        .expect("an error, not a hang")
        .expect("read error stream");
        assert!(
            report.contains("port 9") && report.to_lowercase().contains("refused"),
            "{report}"
        );
        forward.close().await;
    });

    // WebSocket: both ports on one socket.
    let url = port_forward_url(&e.sb, &pod, &[8080, 8081]);
    block_on(async {
        let mut forward = remote::WsPortForward::connect(&url, &[8080, 8081])
            .await
            .expect("upgrade");
        for index in 0..2 {
            forward
                .send(index, b"GET / HTTP/1.0\r\n\r\n")
                .await
                .expect("send");
        }
        for (index, expected) in [(0, "served-on-8080"), (1, "served-on-8081")] {
            let mut body = Vec::new();
            loop {
                let next =
                    tokio::time::timeout(Duration::from_secs(10), forward.data[index].recv());
                match next.await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) => break,
                    Err(_) => panic!("the forward did not end after httpd closed: {body:?}"),
                }
            }
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains(expected), "websocket port {index}: {body}");
        }
        forward.close().await;
    });
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

async fn http_get_spdy(forward: &remote::SpdyPortForward, port: u16) -> String {
    let remote::ForwardedConnection {
        mut reader,
        mut writer,
        ..
    } = forward.open(port).await.expect("open");
    writer
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        reader.read_to_string(&mut response),
    )
    .await
    .expect("response in time")
    .expect("read");
    response
}

fn wait_for_httpd(e: &Env, pod: &str) {
    let _ = pod;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let id = list_containers(&e.sb, None)
        .into_iter()
        .find(|c| c.pod_sandbox_id == pod)
        .expect("container")
        .id;
    while std::time::Instant::now() < deadline {
        let out = exec(&e.sb, &id, &["sh", "-c", "timeout 2 wget -q -O - http://127.0.0.1:8081/ && timeout 2 wget -q -O - http://127.0.0.1:8080/"], 10);
        if out.is_ok_and(|o| o.exit_code == 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("httpd did not come up");
}

#[test]
fn the_streaming_server_also_listens_in_the_uplink_namespace() {
    let e = env("stream-uplink");
    let (pod, id) = running(
        &e,
        "uplink",
        container_config(&e.image, "uplink", "exec sleep 3600"),
    );
    let url = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    let status = block_on(async {
        client(&e.sb)
            .await
            .status(StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner()
    });
    let server = &status.info["streamingServer"];
    assert!(
        url.starts_with(&format!("{server}/exec/")),
        "{server} vs {url}"
    );
    let bogus = format!("{}bogus", &url[..url.rfind('/').expect("slash") + 1]);
    let out =
        e.sb.ucri(&["nsenter", "--", "busybox", "wget", "-q", "-O", "-", &bogus])
            .output()
            .expect("ucri nsenter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404"),
        "from the uplink namespace: {}",
        describe(&out)
    );
    let ran = stream(&url, Transport::Spdy, options(false, false), None, None);
    assert_eq!(
        ran.result.expect("the real URL still works from the host"),
        0
    );
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// 300 idle connections to the streaming port (any local user can open
/// them) of a daemon held to 256 descriptors get its 32 streaming slots (an
/// eighth of the limit) and the backlog, not the descriptors pods need; an
/// exec streams once the flood ends.
#[test]
fn a_flood_of_streaming_connections_spends_no_descriptors_the_node_needs() {
    let e = env_via("stream-flood", &["prlimit", "--nofile=256:256"]);
    let (pod, id) = running(
        &e,
        "flood",
        container_config(&e.image, "c", "exec sleep 600"),
    );
    let probe = exec_url(&e.sb, exec_request(&id, &["true"], false, false)).expect("Exec");
    let port: u16 = probe
        .trim_start_matches("http://127.0.0.1:")
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the streaming port");
    let serving = e.sb.daemon_pid();
    let flooding = std::time::Instant::now();
    // Until the backlog is full too (a connect then times out).
    let mut flood = Vec::new();
    while flood.len() < 300 {
        match std::net::TcpStream::connect_timeout(
            &(std::net::Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(300),
        ) {
            Ok(stream) => flood.push(stream),
            Err(_) => break,
        }
    }
    eprintln!("{} connections in {:?}", flood.len(), flooding.elapsed());
    assert!(flood.len() > 32, "only {} connections got in", flood.len());
    std::thread::sleep(Duration::from_secs(1));
    let descriptors = open_descriptors(serving);
    assert!(
        descriptors < 192,
        "{descriptors} descriptors open during the flood"
    );
    drop(flood);
    let url = exec_url(&e.sb, exec_request(&id, &["echo", "after"], false, false)).expect("Exec");
    let ran = stream(
        &url,
        Transport::WebSocket,
        options(false, false),
        None,
        None,
    );
    assert_eq!(ran.result.expect("exec after the flood"), 0);
    assert_eq!(ran.stdout, "after\n");
    remove_pod(&e.sb, &pod);
}

/// Without the kernel's random numbers (here /dev/null bind-mounted over
/// /dev/urandom in the daemon's mount namespace) nothing gets an id or a
/// streaming token: RunPodSandbox, CreateContainer and Exec fail naming
/// /dev/urandom and make nothing (a failed read used to leave ids and
/// tokens all zeros); with /dev/urandom back, all three work.
#[test]
fn ids_and_streaming_tokens_fail_closed_without_dev_urandom() {
    let e = env("no-urandom");
    let (pod, id) = running(
        &e,
        "rnd",
        container_config(&e.image, "rnd", "exec sleep 3600"),
    );
    in_uplink(&e.sb, &["mount", "--bind", "/dev/null", "/dev/urandom"]);
    let names_urandom = |what: &str, err: tonic::Status| {
        assert!(
            err.message().contains("/dev/urandom"),
            "{what}: the error names /dev/urandom: {err:?}"
        );
    };
    let err = run_pod(&e.sb, &pod_config(&e.sb, "second")).expect_err("a pod without an id");
    names_urandom("RunPodSandbox", err);
    let pod_cfg = pod_config(&e.sb, "rnd");
    let err = create(
        &e.sb,
        &pod,
        container_config(&e.image, "other", "true"),
        &pod_cfg,
    )
    .expect_err("a container without an id");
    names_urandom("CreateContainer", err);
    let err = exec_url(&e.sb, exec_request(&id, &["true"], false, false))
        .expect_err("an exec URL without a token");
    names_urandom("Exec", err);
    assert_eq!(
        list_containers(&e.sb, None).len(),
        1,
        "no container was made"
    );

    in_uplink(&e.sb, &["umount", "/dev/urandom"]);
    let second = run_pod(&e.sb, &pod_config(&e.sb, "second")).expect("a pod with /dev/urandom");
    let url = exec_url(&e.sb, exec_request(&id, &["echo", "back"], false, false)).expect("Exec");
    let ran = stream(&url, BOTH[0], options(false, false), None, None);
    assert_eq!(ran.stdout, "back\n");
    remove_pod(&e.sb, &second);
    remove_pod(&e.sb, &pod);
}
