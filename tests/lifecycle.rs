//! Pods and containers through the real daemon, conmon and crun, rootless.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cri::*;
use common::registry::TestRegistry;
use common::*;
use tonic::Code;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::*;

#[test]
fn a_pod_and_its_container_from_start_to_removal() {
    let e = env("lifecycle");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "web");
    let pod = run_pod(sb, &pod_cfg).expect("RunPodSandbox");
    let ps = pod_status(sb, &pod).expect("PodSandboxStatus");
    assert_eq!(
        ps.status.as_ref().expect("status").state,
        PodSandboxState::SandboxReady as i32
    );
    let info: serde_json::Value = serde_json::from_str(&ps.info["info"]).expect("verbose info");
    let netns = info["netns"].as_str().expect("netns pin").to_owned();
    assert!(
        daemon_mounts(sb).contains(&netns),
        "the pod's netns is pinned"
    );

    let script = "echo hello from $(hostname); echo oops >&2; sleep 300";
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "app", script),
        &pod_cfg,
    )
    .expect("CreateContainer");
    assert_eq!(
        status(sb, &id).expect("status").state,
        ContainerState::ContainerCreated as i32
    );
    start(sb, &id).expect("StartContainer");
    let running = wait_state(sb, &id, ContainerState::ContainerRunning);
    assert!(running.started_at > 0);
    let log = wait_log(&running.log_path, "oops");
    assert!(
        log.contains(" stdout F hello from web-host"),
        "CRI log format with the pod's hostname: {log}"
    );
    assert!(log.contains(" stderr F oops"), "{log}");

    stop(sb, &id, 1).expect("StopContainer");
    let exited = status(sb, &id).expect("status");
    assert_eq!(exited.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        exited.exit_code, 137,
        "sh as pid 1 ignores SIGTERM, so SIGKILL after the timeout"
    );
    assert_eq!(exited.reason, "Error");
    stop(sb, &id, 1).expect("stopping again is fine");

    remove_container(sb, &id);
    assert_eq!(status(sb, &id).expect_err("gone").code(), Code::NotFound);
    stop_pod(sb, &pod);
    let ps = pod_status(sb, &pod).expect("status");
    assert_eq!(
        ps.status.expect("status").state,
        PodSandboxState::SandboxNotready as i32
    );
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
    remove_pod(sb, &pod);
    assert_eq!(
        pod_status(sb, &pod).expect_err("gone").code(),
        Code::NotFound
    );
    let mounts = daemon_mounts(sb);
    assert!(
        !mounts.contains(&sb.runtime_dir().join("pods").display().to_string()),
        "no pod mount left: {mounts}"
    );
    assert!(
        !mounts.contains(
            &sb.data_dir()
                .join("storage/containers")
                .display()
                .to_string()
        ),
        "no rootfs left"
    );
    let procs = std::process::Command::new("pgrep")
        .args(["-f", &id])
        .output()
        .expect("pgrep");
    assert!(
        procs.stdout.is_empty(),
        "no conmon or container process left: {}",
        String::from_utf8_lossy(&procs.stdout)
    );
    for dir in [
        sb.runtime_dir().join("containers"),
        sb.runtime_dir().join("pods"),
        sb.runtime_dir().join("exits"),
        sb.data_dir().join("state/pods"),
        sb.data_dir().join("state/containers"),
        sb.data_dir().join("storage/containers"),
    ] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} still has {left:?}", dir.display());
    }
}

#[test]
fn containers_that_exit_by_themselves_report_code_and_reason() {
    let e = env("exits");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "jobs");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    for (name, script, code, reason) in [
        ("ok", "true", 0, "Completed"),
        ("bad", "exit 3", 3, "Error"),
    ] {
        let id =
            create(sb, &pod, container_config(&e.image, name, script), &pod_cfg).expect("create");
        start(sb, &id).expect("start");
        let s = wait_state(sb, &id, ContainerState::ContainerExited);
        assert_eq!((s.exit_code, s.reason.as_str()), (code, reason), "{name}");
        assert!(s.finished_at >= s.started_at);
    }
    let by_pod = ContainerFilter {
        pod_sandbox_id: pod.clone(),
        ..Default::default()
    };
    assert_eq!(list_containers(sb, Some(by_pod)).len(), 2);
    let by_label = ContainerFilter {
        label_selector: HashMap::from([("container".to_owned(), "bad".to_owned())]),
        ..Default::default()
    };
    assert_eq!(list_containers(sb, Some(by_label)).len(), 1);
    let exited = ContainerFilter {
        state: Some(ContainerStateValue {
            state: ContainerState::ContainerExited as i32,
        }),
        ..Default::default()
    };
    assert_eq!(list_containers(sb, Some(exited)).len(), 2);
    remove_pod(sb, &pod);
    let left = list_containers(sb, None);
    assert!(left.is_empty(), "{left:?}");
}

/// The pods the daemon lists.
fn listed_pods(sb: &Sandbox) -> Vec<String> {
    block_on(async {
        let channel = connect(&sb.socket()).await.expect("connect");
        ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient::new(channel)
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect()
    })
}

/// The entries of `dir` (none when it does not exist).
fn entries_of(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// A named (Localhost) AppArmor profile.
fn named_apparmor() -> SecurityProfile {
    SecurityProfile {
        profile_type: security_profile::ProfileType::Localhost as i32,
        localhost_ref: "my-profile".into(),
    }
}

/// What ucri cannot honour or must not accept is refused with
/// INVALID_ARGUMENT, and the refused call leaves no pod, container, root
/// filesystem or file behind: a hostname the kernel takes no more of, a
/// named AppArmor profile for the pod or a container (there is no AppArmor
/// for a rootless runtime to apply; these used to be accepted and
/// ignored), and a container log path that leaves the pod's log directory
/// (an absolute one used to be written where it pointed).
#[test]
fn what_cannot_be_honoured_is_refused_and_creates_nothing() {
    let e = env("refusals");
    let sb = &e.sb;
    let mut long_host = pod_config(sb, "longhost");
    long_host.hostname = "h".repeat(65);
    let err = run_pod(sb, &long_host).expect_err("a 65-character hostname");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("hostname"), "{}", err.message());
    let mut slash_host = pod_config(sb, "slashhost");
    slash_host.hostname = "a/b".into();
    assert_eq!(
        run_pod(sb, &slash_host)
            .expect_err("a hostname with /")
            .code(),
        Code::InvalidArgument
    );
    let mut confined = pod_config(sb, "confined");
    confined.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            apparmor: Some(named_apparmor()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = run_pod(sb, &confined).expect_err("a pod-level AppArmor profile");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("AppArmor"), "{}", err.message());
    assert!(listed_pods(sb).is_empty(), "no refused pod is listed");
    assert!(
        entries_of(&sb.data_dir().join("state/pods")).is_empty(),
        "no refused pod has a record"
    );

    let pod_cfg = pod_config(sb, "ok");
    let pod = run_pod(sb, &pod_cfg).expect("a well-formed pod");
    let mut named = container_config(&e.image, "named", "true");
    named.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            apparmor: Some(named_apparmor()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = create(sb, &pod, named, &pod_cfg).expect_err("a container AppArmor profile");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("AppArmor"), "{}", err.message());
    let outside = sb.root.join("outside.log");
    let mut absolute = container_config(&e.image, "abs", "echo escaped");
    absolute.log_path = outside.display().to_string();
    let err = create(sb, &pod, absolute, &pod_cfg).expect_err("an absolute log path");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut climbing = container_config(&e.image, "up", "echo escaped");
    climbing.log_path = "../../outside.log".into();
    let err = create(sb, &pod, climbing, &pod_cfg).expect_err("a log path with ..");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        !outside.exists(),
        "nothing was written outside the log directory"
    );
    // An error that quotes a huge input is cut for the client (gRPC-Go
    // refuses header blocks past 16 KiB; a 1000-layer image once made a
    // 48 KB message), and says where the whole message is.
    let mut huge = container_config(&e.image, "huge", "true");
    huge.mounts = vec![Mount {
        container_path: format!("relative/{}", "x".repeat(100_000)),
        host_path: "/tmp".into(),
        ..Default::default()
    }];
    let err = create(sb, &pod, huge, &pod_cfg).expect_err("a huge relative mount path");
    assert_eq!(
        err.code(),
        Code::InvalidArgument,
        "{}",
        &err.message()[..200]
    );
    assert!(err.message().len() <= 4096, "{} bytes", err.message().len());
    assert!(
        err.message()
            .contains("the daemon's log has the whole message"),
        "{}",
        &err.message()[err.message().len().saturating_sub(200)..]
    );
    assert!(
        list_containers(sb, None).is_empty(),
        "no refused container is listed"
    );
    assert!(
        entries_of(&sb.data_dir().join("storage/containers")).is_empty(),
        "no refused container has a root filesystem"
    );
    remove_pod(sb, &pod);
}

/// An image whose config is gone from the store (a damaged store) cannot
/// make containers: without it, the image's USER, Env and Entrypoint would
/// silently become root and nothing. CreateContainer fails, naming the
/// config, and leaves no root filesystem; the pod stays usable.
#[test]
fn an_image_without_its_config_makes_no_container() {
    let e = env("no-config");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "p");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let probe = create(
        sb,
        &pod,
        container_config(&e.image, "probe", "true"),
        &pod_cfg,
    )
    .expect("create with the whole image");
    let image_id = status(sb, &probe).expect("status").image_ref;
    remove_container(sb, &probe);
    let config_blob = sb
        .data_dir()
        .join("storage/blobs/sha256")
        .join(image_id.trim_start_matches("sha256:"));
    std::fs::remove_file(&config_blob).expect("remove the image's config blob");
    let err = create(sb, &pod, container_config(&e.image, "c", "true"), &pod_cfg)
        .expect_err("no config, no container");
    assert!(
        err.message().contains("config"),
        "the error names the config: {err:?}"
    );
    assert_ne!(err.code(), Code::Ok);
    assert!(list_containers(sb, None).is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !entries_of(&sb.data_dir().join("storage/containers")).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the failed create left a root filesystem"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    remove_pod(sb, &pod);
}

