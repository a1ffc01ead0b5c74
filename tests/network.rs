//! Pod networking through the real daemon: the uplink namespace with
//! slirp4netns or pasta, the CNI bridge/host-local/portmap plugins inside it,
//! and hostPort forwarding from the host. Traffic goes only to loopback and
//! to namespaces these tests create.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::cri::*;
use common::*;
use tonic::Code;
use ucri_cri_api::v1::*;

const PASTA: &str = "[network]\nuplink = \"pasta\"\n";

/// A network namespace made by the test (as root), joined to the host by a
/// veth pair, with a web server on `addr:8099`: "the outside" for pods.
struct OutsideServer {
    name: String,
    addr: Ipv4Addr,
    /// The host's end of the veth pair.
    host_addr: Ipv4Addr,
    server: std::process::Child,
}

static OUTSIDE: AtomicU32 = AtomicU32::new(0);

impl OutsideServer {
    fn start() -> OutsideServer {
        require(
            running_as_root(),
            "root, to create the test's network namespace",
        );
        let n = std::process::id() % 200 * 50 + OUTSIDE.fetch_add(1, Ordering::SeqCst);
        let (name, host_if, ns_if) = (
            format!("ucri-out-{n}"),
            format!("uo{n}h"),
            format!("uo{n}n"),
        );
        let net = format!("10.{}.{}", 200 + n / 16384 % 50, n / 64 % 256);
        let host_ip = format!("{net}.{}", (n % 64) * 4 + 1);
        let addr: Ipv4Addr = format!("{net}.{}", (n % 64) * 4 + 2).parse().expect("ip");
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        for args in [
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
            vec!["link", "set", &ns_if, "netns", &name],
            vec!["addr", "add", &format!("{host_ip}/30"), "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec![
                "-n",
                &name,
                "addr",
                "add",
                &format!("{addr}/30"),
                "dev",
                &ns_if,
            ],
            vec!["-n", &name, "link", "set", &ns_if, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ] {
            run_host("ip", &args);
        }
        let www = std::env::temp_dir().join(format!("ucri-outside-{n}"));
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("index.html"), "hello from outside\n").expect("index");
        let server = Command::new("ip")
            .args([
                "netns", "exec", &name, "busybox", "httpd", "-f", "-p", "8099", "-h",
            ])
            .arg(&www)
            .spawn()
            .expect("busybox httpd (busybox-static)");
        let host_addr = host_ip.parse().expect("host ip");
        let outside = OutsideServer {
            name,
            addr,
            host_addr,
            server,
        };
        outside.wait_listening();
        outside
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect((self.addr, 8099)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the outside server on {} never listened", self.addr);
    }
}

impl Drop for OutsideServer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run_host(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pod running busybox httpd on :8080 serving `body`; returns (pod, container).
fn web_pod(e: &Env, config: &PodSandboxConfig, body: &str) -> (String, String) {
    web_pod_with(e, config, body, |_| {})
}

/// [`web_pod`] with the container's config changed by `adjust`.
fn web_pod_with(
    e: &Env,
    config: &PodSandboxConfig,
    body: &str,
    adjust: impl Fn(&mut ContainerConfig),
) -> (String, String) {
    let pod = run_pod(&e.sb, config).expect("RunPodSandbox");
    let script =
        format!("mkdir -p /tmp/www && echo {body} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www");
    let name = config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut container = container_config(&e.image, &name, &script);
    adjust(&mut container);
    let id = create(&e.sb, &pod, container, config).expect("CreateContainer");
    start(&e.sb, &id).expect("StartContainer");
    wait_state(&e.sb, &id, ContainerState::ContainerRunning);
    (pod, id)
}

/// The container gets the RuntimeDefault seccomp profile (what kubelet
/// sends with `--seccomp-default` or a pod's `seccompProfile`).
fn runtime_default_seccomp(c: &mut ContainerConfig) {
    let linux = c.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    sc.seccomp = Some(SecurityProfile {
        profile_type: security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
}

/// What `/proc/self/status` says of the seccomp mode in container `id`.
fn seccomp_mode(sb: &Sandbox, id: &str) -> String {
    let out = exec(sb, id, &["grep", "Seccomp:", "/proc/self/status"], 10).expect("exec");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// Runs `wget -q -O - URL` in container `id` until it answers (servers take
/// a moment to listen); returns its output. The time limit comes from
/// timeout(1): busybox 1.35's `wget -T` crashes.
fn fetch_from(sb: &Sandbox, id: &str, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let reply =
            exec(sb, id, &["timeout", "5", "wget", "-q", "-O", "-", url], 10).expect("ExecSync");
        if reply.exit_code == 0 {
            return String::from_utf8_lossy(&reply.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered in {id} (exit {}): {}",
            reply.exit_code,
            String::from_utf8_lossy(&reply.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP GET from the host; the body, or None when nothing listens.
fn http_get(addr: (Ipv4Addr, u16)) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    reply.split("\r\n\r\n").nth(1).map(str::to_owned)
}

fn http_get_eventually(addr: (Ipv4Addr, u16)) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(body) = http_get(addr).filter(|b| !b.is_empty()) {
            return body;
        }
        assert!(Instant::now() < deadline, "nothing answered on {addr:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod_ip(sb: &Sandbox, pod: &str) -> String {
    let status = pod_status(sb, pod)
        .expect("PodSandboxStatus")
        .status
        .expect("status");
    status.network.expect("network status").ip
}

fn runtime_status(sb: &Sandbox) -> StatusResponse {
    block_on(async {
        client(sb)
            .await
            .status(StatusRequest { verbose: true })
            .await
            .expect("Status")
            .into_inner()
    })
}

fn network_condition(sb: &Sandbox) -> RuntimeCondition {
    runtime_status(sb)
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("a NetworkReady condition")
}

/// Two pods get distinct addresses, reach each other by IP, reach a server
/// outside through the uplink, have loopback, and use the uplink's DNS.
fn pods_talk_to_each_other_and_the_outside(e: &Env) {
    let sb = &e.sb;
    let outside = OutsideServer::start();
    assert!(network_condition(sb).status, "{:?}", network_condition(sb));
    let (pod_a, a) = web_pod(e, &pod_config(sb, "net-a"), "hello-from-a");
    let (pod_b, b) = web_pod(e, &pod_config(sb, "net-b"), "hello-from-b");
    let (ip_a, ip_b) = (pod_ip(sb, &pod_a), pod_ip(sb, &pod_b));
    assert!(
        ip_a.starts_with("10.88.") && ip_b.starts_with("10.88."),
        "{ip_a} {ip_b}"
    );
    assert_ne!(ip_a, ip_b, "pods get distinct addresses");
    let info = pod_status(sb, &pod_a).expect("verbose status").info;
    assert!(
        info["info"].contains("\"cniCheck\":\"ok\""),
        "CNI CHECK passes: {info:?}"
    );

    let got = fetch_from(sb, &a, &format!("http://{ip_b}:8080/"));
    assert_eq!(got.trim(), "hello-from-b", "pod A reaches pod B by IP");
    let got = fetch_from(sb, &b, "http://127.0.0.1:8080/");
    assert_eq!(got.trim(), "hello-from-b", "loopback works in pod B");
    let got = fetch_from(sb, &a, "http://127.0.0.1:8080/");
    assert_eq!(got.trim(), "hello-from-a", "loopback works in pod A");
    let got = fetch_from(sb, &a, &format!("http://{}:8099/", outside.addr));
    assert_eq!(
        got.trim(),
        "hello from outside",
        "pod A reaches the outside"
    );

    let resolv = exec(sb, &b, &["cat", "/etc/resolv.conf"], 10).expect("exec");
    let resolv = String::from_utf8_lossy(&resolv.stdout);
    assert!(
        resolv.contains("nameserver 10.0.2.3"),
        "the uplink's resolver: {resolv}"
    );
    for pod in [pod_a, pod_b] {
        stop_pod(sb, &pod);
        remove_pod(sb, &pod);
    }
}

#[test]
fn pods_reach_each_other_and_the_outside_through_slirp4netns() {
    let e = env("net-slirp");
    let info = runtime_status(&e.sb).info;
    assert!(info["network"].contains("slirp4netns"), "{info:?}");
    pods_talk_to_each_other_and_the_outside(&e);
}

#[test]
fn pods_reach_each_other_and_the_outside_through_pasta() {
    let e = env_with_config("net-pasta", PASTA);
    let info = runtime_status(&e.sb).info;
    assert!(info["network"].contains("\"pasta\""), "{info:?}");
    pods_talk_to_each_other_and_the_outside(&e);
}

fn with_host_port(mut config: PodSandboxConfig, host_port: u16, host_ip: &str) -> PodSandboxConfig {
    config.port_mappings.push(PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: host_ip.into(),
    });
    config
}

#[test]
fn host_ports_reach_the_pod_from_the_host_until_the_pod_stops() {
    host_ports_work(&env("net-hostport"));
}

#[test]
fn host_ports_work_with_the_pasta_uplink_too() {
    host_ports_work(&env_with_config("net-hostport-pasta", PASTA));
}

fn host_ports_work(e: &Env) {
    let sb = &e.sb;
    let port = free_port();
    let config = with_host_port(pod_config(sb, "published"), port, "");
    let (pod, _) = web_pod(e, &config, "published-body");
    let body = http_get_eventually((Ipv4Addr::LOCALHOST, port));
    assert_eq!(
        body.trim(),
        "published-body",
        "hostPort answers on the host's 127.0.0.1"
    );

    let (client_pod, client) = web_pod(e, &pod_config(sb, "neighbour"), "unused");
    let got = fetch_from(sb, &client, &format!("http://10.88.0.1:{port}/"));
    assert_eq!(
        got.trim(),
        "published-body",
        "portmap keeps hostPort semantics between pods"
    );

    let taken = with_host_port(pod_config(sb, "taken"), port, "");
    let err = run_pod(sb, &taken).expect_err("the host port is in use");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&port.to_string()), "{err:?}");
    let privileged = with_host_port(pod_config(sb, "privileged"), 80, "");
    let err = run_pod(sb, &privileged).expect_err("port 80 is privileged");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("ip_unprivileged_port_start"),
        "{err:?}"
    );
    let leases = lease_files(sb);
    assert_eq!(leases.len(), 2, "failed pods leave no lease: {leases:?}");

    stop_pod(sb, &pod);
    assert!(
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
        "the host port is closed once the pod stops"
    );
    remove_pod(sb, &pod);
    stop_pod(sb, &client_pod);
    remove_pod(sb, &client_pod);
}

#[test]
fn a_host_network_pod_serves_on_the_hosts_loopback() {
    let e = env("net-hostnet");
    let sb = &e.sb;
    let port = free_port();
    let mut config = host_pod(
        sb,
        "hostnet-web",
        NamespaceMode::Node,
        NamespaceMode::Container,
        NamespaceMode::Pod,
    );
    // Kubelet declares a host-network pod's ports with hostPort = containerPort;
    // ucri publishes them on the host and forwards into the node namespace.
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: i32::from(port),
        host_port: i32::from(port),
        host_ip: "127.0.0.1".into(),
    }];
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    let status = pod_status(sb, &pod)
        .expect("status")
        .status
        .expect("status");
    assert_eq!(
        status.network.unwrap_or_default().ip,
        "",
        "no CNI for host network"
    );
    let script = format!(
        "mkdir -p /tmp/www && echo on-the-host > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    );
    let id = create(
        sb,
        &pod,
        container_config(&e.image, "web", &script),
        &config,
    )
    .expect("create");
    start(sb, &id).expect("start");
    let body = http_get_eventually((Ipv4Addr::LOCALHOST, port));
    assert_eq!(body.trim(), "on-the-host");
    let inside = in_uplink(
        sb,
        &[
            "busybox",
            "wget",
            "-qO-",
            &format!("http://127.0.0.1:{port}/"),
        ],
    );
    assert_eq!(
        inside.trim(),
        "on-the-host",
        "the pod serves in the node namespace"
    );
    stop_pod(sb, &pod);
    assert!(
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
        "the published port closes with the pod"
    );
    remove_pod(sb, &pod);
}

/// host-local's lease files of the default network (one per address in use).
fn lease_files(sb: &Sandbox) -> Vec<String> {
    lease_files_of(sb, "ucri")
}

/// host-local's lease files of the network named `network`.
fn lease_files_of(sb: &Sandbox, network: &str) -> Vec<String> {
    let dir = sb.runtime_dir().join("cni/networks").join(network);
    std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Per-pod iptables rules carry the pod's ID in a comment.
fn pod_rules(sb: &Sandbox) -> Vec<String> {
    in_uplink(sb, &["iptables-save"])
        .lines()
        .filter(|l| l.contains(" id: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn twenty_pods_leave_no_veth_lease_rule_or_netns_behind() {
    let e = env("net-twenty");
    let sb = &e.sb;
    let mut pods = Vec::new();
    let mut ips = std::collections::HashSet::new();
    for i in 0..20 {
        let config = with_host_port(
            pod_config(sb, &format!("many-{i}")),
            free_port(),
            "127.0.0.1",
        );
        let pod = run_pod(sb, &config).expect("RunPodSandbox");
        ips.insert(pod_ip(sb, &pod));
        pods.push(pod);
    }
    assert_eq!(ips.len(), 20, "every pod has its own address");
    assert_eq!(veths(sb), 20);
    assert_eq!(lease_files(sb).len(), 20);
    assert!(
        !pod_rules(sb).is_empty(),
        "masquerade and portmap rules exist"
    );
    for pod in &pods {
        stop_pod(sb, pod);
        remove_pod(sb, pod);
    }
    assert_eq!(veths_settled(sb, 0), 0, "no veth left");
    assert_eq!(lease_files(sb), Vec::<String>::new(), "no lease left");
    assert_eq!(pod_rules(sb), Vec::<String>::new(), "no per-pod rule left");
    assert!(
        !daemon_mounts(sb).contains("/pods/"),
        "no pod namespace pinned"
    );
    let results = std::fs::read_dir(sb.runtime_dir().join("cni/results"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(results, 0, "no cached CNI result left");
}

fn helper_pid(sb: &Sandbox) -> i32 {
    let text = std::fs::read(sb.runtime_dir().join("uplink/helper.json")).expect("helper.json");
    let record: serde_json::Value = serde_json::from_slice(&text).expect("json");
    record["pid"].as_i64().expect("pid") as i32
}

/// SIGKILLs the daemon and waits until its serving child is gone too (it
/// outlives its killed parent for a moment; a daemon started meanwhile
/// would find the lock taken while the old one still answers `Version`).
fn kill_9_daemon(e: &mut Env) {
    let serving = e.sb.daemon_pid();
    e._daemon.signal(nix::sys::signal::Signal::SIGKILL);
    e._daemon.wait_exit(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(serving) {
        assert!(
            Instant::now() < deadline,
            "the serving daemon {serving} outlived its killed parent by 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`kill_9_daemon`], then a new daemon.
fn restart_after_kill_9(e: &mut Env) {
    kill_9_daemon(e);
    e._daemon = e.sb.start_daemon();
}

#[test]
fn cni_del_after_a_daemon_restart_releases_the_address() {
    survives_a_daemon_restart(env("net-restart"));
}

#[test]
fn a_pasta_uplink_survives_a_daemon_restart_too() {
    survives_a_daemon_restart(env_with_config("net-restart-pasta", PASTA));
}

fn survives_a_daemon_restart(mut e: Env) {
    let port = free_port();
    let config = with_host_port(pod_config(&e.sb, "survivor"), port, "");
    let (pod, _) = web_pod(&e, &config, "still-here");
    let ip = pod_ip(&e.sb, &pod);
    let helper = helper_pid(&e.sb);

    restart_after_kill_9(&mut e);
    assert_eq!(
        helper_pid(&e.sb),
        helper,
        "the uplink helper outlived the daemon"
    );
    assert!(process_alive(helper as u32));
    assert_eq!(pod_ip(&e.sb, &pod), ip, "the pod keeps its address");
    let body = http_get_eventually((Ipv4Addr::LOCALHOST, port));
    assert_eq!(
        body.trim(),
        "still-here",
        "the host port is open again after the restart"
    );

    assert_eq!(lease_files(&e.sb), vec![ip.clone()]);
    stop_pod(&e.sb, &pod);
    assert_eq!(
        lease_files(&e.sb),
        Vec::<String>::new(),
        "DEL released {ip}"
    );
    assert_eq!(veths_settled(&e.sb, 0), 0);
    remove_pod(&e.sb, &pod);
}

#[test]
fn a_dead_uplink_helper_is_reported_and_restarted() {
    let e = env("net-helper");
    let sb = &e.sb;
    let outside = OutsideServer::start();
    let (pod, id) = web_pod(&e, &pod_config(sb, "patient"), "x");
    let first = helper_pid(sb);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill slirp4netns");
    let deadline = Instant::now() + Duration::from_secs(15);
    while helper_pid(sb) == first {
        assert!(Instant::now() < deadline, "the helper was never restarted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(network_condition(sb).status, "{:?}", network_condition(sb));
    assert!(e
        ._daemon
        .log_text()
        .contains("restarting the uplink helper"));
    let got = fetch_from(sb, &id, &format!("http://{}:8099/", outside.addr));
    assert_eq!(
        got.trim(),
        "hello from outside",
        "the running pod is online again"
    );
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

#[test]
fn a_broken_cni_config_makes_the_network_not_ready() {
    let e = env("net-broken");
    let sb = &e.sb;
    let dir = sb.config_dir().join("cni/net.d");
    assert!(
        dir.join("10-ucri-bridge.conflist").exists(),
        "the default network was written"
    );
    assert!(network_condition(sb).status);
    sb.write_user_file(
        &dir.join("05-broken.conflist"),
        "{\"cniVersion\": \"1.0.0\",",
    );
    std::fs::remove_file(dir.join("10-ucri-bridge.conflist")).expect("rm");
    let condition = network_condition(sb);
    assert!(!condition.status);
    assert_eq!(condition.reason, "NetworkPluginNotReady");
    assert!(
        condition.message.contains("05-broken.conflist"),
        "{condition:?}"
    );
    let err = run_pod(sb, &pod_config(sb, "offline")).expect_err("no network");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        std::fs::read_dir(sb.runtime_dir().join("pods"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );

    let missing = r#"{"cniVersion":"1.0.0","name":"m","plugins":[{"type":"no-such-plugin"}]}"#;
    sb.write_user_file(&dir.join("01-missing.conflist"), missing);
    let condition = network_condition(sb);
    assert!(
        !condition.status && condition.message.contains("no-such-plugin"),
        "{condition:?}"
    );
}

#[test]
fn a_plugin_error_is_reported_with_its_message_and_undone() {
    let e = env("net-plugin-error");
    let sb = &e.sb;
    let dir = sb.config_dir().join("cni/net.d");
    // A /30 with a gateway leaves one address: the second pod cannot get one.
    let tiny = r#"{"cniVersion": "1.0.0", "name": "tiny", "plugins": [{"type": "bridge",
        "bridge": "cni1", "isGateway": true, "ipam": {"type": "host-local",
        "ranges": [[{"subnet": "10.99.0.0/30", "gateway": "10.99.0.1"}]]}}]}"#;
    sb.write_user_file(&dir.join("05-tiny.conflist"), tiny);
    let first = run_pod(sb, &pod_config(sb, "first")).expect("the one address");
    assert_eq!(pod_ip(sb, &first), "10.99.0.2");
    let err = run_pod(sb, &pod_config(sb, "second")).expect_err("the range is full");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().contains("CNI plugin bridge ADD failed")
            && err.message().contains("no IP addresses available"),
        "the plugin's own message: {err:?}"
    );
    assert_eq!(veths(sb), 1, "the failed ADD left no veth");
    let pods = std::fs::read_dir(sb.runtime_dir().join("pods"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(pods, 1, "and no pod dir or namespace");
    stop_pod(sb, &first);
    remove_pod(sb, &first);
}

#[test]
fn a_masquerading_bridge_gets_del_with_the_namespace_and_leaves_no_rule() {
    let e = env("net-masq");
    let sb = &e.sb;
    let dir = sb.config_dir().join("cni/net.d");
    // bridge finds its per-pod masquerade rules through the pod's veth, so
    // this chain's DEL must run before the namespace is unpinned.
    let masq = r#"{"cniVersion": "1.0.0", "name": "masq", "plugins": [{"type": "bridge",
        "bridge": "cni2", "isGateway": true, "ipMasq": true, "ipam": {"type": "host-local",
        "ranges": [[{"subnet": "10.98.0.0/24", "gateway": "10.98.0.1"}]]}}]}"#;
    sb.write_user_file(&dir.join("05-masq.conflist"), masq);
    let pod = run_pod(sb, &pod_config(sb, "masq")).expect("RunPodSandbox");
    assert_eq!(pod_ip(sb, &pod), "10.98.0.2");
    assert!(
        pod_rules(sb).iter().any(|r| r.contains(&pod)),
        "bridge made the pod's masquerade rules: {:?}",
        pod_rules(sb)
    );
    stop_pod(sb, &pod);
    assert_eq!(pod_rules(sb), Vec::<String>::new(), "no per-pod rule left");
    assert_eq!(
        lease_files_of(sb, "masq"),
        Vec::<String>::new(),
        "no lease left"
    );
    assert_eq!(veths_settled(sb, 0), 0, "no veth left");
    remove_pod(sb, &pod);
}

fn update_pod_cidr(sb: &Sandbox, cidr: &str) -> Result<(), tonic::Status> {
    block_on(async {
        client(sb)
            .await
            .update_runtime_config(UpdateRuntimeConfigRequest {
                runtime_config: Some(RuntimeConfig {
                    network_config: Some(NetworkConfig {
                        pod_cidr: cidr.to_owned(),
                    }),
                }),
            })
            .await
            .map(|_| ())
    })
}

/// Kubelet sends the node's pod CIDR with UpdateRuntimeConfig (every 10 s,
/// before it starts pods): pods get addresses from it, also after a daemon
/// restart. Pods already on the bridge's old range keep it until they go
/// (a bridge has one IPv4 gateway).
#[test]
fn the_pod_cidr_from_kubelet_feeds_the_default_network() {
    let mut e = env("net-podcidr");
    let sb = &e.sb;
    let old = run_pod(sb, &pod_config(sb, "before")).expect("pod before");
    assert!(pod_ip(sb, &old).starts_with("10.88."), "the default range");
    let bad = update_pod_cidr(sb, "10.77.0.0/99").expect_err("bad CIDR");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    update_pod_cidr(sb, "10.77.3.0/24").expect("UpdateRuntimeConfig");
    update_pod_cidr(sb, "").expect("an empty CIDR changes nothing");
    let still_old = run_pod(sb, &pod_config(sb, "beside")).expect("pod beside the old one");
    assert!(
        pod_ip(sb, &still_old).starts_with("10.88."),
        "the bridge keeps its range while pods use it"
    );
    for pod in [&old, &still_old] {
        let ip = pod_ip(sb, pod);
        stop_pod(sb, pod);
        assert_eq!(pod_ip(sb, pod), ip, "a stopped pod's status keeps its IP");
        remove_pod(sb, pod);
    }
    let new = run_pod(sb, &pod_config(sb, "after")).expect("pod after");
    let ip = pod_ip(sb, &new);
    assert!(
        ip.starts_with("10.77.3."),
        "an address from the pod CIDR: {ip}"
    );
    let (web, _) = web_pod(&e, &pod_config(sb, "web"), "on-the-new-range");
    let web_ip = pod_ip(sb, &web);
    assert!(web_ip.starts_with("10.77.3."));
    let url = format!("http://{web_ip}:8080/");
    let body = in_uplink(sb, &["timeout", "10", "busybox", "wget", "-qO-", &url]);
    assert_eq!(
        body.trim(),
        "on-the-new-range",
        "the node reaches a pod on the new range"
    );
    e._daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(e._daemon.wait_exit(Duration::from_secs(15)).success());
    // What a daemon killed mid-write leaves: temp files of atomic writes.
    let stale = [
        e.sb.runtime_dir()
            .join("cni/results/.deadbeef.json.tmp-999"),
        e.sb.data_dir().join("state/pods/.deadbeef.json.tmp-999"),
    ];
    for file in &stale {
        e.sb.write_user_file(file, "half");
    }
    e._daemon = e.sb.start_daemon();
    for file in &stale {
        assert!(!file.exists(), "swept at start: {}", file.display());
    }
    let sb = &e.sb;
    let restarted = run_pod(sb, &pod_config(sb, "restarted")).expect("pod after restart");
    assert!(
        pod_ip(sb, &restarted).starts_with("10.77.3."),
        "kept across a restart"
    );
    for pod in [new, web, restarted] {
        stop_pod(sb, &pod);
        remove_pod(sb, &pod);
    }
}

/// Verbose PodSandboxStatus shows the latest background CNI CHECK (the
/// status path runs no plugin): a pod whose veth was deleted under it shows
/// the plugin's error within the configured interval.
#[test]
fn a_broken_attachment_shows_in_the_background_cni_check() {
    let e = env_with_config("net-check", "[network]\ncni_check_seconds = 1\n");
    let sb = &e.sb;
    let pod = run_pod(sb, &pod_config(sb, "checked")).expect("pod");
    let check = |sb: &Sandbox| pod_status(sb, &pod).expect("verbose status").info["info"].clone();
    assert!(check(sb).contains("\"cniCheck\":\"ok\""), "{}", check(sb));
    let veth = in_uplink(sb, &["ip", "-o", "link", "show", "type", "veth"]);
    let name = veth
        .split(':')
        .nth(1)
        .and_then(|n| n.trim().split('@').next())
        .expect("the pod's veth")
        .to_owned();
    in_uplink(sb, &["ip", "link", "delete", &name]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while check(sb).contains("\"cniCheck\":\"ok\"") {
        assert!(
            Instant::now() < deadline,
            "CHECK never noticed: {}",
            check(sb)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(check(sb).contains("cniCheckedAt"), "{}", check(sb));
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

/// The host's own address as its routing table picks it (what `[node]
/// address = "auto"` gives the node namespace).
fn host_address() -> Ipv4Addr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    socket
        .connect("203.0.113.1:9")
        .expect("this test needs a default route");
    match socket.local_addr().expect("local address").ip() {
        std::net::IpAddr::V4(ip) => ip,
        other => panic!("this test needs an IPv4 host address, not {other}"),
    }
}

/// Serves one fixed HTTP body on the host's 127.0.0.1 until dropped.
fn host_loopback_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten().take(16) {
            let mut request = [0u8; 1024];
            let _ = client.read(&mut request);
            let _ = write!(client, "HTTP/1.0 200 OK\r\n\r\n{body}\n");
        }
    });
    port
}

#[test]
fn the_node_namespace_has_the_node_address_and_its_ports_linked_to_the_host() {
    let node_port = free_port();
    let api_port = host_loopback_server("from-the-hosts-loopback");
    let config = format!("[node]\nports = [{node_port}]\nhost_loopback_ports = [{api_port}]\n");
    let e = env_with_config("net-node", &config);
    let sb = &e.sb;
    let address = host_address();

    let lo = in_uplink(sb, &["ip", "-4", "-o", "address", "show", "dev", "lo"]);
    assert!(
        lo.contains(&format!("{address}/32")),
        "the node address {address} is on the node namespace's lo: {lo}"
    );
    let told = in_uplink(sb, &["sh", "-c", "echo \"$UCRI_NODE_IP\""]);
    assert_eq!(
        told.trim(),
        address.to_string(),
        "UCRI_NODE_IP for kubelet's --node-ip"
    );

    // A kubeconfig's https://127.0.0.1:PORT works inside the node namespace.
    let inside = in_uplink(
        sb,
        &[
            "busybox",
            "wget",
            "-qO-",
            &format!("http://127.0.0.1:{api_port}/"),
        ],
    );
    assert_eq!(inside.trim(), "from-the-hosts-loopback");

    // kubelet's port, published on the host: it answers at the node address.
    let www = sb.root.join("node-www");
    sb.write_user_file(&www.join("index.html"), "kubelet-stand-in\n");
    let mut server = sb
        .ucri(&["nsenter", "--", "busybox", "httpd", "-f", "-p"])
        .arg(format!("127.0.0.1:{node_port}"))
        .arg("-h")
        .arg(&www)
        .spawn()
        .expect("httpd in the node namespace");
    let at_node_address = http_get_eventually((address, node_port));
    let on_loopback = http_get((Ipv4Addr::LOCALHOST, node_port));
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(at_node_address.trim(), "kubelet-stand-in");
    assert_eq!(
        on_loopback.as_deref().map(str::trim),
        Some("kubelet-stand-in")
    );

    let info = runtime_status(sb);
    let info = info.info.get("network").expect("network info");
    assert!(
        info.contains(&format!("\"address\":\"{address}\"")),
        "Status shows the node address: {info}"
    );
}

/// 400 idle connections to the CRI socket of a daemon held to 256
/// descriptors get its 64 connection slots (a quarter of the limit) and
/// the socket's backlog, not the descriptors that pods, monitors and the
/// uplink need: the daemon does not spin, a connection it already serves
/// keeps working (a pod starts and gets an address), the uplink helper is
/// left alone, and new clients get in once the flood ends. (Without the
/// slots, the descriptors ran out, accept spun, and the watchdog restarted
/// a live slirp4netns it could no longer see.)
#[test]
fn a_flood_of_idle_connections_takes_no_descriptors_the_node_needs() {
    let e = env_via("conn-flood", &["prlimit", "--nofile=256:256"]);
    let sb = &e.sb;
    let (first, _) = web_pod(&e, &pod_config(sb, "before"), "before");
    let helper = helper_pid(sb);
    let serving = sb.daemon_pid();
    block_on(async {
        let mut open = client(sb).await;
        open.version(VersionRequest::default())
            .await
            .expect("Version before the flood");
        let mut flood = Vec::new();
        for _ in 0..400 {
            let attempt = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::UnixStream::connect(sb.socket()),
            );
            if let Ok(Ok(stream)) = attempt.await {
                flood.push(stream);
            }
        }
        assert!(flood.len() > 64, "only {} connections got in", flood.len());
        let ticks = cpu_ticks(serving);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let spent = cpu_ticks(serving) - ticks;
        assert!(
            spent < 100,
            "the daemon spent {spent} ticks of CPU in 3 s of flood"
        );
        let descriptors = open_descriptors(serving);
        assert!(
            descriptors < 192,
            "{descriptors} descriptors open during the flood"
        );
        let pod = open
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(pod_config(sb, "during")),
                runtime_handler: String::new(),
            })
            .await
            .expect("a pod starts on the open connection during the flood")
            .into_inner()
            .pod_sandbox_id;
        let status = open
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod,
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .expect("status");
        let ip = status.network.map(|n| n.ip).unwrap_or_default();
        assert!(!ip.is_empty(), "the pod got an address");
        drop(flood);
    });
    assert_eq!(helper_pid(sb), helper, "the uplink helper was left alone");
    let log = e._daemon.log_text();
    assert!(!log.contains("restarting the uplink helper"), "{log}");
    assert!(
        !pod_ip(sb, &first).is_empty(),
        "a new client gets in after the flood"
    );
}

/// The lowest descriptor number process `pid` has free: the one its next
/// open would get. The least of 20 looks 10 ms apart, so that a file its
/// periodic sweep holds open for a moment does not count as taken.
fn lowest_free_descriptor(pid: u32) -> u64 {
    let look = || {
        let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("the daemon's descriptors")
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect();
        (0..).find(|n| !open.contains(n)).expect("a free number")
    };
    (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(10));
            look()
        })
        .min()
        .expect("looks")
}

/// The soft and hard `RLIMIT_NOFILE` of process `pid`.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("the open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

/// Sets them as the daemon's own user (root here may lack
/// CAP_SYS_RESOURCE: these VMs drop it).
fn set_open_files_limit(sb: &Sandbox, pid: u32, soft: &str, hard: &str) {
    let status = sb
        .command_as_user("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .expect("prlimit");
    assert!(status.success(), "prlimit --nofile={soft}:{hard} failed");
}

/// ListPodSandbox on an open connection.
async fn list_pods(
    open: &mut ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
) -> Result<Vec<PodSandbox>, tonic::Status> {
    open.list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map(|r| r.into_inner().items)
}

/// A mount table the daemon cannot read says nothing about its pods: they
/// stay ready while it cannot, and after. Here the daemon has no
/// descriptor left to open `/proc/self/mountinfo` with (its soft limit is
/// lowered to the next number it would use) while kubelet lists pods on a
/// connection it already has. (Before, each such list marked every pod
/// NotReady, and recorded it so, for good.)
#[test]
fn pods_stay_ready_while_the_mount_table_cannot_be_read() {
    let e = env("mountinfo-unreadable");
    let sb = &e.sb;
    let pod = run_pod(sb, &pod_config(sb, "steady")).expect("pod");
    let serving = sb.daemon_pid();
    let (soft, hard) = open_files_limit(serving);
    let ready = PodSandboxState::SandboxReady as i32;
    block_on(async {
        let mut open = client(sb).await;
        let before = list_pods(&mut open).await.expect("ListPodSandbox before");
        assert!(before.iter().any(|p| p.id == pod && p.state == ready));
        let limit = lowest_free_descriptor(serving).to_string();
        set_open_files_limit(sb, serving, &limit, &hard);
        let during = list_pods(&mut open).await;
        set_open_files_limit(sb, serving, &soft, &hard);
        let during = during.expect("ListPodSandbox without descriptors to spare");
        assert!(
            during.iter().any(|p| p.id == pod && p.state == ready),
            "the pod reads ready while the mount table cannot be read: {during:?}"
        );
        let after = list_pods(&mut open).await.expect("ListPodSandbox after");
        assert!(
            after.iter().any(|p| p.id == pod && p.state == ready),
            "and after: {after:?}"
        );
    });
    let log = e._daemon.log_text();
    assert!(
        log.contains("cannot read the mount table; pods keep their phase"),
        "the daemon did meet an unreadable mount table: {log}"
    );
    let status = pod_status(sb, &pod)
        .expect("status")
        .status
        .expect("status");
    assert_eq!(status.state, ready, "the recorded phase is still ready");
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

/// The socket bypass agent's counters of a pod, from verbose status.
fn bypass_stats(sb: &Sandbox, pod: &str) -> serde_json::Value {
    let info = pod_status(sb, pod).expect("verbose status").info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("info json");
    info["socketBypass"].clone()
}

fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

fn bypass_condition(sb: &Sandbox) -> RuntimeCondition {
    runtime_status(sb)
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.r#type == "SocketBypass")
        .expect("a SocketBypass condition")
}

/// A pod's connection to the outside takes the socket bypass (its agent
/// installs a host socket), while connections to another pod, to its own
/// loopback and to a service address stay on the pod's path; after a
/// daemon restart the agent still serves the running container; a pod that
/// opts out by annotation has no agent and reaches the outside through the
/// uplink. The bypass joins a container's seccomp profile: an Unconfined
/// container keeps no filter at all unless its pod asks for the bypass.
#[test]
fn connections_to_the_outside_take_the_socket_bypass_and_pod_traffic_does_not() {
    let mut e = env("net-bypass");
    let outside = OutsideServer::start();
    let condition = bypass_condition(&e.sb);
    assert!(condition.status, "{condition:?}");
    let (pod_a, a) = web_pod_with(
        &e,
        &pod_config(&e.sb, "bypass-a"),
        "hello-from-a",
        runtime_default_seccomp,
    );
    assert_eq!(seccomp_mode(&e.sb, &a), "2", "RuntimeDefault is a filter");
    let (pod_b, b) = web_pod(&e, &pod_config(&e.sb, "bypass-b"), "hello-from-b");
    assert_eq!(
        seccomp_mode(&e.sb, &b),
        "0",
        "an Unconfined container has no filter"
    );
    assert!(
        bypass_stats(&e.sb, &pod_b).is_null(),
        "nor an agent: no container of the pod needs one"
    );
    let ip_b = pod_ip(&e.sb, &pod_b);
    let start = bypass_stats(&e.sb, &pod_a);
    assert!(
        counter(&start, "listeners") >= 1,
        "the container's listener: {start}"
    );

    let outside_url = format!("http://{}:8099/", outside.addr);
    let got = fetch_from(&e.sb, &a, &outside_url);
    assert_eq!(got.trim(), "hello from outside");
    let after_outside = bypass_stats(&e.sb, &pod_a);
    assert!(
        counter(&after_outside, "bypassed") > counter(&start, "bypassed"),
        "the outside connection was bypassed: {start} -> {after_outside}"
    );
    assert_eq!(counter(&after_outside, "fell_back"), 0, "{after_outside}");

    let got = fetch_from(&e.sb, &a, &format!("http://{ip_b}:8080/"));
    assert_eq!(got.trim(), "hello-from-b", "pod to pod still works");
    let got = fetch_from(&e.sb, &a, "http://127.0.0.1:8080/");
    assert_eq!(got.trim(), "hello-from-a");
    let service = exec(
        &e.sb,
        &a,
        &[
            "timeout",
            "2",
            "wget",
            "-q",
            "-O",
            "-",
            "http://10.96.0.1:80/",
        ],
        10,
    )
    .expect("ExecSync");
    assert_ne!(service.exit_code, 0, "nothing serves the service address");
    let after_pods = bypass_stats(&e.sb, &pod_a);
    assert_eq!(
        counter(&after_pods, "bypassed"),
        counter(&after_outside, "bypassed"),
        "pod, loopback and service traffic is not bypassed: {after_pods}"
    );
    assert!(
        counter(&after_pods, "kept") >= counter(&after_outside, "kept") + 3,
        "the three connections were seen and kept: {after_outside} -> {after_pods}"
    );

    restart_after_kill_9(&mut e);
    let got = fetch_from(&e.sb, &a, &outside_url);
    assert_eq!(got.trim(), "hello from outside", "after a daemon restart");
    let restarted = bypass_stats(&e.sb, &pod_a);
    assert!(
        counter(&restarted, "bypassed") > counter(&after_pods, "bypassed"),
        "the agent outlived the daemon and still bypasses: {restarted}"
    );

    let mut opted_out = pod_config(&e.sb, "bypass-off");
    opted_out
        .annotations
        .insert("ucri.io/socket-bypass".into(), "false".into());
    let (pod_c, c) = web_pod_with(&e, &opted_out, "hello-from-c", runtime_default_seccomp);
    assert!(
        bypass_stats(&e.sb, &pod_c).is_null(),
        "no agent for an opted-out pod"
    );
    let got = fetch_from(&e.sb, &c, &outside_url);
    assert_eq!(got.trim(), "hello from outside", "through the uplink");

    let mut opted_in = pod_config(&e.sb, "bypass-on");
    opted_in
        .annotations
        .insert("ucri.io/socket-bypass".into(), "true".into());
    let (pod_d, d) = web_pod(&e, &opted_in, "hello-from-d");
    assert_eq!(seccomp_mode(&e.sb, &d), "2", "the bypass's own filter");
    let got = fetch_from(&e.sb, &d, &outside_url);
    assert_eq!(got.trim(), "hello from outside");
    let stats = bypass_stats(&e.sb, &pod_d);
    assert!(
        counter(&stats, "bypassed") >= 1,
        "an Unconfined container of a pod that asked: {stats}"
    );

    let agents = e.sb.runtime_dir().join("bypass");
    for pod in [pod_a, pod_b, pod_c, pod_d] {
        stop_pod(&e.sb, &pod);
        remove_pod(&e.sb, &pod);
    }
    assert_eq!(
        dir_entries(&agents).len(),
        0,
        "agents and their sockets are gone"
    );
}

#[test]
fn a_bad_socket_bypass_annotation_is_refused_and_leaves_nothing() {
    let e = env("net-bypass-bad");
    let mut config = pod_config(&e.sb, "bypass-bad");
    config
        .annotations
        .insert("ucri.io/socket-bypass".into(), "maybe".into());
    let err = run_pod(&e.sb, &config).expect_err("a bad annotation");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ucri.io/socket-bypass"), "{err:?}");
    assert_eq!(dir_entries(&e.sb.runtime_dir().join("pods")).len(), 0);
}

/// A connection to a host port from another machine (a namespace of the
/// test's, through the host's veth address) reaches the pod from the
/// client's own address; one from the host's loopback still works.
#[test]
fn host_ports_show_the_pod_the_clients_own_address() {
    let e = env("net-client-addr");
    let sb = &e.sb;
    let outside = OutsideServer::start();
    let port = free_port();
    let config = with_host_port(pod_config(sb, "who"), port, "");
    let pod = run_pod(sb, &config).expect("RunPodSandbox");
    // httpd holds a connection open while it waits for the request.
    let script = "exec httpd -f -p 8080 -h /tmp";
    let id = create(sb, &pod, container_config(&e.image, "who", script), &config)
        .expect("CreateContainer");
    start(sb, &id).expect("StartContainer");
    wait_state(sb, &id, ContainerState::ContainerRunning);

    let mut client = Command::new("ip")
        .args(["netns", "exec", &outside.name, "sh", "-c"])
        .arg(format!("sleep 8 | busybox nc {} {port}", outside.host_addr))
        .spawn()
        .expect("a client in the outside namespace");
    let deadline = Instant::now() + Duration::from_secs(15);
    let seen = loop {
        let table = exec(sb, &id, &["netstat", "-tn"], 10).expect("netstat");
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        if table.contains(&format!("{}:", outside.addr)) {
            break table;
        }
        assert!(
            Instant::now() < deadline,
            "the pod never saw a connection from {}: {table}",
            outside.addr
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        !seen.contains("10.88.0.1:"),
        "no connection from the uplink's address: {seen}"
    );
    let _ = client.kill();
    let _ = client.wait();

    let local = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).expect("from loopback");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let table = exec(sb, &id, &["netstat", "-tn"], 10).expect("netstat");
        let table = String::from_utf8_lossy(&table.stdout).into_owned();
        if table.contains("ESTABLISHED") && table.contains("10.88.0.1:") {
            break;
        }
        assert!(Instant::now() < deadline, "no loopback connection: {table}");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(local);
    stop_pod(sb, &pod);
    remove_pod(sb, &pod);
}

/// A daemon killed between starting a pod's socket bypass agent and
/// recording the pod leaves an agent nobody knows: the next start ends it.
#[test]
fn the_bypass_agent_of_a_pod_without_a_record_ends_at_the_next_start() {
    let mut e = env("net-bypass-orphan");
    let (pod, _) = web_pod_with(
        &e,
        &pod_config(&e.sb, "orphan"),
        "x",
        runtime_default_seccomp,
    );
    let agents = e.sb.runtime_dir().join("bypass");
    let pid_file = agents.join(format!("{}.sock.pid", &pod[..16]));
    let agent: u32 = std::fs::read_to_string(&pid_file)
        .expect("the agent's pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(process_alive(agent));

    kill_9_daemon(&mut e);
    assert!(process_alive(agent), "the agent outlives the daemon");
    std::fs::remove_file(e.sb.data_dir().join(format!("state/pods/{pod}.json")))
        .expect("drop the pod's record, as a kill before it was written would");
    e._daemon = e.sb.start_daemon();
    assert!(!process_alive(agent), "the unknown pod's agent was ended");
    assert_eq!(
        dir_entries(&agents).len(),
        0,
        "its socket and pid file are gone"
    );
}

/// A pod's remembered socket bypass agent is signalled only while that pid
/// is still its agent: after a restart the pid may be another process's
/// (here a process of the same user), and StopPodSandbox leaves it alone.
#[test]
fn a_remembered_bypass_agent_pid_that_now_names_another_process_is_not_killed() {
    let mut e = env("net-bypass-reused");
    let (pod, _) = web_pod_with(
        &e,
        &pod_config(&e.sb, "reused"),
        "x",
        runtime_default_seccomp,
    );
    let record = e.sb.data_dir().join(format!("state/pods/{pod}.json"));
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("pod record")).expect("JSON");
    let agent = state["bypass_pid"].as_i64().expect("bypass_pid") as i32;
    assert!(agent > 0, "the pod has an agent");
    kill_9_daemon(&mut e);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("end the agent");
    let mut bystander =
        e.sb.command_as_user("sleep")
            .arg("300")
            .spawn()
            .expect("a bystander process");
    state["bypass_pid"] = serde_json::json!(bystander.id());
    std::fs::write(&record, serde_json::to_vec(&state).expect("JSON")).expect("write state");
    std::os::unix::fs::chown(&record, Some(e.sb.user.uid), Some(e.sb.user.gid))
        .expect("give the record back");
    e._daemon = e.sb.start_daemon();
    stop_pod(&e.sb, &pod);
    remove_pod(&e.sb, &pod);
    assert!(
        process_alive(bystander.id()),
        "the process that now has the agent's old pid is alive"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}
