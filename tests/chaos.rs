//! Chaos: a bounded workload of pod, container, exec and image operations
//! (pull, remove) runs while the daemon is SIGKILLed at pseudo-random
//! points and restarted, again and again. Afterwards every pod is either fully there or fully gone, all of
//! them can be removed, and nothing leaks: no mount, process, network
//! namespace, veth, IP lease, state or runtime file, exec session,
//! quarantined record, unfinished pull, blob or layer of a removed image,
//! dangling layer link, or descriptor.
//!
//! `UCRI_CHAOS_ROUNDS` (default 8) and `UCRI_CHAOS_SEED` (default: the
//! time) bound and replay a run; the seed is printed.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cri::*;
use common::*;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::*;

/// The most rounds a run may ask for, so a typo cannot make it endless.
const MAX_ROUNDS: u64 = 200;
/// Each RPC of the workload gets at most this long.
const CALL_LIMIT: Duration = Duration::from_secs(30);

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One pod's life, step by step, until an RPC fails (the daemon died).
async fn one_pod_cycle(sb: &Sandbox, image: &str, name: &str) -> Result<(), String> {
    let channel = connect(&sb.socket()).await.map_err(|e| e.to_string())?;
    let mut rt = ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient::new(channel);
    let pod_cfg = pod_config(sb, name);
    let call = |what: &'static str| move |e: tonic::Status| format!("{what}: {e}");
    let pod = limit(rt.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(pod_cfg.clone()),
        runtime_handler: String::new(),
    }))
    .await?
    .map_err(call("RunPodSandbox"))?
    .into_inner()
    .pod_sandbox_id;
    let id = limit(rt.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(container_config(image, "work", "sleep 30")),
        sandbox_config: Some(pod_cfg),
    }))
    .await?
    .map_err(call("CreateContainer"))?
    .into_inner()
    .container_id;
    limit(rt.start_container(StartContainerRequest {
        container_id: id.clone(),
    }))
    .await?
    .map_err(call("StartContainer"))?;
    let exec = limit(rt.exec_sync(ExecSyncRequest {
        container_id: id.clone(),
        cmd: vec!["echo".into(), name.into()],
        timeout: 10,
    }))
    .await?
    .map_err(call("ExecSync"))?
    .into_inner();
    if exec.stdout != format!("{name}\n").as_bytes() {
        panic!("ExecSync answered {exec:?}, not the pod's name");
    }
    limit(rt.stop_container(StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    }))
    .await?
    .map_err(call("StopContainer"))?;
    limit(rt.remove_container(RemoveContainerRequest { container_id: id }))
        .await?
        .map_err(call("RemoveContainer"))?;
    limit(rt.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    }))
    .await?
    .map_err(call("StopPodSandbox"))?;
    limit(rt.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    }))
    .await?
    .map_err(call("RemovePodSandbox"))?;
    Ok(())
}

/// Pulls `image` (one layer of its own beside the busybox layers) and
/// removes it again, until an RPC fails.
async fn one_image_cycle(sb: &Sandbox, image: &str) -> Result<(), String> {
    let channel = connect(&sb.socket()).await.map_err(|e| e.to_string())?;
    let mut images = ImageServiceClient::new(channel);
    let spec = ImageSpec {
        image: image.into(),
        ..Default::default()
    };
    limit(images.pull_image(PullImageRequest {
        image: Some(spec.clone()),
        auth: None,
        sandbox_config: None,
    }))
    .await?
    .map_err(|e| format!("PullImage: {e}"))?;
    limit(images.remove_image(RemoveImageRequest { image: Some(spec) }))
        .await?
        .map_err(|e| format!("RemoveImage: {e}"))?;
    Ok(())
}

async fn limit<F: std::future::Future>(call: F) -> Result<F::Output, String> {
    tokio::time::timeout(CALL_LIMIT, call)
        .await
        .map_err(|_| format!("an RPC took more than {CALL_LIMIT:?}"))
}

/// How many cycles of each kind ran whole.
#[derive(Default, Clone, Copy)]
struct Done {
    pods: u32,
    images: u32,
}

