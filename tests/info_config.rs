//! `ucri info` (the prerequisite doctor) and `ucri config` against the real host.

mod common;

use std::process::Command;

use common::*;

const EXPECTED_CHECKS: [&str; 25] = [
    "catatonit",
    "storage_driver",
    "kernel",
    "mode",
    "user_namespaces",
    "subuid",
    "subgid",
    "newuidmap",
    "newgidmap",
    "dev_fuse",
    "dev_net_tun",
    "overlay_userns",
    "fuse_overlayfs",
    "cgroups",
    "oci_runtime.crun",
    "oci_runtime.runc",
    "conmon",
    "uplink.slirp4netns",
    "uplink.pasta",
    "cni_plugins",
    "iptables",
    "node",
    "runtime_dir",
    "state_records",
    "socket_bypass",
];

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

fn parse_report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(out)))
}

#[test]
fn info_json_reports_every_prerequisite_of_a_prepared_host() {
    let sb = Sandbox::new("info");
    let out = sb.run_ucri(&["info", "--json"]);
    let report = parse_report(&out);
    for name in EXPECTED_CHECKS {
        let c = check(&report, name);
        assert!(
            !c["detail"].as_str().unwrap_or("").is_empty(),
            "{name} has a detail"
        );
        if c["status"] != "ok" {
            assert!(
                c["fix"].as_str().is_some_and(|f| !f.is_empty()),
                "{name} names its fix: {c}"
            );
        }
    }
    let must_be_ok = [
        "user_namespaces",
        "subuid",
        "subgid",
        "newuidmap",
        "newgidmap",
        "dev_fuse",
        "dev_net_tun",
        "overlay_userns",
        "fuse_overlayfs",
        "oci_runtime.crun",
        "conmon",
        "uplink.slirp4netns",
        "cni_plugins",
        "catatonit",
        "socket_bypass",
    ];
    for name in must_be_ok {
        assert_eq!(
            check(&report, name)["status"],
            "ok",
            "setup-host.sh prepared {name}: {report:#}"
        );
    }
    assert!(check(&report, "newuidmap")["detail"]
        .as_str()
        .expect("detail")
        .contains("setuid"));
    assert_eq!(report["errors"], 0, "{report:#}");
    assert!(out.status.success(), "{}", describe(&out));
    let probe_leftovers = std::fs::read_dir(sb.data_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(".overlay-probe")
                })
                .count()
        })
        .unwrap_or(0);
    assert_eq!(probe_leftovers, 0, "the overlay probe cleans up");
}

