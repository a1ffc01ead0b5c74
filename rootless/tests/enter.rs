//! The namespace-entry helpers, run for real: the test re-executes itself
//! inside a fresh user+mount namespace (where pinning a network namespace to a
//! file is allowed), pins one with util-linux `unshare --net=FILE`, then joins
//! it from a thread and from a child process.

use std::path::Path;
use std::process::Command;

use ucri_rootless::enter::{command_in_netns, run_in_netns_thread};
use ucri_rootless::nsid::NsId;

const INSIDE: &str = "UCRI_TEST_INSIDE_USERNS";

fn rerun_inside_userns(test: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
            "--",
        ])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("missing test prerequisite: util-linux unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("INSIDE-OK"),
        "inner run failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pin_new_netns(file: &Path) -> NsId {
    std::fs::write(file, "").expect("pin file");
    let status = Command::new("unshare")
        .arg(format!("--net={}", file.display()))
        .arg("true")
        .status()
        .expect("unshare --net");
    assert!(status.success(), "pinning a netns failed");
    NsId::of_path(file).expect("pinned netns identity")
}

#[test]
fn thread_and_child_join_a_pinned_network_namespace() {
    if std::env::var_os(INSIDE).is_none() {
        return rerun_inside_userns("thread_and_child_join_a_pinned_network_namespace");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let pin = dir.path().join("netns");
    let pinned = pin_new_netns(&pin);
    let own = NsId::of_self("net").expect("own netns");
    assert_ne!(pinned, own, "the pinned namespace is a new one");

    let seen = run_in_netns_thread(&pin, || NsId::of_self("net").expect("thread netns"))
        .expect("run in netns thread");
    assert_eq!(
        seen, pinned,
        "the worker thread joined the pinned namespace"
    );
    assert_eq!(
        NsId::of_self("net").expect("own"),
        own,
        "the caller's thread is untouched"
    );

    let mut cmd = Command::new("readlink");
    cmd.arg("/proc/self/ns/net");
    let _guard = command_in_netns(&mut cmd, &pin).expect("prepare command");
    let out = cmd.output().expect("spawn in netns");
    assert!(out.status.success());
    let link = String::from_utf8_lossy(&out.stdout);
    assert_eq!(link.trim(), format!("net:[{}]", pinned.ino));

    let err = run_in_netns_thread(&dir.path().join("missing"), || ()).expect_err("no such file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    println!("INSIDE-OK");
}
