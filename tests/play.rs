//! `ucri play` of Kubernetes Pod manifests against the real daemon.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::registry::TestRegistry;
use common::*;

fn setup(name: &str) -> (TestRegistry, Sandbox, Daemon, String) {
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "play/busybox:latest");
    let mut sb = Sandbox::new(name);
    let daemon = sb.start_daemon();
    let image = registry.image("play/busybox:latest");
    (registry, sb, daemon, image)
}

fn pods_left(sb: &Sandbox) -> String {
    let out = sb.run_ucri(&["ctl", "pods", "-q"]);
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_pod_with_a_shared_volume_and_a_retried_container_runs_to_completion() {
    let (_registry, sb, _daemon, image) = setup("play-ok");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: greeter
spec:
  restartPolicy: OnFailure
  volumes:
  - name: shared
    emptyDir: {{}}
  containers:
  - name: writer
    image: {image}
    command: ["/bin/sh", "-c"]
    args: ["echo $GREETING > /data/msg"]
    env:
    - name: GREETING
      value: hello from play
    volumeMounts:
    - {{name: shared, mountPath: /data}}
  - name: reader
    image: {image}
    command: ["/bin/sh", "-c", "while [ ! -f /data/msg ]; do sleep 0.1; done; cat /data/msg"]
    volumeMounts:
    - {{name: shared, mountPath: /data, readOnly: true}}
  - name: flaky
    image: {image}
    command: ["/bin/sh", "-c", "if [ -f /data/tried ]; then echo second try; else touch /data/tried; exit 3; fi"]
    volumeMounts:
    - {{name: shared, mountPath: /data}}
"#
    );
    let file = sb.root.join("greeter.yaml");
    sb.write_user_file(&file, &manifest);
    let out = sb.run_ucri(&["play", &file.display().to_string()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout.contains("[reader] hello from play"), "{stdout}");
    assert!(stdout.contains("[play] flaky exited with 3"), "{stdout}");
    assert!(
        stdout.contains("[play] restarting flaky (attempt 1)"),
        "{stdout}"
    );
    assert!(stdout.contains("[flaky] second try"), "{stdout}");
    assert!(stdout.contains("[play] pod greeter removed"), "{stdout}");
    assert_eq!(pods_left(&sb), "", "the pod is torn down");
}

#[test]
fn a_served_pod_answers_on_its_host_port_until_interrupted() {
    let (_registry, sb, _daemon, image) = setup("play-web");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "web"}},
  "spec": {{"containers": [
    {{"name": "server", "image": "{image}",
     "command": ["/bin/sh", "-c", "mkdir -p /tmp/www && echo served by play > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
     "ports": [{{"containerPort": 8080, "hostPort": {port}}}]}},
    {{"name": "client", "image": "{image}",
     "command": ["/bin/sh", "-c", "sleep 1; wget -q -O - http://127.0.0.1:8080/; sleep 600"]}}]}}}}"#
    );
    let file = sb.root.join("web.json");
    sb.write_user_file(&file, &manifest);
    let mut child = sb
        .ucri(&["play", &file.display().to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ucri play");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let reply = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::Write;
                s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
                let mut text = String::new();
                s.read_to_string(&mut text).ok()?;
                Some(text)
            });
        if let Some(text) = reply.filter(|t| t.contains("served by play")) {
            break text;
        }
        assert!(Instant::now() < deadline, "the hostPort never answered");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.contains("served by play"));
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("interrupt");
    let status = child.wait().expect("wait");
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut stdout)
        .expect("read");
    assert_eq!(status.code(), Some(130), "{stdout}");
    assert!(stdout.contains("[client] served by play"), "{stdout}");
    assert!(stdout.contains("[play] pod web removed"), "{stdout}");
    assert_eq!(pods_left(&sb), "");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the host port is closed"
    );
}

#[test]
fn unsupported_fields_are_listed_and_nothing_runs() {
    let (_registry, sb, _daemon, image) = setup("play-bad");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  initContainers: [{{name: init, image: {image}}}]
  containers:
  - name: main
    image: {image}
    livenessProbe: {{exec: {{command: ["true"]}}}}
    resources: {{limits: {{memory: 64Mi}}}}
"#
    );
    let file = sb.root.join("probed.yaml");
    sb.write_user_file(&file, &manifest);
    let out = sb.run_ucri(&["play", &file.display().to_string()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for field in [
        "spec.initContainers",
        "spec.containers[0].livenessProbe",
        "spec.containers[0].resources",
    ] {
        assert!(stderr.contains(field), "{field} in {stderr}");
    }
    assert_eq!(pods_left(&sb), "");
}
