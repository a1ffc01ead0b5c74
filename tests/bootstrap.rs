//! The rootless bootstrap against the real binary, newuidmap/newgidmap and
//! kernel namespaces, with the daemon running as an unprivileged user.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use ucri_cri_api::v1::{
    CheckpointContainerRequest, RuntimeConfigRequest, StatusRequest, VersionRequest,
};

fn subuid_start(user: &str) -> u64 {
    let text = std::fs::read_to_string("/etc/subuid").expect("/etc/subuid");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|rest| rest.split(':').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("missing test prerequisite: a subuid range for {user}"))
}

#[test]
fn daemon_maps_the_subuid_range_and_answers_version_and_status() {
    let mut sb = Sandbox::new("maps");
    let _daemon = sb.start_daemon();
    let pid = sb.daemon_pid();
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).expect("uid_map");
    let lines: Vec<Vec<u64>> = uid_map
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|f| f.parse().expect("number"))
                .collect()
        })
        .collect();
    assert_eq!(lines[0], vec![0, u64::from(sb.user.uid), 1], "{uid_map}");
    assert_eq!(
        lines[1],
        vec![1, subuid_start(&sb.user.name), 65536],
        "{uid_map}"
    );

    let (version, status) = block_on(async {
        let mut c = sb.runtime_client().await;
        let v = c
            .version(VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
        let s = c
            .status(StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner();
        (v, s)
    });
    assert_eq!(version.runtime_name, "ucri");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
    let conditions = status.status.expect("status").conditions;
    let runtime = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .expect("RuntimeReady");
    assert!(runtime.status, "crun and conmon are installed: {runtime:?}");
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady");
    assert!(
        network.status,
        "the uplink and the default CNI network: {network:?}"
    );
    assert_eq!(status.info["mode"], "rootless");
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config JSON");
    assert_eq!(
        config["daemon"]["socket"],
        sb.socket().display().to_string()
    );
}

#[test]
fn socket_is_a_private_host_path() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut sb = Sandbox::new("socket");
    let _daemon = sb.start_daemon();
    let meta = std::fs::metadata(sb.socket()).expect("socket on the host");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777 & !0o660, 0, "mode {:o}", meta.mode());
    assert_eq!(meta.uid(), sb.user.uid);
}

/// The daemon raises its open-file limit to the hard limit at start: a
/// node's connections, pods and monitors need more than 256 or 1024.
#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let mut sb = Sandbox::new("nofile");
    let _daemon = sb.start_daemon_via(&["prlimit", "--nofile=256:"]);
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", sb.daemon_pid())).expect("limits");
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files")
        .split_whitespace()
        .collect();
    assert_eq!(files[3], files[4], "soft = hard: {files:?}");
}

#[test]
fn unimplemented_rpcs_say_so_and_runtime_config_reports_cgroupfs() {
    let mut sb = Sandbox::new("unimpl");
    let _daemon = sb.start_daemon();
    block_on(async {
        let mut c = sb.runtime_client().await;
        let err = c
            .checkpoint_container(CheckpointContainerRequest::default())
            .await
            .expect_err("CheckpointContainer is not implemented");
        assert_eq!(err.code(), tonic::Code::Unimplemented);
        assert!(
            err.message().contains("CheckpointContainer"),
            "{}",
            err.message()
        );
        let rc = c
            .runtime_config(RuntimeConfigRequest {})
            .await
            .expect("RuntimeConfig")
            .into_inner();
        assert_eq!(
            rc.linux.expect("linux").cgroup_driver,
            ucri_cri_api::v1::CgroupDriver::Cgroupfs as i32
        );
    });
}

#[test]
fn namespaces_and_mounts_survive_kill_9_of_the_daemon() {
    let mut sb = Sandbox::new("kill9");
    let mut daemon = sb.start_daemon();
    let first = sb.daemon_pid();
    let (userns, mntns) = (ns_inode(first, "user"), ns_inode(first, "mnt"));
    let marker = sb.root.join("marker-mount");
    sb.mkdir_as_user(&marker);
    let mount = sb
        .ucri(&[
            "nsenter",
            "mount",
            "-t",
            "tmpfs",
            "marker",
            &marker.display().to_string(),
        ])
        .output()
        .expect("nsenter mount");
    assert!(mount.status.success(), "{}", describe(&mount));
    // kubelet makes its root dir shared; a restart must keep that.
    let shared = sb
        .ucri(&[
            "nsenter",
            "mount",
            "--make-shared",
            &marker.display().to_string(),
        ])
        .output()
        .expect("nsenter mount --make-shared");
    assert!(shared.status.success(), "{}", describe(&shared));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(first as i32), Signal::SIGKILL)
        .expect("kill -9");
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "parent exits with the child's fate"
    );
    assert!(!sb.socket().exists(), "parent removed the socket");

    let _daemon = sb.start_daemon();
    let second = sb.daemon_pid();
    assert_ne!(first, second);
    assert_eq!(
        ns_inode(second, "user"),
        userns,
        "same user namespace after restart"
    );
    assert_eq!(
        ns_inode(second, "mnt"),
        mntns,
        "same mount namespace after restart"
    );
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{second}/mountinfo")).expect("mountinfo");
    let line = mountinfo
        .lines()
        .find(|l| l.contains(&marker.display().to_string()))
        .expect("the mount made before the restart is still there");
    assert!(
        line.contains(" shared:"),
        "its shared propagation survives the restart: {line}"
    );
}