/// Pod cycles, every third one followed by an image cycle, until `stop`.
fn workload(sb: &Sandbox, images: &TestImages, round: u64, stop: &AtomicBool) -> Done {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut done = Done::default();
    for i in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let name = format!("chaos-{round}-{i}");
        if runtime
            .block_on(one_pod_cycle(sb, &images.run, &name))
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        done.pods += 1;
        if done.pods % 3 == 0 {
            match runtime.block_on(one_image_cycle(sb, &images.pull)) {
                Ok(()) => done.images += 1,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    done
}

/// The image pods run, and the one the workload pulls and removes.
struct TestImages {
    run: String,
    pull: String,
}

/// What the image store holds: blobs, layers and image records.
fn store_contents(sb: &Sandbox) -> BTreeSet<String> {
    ["blobs/sha256", "layers", "images"]
        .iter()
        .flat_map(|dir| {
            entries(&sb.data_dir().join("storage").join(dir))
                .into_iter()
                .map(move |e| format!("{dir}/{e}"))
        })
        .collect()
}

/// Removes `image` if the daemon still has it (a kill came between its
/// pull and its removal).
fn remove_image_if_there(sb: &Sandbox, image: &str) {
    block_on(async {
        let channel = connect(&sb.socket()).await.expect("connect");
        let mut images = ImageServiceClient::new(channel);
        let spec = ImageSpec {
            image: image.into(),
            ..Default::default()
        };
        let status = images
            .image_status(ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            })
            .await
            .expect("ImageStatus")
            .into_inner();
        if status.image.is_some() {
            images
                .remove_image(RemoveImageRequest { image: Some(spec) })
                .await
                .expect("RemoveImage");
        }
    })
}

fn entries(dir: &Path) -> BTreeSet<String> {
    dir_entries(dir)
}

/// Mount points under the sandbox, as the daemon's mount namespace has them.
fn sandbox_mounts(sb: &Sandbox) -> BTreeSet<String> {
    let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", sb.daemon_pid()))
        .expect("the daemon's mountinfo");
    let root = sb.root.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&root))
        .map(str::to_owned)
        .collect()
}

/// The command names of every process in the daemon's user namespace.
fn namespace_commands(sb: &Sandbox) -> Vec<String> {
    let userns = ns_inode(sb.holder_pid(), "user");
    std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| process_alive(*pid) && ns_inode_opt(*pid) == Some(userns))
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}

fn ns_inode_opt(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .ok()
        .map(|m| m.ino())
}

fn list_pods(sb: &Sandbox) -> Vec<PodSandbox> {
    block_on(async {
        client(sb)
            .await
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
    })
}

/// Every pod the daemon lists is whole (its record, its runtime dir, and
/// a status), and every pod dir or record on disk is one the daemon lists.
fn assert_pods_whole(sb: &Sandbox) {
    let listed: BTreeSet<String> = list_pods(sb).into_iter().map(|p| p.id).collect();
    let records: BTreeSet<String> = entries(&sb.data_dir().join("state/pods"))
        .into_iter()
        .filter_map(|f| f.strip_suffix(".json").map(str::to_owned))
        .collect();
    assert_eq!(records, listed, "pod records on disk are the pods listed");
    let dirs = entries(&sb.runtime_dir().join("pods"));
    assert!(
        dirs.is_subset(&listed),
        "pod dirs nobody lists: {:?}",
        dirs.difference(&listed).collect::<Vec<_>>()
    );
    for pod in &listed {
        pod_status(sb, pod).unwrap_or_else(|e| panic!("PodSandboxStatus {pod}: {e}"));
    }
}

/// Stops and removes every pod, then every container left.
fn remove_everything(sb: &Sandbox) {
    for pod in list_pods(sb) {
        stop_pod(sb, &pod.id);
        remove_pod(sb, &pod.id);
    }
    for c in list_containers(sb, None) {
        remove_container(sb, &c.id);
    }
}