#[test]
fn errors_have_the_right_codes_and_leave_nothing() {
    let e = env("errors");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "errs");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let dup = run_pod(sb, &pod_cfg).expect_err("duplicate pod");
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert!(
        dup.message().contains(&pod),
        "names the holder: {}",
        dup.message()
    );
    let mut empty = pod_cfg.clone();
    empty.metadata = None;
    assert_eq!(
        run_pod(sb, &empty).expect_err("no metadata").code(),
        Code::InvalidArgument
    );
    let missing = create(
        sb,
        &pod,
        container_config("127.0.0.1:1/not/pulled:x", "c", "true"),
        &pod_cfg,
    )
    .expect_err("no image");
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        create(
            sb,
            "nonexistent",
            container_config(&e.image, "c", "true"),
            &pod_cfg
        )
        .expect_err("no pod")
        .code(),
        Code::NotFound
    );
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "c", "sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    let taken = create(sb, &pod, container_config(&e.image, "c", "true"), &pod_cfg)
        .expect_err("name taken");
    assert_eq!(taken.code(), Code::AlreadyExists);
    start(sb, &id).expect("start");
    assert_eq!(
        start(sb, &id).expect_err("started twice").code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        stop(sb, &id, -1).expect_err("negative timeout").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        status(sb, "nonexistent").expect_err("unknown").code(),
        Code::NotFound
    );
    let mut bad_mount = container_config(&e.image, "m", "true");
    bad_mount.mounts = vec![Mount {
        container_path: "relative".into(),
        host_path: "/nonexistent".into(),
        ..Default::default()
    }];
    assert_eq!(
        create(sb, &pod, bad_mount, &pod_cfg)
            .expect_err("bad mount")
            .code(),
        Code::InvalidArgument
    );
    let containers = sb.data_dir().join("storage/containers");
    let dirs: Vec<_> = std::fs::read_dir(&containers)
        .expect("list")
        .flatten()
        .collect();
    assert_eq!(dirs.len(), 1, "failed creates left nothing: {dirs:?}");
    remove_container(sb, "nonexistent");
    let image_id = status(sb, &id).expect("status").image_ref;
    remove_image(sb, &image_id)
        .expect("an image in use can be removed (its content stays for the container)");
    let gone = block_on(async {
        let channel = connect(&sb.socket()).await.expect("connect");
        ImageServiceClient::new(channel)
            .image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image_id.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner()
    });
    assert!(gone.image.is_none(), "a removed image is not found");
    let config_blob = sb
        .data_dir()
        .join("storage/blobs/sha256")
        .join(image_id.trim_start_matches("sha256:"));
    assert!(
        config_blob.exists(),
        "its content stays while the container exists"
    );
    let (code, out) = {
        let reply = exec(sb, &id, &["cat", "/etc/passwd"], 10).expect("exec after RemoveImage");
        (reply.exit_code, reply.stdout)
    };
    assert_eq!(code, 0, "the container still reads its image's files");
    assert!(String::from_utf8_lossy(&out).contains("root:"));
    remove_pod(sb, &pod);
    assert!(
        !config_blob.exists(),
        "the content goes with the last container"
    );
    let links = entries_of(&sb.data_dir().join("storage/l"));
    assert!(
        links.is_empty(),
        "the layers' short links go with the layers (they used to dangle): {links:?}"
    );
}

/// RemoveImage of `image`.
fn remove_image(sb: &Sandbox, image: &str) -> Result<(), tonic::Status> {
    block_on(async {
        let channel = connect(&sb.socket()).await.expect("connect");
        ImageServiceClient::new(channel)
            .remove_image(RemoveImageRequest {
                image: Some(ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
            })
            .await
            .map(drop)
    })
}

#[test]
fn running_containers_survive_kill_9_of_the_daemon() {
    let mut e = env("survive");
    let pod_cfg = pod_config(&e.sb, "keep");
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "long", "sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    start(&e.sb, &id).expect("start");
    let info = block_on(async {
        client(&e.sb)
            .await
            .container_status(ContainerStatusRequest {
                container_id: id.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .info
    });
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("info is JSON");
    let pid = info["pid"].as_u64().expect("pid") as u32;
    assert!(process_alive(pid));
    assert_eq!(info["sandboxID"], serde_json::json!(pod), "{info}");
    assert!(
        info["runtimeSpec"]["process"]["args"].is_array(),
        "the OCI spec is in the info: {info}"
    );
    e._daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        e._daemon.wait_exit(Duration::from_secs(15)).success(),
        "graceful stop"
    );
    e._daemon = e.sb.start_daemon();
    assert!(
        process_alive(pid),
        "the container kept running across a graceful restart"
    );
    assert_eq!(
        status(&e.sb, &id).expect("status").state,
        ContainerState::ContainerRunning as i32
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(e.sb.daemon_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    std::thread::sleep(Duration::from_millis(300));
    let daemon = e.sb.start_daemon();
    e._daemon = daemon;
    assert!(
        process_alive(pid),
        "the container kept running while the daemon was down"
    );
    assert_eq!(
        status(&e.sb, &id).expect("status after restart").state,
        ContainerState::ContainerRunning as i32
    );
    // The restarted daemon leases the images of the containers it found:
    // removing the image keeps its content for this container.
    let image_id = status(&e.sb, &id).expect("status").image_ref;
    remove_image(&e.sb, &image_id).expect("RemoveImage of an image a recovered container uses");
    let config_blob =
        e.sb.data_dir()
            .join("storage/blobs/sha256")
            .join(image_id.trim_start_matches("sha256:"));
    assert!(
        config_blob.exists(),
        "the recovered container keeps its image's content"
    );
    stop(&e.sb, &id, 0).expect("stoppable after restart");
    assert!(!process_alive(pid));
    assert_eq!(status(&e.sb, &id).expect("status").exit_code, 137);
    remove_pod(&e.sb, &pod);
    assert!(!config_blob.exists(), "the content goes with the container");
}

/// Runs `script` in a fresh container of `pod` and returns its exit code
/// and stdout (from the CRI log).
#[test]
fn host_network_pid_and_ipc_pods_see_the_host() {
    let e = env("hostns");
    let sb = &e.sb;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("host listener");
    let port_hex = format!("{:04X}", listener.local_addr().expect("addr").port());
    let sleeper = std::process::Command::new("sleep")
        .arg("300")
        .spawn()
        .expect("host process");
    let shm = std::process::Command::new("ipcmk")
        .args(["-M", "4096"])
        .output()
        .expect("ipcmk (util-linux)");
    assert!(
        shm.status.success(),
        "ipcmk: {}",
        String::from_utf8_lossy(&shm.stderr)
    );
    let shm_id: String = String::from_utf8_lossy(&shm.stdout)
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    let (node, pod_mode, container) = (
        NamespaceMode::Node,
        NamespaceMode::Pod,
        NamespaceMode::Container,
    );

    // A host-network pod joins the node's network namespace (where kubelet
    // runs: `ucri nsenter`), not the host's.
    let node_netns = sb.run_ucri(&["nsenter", "--", "readlink", "/proc/self/ns/net"]);
    assert!(node_netns.status.success(), "ucri nsenter readlink");
    let node_netns = String::from_utf8_lossy(&node_netns.stdout)
        .trim()
        .to_owned();
    let host_net = host_pod(sb, "hostnet", node, container, pod_mode);
    let pod = run_pod(sb, &host_net).expect("host network pod");
    let script = format!(
        "test \"$(readlink /proc/self/ns/net)\" = '{node_netns}' && ! grep -q ':{port_hex} 00000000:0000 0A' /proc/net/tcp"
    );
    let (code, _) = run_to_exit(
        &e,
        &pod,
        &host_net,
        container_config(&e.image, "net", &script),
    );
    assert_eq!(
        code, 0,
        "a hostNetwork pod is in the node namespace {node_netns}, not the host's"
    );
    remove_pod(sb, &pod);

    let host_pid = host_pod(sb, "hostpid", pod_mode, node, pod_mode);
    let pod = run_pod(sb, &host_pid).expect("host pid pod");
    let script = format!(
        "test -d /proc/{} && grep -q sleep /proc/{}/comm",
        sleeper.id(),
        sleeper.id()
    );
    let (code, _) = run_to_exit(
        &e,
        &pod,
        &host_pid,
        container_config(&e.image, "pid", &script),
    );
    assert_eq!(code, 0, "a host process is visible in a hostPID pod");
    remove_pod(sb, &pod);

    let host_ipc = host_pod(sb, "hostipc", pod_mode, container, node);
    let pod = run_pod(sb, &host_ipc).expect("host ipc pod");
    let script = format!("grep -qw {shm_id} /proc/sysvipc/shm");
    let (code, _) = run_to_exit(
        &e,
        &pod,
        &host_ipc,
        container_config(&e.image, "ipc", &script),
    );
    assert_eq!(
        code, 0,
        "the host's SysV shared memory segment is visible in a hostIPC pod"
    );
    remove_pod(sb, &pod);

    let own = pod_config(sb, "isolated");
    let pod = run_pod(sb, &own).expect("pod");
    let script = format!("! grep -q ':{port_hex} ' /proc/net/tcp && ! test -d /proc/{} && ! grep -qw {shm_id} /proc/sysvipc/shm", sleeper.id());
    let (code, _) = run_to_exit(&e, &pod, &own, container_config(&e.image, "iso", &script));
    assert_eq!(code, 0, "an ordinary pod sees none of them");
    remove_pod(sb, &pod);
    let _ = std::process::Command::new("ipcrm")
        .args(["-m", &shm_id])
        .status();
    drop(listener);
    let mut sleeper = sleeper;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn the_security_context_and_image_config_shape_the_process() {
    let e = env("secctx");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "sec");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let with = |name: &str, script: &str, f: &dyn Fn(&mut ContainerConfig)| {
        let mut c = container_config(&e.image, name, script);
        f(&mut c);
        run_to_exit(&e, &pod, &pod_cfg, c)
    };
    let sec = |f: &dyn Fn(&mut LinuxContainerSecurityContext)| {
        let mut s = LinuxContainerSecurityContext::default();
        f(&mut s);
        Some(LinuxContainerConfig {
            security_context: Some(s),
            ..Default::default()
        })
    };

    let (_, out) = with("uid", "id -u; id -g; id -G", &|c| {
        c.linux = sec(&|s| {
            s.run_as_user = Some(Int64Value { value: 1000 });
            s.supplemental_groups = vec![2000];
        })
    });
    assert_eq!(
        out.lines().collect::<Vec<_>>()[..2],
        ["1000", "1000"],
        "{out}"
    );
    assert!(out.contains("2000"), "supplemental group: {out}");
    let (_, out) = with("name", "id -un", &|c| {
        c.linux = sec(&|s| s.run_as_username = "app".into())
    });
    assert_eq!(out.trim(), "app");

    let (code, _) = with("ro", "touch /x", &|c| {
        c.linux = sec(&|s| s.readonly_rootfs = true)
    });
    assert_ne!(code, 0, "read-only rootfs rejects writes");
    let (code, _) = with("rw", "touch /x", &|_| {});
    assert_eq!(code, 0);

    let caps = |out: &str| {
        u64::from_str_radix(out.trim().rsplit('\t').next().unwrap_or(""), 16).expect("CapEff hex")
    };
    let (_, default) = with("caps", "grep CapEff /proc/1/status", &|_| {});
    let (_, added) = with("caps-add", "grep CapEff /proc/1/status", &|c| {
        c.linux = sec(&|s| {
            s.capabilities = Some(Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["KILL".into()],
                ..Default::default()
            })
        })
    });
    const NET_ADMIN: u64 = 1 << 12;
    const KILL: u64 = 1 << 5;
    assert!(
        caps(&default) & KILL != 0 && caps(&default) & NET_ADMIN == 0,
        "default set: {default}"
    );
    assert!(
        caps(&added) & NET_ADMIN != 0 && caps(&added) & KILL == 0,
        "add/drop: {added}"
    );

    let (code, _) = with("seccomp", "unshare -m true", &|c| {
        c.linux = sec(&|s| {
            s.seccomp = Some(SecurityProfile {
                profile_type: security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            })
        })
    });
    assert_ne!(code, 0, "RuntimeDefault seccomp blocks unshare");
    let (code, _) = with(
        "unconfined",
        "grep -q 'Seccomp:.0' /proc/self/status",
        &|c| {
            c.linux = sec(&|s| {
                s.seccomp = Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Unconfined as i32,
                    ..Default::default()
                })
            })
        },
    );
    assert_eq!(code, 0, "Unconfined means no filter");
    // /proc/keys is world-readable on the host; masked, it reads empty.
    let (_, out) = with(
        "masked",
        "grep -c ' /proc/keys ' /proc/self/mountinfo; cat /proc/keys | wc -c",
        &|_| {},
    );
    assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "0"], "masked path");

    let host_dir = sb.root.join("volume");
    sb.mkdir_as_user(&host_dir);
    sb.write_user_file(&host_dir.join("data.txt"), "from the host");
    let (code, out) = with("mount", "cat /vol/data.txt; touch /vol/x", &|c| {
        c.mounts = vec![Mount {
            container_path: "/vol".into(),
            host_path: host_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
    });
    assert_eq!(out.trim(), "from the host");
    assert_ne!(code, 0, "read-only bind mount");

    let (_, out) = with("env", "echo $UCRI_TEST $EXTRA; pwd", &|c| {
        c.envs = vec![KeyValue {
            key: "EXTRA".into(),
            value: "cri".into(),
        }];
        c.working_dir = "/tmp".into();
    });
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1 cri", "/tmp"],
        "image env + CRI env, working dir"
    );
    let mut args_only = container_config(&e.image, "args", "");
    args_only.command = vec![];
    args_only.args = vec!["echo from-args".into()];
    let (_, out) = run_to_exit(&e, &pod, &pod_cfg, args_only);
    assert_eq!(
        out.trim(),
        "from-args",
        "args replace Cmd, the image Entrypoint (sh -c) stays"
    );
    remove_pod(sb, &pod);
}

