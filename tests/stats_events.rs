//! Container and pod stats (from /proc on this host, which delegates no
//! cgroups to the user) and the GetContainerEvents stream, through the real
//! daemon.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cri::*;
use common::*;
use ucri_cri_api::v1::*;

fn pod_stats(sb: &Sandbox, id: &str) -> PodSandboxStats {
    block_on(async {
        client(sb)
            .await
            .pod_sandbox_stats(PodSandboxStatsRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .expect("PodSandboxStats")
            .into_inner()
            .stats
            .expect("stats")
    })
}

fn cpu_ns(s: &ContainerStats) -> u64 {
    s.cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value)
}

fn working_set(s: &ContainerStats) -> u64 {
    s.memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value)
}

#[test]
fn stats_move_when_a_container_burns_cpu_and_allocates_memory() {
    let e = env("stats");
    let sb = &e.sb;
    let config = pod_config(sb, "busy");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let idle = create(
        sb,
        &pod,
        container_config(&e.image, "idle", "exec sleep 1000"),
        &config,
    )
    .expect("create");
    start(sb, &idle).expect("start");
    // dd keeps a 32 MiB buffer filled from /dev/zero and burns CPU.
    let script = "dd if=/dev/zero of=/dev/null bs=32M count=100000 & exec sleep 1000";
    let busy = create(
        sb,
        &pod,
        container_config(&e.image, "busy", script),
        &config,
    )
    .expect("create");
    start(sb, &busy).expect("start");
    wait_state(sb, &busy, ContainerState::ContainerRunning);

    let first = container_stats(sb, &busy);
    std::thread::sleep(Duration::from_millis(1500));
    let second = container_stats(sb, &busy);
    let burnt = cpu_ns(&second) - cpu_ns(&first);
    assert!(burnt > 300_000_000, "dd burnt CPU: {first:?} -> {second:?}");
    let rate = second
        .cpu
        .as_ref()
        .and_then(|c| c.usage_nano_cores.as_ref())
        .map_or(0, |v| v.value);
    assert!(
        rate > 200_000_000,
        "usage_nano_cores from two samples: {second:?}"
    );
    assert!(
        working_set(&second) > 32 << 20,
        "dd's buffer is resident: {second:?}"
    );
    let layer = second.writable_layer.as_ref().expect("writable layer");
    assert!(
        layer.inodes_used.as_ref().is_some_and(|v| v.value > 0),
        "{layer:?}"
    );
    let quiet = container_stats(sb, &idle);
    assert!(
        working_set(&quiet) < 16 << 20,
        "sleep stays small: {quiet:?}"
    );

    let stats = pod_stats(sb, &pod);
    let linux = stats.linux.expect("linux stats");
    assert_eq!(linux.containers.len(), 2);
    assert!(
        linux
            .process
            .as_ref()
            .and_then(|p| p.process_count.as_ref())
            .map_or(0, |v| v.value)
            >= 3,
        "sleep, sleep and dd: {:?}",
        linux.process
    );
    let net = linux.network.expect("network stats");
    let eth0 = net.default_interface.expect("eth0");
    assert_eq!(eth0.name, "eth0");
    assert!(eth0.tx_bytes.is_some() && eth0.rx_bytes.is_some());

    let listed = block_on(async {
        client(sb)
            .await
            .list_container_stats(ListContainerStatsRequest {
                filter: Some(ContainerStatsFilter {
                    pod_sandbox_id: pod.clone(),
                    label_selector: [("container".to_owned(), "busy".to_owned())].into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("ListContainerStats")
            .into_inner()
            .stats
    });
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].attributes.as_ref().expect("attributes").id, busy);
    let pods = block_on(async {
        client(sb)
            .await
            .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
            .await
            .expect("ListPodSandboxStats")
            .into_inner()
            .stats
    });
    assert_eq!(pods.len(), 1);
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

type Seen = Arc<Mutex<Vec<ContainerEventResponse>>>;

/// Subscribes on a thread of its own and collects events until the
/// daemon goes away.
fn subscribe(sb: &Sandbox) -> Seen {
    let seen: Seen = Arc::default();
    let (socket, sink) = (sb.socket(), seen.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        block_on(async move {
            let channel = connect(&socket).await.expect("connect");
            let mut stream =
                ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient::new(channel)
                    .get_container_events(GetEventsRequest {})
                    .await
                    .expect("GetContainerEvents")
                    .into_inner();
            let _ = ready_tx.send(());
            while let Ok(Some(event)) = stream.message().await {
                sink.lock().expect("events lock").push(event);
            }
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    seen
}

fn wait_events(seen: &Seen, count: usize) -> Vec<ContainerEventResponse> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = seen.lock().expect("events lock").clone();
        if events.len() >= count {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} events arrived: {events:?}",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn events_follow_a_pods_whole_life_in_order_for_every_subscriber() {
    let e = env("events");
    let sb = &e.sb;
    let (first, second) = (subscribe(sb), subscribe(sb));
    let config = pod_config(sb, "eventful");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "brief", "sleep 0.5"),
        &config,
    )
    .expect("create");
    start(sb, &id).expect("start");
    wait_state(sb, &id, ContainerState::ContainerExited);
    remove_container(sb, &id);
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);

    use ContainerEventType::*;
    let expected = [
        (&pod, ContainerCreatedEvent),
        (&pod, ContainerStartedEvent),
        (&id, ContainerCreatedEvent),
        (&id, ContainerStartedEvent),
        (&id, ContainerStoppedEvent),
        (&id, ContainerDeletedEvent),
        (&pod, ContainerStoppedEvent),
        (&pod, ContainerDeletedEvent),
    ];
    for seen in [first, second] {
        let events = wait_events(&seen, expected.len());
        let got: Vec<(String, i32)> = events
            .iter()
            .map(|ev| (ev.container_id.clone(), ev.container_event_type))
            .collect();
        let want: Vec<(String, i32)> = expected
            .iter()
            .map(|(id, kind)| ((*id).clone(), *kind as i32))
            .collect();
        assert_eq!(got, want, "events in order");
        let started = &events[3];
        let status = started
            .pod_sandbox_status
            .as_ref()
            .expect("pod status attached");
        assert_eq!(status.id, pod);
        assert_eq!(started.containers_statuses.len(), 1);
        assert_eq!(
            started.containers_statuses[0].state,
            ContainerState::ContainerRunning as i32
        );
        assert!(events
            .windows(2)
            .all(|w| w[0].created_at <= w[1].created_at));
        assert!(
            events[7].pod_sandbox_status.is_none(),
            "a deleted pod has no status"
        );
    }
    let daemon = sb.daemon_pid().to_string();
    let zombies = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|s| {
                let rest = s.rsplit_once(") ").map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                fields.first() == Some(&"Z") && fields.get(1) == Some(&daemon.as_str())
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !zombies().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the removed container's monitor is reaped: {:?}",
            zombies()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A strict reading of the Prometheus text format: every sample belongs to
/// a family declared by `# TYPE` before it, names and labels are well
/// formed, values are numbers, histogram buckets are cumulative.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name_ok(name), "bad family name {name:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad type {kind:?}"
            );
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("sample and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value of {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        assert!(name_ok(name), "bad metric name {name:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{name} has no # TYPE before it");
        let mut rest = labels;
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
            assert!(name_ok(key), "bad label name {key:?}");
            let mut escaped = false;
            let end = after
                .char_indices()
                .find(|(_, c)| {
                    let stop = *c == '"' && !escaped;
                    escaped = *c == '\\' && !escaped;
                    stop
                })
                .map(|(i, _)| i)
                .expect("closing quote");
            rest = after[end + 1..].trim_start_matches(',');
        }
        samples.push((name.to_owned(), labels.to_owned(), value));
    }
    samples
}

/// `GET /metrics` on `port`: the HTTP reply.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    reply
}

/// Any local user can connect to the metrics port: 40 idle connections take
/// at most 8 of the daemon's descriptors (the rest wait in the backlog), do
/// not make it spin, and are dropped 3 s after they sent nothing; a scrape
/// after them is answered. (The accept loop used to take every connection
/// and spin on a failed accept.)
#[test]
fn idle_metrics_connections_are_capped_and_dropped() {
    use std::io::Read;
    let port = free_port();
    let e = env_with_config(
        "metrics-idle",
        &format!("[metrics]\nenabled = true\naddress = \"127.0.0.1:{port}\"\n"),
    );
    assert!(scrape(port).starts_with("HTTP/1.1 200"), "metrics answer");
    let serving = e.sb.daemon_pid();
    let before = open_descriptors(serving);
    let mut idle: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_descriptors(serving);
    assert!(
        during <= before + 8 + 4,
        "40 idle connections took {} descriptors",
        during.saturating_sub(before)
    );
    let ticks = cpu_ticks(serving);
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(serving) - ticks;
    assert!(
        spent < 20,
        "the daemon spent {spent} ticks in a second of idle clients"
    );
    let first = &mut idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut byte = [0u8; 1];
    assert_eq!(
        first
            .read(&mut byte)
            .expect("the daemon closes, not the timeout"),
        0,
        "closed without a reply"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "dropped after the 3 s request timeout, not {:?}",
        started.elapsed()
    );
    drop(idle);
    assert!(
        scrape(port).starts_with("HTTP/1.1 200"),
        "metrics answer after the flood"
    );
}

#[test]
fn metrics_are_served_as_valid_prometheus_text_and_over_cri() {
    let port = free_port();
    let e = env_with_config(
        "metrics",
        &format!("[metrics]\nenabled = true\naddress = \"127.0.0.1:{port}\"\n"),
    );
    let sb = &e.sb;
    let config = pod_config(sb, "measured");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let mut container = container_config(&e.image, "m", "exec sleep 600");
    container.envs.push(KeyValue {
        key: "SECRET_TOKEN".into(),
        value: "hunter2-metrics".into(),
    });
    let id = create(sb, &pod, container, &config).expect("create");
    start(sb, &id).expect("start");
    let missing = status(sb, "no-such-container").expect_err("unknown container");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let text = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("read");
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        reply.split_once("\r\n\r\n").expect("body").1.to_owned()
    };
    // Any local user can read the endpoint: it holds counts and latencies,
    // nothing that names or describes a workload.
    let pod_name = &config.metadata.as_ref().expect("metadata").name;
    for secret in [
        &pod,
        &id,
        pod_name,
        &"hunter2-metrics".to_owned(),
        &"SECRET_TOKEN".to_owned(),
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "the public metrics show {secret:?}: {text}"
        );
    }
    let samples = parse_prometheus(&text);
    let find = |name: &str, label: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.contains(label))
            .map(|(_, _, v)| *v)
    };
    assert_eq!(find("ucri_pods", "state=\"ready\""), Some(1.0), "{text}");
    assert_eq!(find("ucri_containers", "state=\"running\""), Some(1.0));
    assert!(find("ucri_image_pull_bytes_total", "").is_some_and(|v| v > 0.0));
    assert_eq!(
        find("ucri_rpc_errors_total", "ContainerStatus\",code=\"5\""),
        Some(1.0),
        "{text}"
    );
    assert!(
        find("ucri_rpc_duration_seconds_count", "RunPodSandbox").is_some_and(|v| v >= 1.0),
        "{text}"
    );

    let (descriptors, metrics) = block_on(async {
        let mut c = client(sb).await;
        let d = c
            .list_metric_descriptors(ListMetricDescriptorsRequest {})
            .await
            .expect("ListMetricDescriptors")
            .into_inner()
            .descriptors;
        let m = c
            .list_pod_sandbox_metrics(ListPodSandboxMetricsRequest {})
            .await
            .expect("ListPodSandboxMetrics")
            .into_inner()
            .pod_metrics;
        (d, m)
    });
    assert!(descriptors
        .iter()
        .any(|d| d.name == "container_memory_working_set_bytes"));
    assert_eq!(metrics.len(), 1);
    let container = &metrics[0].container_metrics;
    assert_eq!(container.len(), 1);
    assert_eq!(container[0].container_id, id);
    let working_set = container[0]
        .metrics
        .iter()
        .find(|m| m.name == "container_memory_working_set_bytes")
        .expect("working set");
    assert!(working_set.value.as_ref().is_some_and(|v| v.value > 0));
    assert_eq!(working_set.label_values[..3], ["m", "measured", "default"]);
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

