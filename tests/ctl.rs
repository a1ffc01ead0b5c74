//! `ucri ctl` pod and container commands end to end, as a user types them.

mod common;

use common::registry::TestRegistry;
use common::*;

fn ctl(sb: &Sandbox, args: &[&str]) -> String {
    let mut full = vec!["ctl"];
    full.extend_from_slice(args);
    let out = sb.run_ucri(&full);
    assert!(
        out.status.success(),
        "ucri ctl {args:?}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn crictl_style_commands_run_a_pod_end_to_end() {
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "demo/busybox:latest");
    let mut sb = Sandbox::new("ctl");
    let _daemon = sb.start_daemon();
    let image = registry.image("demo/busybox:latest");
    ctl(&sb, &["pull", &image]);
    let pod_json = sb.root.join("pod.json");
    let container_json = sb.root.join("container.json");
    let logs = sb.home().join("logs");
    sb.write_user_file(
        &pod_json,
        &format!(r#"{{"metadata": {{"name": "web", "namespace": "default", "uid": "u1"}}, "hostname": "web", "log_directory": "{}", "linux": {{}}}}"#, logs.display()),
    );
    sb.write_user_file(
        &container_json,
        &format!(r#"{{"metadata": {{"name": "hello"}}, "image": {{"image": "{image}"}}, "command": ["/bin/sh", "-c", "echo hello from $(hostname); sleep 300"], "log_path": "hello.log", "linux": {{}}}}"#),
    );
    let pod = ctl(&sb, &["runp", &pod_json.display().to_string()])
        .trim()
        .to_owned();
    assert_eq!(pod.len(), 64, "prints the pod ID");
    let id = ctl(
        &sb,
        &[
            "create",
            &pod,
            &container_json.display().to_string(),
            &pod_json.display().to_string(),
        ],
    )
    .trim()
    .to_owned();
    assert!(
        ctl(&sb, &["ps"]).lines().count() == 1,
        "created containers are not listed without -a"
    );
    assert!(ctl(&sb, &["ps", "-a"]).contains("Created"));
    ctl(&sb, &["start", &id]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ctl(&sb, &["logs", &id]).contains("hello from web") {
        assert!(std::time::Instant::now() < deadline, "log never appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ps = ctl(&sb, &["ps"]);
    assert!(
        ps.contains("Running") && ps.contains("hello") && ps.contains(&id[..13]),
        "{ps}"
    );
    assert_eq!(ctl(&sb, &["exec", &id, "id", "-u"]).trim(), "0");
    // At warn, ctl's own log (h2's connection lines at the sandbox's debug
    // level, which may come after the command's output) stays out of stderr.
    let failing = sb
        .ucri(&["ctl", "exec", &id, "sh", "-c", "echo bad >&2; exit 3"])
        .env("UCRI_LOG_LEVEL", "warn")
        .output()
        .expect("ucri ctl exec");
    assert_eq!(failing.status.code(), Some(3), "{}", describe(&failing));
    assert_eq!(
        String::from_utf8_lossy(&failing.stderr),
        "bad\n",
        "the command's stderr, relayed: {}",
        describe(&failing)
    );
    let sync = sb.run_ucri(&["ctl", "exec", "--sync", &id, "sh", "-c", "exit 4"]);
    assert_eq!(sync.status.code(), Some(4), "{}", describe(&sync));
    let inspect: serde_json::Value =
        serde_json::from_str(&ctl(&sb, &["inspect", &id])).expect("JSON");
    assert!(
        inspect["info"]["pid"].as_u64().is_some_and(|p| p > 0),
        "{inspect}"
    );
    assert!(ctl(&sb, &["pods"]).contains("Ready"));
    ctl(&sb, &["stop", "-t", "0", &id]);
    assert!(ctl(&sb, &["ps", "-a"]).contains("Exited"));
    ctl(&sb, &["rm", &id]);
    ctl(&sb, &["stopp", &pod]);
    assert!(ctl(&sb, &["pods"]).contains("NotReady"));
    ctl(&sb, &["rmp", &pod]);
    assert_eq!(ctl(&sb, &["pods", "-q"]).trim(), "");
    let bad = sb.run_ucri(&["ctl", "runp", "/nonexistent.json"]);
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.json")
    );
}

fn ctl_owned(sb: &Sandbox, args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ctl(sb, &refs)
}

#[test]
fn run_logs_follow_tail_stats_and_events() {
    use std::io::Read;
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "demo/busybox:latest");
    let mut sb = Sandbox::new("ctl-watch");
    let _daemon = sb.start_daemon();
    let image = registry.image("demo/busybox:latest");
    let mut events = sb
        .ucri(&["ctl", "events", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ucri ctl events");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (pod_json, counter_json, sleeper_json) = (
        sb.root.join("pod.json"),
        sb.root.join("counter.json"),
        sb.root.join("sleeper.json"),
    );
    let logs = sb.home().join("logs");
    sb.write_user_file(
        &pod_json,
        &format!(r#"{{"metadata": {{"name": "watched", "namespace": "default", "uid": "w1"}}, "log_directory": "{}"}}"#, logs.display()),
    );
    sb.write_user_file(
        &counter_json,
        &format!(r#"{{"metadata": {{"name": "counter"}}, "image": {{"image": "{image}"}}, "command": ["/bin/sh", "-c", "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"], "log_path": "counter.log"}}"#),
    );
    // `run` pulls the missing image itself.
    let id = ctl_owned(
        &sb,
        &[
            "run".into(),
            counter_json.display().to_string(),
            pod_json.display().to_string(),
        ],
    )
    .trim()
    .to_owned();
    assert_eq!(id.len(), 64, "run prints the container ID");
    let followed = ctl(&sb, &["logs", "-f", &id]);
    assert_eq!(
        followed, "line 1\nline 2\nline 3\nline 4\nline 5\n",
        "-f follows until the container exits"
    );
    assert_eq!(ctl(&sb, &["logs", "--tail", "2", &id]), "line 4\nline 5\n");
    let stamped = ctl(&sb, &["logs", "-t", "--tail", "1", &id]);
    assert!(
        stamped.starts_with("20") && stamped.trim_end().ends_with(" line 5"),
        "{stamped:?}"
    );

    sb.write_user_file(
        &sleeper_json,
        &format!(r#"{{"metadata": {{"name": "sleeper"}}, "image": {{"image": "{image}"}}, "command": ["sleep", "600"], "log_path": "sleeper.log"}}"#),
    );
    let pod = ctl(&sb, &["pods", "-q"]).trim().to_owned();
    let sleeper = ctl_owned(
        &sb,
        &[
            "create".into(),
            pod.clone(),
            sleeper_json.display().to_string(),
            pod_json.display().to_string(),
        ],
    )
    .trim()
    .to_owned();
    ctl(&sb, &["start", &sleeper]);
    let table = ctl(&sb, &["stats"]);
    assert!(table.starts_with("CONTAINER"), "{table}");
    assert!(
        table.contains(&sleeper[..13]) && table.contains("sleeper"),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ctl(&sb, &["stats", "-o", "json", &sleeper])).expect("json");
    assert_eq!(json["stats"].as_array().map(Vec::len), Some(1), "{json}");
    assert!(ctl(&sb, &["statsp"]).contains("watched"));
    let listed: serde_json::Value =
        serde_json::from_str(&ctl(&sb, &["ps", "-o", "json"])).expect("ps -o json");
    assert_eq!(listed["containers"][0]["id"], sleeper.as_str(), "{listed}");
    let pods_yaml = ctl(&sb, &["pods", "-o", "yaml"]);
    assert!(
        pods_yaml.starts_with("items:") && pods_yaml.contains(&pod),
        "{pods_yaml}"
    );
    let images: serde_json::Value =
        serde_json::from_str(&ctl(&sb, &["images", "-o", "json"])).expect("images -o json");
    assert_eq!(images["images"].as_array().map(Vec::len), Some(1));
    let inspected = ctl(&sb, &["inspect", "-o", "yaml", &sleeper]);
    assert!(
        inspected.starts_with("info:") || inspected.contains("\nstatus:"),
        "{inspected}"
    );

    ctl(&sb, &["stopp", &pod]);
    ctl(&sb, &["rmp", &pod]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = events.kill();
    let mut out = String::new();
    events
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("events output");
    let _ = events.wait();
    let seen: Vec<(String, String)> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON event per line"))
        .map(|e| {
            (
                e["container_id"].as_str().unwrap_or("").to_owned(),
                e["container_event_type"].to_string(),
            )
        })
        .collect();
    for (who, kind) in [
        (&id, "0"),
        (&id, "1"),
        (&id, "2"),
        (&sleeper, "3"),
        (&pod, "3"),
    ] {
        assert!(
            seen.iter().any(|(i, k)| i == who && k == kind),
            "event {kind} of {who} in {seen:?}"
        );
    }
}

#[test]
fn install_puts_the_binary_and_the_user_unit_in_place() {
    let sb = Sandbox::new("install");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/install.sh");
    let out = sb
        .command_as_user(&script)
        .arg("--binary")
        .arg(ucri_binary())
        .output()
        .expect("install.sh");
    assert!(out.status.success(), "{}", describe(&out));
    let installed = sb.home().join(".local/bin/ucri");
    let version = std::process::Command::new(&installed)
        .arg("--version")
        .output()
        .expect("the installed binary runs");
    assert!(version.status.success());
    let unit = std::fs::read_to_string(sb.home().join(".config/systemd/user/ucri.service"))
        .expect("the unit is installed");
    for line in [
        "ExecStart=%h/.local/bin/ucri daemon",
        "Delegate=yes",
        "KillMode=process",
    ] {
        assert!(unit.contains(line), "{line} in {unit}");
    }
}

/// A pod for the streaming commands: httpd on 8080 and a shell reading the
/// container's stdin (closed after the first attach: StdinOnce).
fn streaming_pod(sb: &mut Sandbox, registry: &TestRegistry) -> (String, String) {
    let image = registry.image("demo/busybox:latest");
    ctl(sb, &["pull", &image]);
    let pod_json = sb.root.join("pod.json");
    let container_json = sb.root.join("container.json");
    let logs = sb.home().join("logs");
    sb.write_user_file(
        &pod_json,
        &format!(r#"{{"metadata": {{"name": "streams", "namespace": "default", "uid": "u2"}}, "log_directory": "{}", "linux": {{}}}}"#, logs.display()),
    );
    let script = "mkdir -p /www && echo via-port-forward > /www/index.html && httpd -p 8080 -h /www && exec sh";
    sb.write_user_file(
        &container_json,
        &format!(r#"{{"metadata": {{"name": "shell"}}, "image": {{"image": "{image}"}}, "command": ["/bin/sh", "-c", "{script}"], "stdin": true, "stdin_once": true, "log_path": "shell.log", "linux": {{}}}}"#),
    );
    let id = ctl(
        sb,
        &[
            "run",
            &container_json.display().to_string(),
            &pod_json.display().to_string(),
        ],
    )
    .trim()
    .to_owned();
    let pod = ctl(sb, &["pods", "-q"]).trim().to_owned();
    (pod, id)
}

/// Runs `command` (a shell line) as the user inside `script`'s pseudo-terminal
/// of 40 rows and 100 columns, with `input` typed into it.
fn in_terminal(sb: &Sandbox, command: &str, input: &str) -> String {
    use std::io::Write;
    let line = format!("stty rows 40 cols 100; {command}");
    let mut child = sb
        .command_as_user("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) is needed for the terminal test");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    stdin.write_all(input.as_bytes()).expect("type");
    let out = wait_output(child, std::time::Duration::from_secs(30));
    drop(stdin);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_output(mut child: std::process::Child, limit: std::time::Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "timed out: {:?}",
                child.wait_with_output().map(|o| describe(&o))
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// `ucri ctl port-forward POD :8080` started: the process, its first line
/// (`Forwarding from ADDR -> 8080`) and the rest of its stdout.
fn port_forward(
    sb: &Sandbox,
    pod: &str,
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut child = sb
        .ucri(&["ctl", "port-forward", pod, ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("port-forward");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut lines, &mut first).expect("line");
    (child, first, lines)
}

#[test]
fn exec_it_port_forward_and_attach_stream_through_the_daemon() {
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "demo/busybox:latest");
    let mut sb = Sandbox::new("ctl-streams");
    let mut daemon = sb.start_daemon();
    let (pod, id) = streaming_pod(&mut sb, &registry);
    let ucri = ucri_binary().display().to_string();

    // exec -it: a remote terminal of the local terminal's size, typed into.
    let typed = in_terminal(
        &sb,
        &format!("{ucri} ctl exec -it {id} sh"),
        "stty size; echo typed-$((6 * 7)); exit 5\n",
    );
    assert!(
        typed.contains("40 100"),
        "the terminal size came along: {typed:?}"
    );
    assert!(
        typed.contains("typed-42"),
        "keystrokes reached the shell: {typed:?}"
    );
    let code = in_terminal(
        &sb,
        &format!("{ucri} ctl exec -it {id} sh -c 'exit 6'; echo local-exit=$?"),
        "",
    );
    assert!(
        code.contains("local-exit=6"),
        "exit code of exec -it: {code:?}"
    );

    // port-forward: a local port to httpd in the pod, until interrupted.
    let (mut forward, first, mut lines) = port_forward(&sb, &pod);
    let handled = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
        rest
    });
    let local = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("Forwarding from ADDR -> PORT: {first:?}"))
        .to_owned();
    assert!(first.ends_with("-> 8080\n"), "{first:?}");
    for _ in 0..2 {
        match http_get(&local) {
            Ok(response) if response.contains("via-port-forward") => {}
            other => {
                let _ = forward.kill();
                panic!(
                    "{other:?}: {}",
                    describe(&forward.wait_with_output().expect("output"))
                );
            }
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(forward.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("interrupt");
    let stopped = wait_output(forward, std::time::Duration::from_secs(10));
    assert!(stopped.status.success(), "{}", describe(&stopped));
    let handled = handled.join().expect("reader");
    assert_eq!(
        handled.matches("Handling connection for 8080").count(),
        2,
        "{handled}"
    );

    // A port-forward whose daemon goes away ends with an error instead of
    // listening on forever; containers survive the restart.
    let (orphan, first, _lines) = port_forward(&sb, &pod);
    assert!(first.starts_with("Forwarding from"), "{first:?}");
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon
        .wait_exit(std::time::Duration::from_secs(15))
        .success());
    let lost = wait_output(orphan, std::time::Duration::from_secs(15));
    assert!(
        !lost.status.success()
            && String::from_utf8_lossy(&lost.stderr).contains("lost the connection"),
        "{}",
        describe(&lost)
    );
    let _daemon = sb.start_daemon();

    // attach -i: input reaches the shell; its end closes stdin (StdinOnce),
    // the shell exits, and attach ends with it.
    let mut attach = sb
        .ucri(&["ctl", "attach", "-i", &id])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("attach");
    let mut input = attach.stdin.take().expect("stdin");
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::io::Write::write_all(&mut input, b"echo attached-$((40 + 2))\n").expect("write");
    drop(input);
    let attached = wait_output(attach, std::time::Duration::from_secs(30));
    assert!(attached.status.success(), "{}", describe(&attached));
    assert!(
        String::from_utf8_lossy(&attached.stdout).contains("attached-42"),
        "{}",
        describe(&attached)
    );
    assert!(ctl(&sb, &["ps", "-a"]).contains("Exited"));
    ctl(&sb, &["rmp", &pod]);
}

/// `ucri ctl … | head` stops quietly, as Unix tools do, instead of
/// panicking on its next write to the closed pipe (the demo's
/// `ctl info | head -n 40` once failed that way). The log is bigger than a
/// pipe's buffer, so the client is still writing when the pipe closes.
#[test]
fn a_client_whose_output_pipe_closes_stops_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "demo/busybox:latest");
    let mut sb = Sandbox::new("ctl-pipe");
    let _daemon = sb.start_daemon();
    let image = registry.image("demo/busybox:latest");
    let (pod_json, talker_json) = (sb.root.join("pod.json"), sb.root.join("talker.json"));
    let logs = sb.home().join("logs");
    sb.write_user_file(
        &pod_json,
        &format!(r#"{{"metadata": {{"name": "piped", "namespace": "default", "uid": "p1"}}, "log_directory": "{}"}}"#, logs.display()),
    );
    sb.write_user_file(
        &talker_json,
        &format!(r#"{{"metadata": {{"name": "talker"}}, "image": {{"image": "{image}"}}, "command": ["/bin/sh", "-c", "yes talking | head -n 100000"], "log_path": "talker.log"}}"#),
    );
    let id = ctl_owned(
        &sb,
        &[
            "run".into(),
            talker_json.display().to_string(),
            pod_json.display().to_string(),
        ],
    )
    .trim()
    .to_owned();
    let mut child = sb
        .ucri(&["ctl", "logs", "-f", &id])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ucri ctl logs");
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("the start of the log");
    assert_eq!(&first, b"talking\ntalking\n");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "{:?}: {stderr}",
        out.status
    );
}
