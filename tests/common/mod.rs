//! Harness for integration tests: runs the real `ucri` binary as an
//! unprivileged user (the current user, or `ucri-test` when the tests run as
//! root) in a private sandbox of directories, and talks CRI to it.
#![allow(dead_code)]

pub mod cri;
pub mod hostile;
pub mod registry;

#[allow(unused_imports)] // not every test binary takes a port
pub use registry::free_port;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use ucri_cri_api::v1::runtime_service_client::RuntimeServiceClient;

/// The test user when the suite runs as root.
pub const TEST_USER: &str = "ucri-test";
/// A user without subordinate id ranges, for the fallback test.
pub const NOSUBID_USER: &str = "ucri-nosubid";

/// A host user the daemon runs as.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Login name.
    pub name: String,
    /// Numeric uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
}

/// True when the test process is root (and so switches to test users).
pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the test naming a missing prerequisite.
pub fn require(condition: bool, prerequisite: &str) {
    assert!(condition, "missing test prerequisite: {prerequisite}");
}

/// Looks up `name` in the passwd database, failing with the fix if absent.
pub fn user_named(name: &str) -> TestUser {
    let user = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!("missing test prerequisite: user {name}; run `packaging/setup-host.sh --test` as root")
        });
    TestUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    }
}

/// The user tests run the daemon as: `ucri-test` under root, else the caller.
pub fn default_user() -> TestUser {
    if running_as_root() {
        return user_named(TEST_USER);
    }
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .expect("current user has a passwd entry");
    user_named(&name)
}

/// A copy of the `ucri` binary every test user can execute (the build tree
/// may live under a private home directory).
pub fn ucri_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(format!("/tmp/ucri-it-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create binary dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let bin = dir.join("ucri");
        std::fs::copy(env!("CARGO_BIN_EXE_ucri"), &bin).expect("copy ucri binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        bin
    })
}

/// A private set of directories (home, XDG runtime dir) owned by a test
/// user, so tests run in parallel without sharing a daemon or holder.
pub struct Sandbox {
    /// The user the daemon runs as.
    pub user: TestUser,
    /// Root of the sandbox.
    pub root: PathBuf,
    daemon_pid_hint: Option<u32>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Sandbox {
    /// A sandbox for the default user.
    pub fn new(test: &str) -> Sandbox {
        Sandbox::for_user(test, default_user())
    }

    /// A sandbox for `user`.
    pub fn for_user(test: &str, user: TestUser) -> Sandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = PathBuf::from(format!("/tmp/ucri-it/{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let sandbox = Sandbox {
            user,
            root,
            daemon_pid_hint: None,
        };
        for dir in [sandbox.home(), sandbox.xdg_runtime_dir()] {
            std::fs::create_dir_all(&dir).expect("create sandbox dir");
        }
        std::fs::set_permissions("/tmp/ucri-it", std::fs::Permissions::from_mode(0o1777)).ok();
        sandbox.chown_tree(&sandbox.root);
        std::fs::set_permissions(
            sandbox.xdg_runtime_dir(),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod runtime dir");
        sandbox
    }

    /// Gives every file of the sandbox to its user (after the test, as root,
    /// created some).
    pub fn give_to_user(&self) {
        self.chown_tree(&self.root);
    }

    /// Creates `dir` (and parents) owned by the sandbox user.
    pub fn mkdir_as_user(&self, dir: &Path) {
        std::fs::create_dir_all(dir).expect("mkdir");
        self.give_to_user();
    }

    fn chown_tree(&self, dir: &Path) {
        if !running_as_root() {
            return;
        }
        let out = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.user.uid, self.user.gid))
            .arg(dir)
            .output()
            .expect("chown");
        // The daemon may be deleting files meanwhile (a removed container's
        // root filesystem goes in the background): those need no owner.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let only_vanished = stderr
            .lines()
            .all(|l| l.contains("No such file or directory"));
        assert!(
            out.status.success() || only_vanished,
            "chown {}: {stderr}",
            dir.display()
        );
    }

