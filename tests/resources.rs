//! Container resources, run twice: as `ucri-cgroup`, whose cgroup v1
//! subtree `setup-host.sh --test` delegated (limits enforced, OOM kills
//! reported, live updates), and as `ucri-test`, who has none (limits
//! skipped with a warning and a Status condition; nothing fails).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::cri::*;
use common::*;
use ucri_cri_api::v1::*;

const PIDS_LIMIT: u64 = 32;

fn delegated_env(name: &str) -> Env {
    require(running_as_root(), "root, to run the daemon as ucri-cgroup");
    let user = user_named("ucri-cgroup");
    let parent = PathBuf::from("/sys/fs/cgroup/memory/ucri-ucri-cgroup");
    require(
        parent.is_dir(),
        "a delegated cgroup subtree for ucri-cgroup (packaging/setup-host.sh --test)",
    );
    env_as(
        name,
        user,
        &format!("[runtime]\npids_limit = {PIDS_LIMIT}\n"),
    )
}

fn limited(image: &str, name: &str, script: &str, memory: i64) -> ContainerConfig {
    let mut config = container_config(image, name, script);
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: memory,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

/// The host path of a container's cgroup file in hierarchy `h`.
fn cgroup_file(user: &str, pod: &str, id: &str, h: &str, file: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/cgroup/{h}/ucri-{user}/pod-{pod}/{id}/{file}"
    ))
}

fn read_number(path: &PathBuf) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a number")
}

fn runtime_conditions(sb: &Sandbox) -> Vec<RuntimeCondition> {
    block_on(async {
        client(sb)
            .await
            .status(StatusRequest { verbose: false })
            .await
            .expect("Status")
            .into_inner()
            .status
            .expect("status")
            .conditions
    })
}