#[test]
fn reopen_container_log_follows_kubelet_rotation() {
    let e = env("reopen");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "logs");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let script = "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done";
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "talker", script),
        &pod_cfg,
    )
    .expect("create");
    start(sb, &id).expect("start");
    let log = status(sb, &id).expect("status").log_path;
    wait_log(&log, "line 3");
    let rotated = format!("{log}.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    block_on(async {
        client(sb)
            .await
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
    })
    .expect("ReopenContainerLog");
    let fresh = wait_log(&log, "stdout F line");
    let first_new: u32 = fresh
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("line number");
    let old = std::fs::read_to_string(&rotated).expect("rotated file");
    let last_old: u32 = old
        .lines()
        .last()
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("line number");
    assert!(
        first_new > last_old,
        "new lines go to the new file ({last_old} then {first_new})"
    );
    stop(sb, &id, 0).expect("stop");
    let err = block_on(async {
        client(sb)
            .await
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            })
            .await
    })
    .expect_err("not running");
    assert_eq!(err.code(), Code::FailedPrecondition);
    remove_pod(sb, &pod);
}

#[test]
fn exec_sync_returns_output_and_exit_code_and_times_out_cleanly() {
    let e = env("exec");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "exec");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "target", "echo ready > /tmp/state; sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    start(sb, &id).expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    while exec(sb, &id, &["cat", "/tmp/state"], 10)
        .map(|r| r.stdout)
        .unwrap_or_default()
        != b"ready\n"
    {
        assert!(
            Instant::now() < deadline,
            "exec never saw the container's file"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = exec(sb, &id, &["sh", "-c", "echo out; echo err >&2; exit 7"], 10).expect("ExecSync");
    assert_eq!(
        (r.exit_code, r.stdout.as_slice(), r.stderr.as_slice()),
        (7, &b"out\n"[..], &b"err\n"[..])
    );
    let r = exec(sb, &id, &["id", "-u"], 0).expect("no timeout");
    assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"0\n"[..]));

    let started = Instant::now();
    let err = exec(sb, &id, &["sleep", "31337.25"], 1).expect_err("times out");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", "sleep 31337.25"])
        .output()
        .expect("pgrep");
    assert!(
        leftover.stdout.is_empty(),
        "the timed-out process is gone: {}",
        String::from_utf8_lossy(&leftover.stdout)
    );

    assert_eq!(
        exec(sb, &id, &[], 1).expect_err("empty command").code(),
        Code::InvalidArgument
    );
    assert_eq!(
        exec(sb, "nonexistent", &["true"], 1)
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    stop(sb, &id, 0).expect("stop");
    assert_eq!(
        exec(sb, &id, &["true"], 1).expect_err("stopped").code(),
        Code::FailedPrecondition
    );
    remove_pod(sb, &pod);
    let leftovers: Vec<_> = std::fs::read_dir(sb.runtime_dir().join("exec"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "exec sessions leave no files: {leftovers:?}"
    );
}

#[test]
fn the_runc_runtime_handler_runs_containers_too() {
    let e = env("runc");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "runc");
    let pod = block_on(async {
        let request = RunPodSandboxRequest {
            config: Some(pod_cfg.clone()),
            runtime_handler: "runc".into(),
        };
        client(sb)
            .await
            .run_pod_sandbox(request)
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
    })
    .expect("RunPodSandbox with the runc handler");
    let (code, out) = run_to_exit(
        &e,
        &pod,
        &pod_cfg,
        container_config(&e.image, "r", "echo via runc; hostname"),
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "via runc\nrunc-host"),
        "runc ran the container in the pod's namespaces"
    );
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "long", "sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    start(sb, &id).expect("start");
    let r = exec(sb, &id, &["echo", "exec via runc"], 10).expect("ExecSync with runc");
    assert_eq!(r.stdout, b"exec via runc\n");
    stop(sb, &id, 0).expect("stop");
    assert_eq!(status(sb, &id).expect("status").exit_code, 137);
    let pods = block_on(async {
        client(sb)
            .await
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
    })
    .expect("list")
    .into_inner()
    .items;
    assert_eq!(pods[0].runtime_handler, "runc");
    let bad = block_on(async {
        let mut other = pod_config(sb, "nohandler");
        other.metadata.as_mut().expect("metadata").uid = "other".into();
        let request = RunPodSandboxRequest {
            config: Some(other),
            runtime_handler: "kata".into(),
        };
        client(sb).await.run_pod_sandbox(request).await
    });
    assert_eq!(
        bad.expect_err("unknown handler").code(),
        Code::InvalidArgument
    );
    remove_pod(sb, &pod);
}