/// The Stream* list RPCs of Kubernetes 1.36 (KEP-5825) answer what the
/// unary lists answer, in messages of at most 100 items; an empty list is
/// one empty message.
#[test]
fn streaming_lists_match_the_unary_lists() {
    use tokio_stream::StreamExt as _;
    let e = env("stream-lists");
    let sb = &e.sb;
    let pods: Vec<String> = (0..3)
        .map(|n| run_pod(sb, &pod_config(sb, &format!("listed-{n}"))).expect("pod"))
        .collect();
    let c = create(
        sb,
        &pods[0],
        container_config(&e.image, "c", "exec sleep 600"),
        &pod_config(sb, "listed-0"),
    )
    .expect("create");
    start(sb, &c).expect("start");
    block_on(async {
        let mut runtime = client(sb).await;
        let mut streamed: Vec<String> = Vec::new();
        let mut messages = runtime
            .stream_pod_sandboxes(StreamPodSandboxesRequest { filter: None })
            .await
            .expect("StreamPodSandboxes")
            .into_inner();
        while let Some(message) = messages.next().await {
            streamed.extend(
                message
                    .expect("message")
                    .pod_sandboxes
                    .into_iter()
                    .map(|p| p.id),
            );
        }
        streamed.sort();
        let mut expected = pods.clone();
        expected.sort();
        assert_eq!(streamed, expected);
        let mut containers = runtime
            .stream_containers(StreamContainersRequest { filter: None })
            .await
            .expect("StreamContainers")
            .into_inner();
        let first = containers.next().await.expect("one message").expect("ok");
        assert_eq!(
            first
                .containers
                .iter()
                .map(|c| c.id.as_str())
                .collect::<Vec<_>>(),
            [c.as_str()]
        );
        assert!(containers.next().await.is_none());
        let mut stats = runtime
            .stream_container_stats(StreamContainerStatsRequest { filter: None })
            .await
            .expect("StreamContainerStats")
            .into_inner();
        let first = stats.next().await.expect("one message").expect("ok");
        assert_eq!(first.container_stats.len(), 1);
        let mut pod_stats = runtime
            .stream_pod_sandbox_stats(StreamPodSandboxStatsRequest { filter: None })
            .await
            .expect("StreamPodSandboxStats")
            .into_inner();
        let first = pod_stats.next().await.expect("one message").expect("ok");
        assert_eq!(first.pod_sandbox_stats.len(), 3);
        let mut images = ucri_cri_api::v1::image_service_client::ImageServiceClient::new(
            connect(&sb.socket()).await.expect("connect"),
        )
        .stream_images(StreamImagesRequest { filter: None })
        .await
        .expect("StreamImages")
        .into_inner();
        let first = images.next().await.expect("one message").expect("ok");
        assert_eq!(first.images.len(), 1, "the pulled test image");
    });
    for pod in &pods {
        stop_pod(sb, pod);
        remove_pod(sb, pod);
    }
}