#[test]
fn info_reports_an_unusable_dev_fuse_as_broken_with_the_fix() {
    require(
        running_as_root(),
        "root, to hide /dev/fuse in a private mount namespace",
    );
    let sb = Sandbox::new("info-fuse");
    let blocked = sb.root.join("fuse-blocked");
    std::fs::write(&blocked, "").expect("write");
    std::fs::set_permissions(
        &blocked,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let script = format!(
        "mount --bind {} /dev/fuse && exec setpriv --reuid={} --regid={} --init-groups -- {} info --json",
        blocked.display(),
        sb.user.uid,
        sb.user.gid,
        ucri_binary().display()
    );
    // This command stays root for the bind mount; the script drops to the user.
    let user_env = sb.command_as_user("true");
    let out = Command::new("unshare")
        .env_clear()
        .envs(
            user_env
                .get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .output()
        .expect("unshare");
    let report = parse_report(&out);
    let fuse = check(&report, "dev_fuse");
    assert_eq!(fuse["status"], "error", "{fuse}");
    assert_eq!(fuse["fix"], "sudo chmod 0666 /dev/fuse");
    assert_eq!(out.status.code(), Some(1), "errors make a non-zero exit");
    assert_eq!(
        check(&report, "dev_net_tun")["status"],
        "ok",
        "only /dev/fuse was broken"
    );
}

#[test]
fn info_reports_missing_subordinate_ids_with_the_usermod_fix() {
    require(running_as_root(), "root, to run as the ucri-nosubid user");
    let sb = Sandbox::for_user("info-nosub", user_named(NOSUBID_USER));
    let report = parse_report(&sb.run_ucri(&["info", "--json"]));
    let subuid = check(&report, "subuid");
    assert_eq!(subuid["status"], "error");
    assert!(
        subuid["fix"]
            .as_str()
            .expect("fix")
            .contains("usermod --add-subuids"),
        "{subuid}"
    );
}

#[test]
fn info_text_lists_problems_with_their_fixes() {
    let sb = Sandbox::new("info-text");
    let out = sb.run_ucri(&["info"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("prerequisites"), "{text}");
    assert!(text.contains("subuid"), "{text}");
    assert!(
        text.lines().last().is_some_and(|l| l.contains("error(s)")),
        "{text}"
    );
    for line in text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("FAIL"))
    {
        let next = text.lines().skip_while(|l| *l != line).nth(1).unwrap_or("");
        assert!(next.contains("fix:"), "problem without fix: {line}");
    }
}

#[test]
fn config_prints_every_default_then_files_dropins_and_env_override() {
    let sb = Sandbox::new("config");
    let out = sb.run_ucri(&["config"]);
    assert!(out.status.success(), "{}", describe(&out));
    let defaults: toml::Table = String::from_utf8_lossy(&out.stdout).parse().expect("TOML");
    assert_eq!(
        defaults["daemon"]["socket"].as_str(),
        Some(sb.socket().to_str().expect("utf8"))
    );
    assert_eq!(defaults["storage"]["driver"].as_str(), Some("auto"));
    assert_eq!(defaults["network"]["uplink"].as_str(), Some("slirp4netns"));
    assert_eq!(
        defaults["runtime"]["default_runtime"].as_str(),
        Some("crun")
    );

    let main = sb.config_dir().join("ucri.toml");
    sb.write_user_file(
        &main,
        "[network]\nuplink = \"pasta\"\n[daemon]\nshutdown_grace_seconds = 5\n",
    );
    let dropin = "[daemon]\nshutdown_grace_seconds = 7\n";
    sb.write_user_file(&sb.config_dir().join("ucri.toml.d/50-local.toml"), dropin);
    let out = sb
        .ucri(&["config"])
        .env("UCRI_SOCKET", "/tmp/elsewhere.sock")
        .output()
        .expect("run");
    let merged: toml::Table = String::from_utf8_lossy(&out.stdout).parse().expect("TOML");
    assert_eq!(merged["network"]["uplink"].as_str(), Some("pasta"));
    let grace = merged["daemon"]["shutdown_grace_seconds"].as_integer();
    assert_eq!(grace, Some(7), "the drop-in wins over the file");
    assert_eq!(
        merged["daemon"]["log_level"].as_str(),
        Some("debug"),
        "UCRI_LOG_LEVEL wins"
    );
    assert_eq!(
        merged["daemon"]["socket"].as_str(),
        Some("/tmp/elsewhere.sock"),
        "env wins"
    );

    sb.write_user_file(&main, "[network]\nuplnk = \"pasta\"\n");
    let out = sb.run_ucri(&["config"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("uplnk") && stderr.contains("ucri.toml"),
        "{stderr}"
    );
}

/// `cgroup_driver = "systemd"` cannot be honoured (containers go in a
/// delegated subtree with cgroupfs paths): the daemon refuses to start and
/// says why, instead of only reporting systemd to kubelet.
#[test]
fn the_daemon_refuses_the_systemd_cgroup_driver() {
    let sb = Sandbox::new("systemd-driver");
    sb.write_user_file(
        &sb.config_dir().join("ucri.toml"),
        "[runtime]\ncgroup_driver = \"systemd\"\n",
    );
    let mut daemon = sb.spawn_daemon(&[]);
    let status = daemon.wait_exit(std::time::Duration::from_secs(20));
    assert!(!status.success(), "the daemon must not start");
    let log = daemon.log_text();
    assert!(log.contains("cgroup_driver"), "{log}");
    assert!(!sb.socket().exists(), "no socket is served");
}