#[test]
fn bind_mounts_follow_each_propagation_mode() {
    let e = env("propagation");
    let sb = &e.sb;
    let vol = sb.root.join("vol");
    sb.mkdir_as_user(&vol.join("sub"));
    sb.mkdir_as_user(&vol.join("fromctr"));
    let v = vol.display().to_string();
    for args in [
        vec!["mount", "--bind", &v, &v],
        vec!["mount", "--make-rshared", &v],
    ] {
        let mut full = vec!["nsenter", "--"];
        full.extend(args);
        let out = sb.run_ucri(&full);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let mut pod_cfg = pod_config(sb, "prop");
    pod_cfg.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let with_mount = |name: &str, propagation: MountPropagation, privileged: bool| {
        let mut c = container_config(&e.image, name, "sleep 300");
        c.mounts = vec![Mount {
            container_path: "/vol".into(),
            host_path: v.clone(),
            propagation: propagation as i32,
            ..Default::default()
        }];
        if privileged {
            c.linux = Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
        let id = create(sb, &pod, c, &pod_cfg).unwrap_or_else(|err| panic!("create {name}: {err}"));
        start(sb, &id).expect("start");
        id
    };
    let private = with_mount("private", MountPropagation::PropagationPrivate, false);
    let slave = with_mount("slave", MountPropagation::PropagationHostToContainer, false);
    let shared = with_mount("shared", MountPropagation::PropagationBidirectional, true);

    let sub = vol.join("sub").display().to_string();
    let out = sb.run_ucri(&["nsenter", "--", "mount", "-t", "tmpfs", "late", &sub]);
    assert!(out.status.success(), "{}", describe(&out));
    let sees_late = |id: &str| {
        exec(
            sb,
            id,
            &["grep", "-q", " /vol/sub ", "/proc/self/mountinfo"],
            10,
        )
        .expect("exec")
        .exit_code
            == 0
    };
    assert!(
        sees_late(&slave),
        "HostToContainer (rslave) sees a mount made on the host after start"
    );
    assert!(sees_late(&shared), "Bidirectional (rshared) sees it too");
    assert!(!sees_late(&private), "Private does not");

    let r = exec(
        sb,
        &shared,
        &["mount", "-t", "tmpfs", "fromctr", "/vol/fromctr"],
        10,
    )
    .expect("exec mount");
    assert_eq!(
        r.exit_code,
        0,
        "privileged container mounts: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let mounts = daemon_mounts(sb);
    assert!(
        mounts.contains(&vol.join("fromctr").display().to_string()),
        "Bidirectional propagates back to the host"
    );
    remove_pod(sb, &pod);
}

#[test]
fn exits_are_recorded_without_anyone_asking_and_pods_filter() {
    let e = env("unasked");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "quiet");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let other = pod_config(sb, "other");
    let other_pod = run_pod(sb, &other).expect("pod");
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "brief", "exit 5"),
        &pod_cfg,
    )
    .expect("create");
    start(sb, &id).expect("start");
    let state_file = sb
        .data_dir()
        .join("state/containers")
        .join(format!("{id}.json"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state_file).expect("state")).expect("json");
        if saved["phase"] == "Exited" {
            assert_eq!(saved["exit_code"], 5);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exit was never recorded: {saved}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = |filter: PodSandboxFilter| {
        block_on(async {
            client(sb)
                .await
                .list_pod_sandbox(ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
        })
        .expect("ListPodSandbox")
        .into_inner()
        .items
    };
    let by_label = list(PodSandboxFilter {
        label_selector: HashMap::from([("app".to_owned(), "other".to_owned())]),
        ..Default::default()
    });
    assert_eq!(
        by_label.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [other_pod.as_str()]
    );
    let by_prefix = list(PodSandboxFilter {
        id: pod[..12].to_owned(),
        ..Default::default()
    });
    assert_eq!(by_prefix.len(), 1);
    stop_pod(sb, &other_pod);
    let ready = list(PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..Default::default()
    });
    assert_eq!(
        ready.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        [pod.as_str()]
    );
    remove_pod(sb, &pod);
    remove_pod(sb, &other_pod);
}

#[test]
fn the_log_size_limit_from_the_config_reaches_conmon() {
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "test/busybox:latest");
    let mut sb = Sandbox::new("logsize");
    sb.write_user_file(
        &sb.config_dir().join("ucri.toml"),
        "[runtime]\nlog_size_max = 4096\n",
    );
    let _daemon = sb.start_daemon();
    let image = registry.image("test/busybox:latest");
    sb.pull(&image);
    let pod_cfg = pod_config(&sb, "big-logs");
    let pod = run_pod(&sb, &pod_cfg).expect("pod");
    let script =
        "i=0; while [ $i -lt 2000 ]; do echo line-$i-padding-padding-padding; i=$((i+1)); done";
    let id = create(
        &sb,
        &pod,
        container_config(&image, "chatty", script),
        &pod_cfg,
    )
    .expect("create");
    start(&sb, &id).expect("start");
    let s = wait_state(&sb, &id, ContainerState::ContainerExited);
    let size = std::fs::metadata(&s.log_path).expect("log").len();
    assert!(
        size <= 8192,
        "the log stays near the 4096-byte limit, not ~100 kB: {size}"
    );
    assert!(
        std::fs::read_to_string(&s.log_path)
            .expect("log")
            .contains("line-1999"),
        "the newest lines are kept"
    );
    remove_pod(&sb, &pod);
}

