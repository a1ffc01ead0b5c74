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
    let failing = sb.run_ucri(&["ctl", "exec", &id, "sh", "-c", "exit 3"]);
    assert!(
        !failing.status.success()
            && String::from_utf8_lossy(&failing.stderr).contains("exited with 3")
    );
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