    /// The user's home inside the sandbox.
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }

    /// `$XDG_RUNTIME_DIR`.
    pub fn xdg_runtime_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// ucri's runtime dir.
    pub fn runtime_dir(&self) -> PathBuf {
        self.xdg_runtime_dir().join("ucri")
    }

    /// ucri's data dir.
    pub fn data_dir(&self) -> PathBuf {
        self.home().join(".local/share/ucri")
    }

    /// ucri's config dir.
    pub fn config_dir(&self) -> PathBuf {
        self.home().join(".config/ucri")
    }

    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("ucri.sock")
    }

    /// A command running `program` as the sandbox user with its environment.
    pub fn command_as_user(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("HOME", self.home())
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("XDG_RUNTIME_DIR", self.xdg_runtime_dir())
            .env("UCRI_LOG_LEVEL", "debug")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        if running_as_root() {
            cmd.uid(self.user.uid).gid(self.user.gid);
        }
        cmd
    }

    /// `ucri ARGS` as the sandbox user.
    pub fn ucri(&self, args: &[&str]) -> Command {
        let mut cmd = self.command_as_user(ucri_binary());
        cmd.args(args);
        cmd
    }

    /// Runs `ucri ARGS` to completion.
    pub fn run_ucri(&self, args: &[&str]) -> Output {
        self.ucri(args).output().expect("run ucri")
    }

    /// Writes a file as the sandbox user would own it.
    pub fn write_user_file(&self, path: &Path, contents: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, contents).expect("write");
        self.give_to_user();
    }

    /// Starts `ucri daemon` and waits until `Version` answers.
    pub fn start_daemon(&mut self) -> Daemon {
        let daemon = self.spawn_daemon(&[]);
        daemon.wait_serving(self);
        self.daemon_pid_hint = Some(daemon.parent_pid());
        daemon
    }

    /// Starts `WRAPPER… ucri daemon` (e.g. `prlimit --nofile=256:`) and
    /// waits until `Version` answers.
    pub fn start_daemon_via(&mut self, wrapper: &[&str]) -> Daemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.root.join(format!("daemon-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let child = self
            .command_as_user(wrapper[0])
            .args(&wrapper[1..])
            .arg(ucri_binary())
            .arg("daemon")
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn the wrapped ucri daemon");
        let daemon = Daemon { child, log };
        daemon.wait_serving(self);
        self.daemon_pid_hint = Some(daemon.parent_pid());
        daemon
    }

    /// Spawns `ucri daemon EXTRA` without waiting; output goes to a log file.
    pub fn spawn_daemon(&self, extra: &[&str]) -> Daemon {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let log = self.root.join(format!("daemon-{n}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut args = vec!["daemon"];
        args.extend_from_slice(extra);
        let child = self
            .ucri(&args)
            .stdout(file.try_clone().expect("dup"))
            .stderr(file)
            .spawn()
            .expect("spawn ucri daemon");
        Daemon { child, log }
    }

    /// The serving child's pid from `daemon.pid`.
    pub fn daemon_pid(&self) -> u32 {
        read_pid(&self.runtime_dir().join("daemon.pid"))
    }

    /// SIGKILLs the serving daemon and waits (10 s at most) until it is gone:
    /// a daemon started before that finds the lock taken.
    pub fn kill_serving_daemon(&self) {
        let serving = self.daemon_pid();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(serving as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(serving) {
            assert!(
                Instant::now() < deadline,
                "the serving daemon {serving} outlived SIGKILL by 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_lock_released(deadline);
    }

    /// Waits until no process holds the daemon lock: the host-side parent
    /// outlives the serving child by its clean-up (pid file, socket), and a
    /// daemon started before it is done finds the lock taken.
    fn wait_lock_released(&self, deadline: Instant) {
        let path = self.runtime_dir().join("ucri.lock");
        loop {
            let Ok(file) = std::fs::File::open(&path) else {
                return; // removed by the parent's release: free
            };
            if nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok() {
                return; // dropping the Flock unlocks it again
            }
            assert!(
                Instant::now() < deadline,
                "the daemon lock {} was still held 10 s after SIGKILL of the serving daemon",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The holder record (`holder.json`).
    pub fn holder(&self) -> serde_json::Value {
        let text = std::fs::read(self.runtime_dir().join("holder.json")).expect("holder.json");
        serde_json::from_slice(&text).expect("holder.json is JSON")
    }

    /// The holder's pid.
    pub fn holder_pid(&self) -> u32 {
        self.holder()["pid"].as_u64().expect("holder pid") as u32
    }

    /// Pulls `image` through the CRI ImageService; returns the image ID.
    pub fn pull(&self, image: &str) -> String {
        block_on(async {
            let channel = connect(&self.socket()).await.expect("connect");
            let request = ucri_cri_api::v1::PullImageRequest {
                image: Some(ucri_cri_api::v1::ImageSpec {
                    image: image.to_owned(),
                    ..Default::default()
                }),
                auth: None,
                sandbox_config: None,
            };
            let reply = ucri_cri_api::v1::image_service_client::ImageServiceClient::new(channel)
                .pull_image(request)
                .await;
            reply
                .unwrap_or_else(|e| panic!("pulling {image}: {e}"))
                .into_inner()
                .image_ref
        })
    }

    /// A gRPC RuntimeService client on the sandbox socket.
    pub async fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(
            connect(&self.socket())
                .await
                .expect("connect to CRI socket"),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let pid_file = self.runtime_dir().join("daemon.pid");
        if let Ok(text) = std::fs::read_to_string(&pid_file) {
            if let Ok(pid) = text.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // The parent removes the pid file and the lock once its child is
            // gone; only then does `system reset` accept to run.
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.run_ucri(&["system", "reset", "--force"]);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A running `ucri daemon` (the host-side parent process).
pub struct Daemon {
    child: Child,
    /// Its combined stdout/stderr.
    pub log: PathBuf,
}

impl Daemon {
    /// The host-side parent's pid.
    pub fn parent_pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_serving(&self, sandbox: &Sandbox) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if sandbox.socket().exists() && block_on(version_answers(&sandbox.socket())) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "daemon did not serve within 30 s; log:\n{}",
            self.log_text()
        );
    }

    /// Sends `signal` to the host-side parent.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal daemon");
    }

    /// Waits for the parent to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "daemon did not exit within {limit:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `ucri nsenter -- ARGS` (the uplink namespace); its stdout.
pub fn in_uplink(sb: &Sandbox, args: &[&str]) -> String {
    let mut all = vec!["nsenter", "--"];
    all.extend_from_slice(args);
    let out = sb.run_ucri(&all);
    assert!(out.status.success(), "nsenter {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The veths in the uplink namespace.
pub fn veths(sb: &Sandbox) -> usize {
    in_uplink(sb, &["ip", "-o", "link", "show", "type", "veth"])
        .lines()
        .count()
}

/// The veths once the kernel has settled: a stopped pod's namespace is
/// unpinned before CNI DEL, and the kernel deletes its veth with it, after
/// the RPC returned. Waits up to 10 s for `expected`, then returns what is.
pub fn veths_settled(sb: &Sandbox, expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = veths(sb);
        if now == expected || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of a process (all its threads), in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 overall; those after ")" start at field 3.
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Reads a pid file.
pub fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .trim()
        .parse()
        .expect("pid file holds a number")
}

/// True while `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The inode of namespace `kind` of `pid`.
pub fn ns_inode(pid: u32, kind: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("ns {kind} of {pid}: {e}"))
        .ino()
}

/// Connects to a CRI unix socket with `ucri ctl`'s own connector.
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    ucri::ctl::connect(socket, Duration::from_secs(5)).await
}

/// True when a `Version` RPC succeeds on `socket` (the socket accepts
/// connections as soon as it is bound, before the daemon serves).
pub async fn version_answers(socket: &Path) -> bool {
    let Ok(channel) = connect(socket).await else {
        return false;
    };
    RuntimeServiceClient::new(channel)
        .version(ucri_cri_api::v1::VersionRequest::default())
        .await
        .is_ok()
}

/// Runs a future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future)
}

/// Output as text, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The chain IDs (hex) of an `images.json` image entry's layers, bottom first.
pub fn chain_hexes(info: &serde_json::Value) -> Vec<String> {
    use sha2::Digest as _;
    let layers = info["layers"].as_array().expect("layers");
    let mut chains: Vec<String> = Vec::new();
    for layer in layers {
        let diff = layer["diffId"].as_str().expect("diffId").to_owned();
        let next = match chains.last() {
            None => diff,
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(sha2::Sha256::digest(format!("{parent} {diff}")))
            ),
        };
        chains.push(next);
    }
    chains
        .iter()
        .map(|c| c.trim_start_matches("sha256:").to_owned())
        .collect()
}

/// `GET /` over HTTP/1.0 to `address` (`HOST:PORT`): the whole response.
pub fn http_get(address: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(address)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    Ok(response)
}

/// A process's peak resident memory (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The names in `dir` (none when it does not exist), sorted.
pub fn dir_entries(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How many descriptors process `pid` has open.
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