#[test]
fn containers_of_a_pod_can_share_one_process_namespace() {
    let e = env("sharedpid");
    let sb = &e.sb;
    let (pod_mode, container) = (NamespaceMode::Pod, NamespaceMode::Container);
    let pod_cfg = host_pod(sb, "shared", pod_mode, pod_mode, pod_mode);
    let pod = run_pod(sb, &pod_cfg).expect("RunPodSandbox with a shared PID namespace");
    let ps = pod_status(sb, &pod).expect("status");
    let options = ps
        .status
        .and_then(|s| s.linux)
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .expect("options");
    assert_eq!(options.pid, NamespaceMode::Pod as i32);
    let sleeper = create(
        sb,
        &pod,
        container_config(&e.image, "sleeper", "sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    start(sb, &sleeper).expect("start");
    let script =
        "cat /proc/1/comm; for p in /proc/[0-9]*; do cat $p/comm; done | grep -c '^sleep$'";
    let (code, out) = run_to_exit(
        &e,
        &pod,
        &pod_cfg,
        container_config(&e.image, "looker", script),
    );
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["catatonit", "1"],
        "PID 1 is the pod's init; the sleeper is visible"
    );
    stop_pod(sb, &pod);
    assert_eq!(
        status(sb, &sleeper).expect("status").state,
        ContainerState::ContainerExited as i32
    );
    remove_pod(sb, &pod);

    let isolated_cfg = host_pod(sb, "isolated-pid", pod_mode, container, pod_mode);
    let pod = run_pod(sb, &isolated_cfg).expect("pod");
    let (_, out) = run_to_exit(
        &e,
        &pod,
        &isolated_cfg,
        container_config(&e.image, "alone", "cat /proc/1/comm"),
    );
    // sh -c execs its single command: PID 1 is the container process itself.
    assert_eq!(
        out.trim(),
        "cat",
        "without sharing, the container is PID 1 of its own namespace"
    );
    remove_pod(sb, &pod);
}

#[test]
fn a_restart_removes_what_a_crash_left_half_created() {
    let mut e = env("halfmade");
    let pod_cfg = pod_config(&e.sb, "kept");
    let kept = run_pod(&e.sb, &pod_cfg).expect("a real pod");
    let run = e.sb.runtime_dir();
    let stray_pod = run.join("pods").join("f".repeat(64));
    let stray_bundle = run.join("containers").join("e".repeat(64));
    let pin = stray_pod.join("ns/net");
    let setup = format!(
        "mkdir -p {ns} {bundle} && touch {pin} && unshare --net={pin} true",
        ns = stray_pod.join("ns").display(),
        bundle = stray_bundle.display(),
        pin = pin.display()
    );
    let out = e.sb.run_ucri(&["nsenter", "--", "sh", "-c", &setup]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(daemon_mounts(&e.sb).contains(&pin.display().to_string()));
    e.sb.kill_serving_daemon();
    e._daemon = e.sb.start_daemon();
    assert!(
        !stray_pod.exists() && !stray_bundle.exists(),
        "half-created pod and container removed"
    );
    assert!(
        !daemon_mounts(&e.sb).contains(&pin.display().to_string()),
        "its namespace pin unmounted"
    );
    assert!(
        pod_status(&e.sb, &kept).is_ok(),
        "the real pod is untouched"
    );
    remove_pod(&e.sb, &kept);
}

/// A daemon killed during StartContainer, after `crun create` and before
/// it saved the pids, leaves an OCI container its record does not know.
/// The next daemon deletes it, so that the container starts normally.
/// (Here `crun create` is run by hand, as the daemon would have.)
#[test]
fn a_start_cut_short_by_a_crash_is_created_again_at_the_next_start() {
    let mut e = env("halfstarted");
    let pod_cfg = pod_config(&e.sb, "half");
    let pod = run_pod(&e.sb, &pod_cfg).expect("RunPodSandbox");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "c", "echo started; sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    let run = e.sb.runtime_dir();
    crun_create_by_hand(&e.sb, &id);
    assert!(run.join("oci").join(&id).exists(), "crun has the container");
    e.sb.kill_serving_daemon();
    e._daemon = e.sb.start_daemon();
    start(&e.sb, &id).expect("the container starts after the restart");
    wait_log(&status(&e.sb, &id).expect("status").log_path, "started");
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// Has crun create container `id` from its bundle, in the daemon's
/// namespaces, as conmon would at StartContainer: its process then waits to
/// be started.
fn crun_create_by_hand(sb: &Sandbox, id: &str) {
    let run = sb.runtime_dir();
    let created = format!(
        "crun --root={oci} create --bundle {bundle} {id} </dev/null >/dev/null 2>&1",
        oci = run.join("oci").display(),
        bundle = run.join("containers").join(id).display(),
    );
    let out = sb.run_ucri(&["nsenter", "--", "sh", "-c", &created]);
    assert!(
        out.status.success(),
        "crun create by hand: {}",
        describe(&out)
    );
}

/// A deferred container (CreateContainer left its creation to
/// StartContainer) that crun has after all is deleted from crun when it is
/// removed: its process, waiting to be started, does not outlive it. This
/// is what a daemon killed while conmon ran `crun create` leaves when the
/// create finishes after the next daemon's recovery looked (the chaos test
/// found a `crun` process left so). Here the create is run by hand.
#[test]
fn removing_a_deferred_container_that_crun_has_ends_its_process() {
    let e = env("deferred-rm");
    let pod_cfg = pod_config(&e.sb, "deferred");
    let pod = run_pod(&e.sb, &pod_cfg).expect("RunPodSandbox");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "c", "sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    let run = e.sb.runtime_dir();
    crun_create_by_hand(&e.sb, &id);
    let userns = ns_inode(e.sb.holder_pid(), "user");
    let waiting = || {
        std::fs::read_dir("/proc")
            .expect("proc")
            .flatten()
            .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| process_alive(*pid))
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/user"))
                    .is_ok_and(|l| l.to_string_lossy().contains(&userns.to_string()))
            })
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "crun")
            })
            .count()
    };
    assert_eq!(waiting(), 1, "crun's init waits to be started");
    remove_container(&e.sb, &id);
    // The files go on a thread of their own after the record.
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiting() > 0 || run.join("oci").join(&id).exists() {
        assert!(
            Instant::now() < deadline,
            "the waiting process or crun's state outlived the container"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// The init of a pod's shared PID namespace is signalled only while its
/// pid is still that init: after a restart (or a reboot) the remembered pid
/// may be another process's, and StopPodSandbox leaves that one alone.
#[test]
fn a_remembered_init_pid_that_now_names_another_process_is_not_killed() {
    let mut e = env("reused-pid");
    let pod_mode = NamespaceMode::Pod;
    let pod_cfg = host_pod(&e.sb, "reused", pod_mode, pod_mode, pod_mode);
    let pod = run_pod(&e.sb, &pod_cfg).expect("a pod with a shared PID namespace");
    let state_path = e.sb.data_dir().join(format!("state/pods/{pod}.json"));
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).expect("pod state")).expect("JSON");
    let init = state["init_pid"].as_i64().expect("init_pid") as i32;
    assert!(init > 0, "the pod has an init");
    e.sb.kill_serving_daemon();
    // The init dies (a reboot would end it too) and its pid is taken over,
    // here by a process of the same user.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the pod's init");
    let mut bystander =
        e.sb.command_as_user("sleep")
            .arg("300")
            .spawn()
            .expect("a bystander process");
    state["init_pid"] = serde_json::json!(bystander.id());
    std::fs::write(&state_path, serde_json::to_vec(&state).expect("JSON")).expect("write state");
    std::os::unix::fs::chown(&state_path, Some(e.sb.user.uid), Some(e.sb.user.gid))
        .expect("give the state file back");
    e._daemon = e.sb.start_daemon();
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
    assert!(
        process_alive(bystander.id()),
        "the process that now has the init's old pid is alive"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A truncated container record and a pod record of a newer schema are
/// set aside in `state/quarantine/` at the next start, not read as "gone":
/// the running container keeps running, its writable layer stays, and the
/// Status condition and `ucri info` say what was set aside. (A truncated
/// record used to make the next start kill the container and delete its
/// writable layer.)
#[test]
fn unreadable_state_records_are_quarantined_and_what_they_describe_keeps_running() {
    let mut e = env("quarantine");
    let pod_cfg = pod_config(&e.sb, "kept");
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "runner", "sleep 600"),
        &pod_cfg,
    )
    .expect("create");
    start(&e.sb, &id).expect("start");
    let other_cfg = pod_config(&e.sb, "future");
    let other = run_pod(&e.sb, &other_cfg).expect("second pod");
    let state = e.sb.data_dir().join("state");
    let record = state.join(format!("containers/{id}.json"));
    let bytes = std::fs::read(&record).expect("container record");
    let pid = serde_json::from_slice::<serde_json::Value>(&bytes).expect("JSON")["pid"]
        .as_u64()
        .expect("pid") as u32;
    let upper =
        e.sb.data_dir()
            .join(format!("storage/containers/{id}/upper"));
    assert!(process_alive(pid) && upper.is_dir());
    e.sb.kill_serving_daemon();
    std::fs::write(&record, &bytes[..bytes.len() / 2]).expect("truncate");
    let pod_record = state.join(format!("pods/{other}.json"));
    let mut newer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&pod_record).expect("pod record")).expect("JSON");
    newer["schema"] = serde_json::json!(99);
    std::fs::write(&pod_record, serde_json::to_vec(&newer).expect("JSON")).expect("write");
    e._daemon = e.sb.start_daemon();
    assert!(process_alive(pid), "the container's process still runs");
    assert!(upper.is_dir(), "its writable layer is still there");
    let set_aside: Vec<String> = std::fs::read_dir(state.join("quarantine"))
        .expect("quarantine dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(set_aside.len(), 2, "{set_aside:?}");
    let conditions = block_on(async {
        client(&e.sb)
            .await
            .status(StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner()
            .status
            .expect("status")
            .conditions
    });
    let condition = conditions
        .iter()
        .find(|c| c.r#type == "StateRecordsRead")
        .expect("the StateRecordsRead condition");
    assert!(!condition.status && condition.reason == "StateQuarantined");
    for (what, says) in [
        (&id, "not a readable record"),
        (&other, "newer ucri (schema 99"),
    ] {
        assert!(
            condition.message.contains(what.as_str()) && condition.message.contains(says),
            "{}",
            condition.message
        );
    }
    let info = e.sb.run_ucri(&["info"]);
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("2 unreadable state records"), "{text}");
    assert!(
        pod_status(&e.sb, &pod).is_ok(),
        "the readable pod record was read"
    );
}

/// Records written before schema versions (no `schema`) and by schema 1
/// (no `deferred`, no `start_error`) are read by this ucri as what they
/// meant: the pod is ready, the container runs on and can be stopped and
/// removed, and a record saved again carries the current schema.
#[test]
fn records_of_older_schemas_are_read_and_what_they_describe_keeps_running() {
    let mut e = env("old-records");
    let (pod, id) = sleeper_in_new_pod(&e, "old");
    let state = e.sb.data_dir().join("state");
    let container_record = state.join(format!("containers/{id}.json"));
    let pod_record = state.join(format!("pods/{pod}.json"));
    let read = |path: &std::path::Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).expect("record")).expect("JSON")
    };
    let pid = read(&container_record)["pid"].as_u64().expect("pid") as u32;
    e.sb.kill_serving_daemon();
    // Schema 1: the container as CreateContainer created it in crun.
    let mut older = read(&container_record);
    let fields = older.as_object_mut().expect("an object");
    assert_eq!(fields.remove("schema"), Some(serde_json::json!(2)));
    assert_eq!(fields.remove("deferred"), Some(serde_json::json!(false)));
    fields.remove("start_error");
    fields.insert("schema".into(), serde_json::json!(1));
    std::fs::write(&container_record, serde_json::to_vec(&older).expect("JSON")).expect("write");
    // Before versions: no schema at all.
    let mut oldest = read(&pod_record);
    oldest.as_object_mut().expect("an object").remove("schema");
    std::fs::write(&pod_record, serde_json::to_vec(&oldest).expect("JSON")).expect("write");
    e._daemon = e.sb.start_daemon();
    assert!(process_alive(pid), "the container's process still runs");
    assert_eq!(
        status(&e.sb, &id).expect("status").state,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(
        pod_status(&e.sb, &pod)
            .expect("pod status")
            .status
            .expect("status")
            .state,
        PodSandboxState::SandboxReady as i32
    );
    assert!(
        !state.join("quarantine").exists()
            || std::fs::read_dir(state.join("quarantine"))
                .expect("dir")
                .next()
                .is_none(),
        "nothing was set aside"
    );
    stop(&e.sb, &id, 10).expect("stop");
    assert_eq!(
        read(&container_record)["schema"],
        serde_json::json!(2),
        "saved again in the current schema"
    );
    remove_container(&e.sb, &id);
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
}

/// A kill in the middle of RemoveContainer can leave a root filesystem
/// without its record while the container's record stays: the next start
/// finishes that removal instead of refusing to start (it failed with "no
/// root filesystem for container …", for good; the chaos test found it).
#[test]
fn a_root_filesystem_whose_removal_was_interrupted_does_not_stop_the_start() {
    let mut e = env("half-removed");
    let pod_cfg = pod_config(&e.sb, "pod");
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "gone", "true"),
        &pod_cfg,
    )
    .expect("create");
    let rootfs = e.sb.data_dir().join(format!("storage/containers/{id}"));
    e.sb.kill_serving_daemon();
    e._daemon.wait_exit(Duration::from_secs(10));
    std::fs::remove_file(rootfs.join("rootfs.json")).expect("the record goes first");
    e._daemon = e.sb.start_daemon();
    assert!(!rootfs.exists(), "the interrupted removal was finished");
    remove_container(&e.sb, &id);
    remove_pod(&e.sb, &pod);
}

/// Every process in the user namespace of inode `userns` (the daemon's:
/// conmon, containers, the uplink helper, pod inits, the holder).
fn namespace_members(userns: u64) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_alive(*pid))
        .filter(|pid| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/{pid}/ns/user"))
                .map(|m| m.ino())
                .ok()
                == Some(userns)
        })
        .collect()
}