/// Containers that end by themselves, nobody asking: when each one's
/// ContainerStoppedEvent arrives, its conmon has been reaped (no zombie is
/// left behind the report). Prints how long after conmon's exit file each
/// event came (conmon is watched through a pidfd; the once-a-second sweep
/// is the fallback).
#[test]
fn a_monitor_is_reaped_by_the_time_its_containers_exit_is_announced() {
    let e = env("reaped");
    let sb = &e.sb;
    let seen = subscribe(sb);
    let config = pod_config(sb, "brief");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let mut latencies = Vec::new();
    for round in 0..5 {
        let id = create(
            sb,
            &pod,
            container_config(&e.image, &format!("brief{round}"), "sleep 0.2"),
            &config,
        )
        .expect("create");
        start(sb, &id).expect("start");
        let record = sb.data_dir().join(format!("state/containers/{id}.json"));
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&record).expect("record")).expect("JSON");
        let conmon = state["conmon_pid"].as_u64().expect("conmon_pid") as u32;
        assert!(conmon > 0, "a conmon runs");
        let deadline = Instant::now() + Duration::from_secs(15);
        let stopped = loop {
            let event = seen
                .lock()
                .expect("events lock")
                .iter()
                .find(|ev| {
                    ev.container_id == id
                        && ev.container_event_type
                            == ContainerEventType::ContainerStoppedEvent as i32
                })
                .cloned();
            if let Some(event) = event {
                break event;
            }
            assert!(Instant::now() < deadline, "no stop event for {id}");
            std::thread::sleep(Duration::from_millis(2));
        };
        assert!(
            !process_alive(conmon) && !std::path::Path::new(&format!("/proc/{conmon}")).exists(),
            "conmon {conmon} is reaped when the exit is announced"
        );
        let exit_file = sb.runtime_dir().join("exits").join(&id);
        let exited = std::fs::metadata(&exit_file)
            .and_then(|m| m.modified())
            .expect("conmon's exit file");
        let exited_ns = exited
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_nanos() as i64;
        latencies.push((stopped.created_at - exited_ns) / 1_000_000);
        remove_container(sb, &id);
    }
    eprintln!("exit file to stop event, ms: {latencies:?}");
    remove_pod(sb, &pod);
}