fn update_memory(sb: &Sandbox, id: &str, bytes: i64) {
    block_on(async {
        client(sb)
            .await
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.into(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: bytes,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("UpdateContainerResources")
    });
}

fn stats_cpu_and_memory(sb: &Sandbox, id: &str) -> (u64, u64) {
    let stats = container_stats(sb, id);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map_or(0, |v| v.value);
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map_or(0, |v| v.value);
    (cpu, mem)
}

#[test]
fn delegated_cgroups_enforce_limits_report_oom_and_update_live() {
    let e = delegated_env("cg-delegated");
    let sb = &e.sb;
    let user = sb.user.name.clone();
    let ready = runtime_conditions(sb)
        .into_iter()
        .find(|c| c.r#type == "ResourceLimitsApplied")
        .expect("condition");
    assert!(ready.status, "{ready:?}");
    let config = pod_config(sb, "limited");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");

    // 64 MiB of dd buffer against a 32 MiB limit: the OOM killer ends it.
    let hog = create(
        sb,
        &pod,
        limited(
            &e.image,
            "hog",
            "dd if=/dev/zero of=/dev/null bs=64M count=4",
            32 << 20,
        ),
        &config,
    )
    .expect("create");
    start(sb, &hog).expect("start");
    // The cgroup outlives the exit until the container is removed.
    assert_eq!(
        read_number(&cgroup_file(
            &user,
            &pod,
            &hog,
            "memory",
            "memory.limit_in_bytes"
        )),
        32 << 20,
        "the limit is in the container's memory cgroup"
    );
    let exited = wait_state(sb, &hog, ContainerState::ContainerExited);
    assert_eq!(exited.reason, "OOMKilled", "{exited:?}");
    assert_eq!(exited.exit_code, 137);

    // A fork bomb stops at the pids limit.
    let bomb =
        "i=0; while [ $i -lt 100 ]; do sleep 600 & i=$((i+1)); done 2>/dev/null; exec sleep 600";
    let forks = create(sb, &pod, limited(&e.image, "forks", bomb, 0), &config).expect("create");
    start(sb, &forks).expect("start");
    let events = cgroup_file(&user, &pod, &forks, "pids", "pids.events");
    let refused = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("max ")?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused() == 0 {
        assert!(
            Instant::now() < deadline,
            "the fork bomb never hit the pids limit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        read_number(&cgroup_file(&user, &pod, &forks, "pids", "pids.max")),
        PIDS_LIMIT
    );
    let now = std::fs::read_to_string(cgroup_file(&user, &pod, &forks, "pids", "pids.current"))
        .map_or(0, |t| t.trim().parse::<u64>().unwrap_or(0));
    assert!(now <= PIDS_LIMIT, "never more than the limit: {now}");

    // Stats come from the cgroup and move; a live update changes the limit.
    let busy = create(
        sb,
        &pod,
        limited(
            &e.image,
            "busy",
            "dd if=/dev/zero of=/dev/null bs=16M count=1000000 & exec sleep 600",
            128 << 20,
        ),
        &config,
    )
    .expect("create");
    start(sb, &busy).expect("start");
    let (cpu1, _) = stats_cpu_and_memory(sb, &busy);
    std::thread::sleep(Duration::from_millis(1000));
    let (cpu2, mem) = stats_cpu_and_memory(sb, &busy);
    assert!(cpu2 > cpu1 + 200_000_000, "CPU moves: {cpu1} -> {cpu2}");
    assert!(mem > 16 << 20, "the dd buffer is charged: {mem}");
    update_memory(sb, &busy, 96 << 20);
    assert_eq!(
        read_number(&cgroup_file(
            &user,
            &pod,
            &busy,
            "memory",
            "memory.limit_in_bytes"
        )),
        96 << 20,
        "UpdateContainerResources changed the live limit"
    );

    // An update before the start (the OCI runtime creates the container at
    // StartContainer) is what the container starts with.
    let early = create(
        sb,
        &pod,
        limited(&e.image, "early", "exec sleep 600", 128 << 20),
        &config,
    )
    .expect("create");
    update_memory(sb, &early, 80 << 20);
    start(sb, &early).expect("start");
    assert_eq!(
        read_number(&cgroup_file(
            &user,
            &pod,
            &early,
            "memory",
            "memory.limit_in_bytes"
        )),
        80 << 20,
        "the update made before the start applies"
    );

    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
    assert!(
        !PathBuf::from(format!("/sys/fs/cgroup/memory/ucri-{user}/pod-{pod}")).exists(),
        "the pod's cgroup is removed with it"
    );
}

#[test]
fn without_delegation_limits_are_skipped_with_a_warning() {
    let e = env("cg-none");
    let sb = &e.sb;
    let condition = runtime_conditions(sb)
        .into_iter()
        .find(|c| c.r#type == "ResourceLimitsApplied")
        .expect("condition");
    assert!(!condition.status, "{condition:?}");
    assert_eq!(condition.reason, "CgroupsNotDelegated");
    assert!(
        condition.message.contains("--delegate-cgroups"),
        "{condition:?}"
    );
    let config = pod_config(sb, "unlimited");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let hog = create(
        sb,
        &pod,
        limited(
            &e.image,
            "hog",
            "dd if=/dev/zero of=/dev/null bs=64M count=2",
            32 << 20,
        ),
        &config,
    )
    .expect("a limit the host cannot apply does not fail the container");
    start(sb, &hog).expect("start");
    let exited = wait_state(sb, &hog, ContainerState::ContainerExited);
    assert_eq!((exited.exit_code, exited.reason.as_str()), (0, "Completed"));
    let sleeper = create(
        sb,
        &pod,
        limited(&e.image, "s", "exec sleep 600", 0),
        &config,
    )
    .expect("create");
    start(sb, &sleeper).expect("start");
    update_memory(sb, &sleeper, 64 << 20);
    let (_, mem) = stats_cpu_and_memory(sb, &sleeper);
    assert!(mem > 0, "stats come from /proc");
    assert!(
        e._daemon.log_text().contains("limits are not applied"),
        "the daemon says so in its log"
    );
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

fn update_pod_resources(
    sb: &Sandbox,
    pod: &str,
    cpu_quota: i64,
    memory: i64,
) -> Result<(), tonic::Status> {
    block_on(async {
        client(sb)
            .await
            .update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest {
                pod_sandbox_id: pod.to_owned(),
                overhead: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 16 << 20,
                    ..Default::default()
                }),
                resources: Some(LinuxContainerResources {
                    cpu_quota,
                    cpu_period: 100_000,
                    memory_limit_in_bytes: memory,
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ())
    })
}

/// UpdatePodSandboxResources (Kubernetes 1.36, after an in-place resize):
/// the pod cgroup gets the containers' sum plus the overhead where cgroups
/// are delegated; elsewhere the answer says why, and nothing changes.
#[test]
fn pod_resources_are_updated_on_the_pod_cgroup() {
    let e = delegated_env("cg-pod");
    let sb = &e.sb;
    let config = pod_config(sb, "resized");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let id = create(
        sb,
        &pod,
        limited(&e.image, "c", "exec sleep 600", 0),
        &config,
    )
    .expect("create");
    start(sb, &id).expect("start");
    update_pod_resources(sb, &pod, 50_000, 64 << 20).expect("UpdatePodSandboxResources");
    let pod_dir = |h: &str, file: &str| {
        PathBuf::from(format!(
            "/sys/fs/cgroup/{h}/ucri-ucri-cgroup/pod-{pod}/{file}"
        ))
    };
    assert_eq!(read_number(&pod_dir("cpu", "cpu.cfs_quota_us")), 50_000);
    assert_eq!(
        read_number(&pod_dir("memory", "memory.limit_in_bytes")),
        80 << 20,
        "64 MiB + 16 MiB overhead"
    );
    let missing = update_pod_resources(sb, "no-such-pod", 1, 1).expect_err("unknown pod");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);

    let plain = env("cg-pod-none");
    let config = pod_config(&plain.sb, "not-resized");
    let pod = run_pod(&plain.sb, &config).expect("RunPodSandbox");
    let refused =
        update_pod_resources(&plain.sb, &pod, 50_000, 64 << 20).expect_err("no delegation");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("not delegated"), "{refused:?}");
    remove_pod(&plain.sb, &pod);
}