/// What a reboot does to a rootless node, short of rebooting: every
/// process of the daemon's user namespace ends (the holder too, so its
/// mount namespace and namespace pins go), and the runtime dir (a tmpfs at
/// /run/user/UID) is emptied. The data dir stays.
fn as_if_rebooted(e: &mut Env) {
    let holder = e.sb.holder_pid();
    let members = namespace_members(ns_inode(holder, "user"));
    e.sb.kill_serving_daemon();
    e._daemon.wait_exit(Duration::from_secs(10));
    for pid in members.iter().chain([&holder]) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while members.iter().chain([&holder]).any(|p| process_alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "the namespace's processes did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(e.sb.runtime_dir()).expect("empty the runtime dir");
}

/// After a reboot (or an emptied runtime dir) the state records outlive
/// what they point at: containers read as exited (255, with the reason in
/// the status message), pods as not ready, and both can be stopped and
/// removed without the OCI runtime state that is gone; the node then runs
/// new pods. (Stop and remove used to fail for good on
/// `…/oci/<id>/status: No such file or directory` until `system reset`.)
#[test]
fn after_a_reboot_containers_read_as_exited_and_can_be_removed() {
    let mut e = env("rebooted");
    let pod_cfg = pod_config(&e.sb, "before");
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "runner", "sleep 600"),
        &pod_cfg,
    )
    .expect("create");
    start(&e.sb, &id).expect("start");
    as_if_rebooted(&mut e);
    e._daemon = e.sb.start_daemon();
    let after = status(&e.sb, &id).expect("ContainerStatus after the reboot");
    assert_eq!(after.state, ContainerState::ContainerExited as i32);
    assert_eq!(after.exit_code, 255);
    assert!(
        after.message.contains("runtime directory was emptied"),
        "{}",
        after.message
    );
    let pod_after = pod_status(&e.sb, &pod)
        .expect("PodSandboxStatus after the reboot")
        .status
        .expect("status");
    assert_eq!(pod_after.state, PodSandboxState::SandboxNotready as i32);
    stop(&e.sb, &id, 0).expect("StopContainer of a lost container");
    stop_pod(&e.sb, &pod);
    remove_container(&e.sb, &id);
    remove_pod(&e.sb, &pod);
    assert!(list_containers(&e.sb, None).is_empty());
    let rootfs_left: Vec<_> = std::fs::read_dir(e.sb.data_dir().join("storage/containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(rootfs_left.is_empty(), "{rootfs_left:?}");
    let new_cfg = pod_config(&e.sb, "after");
    let new_pod = run_pod(&e.sb, &new_cfg).expect("a new pod after the reboot");
    let (code, out) = run_to_exit(
        &e,
        &new_pod,
        &new_cfg,
        container_config(&e.image, "hello", "echo hello again"),
    );
    assert_eq!((code, out.trim()), (0, "hello again"));
    remove_pod(&e.sb, &new_pod);
}

#[test]
fn system_reset_ends_every_container_and_pod_init() {
    let mut e = env("reset");
    let (pod_mode, _) = (NamespaceMode::Pod, NamespaceMode::Container);
    let pod_cfg = host_pod(&e.sb, "doomed", pod_mode, pod_mode, pod_mode);
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod with an init");
    let running = create(
        &e.sb,
        &pod,
        container_config(&e.image, "running", "sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    start(&e.sb, &running).expect("start");
    create(
        &e.sb,
        &pod,
        container_config(&e.image, "created", "sleep 300"),
        &pod_cfg,
    )
    .expect("created only");
    let holder = e.sb.holder_pid();
    let userns = ns_inode(holder, "user");
    let members = || -> Vec<u32> {
        namespace_members(userns)
            .into_iter()
            .filter(|pid| *pid != holder)
            .collect()
    };
    e._daemon.signal(nix::sys::signal::Signal::SIGTERM);
    e._daemon.wait_exit(Duration::from_secs(15));
    assert!(
        members().len() >= 3,
        "containers, conmon and the pod init run without the daemon"
    );
    let out = e.sb.run_ucri(&["system", "reset", "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    std::thread::sleep(Duration::from_millis(200));
    let left = members();
    assert!(
        left.is_empty(),
        "reset ended every process of the namespace: {left:?}"
    );
    assert!(!process_alive(holder));
}

/// The `sleep 3077` processes (this test's own length: other tests' daemons
/// have user namespaces of their own too) whose user namespace is not
/// `userns`.
fn sleepers_outside(userns: u64) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| comm(*pid) == "sleep")
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/user")).is_ok_and(|m| m.ino() != userns)
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("3077"))
        })
        .collect()
}