#[test]
fn kill_9_of_the_parent_stops_the_child_and_a_restart_rejoins() {
    let mut sb = Sandbox::new("kill9parent");
    let mut daemon = sb.start_daemon();
    let child = sb.daemon_pid();
    let userns = ns_inode(child, "user");
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5));
    wait_until(
        Duration::from_secs(10),
        || !process_alive(child),
        "child exits after its parent",
    );
    let _daemon = sb.start_daemon();
    assert_eq!(ns_inode(sb.daemon_pid(), "user"), userns);
}

#[test]
fn a_second_daemon_fails_fast_and_the_first_keeps_serving() {
    let mut sb = Sandbox::new("second");
    let _first = sb.start_daemon();
    let started = Instant::now();
    let out = sb.run_ucri(&["daemon"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{}", describe(&out));
    assert!(
        stderr.contains(&sb.daemon_pid().to_string()),
        "names the running pid: {stderr}"
    );
    block_on(async {
        let mut c = sb.runtime_client().await;
        c.version(VersionRequest::default())
            .await
            .expect("first daemon still serves");
    });
}

#[test]
fn sigterm_leaves_only_the_holder_and_reset_removes_everything() {
    let mut sb = Sandbox::new("sigterm");
    let mut daemon = sb.start_daemon();
    let (parent, child, holder) = (daemon.parent_pid(), sb.daemon_pid(), sb.holder_pid());
    sb.mkdir_as_user(&sb.data_dir());
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        daemon.log_text()
    );
    wait_until(
        Duration::from_secs(5),
        || !process_alive(child),
        "child gone",
    );
    assert!(!process_alive(parent));
    for leftover in ["ucri.sock", "ucri.lock", "daemon.pid"] {
        assert!(
            !sb.runtime_dir().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
    assert!(process_alive(holder), "the holder stays by design");

    let out = sb.run_ucri(&["system", "reset", "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    wait_until(
        Duration::from_secs(5),
        || !process_alive(holder),
        "holder ended by reset",
    );
    assert!(!sb.runtime_dir().exists(), "runtime dir removed");
    assert!(!sb.data_dir().exists(), "data dir removed");
}

#[test]
fn reset_refuses_while_the_daemon_runs_and_asks_for_confirmation() {
    let mut sb = Sandbox::new("resetguard");
    let _daemon = sb.start_daemon();
    let out = sb.run_ucri(&["system", "reset", "--force"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("stop it"),
        "{}",
        describe(&out)
    );
    let holder = sb.holder_pid();
    let out = sb.run_ucri(&["system", "reset"]);
    assert!(
        !out.status.success(),
        "no confirmation on stdin: {}",
        describe(&out)
    );
    assert!(process_alive(holder));
}

#[test]
fn a_stale_holder_record_is_not_trusted() {
    let mut sb = Sandbox::new("stale");
    let mut impostor = sb
        .command_as_user("sleep")
        .arg("60")
        .spawn()
        .expect("sleep");
    let record = serde_json::json!({
        "pid": impostor.id(),
        "userns": {"dev": 4, "ino": 1},
        "mntns": {"dev": 4, "ino": 2},
    });
    sb.write_user_file(&sb.runtime_dir().join("holder.json"), &record.to_string());
    let _daemon = sb.start_daemon();
    assert_ne!(sb.holder_pid(), impostor.id(), "a new holder was started");
    assert_ne!(
        ns_inode(sb.daemon_pid(), "user"),
        ns_inode(impostor.id(), "user")
    );
    assert!(
        impostor.try_wait().expect("try_wait").is_none(),
        "the impostor was left alone"
    );
    let _ = impostor.kill();
    let _ = impostor.wait();
}

#[test]
fn nsenter_runs_commands_as_root_in_the_daemon_namespaces() {
    let mut sb = Sandbox::new("nsenter");
    let _daemon = sb.start_daemon();
    let out = sb.run_ucri(&["nsenter", "id", "-u"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    let out = sb.run_ucri(&[
        "nsenter",
        "--",
        "readlink",
        "/proc/self/ns/user",
        "/proc/self/ns/mnt",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = sb.daemon_pid();
    assert!(
        text.contains(&format!("user:[{}]", ns_inode(pid, "user"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("mnt:[{}]", ns_inode(pid, "mnt"))),
        "{text}"
    );
    let out = sb.run_ucri(&["nsenter", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "exit status propagates");
}

#[test]
fn nsenter_without_a_daemon_explains() {
    let sb = Sandbox::new("nsenter-none");
    let out = sb.run_ucri(&["nsenter", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("start `ucri daemon`"),
        "{}",
        describe(&out)
    );
}

#[test]
fn the_oci_runtime_runs_containers_inside_the_daemon_namespaces() {
    let mut sb = Sandbox::new("crun");
    let _daemon = sb.start_daemon();
    let bundle = sb.root.join("bundle");
    for dir in ["rootfs/bin", "rootfs/proc", "rootfs/dev"] {
        std::fs::create_dir_all(bundle.join(dir)).expect("mkdir");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    require(
        busybox.is_some(),
        "busybox-static (packaging/setup-host.sh --test)",
    );
    std::fs::copy(busybox.expect("busybox"), bundle.join("rootfs/bin/busybox")).expect("copy");
    std::fs::create_dir_all(sb.root.join("crun-root")).expect("mkdir");
    sb.write_user_file(&bundle.join("config.json"), &minimal_oci_spec());
    let root = sb.root.join("crun-root");
    let script = format!(
        "crun --root {} run --bundle {} probe",
        root.display(),
        bundle.display()
    );
    let out = sb.run_ucri(&["nsenter", "sh", "-c", &script]);
    assert!(
        out.status.success(),
        "crun run inside the namespaces: {}",
        describe(&out)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "uid=0 gid=0");
}

fn minimal_oci_spec() -> String {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/busybox", "id"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
        }
    })
    .to_string()
}

#[test]
fn a_user_without_subordinate_ids_gets_the_single_id_fallback() {
    require(
        running_as_root(),
        "root, to run the daemon as the ucri-nosubid user",
    );
    let mut sb = Sandbox::for_user("nosubid", user_named(NOSUBID_USER));
    let daemon = sb.start_daemon();
    let uid_map =
        std::fs::read_to_string(format!("/proc/{}/uid_map", sb.daemon_pid())).expect("map");
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    assert_eq!(
        fields,
        vec!["0", &sb.user.uid.to_string(), "1"],
        "{uid_map}"
    );
    let log = daemon.log_text();
    assert!(log.contains("no subordinate id range"), "{log}");
    assert!(
        log.contains("usermod --add-subuids"),
        "the warning names the fix: {log}"
    );
    let out = sb.run_ucri(&["nsenter", "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

#[test]
fn a_missing_or_failing_id_map_helper_is_a_clear_error_that_leaves_nothing() {
    let sb = Sandbox::new("nohelper");
    let fake_bin = sb.root.join("fake-bin");
    std::fs::create_dir_all(&fake_bin).expect("mkdir");
    let run = |path: &str| {
        let mut cmd = sb.ucri(&["daemon"]);
        cmd.env("PATH", path);
        cmd.output().expect("run daemon")
    };
    let out = run(&fake_bin.display().to_string());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("newuidmap not found") && stderr.contains("apt-get install uidmap"),
        "{stderr}"
    );
    assert_nothing_left(&sb);

    let fake = fake_bin.join("newuidmap");
    std::fs::write(&fake, "#!/bin/sh\necho 'newuidmap: uid range [1-65537) -> [100000-165536) not allowed' >&2\nexit 1\n")
        .expect("fake newuidmap");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = run(&format!("{}:/usr/bin:/bin", fake_bin.display()));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not allowed"),
        "the helper's stderr is kept: {stderr}"
    );
    assert_nothing_left(&sb);
}

fn assert_nothing_left(sb: &Sandbox) {
    for leftover in [
        "ucri.sock",
        "ucri.lock",
        "daemon.pid",
        "holder.json",
        "holder.log",
    ] {
        assert!(
            !sb.runtime_dir().join(leftover).exists(),
            "{leftover} left behind"
        );
    }
}

#[test]
fn already_root_in_a_user_namespace_skips_the_bootstrap() {
    let sb = Sandbox::new("nested");
    let mut cmd = sb.command_as_user("unshare");
    cmd.args(["--user", "--map-root-user", "--"])
        .arg(ucri_binary())
        .arg("daemon");
    let log = sb.root.join("nested.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut child = cmd
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .spawn()
        .expect("unshare");
    wait_until(
        Duration::from_secs(20),
        || sb.socket().exists(),
        "nested daemon socket",
    );
    let status = block_on(async {
        let mut c = sb.runtime_client().await;
        c.status(StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner()
    });
    assert_eq!(status.info["mode"], "nested-root");
    assert!(
        !sb.runtime_dir().join("holder.json").exists(),
        "no holder in nested mode"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .expect("term");
    let exit = child.wait().expect("wait");
    assert!(
        exit.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(!sb.socket().exists());
    let helpers = std::process::Command::new("pgrep")
        .args(["-f", &sb.runtime_dir().join("uplink").display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        helpers.stdout.is_empty(),
        "the uplink helper stops with a holder-less daemon: {}",
        String::from_utf8_lossy(&helpers.stdout)
    );
}

#[test]
fn real_root_is_refused_without_allow_root() {
    require(
        running_as_root(),
        "root, to check that ucri refuses real root",
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(ucri_binary())
        .arg("daemon")
        .env("XDG_RUNTIME_DIR", tmp.path())
        .env("HOME", tmp.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-root"), "{stderr}");
    assert!(!tmp.path().join("ucri/ucri.sock").exists());
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

/// `[node] writable` gives a kubelet in the daemon's namespaces the node
/// directories it writes, backed by the user's own, without root on the
/// host: /var/lib/kubelet (whose parent the user cannot write: copied up,
/// the rest of /var/lib still there) and /var/log/pods. A restart adds no
/// mounts, and the host's /var/lib is untouched.
#[test]
fn node_directories_are_writable_for_a_rootless_kubelet() {
    let mut sb = Sandbox::new("nodedirs");
    sb.write_user_file(
        &sb.config_dir().join("ucri.toml"),
        "[node]\nwritable = [\"/var/lib/kubelet\", \"/var/log/pods\", \"/var/log/containers\"]\n",
    );
    let mut daemon = sb.start_daemon();
    let script = "echo kubelet > /var/lib/kubelet/state && echo pod > /var/log/pods/p.log \
                  && echo c > /var/log/containers/c.log && test -d /var/lib/dpkg && ls /var/log >/dev/null";
    let out = sb.run_ucri(&["nsenter", "sh", "-c", script]);
    assert!(out.status.success(), "{}", describe(&out));
    let backing = sb.data_dir().join("node");
    assert_eq!(
        std::fs::read_to_string(backing.join("var/lib/kubelet/state"))
            .expect("backed by the user's dir"),
        "kubelet\n"
    );
    assert!(backing.join("var/log/pods/p.log").exists());
    assert!(
        !std::path::Path::new("/var/lib/kubelet/state").exists(),
        "the host's /var/lib is untouched"
    );
    let count = |sb: &Sandbox| {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", sb.daemon_pid()))
            .expect("mountinfo")
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some("/var/lib/kubelet"))
            .count()
    };
    assert_eq!(count(&sb), 1);
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(15)).success());
    let _daemon = sb.start_daemon();
    assert_eq!(count(&sb), 1, "a restart adds no mounts");
    let out = sb.run_ucri(&["nsenter", "cat", "/var/lib/kubelet/state"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "kubelet\n",
        "{}",
        describe(&out)
    );
}

/// A kubelet in the daemon's namespaces bind-mounts its root dir onto
/// itself and mounts pod volumes under it: mounts at `[node] writable`
/// paths, outside the data dir, whose mountpoints are the data dir's
/// `node/` directories. `system reset` unmounts them too, so removing the
/// data dir does not stop at `node/var/lib/kubelet: Device or resource busy`.
#[test]
fn system_reset_unmounts_what_a_kubelet_mounted_in_the_node_directories() {
    let mut sb = Sandbox::new("reset-nodedirs");
    sb.write_user_file(
        &sb.config_dir().join("ucri.toml"),
        "[node]\nwritable = [\"/var/lib/kubelet\"]\n",
    );
    let mut daemon = sb.start_daemon();
    let script = "mount --bind /var/lib/kubelet /var/lib/kubelet \
                  && mkdir -p /var/lib/kubelet/pods/p1/volumes/v \
                  && mount -t tmpfs tmpfs /var/lib/kubelet/pods/p1/volumes/v \
                  && echo secret > /var/lib/kubelet/pods/p1/volumes/v/token";
    let out = sb.run_ucri(&["nsenter", "sh", "-c", script]);
    assert!(out.status.success(), "kubelet's mounts: {}", describe(&out));
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(15)).success());
    let out = sb.run_ucri(&["system", "reset", "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!sb.data_dir().exists(), "the data dir is gone");
}
