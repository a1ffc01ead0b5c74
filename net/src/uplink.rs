//! The uplink network namespace: created inside the daemon's user namespace,
//! pinned as a file (a bind mount in the holder's mount namespace, so it
//! outlives the daemon), and given a way out by slirp4netns or pasta. The
//! helper runs detached from the daemon and is recorded on disk, so a
//! restarted daemon adopts it instead of starting another.

use std::fs;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use ucri_rootless::rundir::{remove_if_exists, write_atomic};

use crate::error::{io, NetError};

/// The address both helpers answer DNS queries on (slirp4netns's built-in
/// forwarder; pasta is told to forward it).
pub const UPLINK_DNS: &str = "10.0.2.3";

/// The uplink's interface towards its helper (both helpers are told to
/// use this name).
pub const UPLINK_IFNAME: &str = "tap0";

/// The packet mark and routing table of [`Uplink::ensure_reply_routing`].
pub const REPLY_MARK: u32 = 0x0010_0000;
/// See [`REPLY_MARK`].
pub const REPLY_TABLE: u32 = 7563;

/// How long a helper may take to get the namespace ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which helper gives the uplink namespace its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKind {
    /// slirp4netns: a TAP device and a user-mode TCP/IP stack.
    Slirp4netns,
    /// passt's pasta: a TAP device, L4 sockets on the host.
    Pasta,
    /// No way out; pods still reach each other.
    None,
}

impl UplinkKind {
    /// The helper program's name.
    pub fn program(self) -> Option<&'static str> {
        match self {
            UplinkKind::Slirp4netns => Some("slirp4netns"),
            UplinkKind::Pasta => Some("pasta"),
            UplinkKind::None => None,
        }
    }
}

/// How to build the uplink.
#[derive(Debug, Clone)]
pub struct UplinkOptions {
    /// The helper.
    pub kind: UplinkKind,
    /// MTU of the uplink's TAP device.
    pub mtu: u32,
    /// Let pods reach the host's loopback through the uplink's gateway
    /// (slirp4netns 10.0.2.2; pasta the host's default gateway address).
    pub allow_host_loopback: bool,
}

/// The helper process, as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct HelperRecord {
    kind: UplinkKind,
    pid: i32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22),
    /// so a reused pid is never mistaken for the helper.
    start_time: u64,
}

impl HelperRecord {
    fn of_pid(kind: UplinkKind, pid: i32) -> Option<HelperRecord> {
        let start_time = process_start_time(pid)?;
        Some(HelperRecord {
            kind,
            pid,
            start_time,
        })
    }

    fn is_alive(&self) -> bool {
        matches!(self.liveness(), Liveness::Alive(_))
    }

    fn liveness(&self) -> Liveness {
        reap_if_child(self.pid);
        match read_stat_fields(self.pid) {
            Ok(Some(fields)) => {
                let start = fields.get(19).and_then(|t| t.parse::<u64>().ok());
                let zombie = fields.first().map(String::as_str) == Some("Z");
                if start == Some(self.start_time) && !zombie {
                    Liveness::Alive(self.pid)
                } else {
                    Liveness::Gone
                }
            }
            Ok(None) => Liveness::Gone,
            Err(e) => Liveness::Unknown(e),
        }
    }
}

/// What a look at the helper found.
#[derive(Debug)]
enum Liveness {
    /// It runs, with this pid.
    Alive(i32),
    /// It exited (or was never recorded).
    Gone,
    /// The daemon could not look (e.g. out of descriptors).
    Unknown(std::io::Error),
}

/// The uplink namespace and its helper.
#[derive(Debug)]
pub struct Uplink {
    options: UplinkOptions,
    dir: PathBuf,
    /// Why the uplink is not usable, when it is not.
    problem: Mutex<Option<String>>,
    /// Set by [`Uplink::shut_down`]: the helper it stops is not restarted.
    shut: std::sync::atomic::AtomicBool,
}