#[test]
fn kill_9_at_random_points_leaks_nothing_and_leaves_pods_whole() {
    let rounds = env_number("UCRI_CHAOS_ROUNDS", 8).min(MAX_ROUNDS);
    let seed = env_number(
        "UCRI_CHAOS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    )
    .max(1);
    eprintln!("chaos: {rounds} rounds, UCRI_CHAOS_SEED={seed}");
    let mut dice = Dice(seed);
    let mut e = env("chaos");
    e._registry
        .push_test_image("multiarch", "latest", "test/multiarch:latest");
    let images = TestImages {
        run: e.image.clone(),
        pull: e._registry.image("test/multiarch:latest"),
    };
    let baseline_mounts = sandbox_mounts(&e.sb);
    let baseline_fds = open_descriptors(e.sb.daemon_pid());
    let baseline_store = store_contents(&e.sb);
    let started = Instant::now();
    let mut cycles = Done::default();
    for round in 0..rounds {
        let stop = AtomicBool::new(false);
        let pause = Duration::from_millis(100 + dice.below(1500));
        let sb = &e.sb;
        let done = std::thread::scope(|scope| {
            let worker = scope.spawn(|| workload(sb, &images, round, &stop));
            std::thread::sleep(pause);
            sb.kill_serving_daemon();
            stop.store(true, Ordering::SeqCst);
            worker.join().expect("the workload thread")
        });
        cycles.pods += done.pods;
        cycles.images += done.images;
        e._daemon.wait_exit(Duration::from_secs(10));
        e._daemon = e.sb.start_daemon();
        assert_pods_whole(&e.sb);
    }
    eprintln!(
        "chaos: {} whole pod cycles and {} image cycles in {rounds} rounds, {:?}",
        cycles.pods,
        cycles.images,
        started.elapsed()
    );
    assert!(
        cycles.pods > 0,
        "no pod cycle completed in {rounds} rounds: the workload did nothing to interrupt"
    );
    assert!(
        cycles.pods < 12 || cycles.images > 0,
        "no image cycle completed in {} pod cycles: the pulls fail",
        cycles.pods
    );
    remove_everything(&e.sb);
    assert_pods_whole(&e.sb);
    remove_image_if_there(&e.sb, &images.pull);
    let sb = &e.sb;
    assert_eq!(
        store_contents(sb),
        baseline_store,
        "the image store holds what it held before the workload"
    );
    let unfinished = entries(&sb.data_dir().join("storage/tmp"));
    assert!(
        unfinished.is_empty(),
        "unfinished pulls left: {unfinished:?}"
    );
    for dir in ["state/pods", "state/containers", "storage/containers"] {
        let left = entries(&sb.data_dir().join(dir));
        assert!(left.is_empty(), "{dir} keeps {left:?}");
    }
    for dir in ["pods", "containers", "exits", "exec", "cni/results"] {
        let left = entries(&sb.runtime_dir().join(dir));
        assert!(left.is_empty(), "runtime {dir} keeps {left:?}");
    }
    let quarantined = entries(&sb.data_dir().join("state/quarantine"));
    assert!(
        quarantined.is_empty(),
        "a kill left an unreadable record: {quarantined:?}"
    );
    let dangling: Vec<String> = entries(&sb.data_dir().join("storage/l"))
        .into_iter()
        .filter(|l| std::fs::metadata(sb.data_dir().join("storage/l").join(l)).is_err())
        .collect();
    assert!(dangling.is_empty(), "layer links to nothing: {dangling:?}");
    assert_eq!(veths_settled(sb, 0), 0, "no pod's veth is left");
    let leases: Vec<String> = entries(&sb.runtime_dir().join("cni/networks"))
        .into_iter()
        .flat_map(|net| entries(&sb.runtime_dir().join("cni/networks").join(net)))
        .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(leases.is_empty(), "IP leases left: {leases:?}");
    assert_eq!(
        sandbox_mounts(sb),
        baseline_mounts,
        "the mounts are those of a fresh daemon"
    );
    let commands = namespace_commands(sb);
    for gone in ["conmon", "sleep", "catatonit", "crun", "unshare"] {
        assert!(
            !commands.iter().any(|c| c == gone),
            "a {gone} process is left: {commands:?}"
        );
    }
    let helpers = commands.iter().filter(|c| *c == "slirp4netns").count();
    assert_eq!(helpers, 1, "one uplink helper: {commands:?}");
    let fds = open_descriptors(sb.daemon_pid());
    assert!(
        fds <= baseline_fds + 8,
        "the daemon has {fds} descriptors open, a fresh one had {baseline_fds}"
    );
}
