//! Interoperability with a real Go client: `kubectl exec`, `attach` and
//! `port-forward` (client-go's SPDY and, in newer kubectl, WebSocket clients)
//! against ucri's streaming server. A small fake API server in the test
//! answers kubectl's discovery and pod lookups and pipes each exec or
//! port-forward upgrade to the next streaming URL the daemon handed out, as
//! the API server and kubelet proxy them in a cluster.

mod common;

use std::collections::VecDeque;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::cri::*;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ucri_cri_api::v1::*;

/// Streaming URLs waiting for kubectl's next upgrade.
type Urls = Arc<Mutex<VecDeque<String>>>;

/// kubectl's discovery documents and the pod it looks up.
fn document(path: &str) -> serde_json::Value {
    match path {
        "/version" => serde_json::json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}),
        "/api" => {
            serde_json::json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        }
        "/apis" => serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        "/api/v1" => {
            serde_json::json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod", "verbs": ["get", "list"]},
                {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
                {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
                {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
            ]})
        }
        _ => serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "stdin": true, "stdinOnce": true}]},
            "status": {"phase": "Running"},
        }),
    }
}

/// Serves kubectl until the test ends; returns the port.
fn fake_api_server(urls: Urls) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, urls.clone()));
            }
        });
    });
    port
}

async fn answer(mut conn: tokio::net::TcpStream, urls: Urls) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines: Vec<String> = head.trim_end().split("\r\n").map(str::to_owned).collect();
    let request: Vec<String> = lines[0].split(' ').map(str::to_owned).collect();
    let (path, query) = request[1].split_once('?').unwrap_or((&request[1], ""));
    if path.ends_with("/exec") || path.ends_with("/portforward") || path.ends_with("/attach") {
        let Some(url) = urls.lock().expect("urls").pop_front() else {
            let _ = conn
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        };
        let rest = url.strip_prefix("http://").expect("http URL");
        let (addr, url_path) = rest.split_at(rest.find('/').expect("path"));
        let target = if path.ends_with("/portforward") && query.contains("port=") {
            format!("{url_path}?{query}")
        } else {
            url_path.to_owned()
        };
        lines[0] = format!("{} {target} {}", request[0], request[2]);
        let mut upstream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("streaming server");
        let forwarded = format!("{}\r\n\r\n", lines.join("\r\n"));
        upstream
            .write_all(forwarded.as_bytes())
            .await
            .expect("forward");
        let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
        return;
    }
    let body = document(path).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
}

/// kubectl against the fake API server: its exit code, stdout and stderr.
fn kubectl(
    home: &std::path::Path,
    port: u16,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut cmd = Command::new("kubectl");
    cmd.arg(format!("--server=http://127.0.0.1:{port}"))
        .args(args)
        .env("HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl is needed for this test (setup-host.sh --test installs Debian's kubernetes-client)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("kubectl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Queues three fresh URLs (newer kubectl may try WebSocket, then SPDY).
fn queue(urls: &Urls, make: impl Fn() -> String) {
    let mut queue = urls.lock().expect("urls");
    queue.clear();
    queue.extend((0..3).map(|_| make()));
}

fn exec_url(sb: &Sandbox, id: &str, cmd: &[&str], stdin: bool) -> String {
    block_on(async {
        client(sb)
            .await
            .exec(ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty: false,
                stdin,
                stdout: true,
                stderr: true,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url
    })
}

#[test]
fn kubectl_exec_attach_and_port_forward_work_against_the_streaming_server() {
    let e = env("kubectl");
    let pod_config = pod_config(&e.sb, "kubectl");
    let pod = run_pod(&e.sb, &pod_config).expect("RunPodSandbox");
    let script =
        "mkdir -p /www && echo kubectl-pf-ok > /www/index.html && exec httpd -f -p 8080 -h /www";
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "c", script),
        &pod_config,
    )
    .expect("CreateContainer");
    start(&e.sb, &id).expect("StartContainer");
    wait_state(&e.sb, &id, ContainerState::ContainerRunning);
    let urls = Urls::default();
    let port = fake_api_server(urls.clone());
    let home = e.sb.root.join("kubectl-home");
    std::fs::create_dir_all(&home).expect("home");

    // Newer kubectl speaks WebSocket (v5) unless told not to; Debian's
    // speaks SPDY either way.
    for env in [vec![], vec![("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")]] {
        queue(&urls, || {
            exec_url(
                &e.sb,
                &id,
                &["sh", "-c", "echo hello-kubectl; echo err >&2; exit 3"],
                false,
            )
        });
        let (code, stdout, stderr) =
            kubectl(&home, port, &["exec", "p", "--", "ignored"], "", &env);
        assert_eq!(code, Some(3), "{env:?}: exit code of the command: {stderr}");
        assert_eq!(stdout, "hello-kubectl\n", "{env:?}: {stderr}");
        assert!(
            stderr.contains("err\n") && stderr.contains("exit code 3"),
            "{env:?}: {stderr}"
        );

        queue(&urls, || exec_url(&e.sb, &id, &["tr", "a-z", "A-Z"], true));
        let (code, stdout, stderr) = kubectl(
            &home,
            port,
            &["exec", "-i", "p", "--", "ignored"],
            "piped input\n",
            &env,
        );
        assert_eq!(
            (code, stdout.as_str()),
            (Some(0), "PIPED INPUT\n"),
            "{env:?}: {stderr}"
        );
    }

    queue(&urls, || {
        block_on(async {
            client(&e.sb)
                .await
                .port_forward(PortForwardRequest {
                    pod_sandbox_id: pod.clone(),
                    port: vec![8080],
                })
                .await
                .expect("PortForward")
                .into_inner()
                .url
        })
    });
    let mut forward = Command::new("kubectl")
        .arg(format!("--server=http://127.0.0.1:{port}"))
        .args(["port-forward", "p", ":8080"])
        .env("HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let mut first = String::new();
    let mut lines = std::io::BufReader::new(forward.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut lines, &mut first).expect("line");
    std::thread::spawn(move || std::io::Read::read_to_end(&mut lines, &mut Vec::new()));
    let local = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("Forwarding from ADDR -> 8080: {first:?}"))
        .to_owned();
    for _ in 0..2 {
        let response = http_get(&local).expect("GET through kubectl port-forward");
        assert!(response.contains("kubectl-pf-ok"), "{response}");
    }
    let _ = forward.kill();
    let _ = forward.wait();

    // kubectl attach -i to a shell reading the container's stdin: the end
    // of kubectl's stdin closes it (StdinOnce), the shell exits, and so does
    // kubectl.
    let mut shell = container_config(&e.image, "shell", "");
    shell.command = vec!["/bin/sh".into()];
    (shell.stdin, shell.stdin_once) = (true, true);
    let shell = create(&e.sb, &pod, shell, &pod_config).expect("CreateContainer");
    start(&e.sb, &shell).expect("StartContainer");
    wait_state(&e.sb, &shell, ContainerState::ContainerRunning);
    queue(&urls, || {
        block_on(async {
            client(&e.sb)
                .await
                .attach(AttachRequest {
                    container_id: shell.clone(),
                    stdin: true,
                    stdout: true,
                    stderr: true,
                    tty: false,
                })
                .await
                .expect("Attach")
                .into_inner()
                .url
        })
    });
    let (code, stdout, stderr) = kubectl(
        &home,
        port,
        &["attach", "-i", "p"],
        "echo attached-by-$((6 * 7))\n",
        &[],
    );
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(stdout.contains("attached-by-42"), "{stdout} {stderr}");
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}
