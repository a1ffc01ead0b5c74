//! Pod sandboxes without a pause image: the pod's network, IPC and UTS
//! namespaces are created on a thread of the daemon and pinned as
//! bind-mounted nsfs files (what CRI-O's pinns does), with the hostname set
//! and loopback up inside; a tmpfs serves as the pod's `/dev/shm`. A shared
//! PID namespace has its init under util-linux `unshare --fork`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use ucri_cri_api::v1::{DnsConfig, NamespaceMode, PodSandboxConfig};

use super::command::CommandError;
pub use super::pod_dir::PodDir;
use super::state::PodNamespaces;
use super::userns::UsernsError;

/// Errors of the sandbox (namespace) driver.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The pod's settings cannot be met on this host.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The pod's init failed.
    #[error("{0}")]
    Runtime(String),
    /// The pod's user namespace could not be made.
    #[error(transparent)]
    Userns(#[from] UsernsError),
    /// A helper program failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A file, mount or namespace operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let context = context.into();
    move |source| SandboxError::Io { context, source }
}

/// Which namespaces the pod gets of its own (false = the host's).
pub fn own_namespaces(config: &PodSandboxConfig) -> PodNamespaces {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    let own = |mode: Option<i32>| mode != Some(NamespaceMode::Node as i32);
    PodNamespaces {
        network: own(options.map(|o| o.network)),
        ipc: own(options.map(|o| o.ipc)),
        pid_shared: options.map(|o| o.pid) == Some(NamespaceMode::Pod as i32),
        host_pid: options.map(|o| o.pid) == Some(NamespaceMode::Node as i32),
        user: options
            .and_then(|o| o.userns_options.as_ref())
            .is_some_and(|u| u.mode == NamespaceMode::Pod as i32),
    }
}

/// Creates the pod's files and namespaces. On failure the caller removes
/// everything with [`teardown`].
///
/// `nameserver` replaces the host's nameservers in the pod's resolv.conf
/// when the CRI gives no DNS config (the uplink's resolver).
pub fn create(
    dir: &PodDir,
    config: &PodSandboxConfig,
    ns: &PodNamespaces,
    hostname: &str,
    nameserver: Option<&str>,
    user_maps: Option<&(String, String)>,
) -> Result<(), SandboxError> {
    fs::create_dir_all(dir.path().join("ns")).map_err(io("creating the pod dir"))?;
    write_files(dir, config, hostname, nameserver)?;
    if let Some(maps) = user_maps {
        super::userns::pin_namespaces(dir, maps, hostname)?;
    } else if ns.network || ns.ipc {
        pin_namespaces(dir, ns, hostname)?;
    }
    if ns.ipc {
        mount_shm(&dir.shm())?;
    }
    Ok(())
}

fn write_files(
    dir: &PodDir,
    config: &PodSandboxConfig,
    hostname: &str,
    nameserver: Option<&str>,
) -> Result<(), SandboxError> {
    let host = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let text = resolv_conf(config.dns_config.as_ref(), &host, nameserver);
    fs::write(dir.resolv_conf(), text).map_err(io("writing resolv.conf"))?;
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    fs::write(dir.hosts(), hosts).map_err(io("writing hosts"))?;
    fs::write(dir.hostname_file(), format!("{hostname}\n")).map_err(io("writing hostname"))
}

/// resolv.conf from the CRI DNSConfig; else the host's (`host`), with its
/// nameservers replaced by `nameserver` when there is one.
pub fn resolv_conf(dns: Option<&DnsConfig>, host: &str, nameserver: Option<&str>) -> String {
    let Some(dns) =
        dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty())
    else {
        let Some(server) = nameserver else {
            return host.to_owned();
        };
        let mut out: String = host
            .lines()
            .filter(|l| !l.trim_start().starts_with("nameserver"))
            .map(|l| format!("{l}\n"))
            .collect();
        out.push_str(&format!("nameserver {server}\n"));
        return out;
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// New UTS (always, unless host network) + network + IPC namespaces,
/// pinned to files, with the hostname set and loopback up; made on a thread
/// of the daemon, no process spawned.
fn pin_namespaces(dir: &PodDir, ns: &PodNamespaces, hostname: &str) -> Result<(), SandboxError> {
    let pin = |kind: &str, wanted: bool| -> Result<Option<PathBuf>, SandboxError> {
        if !wanted {
            return Ok(None);
        }
        let pin = dir.ns(kind);
        fs::write(&pin, b"").map_err(io("creating a namespace pin"))?;
        Ok(Some(pin))
    };
    let net = pin("net", ns.network)?;
    let ipc = pin("ipc", ns.ipc)?;
    let uts = pin("uts", ns.network)?;
    ucri_rootless::enter::pin_new_namespaces(&ucri_rootless::enter::NewNamespaces {
        net: net.as_deref(),
        ipc: ipc.as_deref(),
        uts: uts.as_deref().map(|p| (p, hostname)),
    })
    .map_err(io("creating the pod's namespaces"))
}

fn mount_shm(target: &Path) -> Result<(), SandboxError> {
    fs::create_dir_all(target).map_err(io("creating the pod's /dev/shm"))?;
    nix::mount::mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| io("mounting the pod's /dev/shm")(e.into()))
}