/// The processes of a pod with a user namespace of its own live in a user
/// namespace made inside the daemon's: `system reset` ends them too (it
/// used to end only the daemon's own namespace's processes, so these ran on
/// after the reset, and their copies of the mounts kept the data dir busy).
#[test]
fn system_reset_ends_the_containers_of_pods_with_their_own_user_namespace() {
    let mut e = env_as("reset-userns", user_named("ucri-critest"), "");
    let mut pod_cfg = pod_config(&e.sb, "own-ids");
    pod_cfg.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Container as i32,
                userns_options: Some(UserNamespace {
                    mode: NamespaceMode::Pod as i32,
                    uids: vec![IdMapping {
                        host_id: 65536,
                        container_id: 0,
                        length: 65536,
                    }],
                    gids: vec![IdMapping {
                        host_id: 65536,
                        container_id: 0,
                        length: 65536,
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&e.sb, &pod_cfg).expect("a pod with its own user namespace");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "sleeper", "exec sleep 3077"),
        &pod_cfg,
    )
    .expect("create");
    start(&e.sb, &id).expect("start");
    let sleeper = status(&e.sb, &id).expect("status");
    assert_eq!(sleeper.state, ContainerState::ContainerRunning as i32);
    let holder = e.sb.holder_pid();
    let daemon_userns = ns_inode(holder, "user");
    // Running means crun started the process; `sh` may not have become
    // `sleep` yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut in_pod_userns = sleepers_outside(daemon_userns);
    while in_pod_userns.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        in_pod_userns = sleepers_outside(daemon_userns);
    }
    assert!(
        !in_pod_userns.is_empty(),
        "the container's sleep runs in a user namespace of its own"
    );
    e._daemon.signal(nix::sys::signal::Signal::SIGTERM);
    e._daemon.wait_exit(Duration::from_secs(15));
    let out = e.sb.run_ucri(&["system", "reset", "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_all_end(
        &in_pod_userns,
        "the pod's own user namespace after system reset",
    );
    assert!(!process_alive(holder));
}

/// The process name of `pid` (empty once it is gone).
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

/// Kills the daemon and empties the runtime dir under its running
/// namespaces (a tmpfs cleaned under a live node, not a reboot): returns
/// the holder and the other processes of its user namespace, which lost
/// their records with it.
fn empty_the_runtime_dir_under_live_namespaces(e: &mut Env) -> (u32, Vec<u32>) {
    let holder = e.sb.holder_pid();
    e.sb.kill_serving_daemon();
    e._daemon.wait_exit(Duration::from_secs(10));
    let members: Vec<u32> = namespace_members(ns_inode(holder, "user"))
        .into_iter()
        .filter(|pid| *pid != holder)
        .collect();
    assert!(
        members.iter().any(|pid| comm(*pid) == "slirp4netns"),
        "the uplink's slirp4netns runs in the namespace: {:?}",
        members.iter().map(|p| comm(*p)).collect::<Vec<_>>()
    );
    std::fs::remove_dir_all(e.sb.runtime_dir()).expect("empty the runtime dir");
    (holder, members)
}

/// Waits (10 s at most) until none of `pids` runs.
fn assert_all_end(pids: &[u32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<(u32, String)> = pids
            .iter()
            .filter(|p| process_alive(**p))
            .map(|p| (*p, comm(*p)))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still running {left:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A runtime dir emptied while the daemon's namespaces live takes the
/// holder's record with it. The next daemon start finds the old holder by
/// the runtime dir it serves and ends it with everything of its namespace
/// (container, pod init, the uplink's slirp4netns) before it makes a new
/// one; so does `system reset`. (Both used to make a new holder and leave
/// the old one, with slirp4netns, running for good.)
#[test]
fn an_emptied_runtime_dir_leaves_no_orphaned_holder_or_slirp4netns() {
    let mut e = env("emptied");
    let pod_cfg = pod_config(&e.sb, "left");
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod");
    let id = create(
        &e.sb,
        &pod,
        container_config(&e.image, "runner", "sleep 600"),
        &pod_cfg,
    )
    .expect("create");
    start(&e.sb, &id).expect("start");

    let (holder, members) = empty_the_runtime_dir_under_live_namespaces(&mut e);
    e._daemon = e.sb.start_daemon();
    assert_all_end(&members, "after a daemon start");
    assert_all_end(&[holder], "the old holder after a daemon start");
    assert_ne!(e.sb.holder_pid(), holder, "a new holder serves");
    let after = status(&e.sb, &id).expect("ContainerStatus");
    assert_eq!(after.state, ContainerState::ContainerExited as i32);
    stop_pod(&e.sb, &pod);
    remove_container(&e.sb, &id);
    remove_pod(&e.sb, &pod);

    let (holder, members) = empty_the_runtime_dir_under_live_namespaces(&mut e);
    let out = e.sb.run_ucri(&["system", "reset", "--force"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_all_end(&members, "after system reset");
    assert_all_end(&[holder], "the old holder after system reset");
}

fn image_mount(image: &str, path: &str, sub_path: &str) -> Mount {
    Mount {
        container_path: path.into(),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

/// Kubernetes 1.36 fields kubelet sends: image volumes with a sub-path
/// (GA in 1.36) and a container's own stop signal take effect; bad ones are
/// refused and leave nothing. (The pod CIDR: tests/network.rs.)
#[test]
fn image_volumes_with_sub_paths_and_stop_signals_take_effect() {
    let e = env("cri136");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "k136");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let mut volumes = container_config(
        &e.image,
        "volumes",
        "cat /vol/data/keep.txt /sub/keep.txt && test ! -e /sub/data && ! touch /vol/x 2>/dev/null && echo volumes-ok",
    );
    volumes.mounts = vec![
        image_mount(&e.image, "/vol", ""),
        image_mount(&e.image, "/sub", "data"),
    ];
    let (code, out) = run_to_exit(&e, &pod, &pod_cfg, volumes);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("keep\nkeep\nvolumes-ok"),
        "the image, and its sub-path, read-only: {out}"
    );

    let mut bad = container_config(&e.image, "bad-sub", "true");
    bad.mounts = vec![image_mount(&e.image, "/vol", "../../etc")];
    let refused = create(sb, &pod, bad.clone(), &pod_cfg).expect_err("an escaping sub-path");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    bad.mounts = vec![image_mount(&e.image, "/vol", "no/such/dir")];
    let refused = create(sb, &pod, bad.clone(), &pod_cfg).expect_err("a missing sub-path");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    bad.mounts = vec![image_mount("127.0.0.1:1/not/pulled:x", "/vol", "")];
    let refused = create(sb, &pod, bad, &pod_cfg).expect_err("an image not pulled");
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let containers = sb.data_dir().join("storage/containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .expect("list")
        .flatten()
        .map(|d| d.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the refused creates left no root filesystem or volume: {left:?}"
    );

    let mut graceful = container_config(
        &e.image,
        "stop-signal",
        "trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done",
    );
    graceful.stop_signal = 999;
    let refused = create(sb, &pod, graceful.clone(), &pod_cfg).expect_err("an unknown signal");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    graceful.stop_signal = Signal::Sigusr1 as i32;
    let id = create(sb, &pod, graceful, &pod_cfg).expect("create");
    start(sb, &id).expect("start");
    let log = status(sb, &id).expect("status").log_path;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("ready")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        status(sb, &id).expect("status").stop_signal,
        Signal::Sigusr1 as i32
    );
    let started = std::time::Instant::now();
    stop(sb, &id, 30).expect("stop");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "USR1 ended it, no SIGKILL after 30 s"
    );
    let stopped = status(sb, &id).expect("status");
    assert_eq!(stopped.exit_code, 0, "the trap exited 0");
    assert!(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("got-usr1"));
    remove_pod(sb, &pod);
    let left = std::fs::read_dir(&containers).expect("list").count();
    assert_eq!(left, 0, "image volumes go with their container");
}

/// A pod with a user namespace of its own (kubelet's hostUsers: false):
/// its containers see exactly the requested mapping (ids of the daemon's
/// namespace, which needs a range that holds them: ucri-critest has one),
/// root inside is not the daemon's root, and the pod's network works; modes
/// and mappings that cannot be are refused and leave nothing.
#[test]
fn a_pod_with_its_own_user_namespace_runs_with_the_requested_mapping() {
    let e = env_as("userns", user_named("ucri-critest"), "");
    let sb = &e.sb;
    let userns = |mode: NamespaceMode, mappings: Vec<IdMapping>| {
        let mut config = pod_config(sb, &format!("userns-{}", mappings.len()));
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    userns_options: Some(UserNamespace {
                        mode: mode as i32,
                        uids: mappings.clone(),
                        gids: mappings,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        config
    };
    let mapping = |host_id, length| IdMapping {
        host_id,
        container_id: 0,
        length,
    };
    let pod_cfg = userns(NamespaceMode::Pod, vec![mapping(65536, 65536)]);
    let pod = run_pod(sb, &pod_cfg).expect("a pod with its own user namespace");
    let (code, out) = run_to_exit(
        &e,
        &pod,
        &pod_cfg,
        container_config(
            &e.image,
            "ids",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; ip -o addr show lo | grep -c 127.0.0.1; \
             touch /etc/written-by-pod-root && stat -c '%u:%g' /etc/passwd /etc/written-by-pod-root",
        ),
    );
    assert_eq!(code, 0, "{out}");
    let fields: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(fields[0], ["0", "65536", "65536"], "uid_map: {out}");
    assert_eq!(fields[1], ["0", "65536", "65536"], "gid_map: {out}");
    assert_eq!(fields[2], ["0"], "root inside: {out}");
    assert_eq!(
        fields[3],
        ["1"],
        "loopback up in the pod's network namespace: {out}"
    );
    assert_eq!(
        fields[4],
        ["0:0"],
        "the image's root files belong to the pod's root: {out}"
    );
    assert_eq!(fields[5], ["0:0"], "and so does what it writes: {out}");
    remove_pod(sb, &pod);

    for (mode, maps, what) in [
        (NamespaceMode::Container, vec![], "CONTAINER mode"),
        (NamespaceMode::Target, vec![], "TARGET mode"),
        (
            NamespaceMode::Pod,
            vec![mapping(65536, 10), mapping(131072, 10)],
            "two mappings",
        ),
        (
            NamespaceMode::Pod,
            vec![mapping(1 << 30, 65536)],
            "ids the daemon does not have",
        ),
    ] {
        let refused = run_pod(sb, &userns(mode, maps)).expect_err(what);
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
    }
    let pods = std::fs::read_dir(sb.runtime_dir().join("pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pods, 0, "refused pods leave nothing");
}

/// ExecSync output is capped (runtime.exec_sync_output_max, 4 MiB a stream
/// by default): 1 GB of output come back as the first 4 MiB, stderr says
/// it was truncated, and the daemon's memory stays bounded by the cap, not
/// by the output.
#[test]
fn exec_sync_output_is_capped_and_memory_stays_bounded() {
    let e = env("exec-cap");
    let sb = &e.sb;
    let (pod, id) = sleeper_in_new_pod(&e, "cap");
    let before = peak_rss_kib(sb.daemon_pid());
    let reply = block_on(async {
        ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient::new(
            connect(&sb.socket()).await.expect("connect"),
        )
        .max_decoding_message_size(16 << 20)
        .exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "yes $(printf %0999d 0) | head -c 1000000000".into(),
            ],
            timeout: 120,
        })
        .await
        .expect("ExecSync")
        .into_inner()
    });
    assert_eq!(reply.exit_code, 0);
    assert_eq!(reply.stdout.len(), 4 << 20, "the first 4 MiB");
    assert!(reply.stdout.starts_with(b"0000"), "from the start");
    let stderr = String::from_utf8_lossy(&reply.stderr);
    assert!(
        stderr.contains("output truncated at 4194304 bytes"),
        "{stderr}"
    );
    let after = peak_rss_kib(sb.daemon_pid());
    eprintln!("daemon peak RSS: {before} KiB before, {after} KiB after 1 GB of ExecSync output");
    assert!(
        after < before + 96 * 1024,
        "the daemon's peak RSS grew from {before} to {after} KiB for 1 GB of output"
    );
    remove_pod(sb, &pod);
}

/// An ExecSync whose caller goes away (kubelet's probe deadline, a ^C'd
/// crictl) stops its command: without a timeout of its own the process
/// would otherwise run on, with its conmon, for as long as it likes.
#[test]
fn a_cancelled_exec_sync_kills_its_command() {
    let e = env("exec-cancel");
    let sb = &e.sb;
    let (pod, id) = sleeper_in_new_pod(&e, "cancel");
    let marker = "sleep 3171";
    let gave_up = block_on(async {
        let mut rt = client(sb).await;
        let call = rt.exec_sync(ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["sh".into(), "-c".into(), format!("exec {marker}")],
            timeout: 0,
        });
        tokio::time::timeout(Duration::from_secs(3), call)
            .await
            .is_err()
    });
    assert!(gave_up, "the exec ran (it sleeps for an hour)");
    let deadline = Instant::now() + Duration::from_secs(15);
    let left = |needle: &str| processes_naming(needle);
    let sessions_dir = sb.runtime_dir().join("exec");
    // The session's directory goes a moment after its processes: the
    // cancelled call removes it once it has reaped them.
    while (!left(marker).is_empty()
        || !left("--exec-process-spec").is_empty()
        || !dir_entries(&sessions_dir).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        left(marker).is_empty(),
        "the command runs on: {:?}",
        left(marker)
    );
    assert!(
        left("--exec-process-spec").is_empty(),
        "its conmon runs on: {:?}",
        left("--exec-process-spec")
    );
    let sessions = dir_entries(&sessions_dir);
    assert!(sessions.is_empty(), "exec sessions left: {sessions:?}");
    let out = exec(sb, &id, &["echo", "still here"], 10).expect("a later ExecSync");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
    remove_pod(sb, &pod);
}

/// State and writable layers are private to the daemon's user: the data dir
/// is 0700, state files 0600, and another local user cannot read a
/// container's environment or the files it writes.
#[test]
fn state_and_layers_are_private_to_the_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    require(running_as_root(), "root, to act as a second local user");
    let e = env("private");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "secret");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let mut config = container_config(
        &e.image,
        "c",
        "echo hidden > /tmp/written && exec sleep 600",
    );
    config.envs = vec![KeyValue {
        key: "API_TOKEN".into(),
        value: b"s3cr3t".to_vec(),
    }];
    let id = create(sb, &pod, config, &pod_cfg).expect("create");
    start(sb, &id).expect("start");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    // Traversable but not listable: crun reaches root filesystems from a
    // pod's own user namespace. Below it, what holds data is 0700.
    assert_eq!(mode(&sb.data_dir()), 0o711, "the data dir");
    assert_eq!(mode(&sb.data_dir().join("state")), 0o700, "the state dir");
    let state = sb.data_dir().join(format!("state/containers/{id}.json"));
    assert_eq!(mode(&state), 0o600, "the container's state");
    let container_dir = sb.data_dir().join(format!("storage/containers/{id}"));
    assert_eq!(mode(&container_dir), 0o700, "the container's dir");
    for dir in ["blobs", "layers", "images"] {
        assert_eq!(
            mode(&sb.data_dir().join("storage").join(dir)),
            0o700,
            "storage/{dir}"
        );
    }
    let written = container_dir
        .join("upper/tmp/written")
        .display()
        .to_string();
    let other = user_named(NOSUBID_USER);
    let snoop = |args: &[&str]| {
        std::process::Command::new(args[0])
            .args(&args[1..])
            .uid(other.uid)
            .gid(other.gid)
            .output()
            .expect("run as another user")
    };
    let state_path = state.display().to_string();
    let read = snoop(&["cat", &state_path]);
    assert!(!read.status.success() && !String::from_utf8_lossy(&read.stdout).contains("s3cr3t"));
    let data = sb.data_dir().display().to_string();
    let grep = snoop(&["grep", "-rl", "hidden", &data]);
    assert!(
        grep.stdout.is_empty(),
        "another user finds nothing under {data}"
    );
    let read = snoop(&["cat", &written]);
    assert!(
        !read.status.success(),
        "nor reads what the container wrote, knowing its id"
    );
    remove_pod(sb, &pod);
}

/// CreateContainer takes the pod's settings from the pod as it was created:
/// a request whose sandbox config says otherwise (another log directory, a
/// privileged pod) changes nothing.
#[test]
fn create_container_uses_the_stored_pod_not_the_requests_copy() {
    let e = env("stored-pod");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "stored");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let mut forged = pod_cfg.clone();
    let elsewhere = sb.root.join("elsewhere");
    forged.log_directory = elsewhere.display().to_string();
    forged.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = create(sb, &pod, container_config(&e.image, "c", "true"), &forged).expect("create");
    let log = status(sb, &id).expect("status").log_path;
    assert!(
        log.starts_with(&pod_cfg.log_directory),
        "the pod's own log directory: {log}"
    );
    assert!(
        !elsewhere.exists(),
        "nothing written where the request pointed"
    );
    // The request's copy says the pod is privileged; the pod is not, so a
    // privileged container is refused and nothing of it is made.
    let mut privileged = container_config(&e.image, "p", "true");
    privileged
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .privileged = true;
    let before = list_containers(sb, None).len();
    let refused = create(sb, &pod, privileged, &forged).expect_err("a privileged container");
    assert!(
        refused.message().contains("not privileged"),
        "refused for the stored pod's settings: {refused}"
    );
    assert_eq!(
        list_containers(sb, None).len(),
        before,
        "nothing was created"
    );
    remove_pod(sb, &pod);
}

/// Zombie children of `pid` (state Z in /proc/*/stat).
fn zombies_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let after = stat.rsplit_once(") ").map(|(_, rest)| rest).unwrap_or("");
            let mut fields = after.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(pid.to_string().as_str())
        })
        .collect()
}