impl Uplink {
    /// Uses `dir` (in the runtime dir) for the pin, the helper's record, log
    /// and API socket. Nothing is started yet.
    pub fn new(options: UplinkOptions, dir: PathBuf) -> Uplink {
        Uplink {
            options,
            dir,
            problem: Mutex::new(Some("the uplink has not been started".into())),
            shut: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &UplinkOptions {
        &self.options
    }

    /// The pinned network namespace.
    pub fn netns(&self) -> PathBuf {
        self.dir.join("netns")
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("helper.json")
    }

    /// The helper's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("helper.log")
    }

    fn api_socket(&self) -> PathBuf {
        self.dir.join("slirp4netns.sock")
    }

    /// Pins the namespace (once) and makes sure the helper runs, adopting
    /// one a previous daemon started. Records the outcome for [`Self::problem`].
    pub fn ensure(&self) -> Result<(), NetError> {
        let result = self.ensure_netns().and_then(|()| self.ensure_helper());
        *self.lock_problem() = result.as_ref().err().map(|e| e.to_string());
        result
    }

    /// Why the uplink is unusable right now, if it is.
    pub fn problem(&self) -> Option<String> {
        self.lock_problem().clone()
    }

    fn lock_problem(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Periodic check: when the helper died, say so and start a new one.
    /// When the daemon cannot look (out of descriptors, say), it says that
    /// and leaves the helper alone: a live helper is never restarted for
    /// the daemon's own trouble.
    pub fn supervise(&self) {
        if self.options.kind == UplinkKind::None
            || self.shut.load(std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        match self.helper_liveness() {
            Liveness::Alive(_) => return,
            Liveness::Unknown(e) => {
                tracing::warn!(%e, "cannot tell whether the uplink helper runs; leaving it be");
                return;
            }
            Liveness::Gone => {}
        }
        let reason = format!(
            "{} (the uplink helper) exited{}",
            self.options.kind.program().unwrap_or("uplink helper"),
            last_lines(&self.log_path())
        );
        tracing::warn!(%reason, "restarting the uplink helper");
        *self.lock_problem() = Some(reason.clone());
        match self.ensure() {
            Ok(()) => tracing::info!("uplink helper restarted"),
            Err(e) => {
                *self.lock_problem() = Some(format!("{reason}; restarting it failed: {e}"));
            }
        }
    }

    /// A pidfd of the running helper, to wait for its exit on (then
    /// [`Self::supervise`] restarts it). `None` when no helper runs, or it
    /// cannot be held by a pidfd: the caller then calls [`Self::supervise`]
    /// on a timer instead. The liveness check is made again once the pidfd is
    /// open, so that both are about the same process.
    pub fn helper_pidfd(&self) -> Option<ucri_rootless::pidfd::Pidfd> {
        let Liveness::Alive(pid) = self.helper_liveness() else {
            return None;
        };
        let pidfd = ucri_rootless::pidfd::Pidfd::open(pid).ok().flatten()?;
        match self.helper_liveness() {
            Liveness::Alive(again) if again == pid => Some(pidfd),
            _ => None,
        }
    }

    /// The pid of the running helper.
    pub fn helper_pid(&self) -> Option<i32> {
        match self.helper_liveness() {
            Liveness::Alive(pid) => Some(pid),
            Liveness::Gone | Liveness::Unknown(_) => None,
        }
    }

    /// Whether the recorded helper runs, from its record and `/proc`.
    fn helper_liveness(&self) -> Liveness {
        let text = match fs::read(self.record_path()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Liveness::Gone,
            Err(e) => return Liveness::Unknown(e),
        };
        match serde_json::from_slice::<HelperRecord>(&text) {
            Ok(record) if record.kind == self.options.kind => record.liveness(),
            _ => Liveness::Gone,
        }
    }

    fn ensure_netns(&self) -> Result<(), NetError> {
        let pin = self.netns();
        if ucri_rootless::mounts::is_mountpoint(&pin) {
            return Ok(());
        }
        fs::create_dir_all(&self.dir).map_err(io("creating the uplink dir"))?;
        fs::write(&pin, b"").map_err(io("creating the uplink namespace pin"))?;
        let out = Command::new("unshare")
            .arg(format!("--net={}", pin.display()))
            .args(["--", "ip", "link", "set", "lo", "up"])
            .output()
            .map_err(io("running unshare for the uplink namespace"))?;
        if !out.status.success() {
            return Err(NetError::Helper(format!(
                "creating the uplink network namespace failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        self.masquerade_outbound()
    }

    /// One NAT rule for everything that leaves through the helper, so CNI
    /// networks need no per-pod masquerade rules (each costs several
    /// iptables runs at every pod start and stop).
    fn masquerade_outbound(&self) -> Result<(), NetError> {
        let mut cmd = Command::new(ucri_rootless::which("iptables").unwrap_or("iptables".into()));
        cmd.args(["-t", "nat", "-A", "POSTROUTING", "-o", UPLINK_IFNAME])
            .args(["-m", "comment", "--comment", "ucri uplink masquerade"])
            .args(["-j", "MASQUERADE"])
            .env("XTABLES_LOCKFILE", self.dir.join("xtables.lock"));
        let _ns = ucri_rootless::enter::command_in_netns(&mut cmd, &self.netns())
            .map_err(io("opening the uplink namespace"))?;
        let out = cmd
            .output()
            .map_err(io("running iptables in the uplink namespace"))?;
        if !out.status.success() {
            return Err(NetError::Helper(format!(
                "adding the uplink's masquerade rule failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Makes replies to connections the uplink namespace opens towards pods
    /// come back to their socket whatever their destination, so that the
    /// hostPort forwarder can connect from the client's own address
    /// (`IP_TRANSPARENT`): packets coming from the pod side (anything but
    /// the helper's device) to a non-local address that answer a
    /// connection nothing NATs (so not the pods' own traffic, nor portmap's
    /// hairpin) get a mark, and marked packets are delivered locally (the TPROXY reply set-up,
    /// keyed on conntrack's direction instead of a socket lookup). Once
    /// per namespace: its `ip rule` says it is done.
    pub fn ensure_reply_routing(&self) -> Result<(), NetError> {
        let mark = format!("{REPLY_MARK:#x}/{REPLY_MARK:#x}");
        let table = REPLY_TABLE.to_string();
        let rules = self.run_in_netns("ip", &["rule", "show", "table", &table])?;
        if !rules.trim().is_empty() {
            return Ok(());
        }
        let iptables = ucri_rootless::which("iptables").unwrap_or("iptables".into());
        self.run_in_netns(
            &iptables.to_string_lossy(),
            &[
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "!",
                "-i",
                UPLINK_IFNAME,
                "-m",
                "addrtype",
                "!",
                "--dst-type",
                "LOCAL",
                "-m",
                "conntrack",
                "--ctdir",
                "REPLY",
                "!",
                "--ctstate",
                "SNAT,DNAT",
                "-m",
                "comment",
                "--comment",
                "ucri hostPort replies",
                "-j",
                "MARK",
                "--set-xmark",
                &mark,
            ],
        )?;
        self.run_in_netns(
            "ip",
            &[
                "route",
                "replace",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                &table,
            ],
        )?;
        self.run_in_netns(
            "ip",
            &[
                "rule", "add", "fwmark", &mark, "lookup", &table, "pref", "1000",
            ],
        )?;
        Ok(())
    }

    /// Runs a program in the uplink namespace; its stdout, or its stderr in
    /// the error.
    fn run_in_netns(&self, program: &str, args: &[&str]) -> Result<String, NetError> {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("XTABLES_LOCKFILE", self.dir.join("xtables.lock"));
        let _ns = ucri_rootless::enter::command_in_netns(&mut cmd, &self.netns())
            .map_err(io("opening the uplink namespace"))?;
        let out = cmd
            .output()
            .map_err(io(format!("running {program} in the uplink namespace")))?;
        if !out.status.success() {
            return Err(NetError::Helper(format!(
                "{program} {} in the uplink namespace failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ensure_helper(&self) -> Result<(), NetError> {
        let Some(program) = self.options.kind.program() else {
            return Ok(());
        };
        if let Some(record) = self.load_record() {
            if record.kind == self.options.kind && record.is_alive() {
                tracing::info!(
                    pid = record.pid,
                    program,
                    "adopting the running uplink helper"
                );
                return Ok(());
            }
            if record.is_alive() {
                // The configured helper changed: replace the old one.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(record.pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let binary = ucri_rootless::which(program).ok_or_else(|| {
            NetError::NotReady(format!(
                "{program} is not installed (apt-get install {})",
                if program == "pasta" { "passt" } else { program }
            ))
        })?;
        let pid = match self.options.kind {
            UplinkKind::Slirp4netns => self.start_slirp4netns(&binary)?,
            UplinkKind::Pasta => self.start_pasta(&binary)?,
            UplinkKind::None => return Ok(()),
        };
        let record = HelperRecord::of_pid(self.options.kind, pid).ok_or_else(|| {
            NetError::Helper(format!(
                "{program} exited right after start{}",
                last_lines(&self.log_path())
            ))
        })?;
        let json = serde_json::to_vec(&record).map_err(|e| io("encoding")(e.into()))?;
        write_atomic(&self.record_path(), &json).map_err(io("saving the helper record"))?;
        tracing::info!(
            pid,
            program,
            mtu = self.options.mtu,
            "uplink helper started"
        );
        Ok(())
    }

    fn load_record(&self) -> Option<HelperRecord> {
        let text = fs::read(self.record_path()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn log_file(&self) -> Result<fs::File, NetError> {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(io("opening the uplink helper log"))
    }

    /// slirp4netns attached by path, with its API socket; readiness comes
    /// on a pipe (`--ready-fd`).
    fn start_slirp4netns(&self, binary: &Path) -> Result<i32, NetError> {
        remove_if_exists(&self.api_socket()).map_err(io("removing a stale API socket"))?;
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("creating the readiness pipe")(e.into()))?;
        let ready_fd = ready_write.as_raw_fd();
        let mut cmd = Command::new(binary);
        cmd.args(["--configure", &format!("--mtu={}", self.options.mtu)]);
        if !self.options.allow_host_loopback {
            cmd.arg("--disable-host-loopback");
        }
        cmd.args(["--enable-sandbox", "--enable-seccomp", "--netns-type=path"])
            .arg(format!("--api-socket={}", self.api_socket().display()))
            .arg(format!("--ready-fd={ready_fd}"))
            .arg(self.netns())
            .arg(UPLINK_IFNAME);
        ucri_rootless::syscall::before_exec(
            &mut cmd,
            vec![ucri_rootless::syscall::PreExec::KeepAcrossExec(ready_fd)],
        );
        let child = self.spawn_detached(&mut cmd, "slirp4netns")?;
        drop(ready_write);
        drop(cmd);
        match wait_ready_byte(&ready_read, READY_TIMEOUT) {
            Ok(()) => Ok(child),
            Err(why) => {
                kill_and_reap(child);
                Err(NetError::Helper(format!(
                    "slirp4netns did not get the uplink ready: {why}{}",
                    last_lines(&self.log_path())
                )))
            }
        }
    }

    /// pasta configures the namespace and then daemonizes: its exit status
    /// is the readiness signal, its pid file names the daemon.
    fn start_pasta(&self, binary: &Path) -> Result<i32, NetError> {
        let pid_file = self.dir.join("pasta.pid");
        remove_if_exists(&pid_file).map_err(io("removing a stale pid file"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("--config-net")
            .arg("--netns")
            .arg(self.netns())
            .args(["-I", UPLINK_IFNAME])
            .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
            .args(["--dns-forward", UPLINK_DNS])
            .args(["-m", &self.options.mtu.to_string()]);
        if !self.options.allow_host_loopback {
            cmd.arg("--no-map-gw");
        }
        cmd.arg("-q")
            .arg("-P")
            .arg(&pid_file)
            .arg("-l")
            .arg(self.log_path());
        let first = self.spawn_detached(&mut cmd, "pasta")?;
        let status = wait_exit(first, READY_TIMEOUT);
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        match (status, pid) {
            (Some(0), Some(pid)) => Ok(pid),
            (status, _) => {
                kill_and_reap(first);
                Err(NetError::Helper(format!(
                    "pasta did not get the uplink ready (exit status {status:?}){}",
                    last_lines(&self.log_path())
                )))
            }
        }
    }

    /// Spawns the helper in its own process group with its output in the
    /// helper log, so it outlives the daemon.
    fn spawn_detached(&self, cmd: &mut Command, what: &str) -> Result<i32, NetError> {
        use std::os::unix::process::CommandExt;
        let log = self.log_file()?;
        let err = log.try_clone().map_err(io("duplicating the log handle"))?;
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(io(format!("starting {what} ({:?})", cmd.get_program())))?;
        Ok(child.id() as i32)
    }

    /// Stops the helper and unpins the namespace (used by tests and resets;
    /// a daemon restart keeps both).
    pub fn shut_down(&self) {
        self.shut.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pid) = self.helper_pid() {
            kill_and_reap(pid);
        }
        let _ = remove_if_exists(&self.record_path());
        let pin = self.netns();
        if ucri_rootless::mounts::is_mountpoint(&pin) {
            let _ = nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Waits for one byte on `pipe` (slirp4netns writes "1" when ready).
fn wait_ready_byte(pipe: &std::os::fd::OwnedFd, limit: Duration) -> Result<(), String> {
    let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
    let millis = u16::try_from(limit.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(millis)) {
        Ok(0) => return Err(format!("no word within {limit:?}")),
        Ok(_) => {}
        Err(e) => return Err(format!("poll: {e}")),
    }
    let mut file = fs::File::from(pipe.try_clone().map_err(|e| e.to_string())?);
    let mut byte = [0u8; 1];
    match file.read(&mut byte) {
        Ok(1) if byte[0] == b'1' => Ok(()),
        Ok(0) => Err("it exited before it was ready".into()),
        Ok(_) => Err(format!("unexpected readiness byte {:?}", byte[0] as char)),
        Err(e) => Err(format!("reading the readiness pipe: {e}")),
    }
}

/// Waits up to `limit` for child `pid` to exit, and reaps it; its exit
/// code. The wait sleeps on the child's pidfd.
fn wait_exit(pid: i32, limit: Duration) -> Option<i32> {
    let pidfd = ucri_rootless::pidfd::Pidfd::open(pid).ok().flatten()?;
    match ucri_rootless::pidfd::wait_and_reap(&pidfd, pid, limit) {
        Some(nix::sys::wait::WaitStatus::Exited(_, code)) => Some(code),
        _ => None,
    }
}

/// SIGKILLs `pid` and waits (2 s at most) until it is gone, reaping it if
/// it is the daemon's child. Its pidfd is opened before the signal.
fn kill_and_reap(pid: i32) {
    let held = ucri_rootless::pidfd::Pidfd::open(pid).ok().flatten();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    match held {
        Some(pidfd) => {
            let _ = ucri_rootless::pidfd::wait_and_reap(&pidfd, pid, Duration::from_secs(2));
        }
        None => reap_if_child(pid),
    }
}

fn reap_if_child(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// Fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    read_stat_fields(pid).ok().flatten()
}

/// Fields of `/proc/PID/stat` after the command name; `Ok(None)` when the
/// process is gone, an error when it could not be read.
fn read_stat_fields(pid: i32) -> std::io::Result<Option<Vec<String>>> {
    let stat = match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let fields = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .map(|rest| rest.split_whitespace().map(str::to_owned).collect());
    Ok(fields)
}

fn process_start_time(pid: i32) -> Option<u64> {
    // Field 22 overall; the fields after ")" start at field 3.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The last lines of a log, formatted to follow an error message.
fn last_lines(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("; ");
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (log {}: {tail})", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_time_of_this_process_is_read_and_stable() {
        let me = std::process::id() as i32;
        let first = process_start_time(me).expect("start time");
        assert_eq!(process_start_time(me), Some(first));
        let record = HelperRecord::of_pid(UplinkKind::Pasta, me).expect("record");
        assert!(record.is_alive());
        let reused = HelperRecord {
            start_time: first + 1,
            ..record
        };
        assert!(
            !reused.is_alive(),
            "a different start time is another process"
        );
        let gone = HelperRecord {
            pid: 1 << 23,
            ..record
        };
        assert!(
            matches!(gone.liveness(), Liveness::Gone),
            "a pid past pid_max is gone, not unknown"
        );
    }

    #[test]
    fn log_tails_keep_the_last_five_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("log");
        fs::write(&log, "1\n2\n\n3\n4\n5\n6\n7\n").expect("write");
        assert!(last_lines(&log).ends_with(": 3; 4; 5; 6; 7)"));
        assert_eq!(last_lines(&dir.path().join("missing")), "");
    }
}