/// Starts the pod's init (catatonit in pause mode) as PID 1 of a new PID
/// namespace pinned at the pod's `ns/pid`, and waits until the pin is in
/// place. Returns the pid of the `unshare` holding it (`--kill-child`: when
/// it is killed, the init and the whole namespace go with it).
pub fn start_pid_init(dir: &PodDir) -> Result<i32, SandboxError> {
    let pin = dir.ns("pid");
    fs::write(&pin, b"").map_err(io("creating the PID namespace pin"))?;
    let init = ucri_rootless::which("catatonit").ok_or_else(|| {
        SandboxError::FailedPrecondition(
            "catatonit is not installed (apt-get install catatonit)".into(),
        )
    })?;
    let child = Command::new("unshare")
        .arg(format!("--pid={}", pin.display()))
        .args(["--fork", "--kill-child", "--"])
        .arg(init)
        .arg("-P")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(io("starting the pod's init"))?;
    let mut child = child;
    let pid = child.id() as i32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // `unshare` mounts the pin once the namespace exists; the wait ends on
    // that mount, on the child's exit, or at the deadline.
    let mut exited = None;
    let pinned = ucri_rootless::mounts::wait_for_mountpoint(&pin, deadline, || {
        exited = child.try_wait().ok().flatten();
        exited.is_some()
    })
    .map_err(io("watching for the pod's PID namespace"))?;
    if !pinned {
        stop_pid_init(dir, pid);
        let why = match exited {
            Some(status) => {
                format!("the pod's init exited before its namespace was pinned ({status})")
            }
            None => "the pod's init did not start".into(),
        };
        return Err(SandboxError::Runtime(why));
    }
    Ok(pid)
}

/// Ends the pod's init (and so every process of the shared PID namespace),
/// once `/proc` shows that `pid` still is that init: after a restart or a
/// reboot the remembered pid may belong to another process by now.
pub fn stop_pid_init(dir: &PodDir, pid: i32) {
    if pid <= 0 {
        return;
    }
    if !is_pid_init_of(dir, pid) {
        tracing::info!(
            pid,
            "the pod's init is gone (its pid is not that init now); not signalling it"
        );
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// Whether `pid` is the `unshare` that holds this pod's PID namespace: its
/// argument list names the pod's own pin, which no other process has.
fn is_pid_init_of(dir: &PodDir, pid: i32) -> bool {
    let wanted = format!("--pid={}", dir.ns("pid").display());
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .any(|arg| arg == wanted.as_bytes())
        })
        .unwrap_or(false)
}

/// Unmounts the namespace pins and /dev/shm and removes the pod's files.
/// Idempotent.
pub fn teardown(dir: &PodDir) -> Result<(), SandboxError> {
    if !dir.path().exists() {
        return Ok(());
    }
    release_namespaces(dir)?;
    let shm = dir.shm();
    while ucri_storage::rootfs::mountpoints().contains(&shm) {
        nix::mount::umount2(&shm, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io("unmounting /dev/shm")(e.into()))?;
    }
    fs::remove_dir_all(dir.path()).map_err(io("removing the pod dir"))
}

/// Unmounts the pinned namespaces, which ends them once no process uses them.
pub fn release_namespaces(dir: &PodDir) -> Result<(), SandboxError> {
    let mounts = ucri_storage::rootfs::mountpoints();
    for kind in ["net", "ipc", "uts", "pid", "user"] {
        let pin = dir.ns(kind);
        if mounts.contains(&pin) {
            nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH)
                .map_err(|e| io(format!("unmounting {}", pin.display()))(e.into()))?;
        }
    }
    Ok(())
}