/// Processes whose command line names `id` (conmon and crun take the
/// container id as an argument; the container's own process does not).
fn processes_naming(id: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(id))
        .collect()
}

/// A start that the OCI runtime refuses (its program does not exist) fails
/// StartContainer, leaves the container exited with containerd's code 128
/// and reason `StartError`, and no conmon zombie behind.
#[test]
fn a_failed_start_leaves_no_conmon_zombie_and_reads_as_a_start_error() {
    let e = env("lc-zombie");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "zombie");
    let pod = run_pod(sb, &pod_cfg).expect("RunPodSandbox");
    let daemon = sb.daemon_pid();
    for n in 0..3 {
        let mut config = container_config(&e.image, &format!("bad{n}"), "true");
        config.command = vec!["/no/such/program".into()];
        config.args = Vec::new();
        let id = create(sb, &pod, config, &pod_cfg).expect("CreateContainer");
        let err = start(sb, &id).expect_err("no such program");
        assert!(err.message().contains("/no/such/program"), "{err:?}");
        let failed = status(sb, &id).expect("status");
        assert_eq!(failed.state, ContainerState::ContainerExited as i32);
        assert_eq!(
            (failed.exit_code, failed.reason.as_str()),
            (128, "StartError")
        );
        assert!(failed.message.contains("/no/such/program"), "{failed:?}");
        let again = start(sb, &id).expect_err("a failed container does not start again");
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
        remove_container(sb, &id);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let zombies = zombies_of(daemon);
        if zombies.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon keeps zombie children after failed starts: {zombies:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

/// CreateContainer only prepares (root filesystem, bundle): no conmon and
/// no OCI container exist until StartContainer, as in containerd. Stopping
/// a container that never started leaves it created, removing it works,
/// and starting one after its pod stopped is refused.
#[test]
fn create_spawns_nothing_and_start_creates_and_runs_the_container() {
    let e = env("lc-deferred");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "deferred");
    let pod = run_pod(sb, &pod_cfg).expect("RunPodSandbox");
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "c", "echo started; sleep 300"),
        &pod_cfg,
    )
    .expect("create");
    let created = status(sb, &id).expect("status");
    assert_eq!(created.state, ContainerState::ContainerCreated as i32);
    assert!(created.created_at > 0, "{created:?}");
    assert_eq!(
        processes_naming(&id),
        Vec::<String>::new(),
        "nothing runs before the start"
    );

    start(sb, &id).expect("start");
    wait_log(&status(sb, &id).expect("status").log_path, "started");
    let monitors = processes_naming(&id);
    assert!(
        monitors.iter().any(|p| p.contains("conmon")),
        "conmon watches it: {monitors:?}"
    );
    assert_eq!(
        wait_state(sb, &id, ContainerState::ContainerRunning).exit_code,
        0
    );

    let never = create(
        sb,
        &pod,
        container_config(&e.image, "never", "true"),
        &pod_cfg,
    )
    .expect("create a second");
    stop(sb, &never, 0).expect("stopping a container that never started");
    assert_eq!(
        status(sb, &never).expect("status").state,
        ContainerState::ContainerCreated as i32,
        "nothing ran, so it stays created"
    );
    let late = create(
        sb,
        &pod,
        container_config(&e.image, "late", "true"),
        &pod_cfg,
    )
    .expect("create a third");
    stop_pod(sb, &pod);
    let refused = start(sb, &late).expect_err("its pod is stopped");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    for c in [&never, &late, &id] {
        remove_container(sb, c);
        assert!(status(sb, c).is_err(), "{c} is gone");
    }
    remove_pod(sb, &pod);
}

#[test]
fn nul_bytes_and_huge_names_are_invalid_arguments_not_internal_errors() {
    let e = env("lc-names");
    let sb = &e.sb;
    let pods_before = sb.runtime_dir().join("pods");
    // A refusal of bad input names the input, not where ucri keeps things.
    let names_no_store = |err: &tonic::Status| {
        let dirs = [sb.data_dir(), sb.runtime_dir()].map(|d| d.display().to_string());
        assert!(
            !dirs.iter().any(|d| err.message().contains(d.as_str())),
            "the message shows a store path: {}",
            err.message()
        );
    };
    for bad in [
        "web\0x".to_owned(),
        "n".repeat(1 << 20),
        "line\nbreak".to_owned(),
    ] {
        let mut config = pod_config(sb, "names");
        config.metadata.as_mut().expect("metadata").name = bad.clone();
        let err = run_pod(sb, &config).expect_err("a bad pod name");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().len() < 1024, "the error stays short");
        names_no_store(&err);
    }
    assert!(
        std::fs::read_dir(&pods_before).map_or(true, |d| d.count() == 0),
        "refused pods left nothing"
    );
    let pod_cfg = pod_config(sb, "names");
    let pod = run_pod(sb, &pod_cfg).expect("RunPodSandbox");
    let mut config = container_config(&e.image, "c\0d", "true");
    config.metadata.as_mut().expect("metadata").name = "c\0d".into();
    let err = create(sb, &pod, config, &pod_cfg).expect_err("a NUL in the container name");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    names_no_store(&err);
    let mut config = container_config(&e.image, "huge", "true");
    config.metadata.as_mut().expect("metadata").name = "c".repeat(1 << 20);
    let err = create(sb, &pod, config, &pod_cfg).expect_err("a 1 MiB container name");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().len() < 1024, "the error stays short");
    names_no_store(&err);

    // A NUL anywhere else reaches a path, an argument or the environment.
    type Spoil = fn(&mut ContainerConfig);
    let spoiled: [(&str, Spoil); 6] = [
        ("log path", |c| c.log_path = "c\0.log".into()),
        ("argument", |c| c.args = vec!["a\0b".into()]),
        ("environment", |c| {
            c.envs = vec![KeyValue {
                key: "K".into(),
                value: b"v\0w".to_vec(),
            }]
        }),
        ("mount", |c| {
            c.mounts = vec![Mount {
                container_path: "/m".into(),
                host_path: "/tmp\0x".into(),
                ..Default::default()
            }]
        }),
        ("working dir", |c| c.working_dir = "/w\0".into()),
        ("annotation", |c| {
            c.annotations = HashMap::from([("a".to_owned(), "b\0c".to_owned())])
        }),
    ];
    for (what, spoil) in spoiled {
        let mut config = container_config(&e.image, "spoiled", "true");
        spoil(&mut config);
        let err = create(sb, &pod, config, &pod_cfg).expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains("NUL"), "{what}: {}", err.message());
        names_no_store(&err);
    }
    assert!(
        list_containers(sb, None).is_empty(),
        "no refused container is listed"
    );
    let mut bad_logs = pod_config(sb, "badlogs");
    bad_logs.log_directory = format!("{}\0x", bad_logs.log_directory);
    let err = run_pod(sb, &bad_logs).expect_err("a NUL in the log directory");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let mut bad_annotation = pod_config(sb, "badannotation");
    bad_annotation.annotations = HashMap::from([("a\0".to_owned(), "b".to_owned())]);
    let err = run_pod(sb, &bad_annotation).expect_err("a NUL in an annotation");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
    assert!(
        std::fs::read_dir(&pods_before).map_or(true, |d| d.count() == 0),
        "refused pods left nothing"
    );
}

/// A SIGTERM sent before the container's init installed its handler would
/// be discarded by the kernel (an init ignores signals it does not handle),
/// and the stop would wait out its whole grace period for a SIGKILL. The
/// stop waits for the handler instead: this init traps TERM only after two
/// seconds, and a stop right after the start still ends it by its trap.
#[test]
fn a_stop_right_after_start_reaches_an_init_that_installs_its_handler_late() {
    let e = env("late-trap");
    let sb = &e.sb;
    let pod_cfg = pod_config(sb, "late-trap");
    let pod = run_pod(sb, &pod_cfg).expect("pod");
    let id = create(
        sb,
        &pod,
        container_config(
            &e.image,
            "late",
            "sleep 2; trap 'exit 0' TERM; while :; do sleep 0.1; done",
        ),
        &pod_cfg,
    )
    .expect("create");
    start(sb, &id).expect("start");
    let began = Instant::now();
    stop(sb, &id, 30).expect("stop");
    let took = began.elapsed();
    let s = status(sb, &id).expect("status");
    assert_eq!(
        s.exit_code, 0,
        "the init's own TERM trap ended it (137 is the SIGKILL after a lost TERM)"
    );
    assert!(
        took < Duration::from_secs(15),
        "stopped by the trap, not by the grace period's end: {took:?}"
    );
    remove_pod(sb, &pod);
}
