//! The OCI runtime under conmon, driven the way CRI-O drives them: conmon
//! creates the container and stays as its monitor (logs in the CRI format,
//! exit file on exit); crun (or runc) starts, signals and deletes it.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::command::{run_checked, CommandError};

/// Errors of the OCI runtime and conmon driver.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// An exec ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// The caller went away; the exec was killed.
    #[error("{0}")]
    Cancelled(String),
    /// conmon or the OCI runtime reported a failure.
    #[error("{0}")]
    Runtime(String),
    /// The OCI runtime failed as a command.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
use crate::cancel::Cancellation;

/// Paths shared by every container.
#[derive(Debug, Clone)]
pub struct OciPaths {
    /// conmon.
    pub conmon: PathBuf,
    /// `--root` of the OCI runtime.
    pub runtime_root: PathBuf,
    /// Where conmon writes exit files.
    pub exits: PathBuf,
    /// Where conmon puts attach sockets.
    pub attach: PathBuf,
    /// conmon's `--log-size-max` (≤ 0: none).
    pub log_size_max: i64,
    /// Most bytes of stdout and of stderr an ExecSync keeps.
    pub exec_output_max: u64,
}

/// How much larger than the output cap an ExecSync's CRI-format log may grow
/// on the runtime dir (a tmpfs: memory) before conmon truncates it; a line of
/// output costs ~36 bytes of timestamp, stream and tag.
const EXEC_LOG_FACTOR: u64 = 4;

/// What conmon needs to create one container.
#[derive(Debug)]
pub struct CreateArgs<'a> {
    /// Container ID.
    pub id: &'a str,
    /// The OCI runtime binary.
    pub runtime: &'a Path,
    /// Bundle dir with config.json.
    pub bundle: &'a Path,
    /// CRI log file.
    pub log_path: &'a Path,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Name for conmon's logs.
    pub name: &'a str,
}

/// The container's and conmon's pids after create.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    /// Container init pid.
    pub pid: i32,
    /// conmon's pid.
    pub conmon_pid: i32,
}

#[derive(Debug, Deserialize)]
struct SyncMessage {
    data: i32,
    #[serde(default)]
    message: String,
}

/// Starts conmon with a sync pipe (`_OCI_SYNCPIPE`) on an inherited
/// descriptor and its stderr in `stderr_file`; returns it and our end.
fn spawn_with_sync_pipe(
    mut cmd: Command,
    conmon: &Path,
    stderr_file: &Path,
) -> Result<(std::process::Child, std::os::unix::net::UnixStream), OciError> {
    let io = |context: String| move |source| OciError::Io { context, source };
    let (sync_read, sync_write) =
        std::os::unix::net::UnixStream::pair().map_err(io("sync pipe".into()))?;
    let fd = sync_write.as_raw_fd();
    cmd.env("_OCI_SYNCPIPE", fd.to_string());
    ucri_rootless::syscall::before_exec(
        &mut cmd,
        vec![ucri_rootless::syscall::PreExec::KeepAcrossExec(fd)],
    );
    let stderr =
        std::fs::File::create(stderr_file).map_err(io("creating conmon's stderr file".into()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(io(format!("starting {}", conmon.display())))?;
    drop(sync_write);
    Ok((child, sync_read))
}

/// One ExecSync.
#[derive(Debug)]
pub struct ExecArgs<'a> {
    /// The container.
    pub id: &'a str,
    /// A unique id for this exec session.
    pub session: &'a str,
    /// The OCI runtime.
    pub runtime: &'a Path,
    /// The container's bundle.
    pub bundle: &'a Path,
    /// A scratch dir holding process.json; receives the log and exit file.
    pub work: &'a Path,
    /// Kill the process after this long.
    pub timeout: Option<Duration>,
    /// Kill the process when this is cancelled (the caller went away).
    pub cancel: &'a crate::cancel::Cancellation,
}

/// What an ExecSync produced.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// The process's exit code.
    pub exit_code: i32,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: Vec<u8>,
}

/// Why an exec did not produce an exit code.
enum ExecWait {
    /// It ran past its timeout and was killed.
    TimedOut,
    /// Its caller went away; it was killed.
    Cancelled,
    /// conmon or the runtime failed.
    Failed(String),
}

fn exec_error(e: ExecWait, exec: &ExecArgs<'_>) -> OciError {
    match e {
        ExecWait::TimedOut => {
            let secs = exec.timeout.map(|t| t.as_secs()).unwrap_or(0);
            OciError::Timeout(format!(
                "command in container {} timed out after {secs}s and was killed",
                exec.id
            ))
        }
        ExecWait::Cancelled => OciError::Cancelled(format!(
            "exec in container {}: the caller went away, the command was killed",
            exec.id
        )),
        ExecWait::Failed(message) => {
            let stderr =
                std::fs::read_to_string(exec.work.join("conmon.stderr")).unwrap_or_default();
            OciError::Runtime(format!(
                "exec in container {}: {message} {}",
                exec.id,
                stderr.trim()
            ))
        }
    }
}

/// conmon sends a start message, then the exit code. The timeout and the
/// caller's cancellation are enforced here: the process (pid from the
/// runtime's pidfile) is killed and its exit collected.
fn wait_exec(
    pipe: &mut std::os::unix::net::UnixStream,
    timeout: Option<Duration>,
    pidfile: &Path,
    cancel: &Cancellation,
) -> Result<i32, ExecWait> {
    let first =
        next_sync_message(pipe, CREATE_TIMEOUT).map_err(|e| ExecWait::Failed(e.to_string()))?;
    let first = first.ok_or_else(|| ExecWait::Failed("conmon reported nothing".into()))?;
    if first.data <= 0 {
        return Err(ExecWait::Failed(first.message));
    }
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let stopped = match wait_for_exit_message(pipe, deadline, cancel) {
        ExecEvent::Message => {
            return match next_sync_message(pipe, EXIT_MESSAGE_WAIT) {
                Ok(Some(exit)) => Ok(exit.data),
                Ok(None) => Err(ExecWait::Failed(
                    "conmon exited without an exit code".into(),
                )),
                Err(e) => Err(ExecWait::Failed(e.to_string())),
            }
        }
        ExecEvent::Deadline => ExecWait::TimedOut,
        ExecEvent::Cancelled => ExecWait::Cancelled,
    };
    // The runtime's pidfile has the exec'd process's pid as we see it; conmon
    // has not reported its exit, so it is not reaped and the pid is its own.
    let pid = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| *p > 0) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = next_sync_message(pipe, EXIT_MESSAGE_WAIT);
    Err(stopped)
}

/// How long a line conmon has started (or owes after a kill) may take.
const EXIT_MESSAGE_WAIT: Duration = Duration::from_secs(10);

/// What ended the wait for conmon's exit message.
enum ExecEvent {
    /// The sync pipe has something to read (or was closed).
    Message,
    /// The exec's timeout passed.
    Deadline,
    /// The caller went away.
    Cancelled,
}

/// Waits until the sync pipe is readable, `deadline` passes or `cancel`
/// fires, whichever comes first.
fn wait_for_exit_message(
    pipe: &std::os::unix::net::UnixStream,
    deadline: Option<std::time::Instant>,
    cancel: &Cancellation,
) -> ExecEvent {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    // poll takes milliseconds in an i32: wait in steps of at most an hour.
    const STEP: Duration = Duration::from_secs(3600);
    loop {
        let left = match deadline {
            Some(d) => d.saturating_duration_since(std::time::Instant::now()),
            None => STEP,
        };
        if left.is_zero() {
            return ExecEvent::Deadline;
        }
        let wait = PollTimeout::try_from(left.min(STEP)).unwrap_or(PollTimeout::MAX);
        let ready = PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR;
        let mut fds = [
            PollFd::new(pipe.as_fd(), PollFlags::POLLIN),
            PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, wait) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            // Not expected for two valid descriptors; reading will say more.
            Err(_) => return ExecEvent::Message,
        }
        let fired = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| r.intersects(ready));
        if fired(&fds[0]) {
            return ExecEvent::Message;
        }
        if fired(&fds[1]) {
            return ExecEvent::Cancelled;
        }
    }
}

/// One JSON line from conmon's sync pipe; `None` at end of file.
fn next_sync_message(
    pipe: &mut std::os::unix::net::UnixStream,
    limit: Duration,
) -> std::io::Result<Option<SyncMessage>> {
    pipe.set_read_timeout(Some(limit.max(Duration::from_millis(1))))?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let read = match pipe.read(&mut byte) {
            // A signal (a debugger attaching, a stop) is not conmon's answer.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        match read {
            0 if line.is_empty() => return Ok(None),
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => line.push(byte[0]),
        }
    }
    serde_json::from_slice(&line)
        .map(Some)
        .map_err(std::io::Error::other)
}

/// Reaps the double-forked conmon whose pid is in `pidfile` (the daemon is
/// its subreaper).
fn reap_pidfile(pidfile: &Path) {
    let pid = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    }
}

/// Splits a CRI-format log (`TIME STREAM TAG CONTENT`) back into stdout and
/// stderr; `P` (partial) lines continue without a newline.
/// Reads a CRI-format log file line by line into stdout and stderr, keeping
/// at most `cap` bytes of each; true when anything was dropped. Memory stays
/// bounded by the cap, not by the file.
pub fn read_cri_log(path: &Path, cap: u64) -> (Vec<u8>, Vec<u8>, bool) {
    use std::io::BufRead;
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let (mut stdout, mut stderr, mut truncated) = (Vec::new(), Vec::new(), false);
    let Ok(file) = std::fs::File::open(path) else {
        return (stdout, stderr, false);
    };
    let mut reader = std::io::BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        // A line longer than the cap is read only up to it (plus its header).
        let limit = (cap as u64).saturating_add(64);
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() as u64 >= limit {
            truncated = true;
            // Skip the rest of the overlong line.
            let mut skip = Vec::new();
            while reader.read_until(b'\n', &mut skip).is_ok_and(|n| n > 0) {
                if skip.last() == Some(&b'\n') {
                    break;
                }
                skip.clear();
            }
        }
        let text = String::from_utf8_lossy(&line);
        let (out, err) = split_cri_log(&text);
        for (dest, part) in [(&mut stdout, out), (&mut stderr, err)] {
            let room = cap.saturating_sub(dest.len());
            if part.len() > room {
                truncated = true;
            }
            dest.extend_from_slice(&part[..part.len().min(room)]);
        }
    }
    (stdout, stderr, truncated)
}

/// Splits CRI-format log text into stdout and stderr.
pub fn split_cri_log(log: &str) -> (Vec<u8>, Vec<u8>) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for line in log.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, stream, tag) = (parts.next(), parts.next(), parts.next());
        let content = parts.next().unwrap_or("");
        let out = if stream == Some("stderr") {
            &mut stderr
        } else {
            &mut stdout
        };
        out.extend_from_slice(content.as_bytes());
        if tag != Some("P") {
            out.push(b'\n');
        }
    }
    (stdout, stderr)
}

/// How long a monitor whose create failed may take to exit.
const FAILED_MONITOR_EXIT: Duration = Duration::from_secs(60);

/// Waits (at most `limit`) until the conmon whose pid is in `pid_file` is
/// gone: a monitor left by a killed daemon is nobody's child here, and it
/// writes its container's exit file as it goes.
pub fn wait_monitor_gone(pid_file: &std::path::Path, limit: Duration) {
    let Some(pid) = read_pid_file(pid_file) else {
        return;
    };
    let monitor = match ucri_rootless::pidfd::Pidfd::open(pid) {
        Ok(Some(pidfd)) => pidfd,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(pid, %e, "no pidfd for a monitor left by the previous daemon; not waiting for it");
            return;
        }
    };
    // Checked once the pidfd holds the process: the pid may be another's now.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "conmon" {
        return;
    }
    if !monitor.wait_exit(limit) {
        tracing::warn!(pid, "a monitor left by the previous daemon did not exit");
    }
}

/// Waits (at most `limit`) while the conmon whose pid is in `pid_file`, a
/// monitor of container `id` left by a killed daemon, may still be running
/// `crun create`: until crun has `state_dir` for it, or that conmon is gone.
/// Nothing else signals the end of a create, so this looks every 10 ms.
pub fn wait_create_settled(
    pid_file: &std::path::Path,
    id: &str,
    state_dir: &Path,
    limit: Duration,
) {
    let Some(pid) = read_pid_file(pid_file) else {
        return;
    };
    let Ok(Some(monitor)) = ucri_rootless::pidfd::Pidfd::open(pid) else {
        return;
    };
    if !is_monitor_of(pid, id) {
        return;
    }
    let deadline = std::time::Instant::now() + limit;
    while !state_dir.exists() && std::time::Instant::now() < deadline {
        if monitor.wait_exit(Duration::from_millis(10)) {
            return;
        }
    }
}

/// The positive pid a pid file holds.
fn read_pid_file(pid_file: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|pid| *pid > 0)
}

/// Reaps, in the background, the conmon monitor of a create that failed.
fn reap_failed_monitor(pid_file: &std::path::Path) {
    let Some(pid) = read_pid_file(pid_file) else {
        return;
    };
    let monitor = match ucri_rootless::pidfd::Pidfd::open(pid) {
        Ok(Some(pidfd)) => Some(pidfd),
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(pid, %e, "no pidfd for the monitor of a failed create; waiting for it with waitpid");
            None
        }
    };
    let _ = std::thread::Builder::new()
        .name("reap-conmon".into())
        .spawn(move || match monitor {
            Some(monitor) => {
                if ucri_rootless::pidfd::wait_and_reap(&monitor, pid, FAILED_MONITOR_EXIT).is_none()
                {
                    tracing::warn!(%pid, "the monitor of a failed create did not exit");
                }
            }
            // A blocking wait for this daemon's child (ECHILD at once for
            // any other process).
            None => {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            }
        });
}

/// How long [`OciPaths::wait_exit`], without a monitor to watch, looks for
/// the exit file every millisecond before it looks every 10 ms.
const QUICK_EXIT: Duration = Duration::from_millis(100);

/// How often [`OciPaths::wait_exit`] looks at the exit file while conmon
/// runs on: a safety net for a conmon that outlives its container.
const LOOK_AGAIN: Duration = Duration::from_millis(100);

/// A container's conmon, as a wait for its exit sees it.
enum Monitor {
    /// Running, held by its pidfd.
    Running(ucri_rootless::pidfd::Pidfd),
    /// Exited (or its pid now names another process).
    Gone,
    /// Not known, or no pidfd could be opened.
    Unwatched,
}

/// Conmon `pid` of container `id`. It is checked after the pidfd is opened,
/// so the check and the pidfd are about the same process: its arguments name
/// the container (a zombie's are empty; it is gone).
fn watch_monitor(id: &str, pid: i32) -> Monitor {
    if pid <= 0 {
        return Monitor::Unwatched;
    }
    match ucri_rootless::pidfd::Pidfd::open(pid) {
        Ok(Some(pidfd)) if is_monitor_of(pid, id) => Monitor::Running(pidfd),
        Ok(_) => Monitor::Gone,
        Err(e) => {
            tracing::debug!(container = id, pid, %e, "no pidfd for conmon; looking for its exit file");
            Monitor::Unwatched
        }
    }
}

/// True when `pid` is conmon for container `id` (its arguments name it):
/// a remembered pid may have been reused since.
pub(super) fn is_monitor_of(pid: i32, id: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == id.as_bytes()))
}

/// How long conmon may take to create a container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads conmon's one JSON message: conmon keeps the pipe open after it, so
/// reading stops at the first complete line (or end of file, or timeout).
fn read_sync_message(pipe: &mut std::os::unix::net::UnixStream) -> std::io::Result<String> {
    pipe.set_read_timeout(Some(CREATE_TIMEOUT))?;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let read = match pipe.read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        match read {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => out.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl OciPaths {
    /// Creates the shared directories.
    pub fn prepare(&self) -> Result<(), OciError> {
        for dir in [&self.runtime_root, &self.exits, &self.attach] {
            std::fs::create_dir_all(dir).map_err(|source| OciError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// Has conmon create the container; blocks until it reports the pid.
    pub fn create(&self, args: &CreateArgs<'_>) -> Result<Created, OciError> {
        let cmd = self.conmon_command(args);
        let (mut child, mut sync_read) =
            spawn_with_sync_pipe(cmd, &self.conmon, &args.bundle.join("conmon.stderr"))?;
        let read = read_sync_message(&mut sync_read);
        let _ = child.wait();
        let created = read
            .map_err(|source| OciError::Io {
                context: "reading conmon's sync pipe".into(),
                source,
            })
            .and_then(|reply| self.parse_sync(&reply, args));
        if created.is_err() {
            // The monitor conmon forked exits once it reported the failure;
            // it re-parented to the daemon (the subreaper), and no container
            // record will ever reap it.
            reap_failed_monitor(&args.bundle.join("conmon.pid"));
        }
        created
    }

    fn parse_sync(&self, reply: &str, args: &CreateArgs<'_>) -> Result<Created, OciError> {
        let stderr = std::fs::read_to_string(args.bundle.join("conmon.stderr")).unwrap_or_default();
        let message: SyncMessage = reply
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                OciError::Runtime(format!(
                    "conmon reported nothing for {}: {}",
                    args.id,
                    stderr.trim()
                ))
            })?;
        if message.data <= 0 {
            return Err(OciError::Runtime(format!(
                "creating container {}: {}",
                args.id,
                message.message.trim()
            )));
        }
        let conmon_pid = std::fs::read_to_string(args.bundle.join("conmon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Created {
            pid: message.data,
            conmon_pid,
        })
    }

    fn conmon_command(&self, args: &CreateArgs<'_>) -> Command {
        let mut cmd = Command::new(&self.conmon);
        cmd.args([
            "--api-version",
            "1",
            "-c",
            args.id,
            "-u",
            args.id,
            "-n",
            args.name,
        ])
        .arg("-r")
        .arg(args.runtime)
        .arg("-b")
        .arg(args.bundle)
        .arg("-p")
        .arg(args.bundle.join("pidfile"))
        .arg("-P")
        .arg(args.bundle.join("conmon.pid"))
        .arg("-l")
        .arg(format!("k8s-file:{}", args.log_path.display()))
        .arg("--exit-dir")
        .arg(&self.exits)
        .arg("--socket-dir-path")
        .arg(&self.attach)
        .arg("--runtime-arg")
        .arg(format!("--root={}", self.runtime_root.display()))
        .args(["--log-level", "info", "--full-attach"]);
        if self.log_size_max > 0 {
            cmd.arg("--log-size-max").arg(self.log_size_max.to_string());
        }
        if args.tty {
            cmd.arg("-t");
        }
        if args.stdin {
            cmd.arg("-i");
        }
        // conmon closes the container's stdin when an attached client's
        // input ends, unless told to leave it open (CRI's StdinOnce=false).
        if args.stdin && !args.stdin_once {
            cmd.arg("--leave-stdin-open");
        }
        cmd
    }

    /// `RUNTIME --root … ARGS`, status and stderr checked.
    pub fn runtime(&self, runtime: &Path, args: &[&str], what: &str) -> Result<(), OciError> {
        let mut cmd = Command::new(runtime);
        cmd.arg("--root")
            .arg(&self.runtime_root)
            .args(args)
            .stdin(Stdio::null());
        Ok(run_checked(&mut cmd, what)?)
    }

    /// The exit code and time conmon recorded, once the container exited.
    pub fn exit_status(&self, id: &str) -> Option<(i32, SystemTime)> {
        let path = self.exits.join(id);
        let text = std::fs::read_to_string(&path).ok()?;
        let code = text.trim().parse().ok()?;
        let when = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Some((code, when))
    }

    /// Waits up to `limit` for the container's exit file. Conmon writes it
    /// and then exits, so the wait sleeps on the pidfd of `monitor` (once it
    /// is checked to be this container's conmon) and reads the file when
    /// conmon is gone, or every [`LOOK_AGAIN`] while it stays. Without a
    /// monitor to watch (none recorded, or no pidfd) it looks for the file
    /// every millisecond for the first [`QUICK_EXIT`], then every 10 ms. (An
    /// inotify watch per wait measured slower: closing an inotify instance
    /// waits for an SRCU grace period, about 5 ms per StopContainer.)
    pub fn wait_exit(&self, id: &str, monitor: i32, limit: Duration) -> Option<(i32, SystemTime)> {
        if let Some(exit) = self.exit_status(id) {
            return Some(exit);
        }
        match watch_monitor(id, monitor) {
            Monitor::Running(pidfd) => self.wait_exit_of(id, &pidfd, limit),
            // Gone: the file is there now, or nobody will write it.
            Monitor::Gone => self.exit_status(id),
            Monitor::Unwatched => self.look_for_exit(id, limit),
        }
    }

    /// [`Self::wait_exit`] on a watched conmon.
    fn wait_exit_of(
        &self,
        id: &str,
        monitor: &ucri_rootless::pidfd::Pidfd,
        limit: Duration,
    ) -> Option<(i32, SystemTime)> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let gone = monitor.wait_exit(left.min(LOOK_AGAIN));
            if let Some(exit) = self.exit_status(id) {
                return Some(exit);
            }
            if gone || left <= LOOK_AGAIN {
                return None;
            }
        }
    }

    /// [`Self::wait_exit`] without a monitor to watch: looks for the file.
    fn look_for_exit(&self, id: &str, limit: Duration) -> Option<(i32, SystemTime)> {
        let start = std::time::Instant::now();
        let deadline = start + limit;
        loop {
            if let Some(exit) = self.exit_status(id) {
                return Some(exit);
            }
            let now = std::time::Instant::now();
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return None;
            }
            let step = if now - start < QUICK_EXIT {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(10)
            };
            std::thread::sleep(left.min(step));
        }
    }

    /// Runs a process in a running container through conmon's exec mode and
    /// waits for it: conmon reports the pid, then the exit code (-1 with a
    /// message on timeout, after killing the process). Output is read back
    /// from the exec's CRI-format log.
    pub fn exec_sync(&self, exec: &ExecArgs<'_>) -> Result<ExecOutput, OciError> {
        let cmd = self.exec_command(exec);
        let (mut child, mut sync_read) =
            spawn_with_sync_pipe(cmd, &self.conmon, &exec.work.join("conmon.stderr"))?;
        let outcome = wait_exec(
            &mut sync_read,
            exec.timeout,
            &exec.work.join("pid"),
            exec.cancel,
        );
        let _ = child.wait();
        reap_pidfile(&exec.work.join("conmon.pid"));
        let exit_code = outcome.map_err(|e| exec_error(e, exec))?;
        let (stdout, mut stderr, truncated) =
            read_cri_log(&exec.work.join("exec.log"), self.exec_output_max);
        if truncated {
            tracing::warn!(container = %exec.id, cap = self.exec_output_max, "ExecSync output truncated");
            stderr.extend_from_slice(
                format!(
                    "\nucri: output truncated at {} bytes\n",
                    self.exec_output_max
                )
                .as_bytes(),
            );
        }
        Ok(ExecOutput {
            exit_code,
            stdout,
            stderr,
        })
    }

    fn exec_command(&self, exec: &ExecArgs<'_>) -> Command {
        let mut cmd = Command::new(&self.conmon);
        cmd.args([
            "--api-version",
            "1",
            "-c",
            exec.id,
            "-u",
            exec.session,
            "-n",
            exec.id,
            "-e",
        ])
        .arg("-r")
        .arg(exec.runtime)
        .arg("-b")
        .arg(exec.bundle)
        .arg("-p")
        .arg(exec.work.join("pid"))
        .arg("-P")
        .arg(exec.work.join("conmon.pid"))
        .arg("--exec-process-spec")
        .arg(exec.work.join("process.json"))
        .arg("-l")
        .arg(format!("k8s-file:{}", exec.work.join("exec.log").display()))
        .arg("--log-size-max")
        .arg((self.exec_output_max.saturating_mul(EXEC_LOG_FACTOR)).to_string())
        .arg("--exit-dir")
        .arg(exec.work.join("exits"))
        .arg("--socket-dir-path")
        .arg(&self.attach)
        .arg("--runtime-arg")
        .arg(format!("--root={}", self.runtime_root.display()))
        .args(["--log-level", "info"]);
        cmd
    }

    /// Asks conmon to reopen the container's log file (kubelet's rotation):
    /// message type 2 on the `ctl` FIFO in the bundle.
    pub fn reopen_log(&self, bundle: &Path) -> Result<(), OciError> {
        let ctl = bundle.join("ctl");
        let io = |source| OciError::Io {
            context: format!("writing {}", ctl.display()),
            source,
        };
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&ctl)
            .map_err(io)?;
        std::io::Write::write_all(&mut fifo, b"2 0 0\n").map_err(io)
    }

    /// Removes the exit file of a deleted container.
    pub fn forget(&self, id: &str) {
        let _ = std::fs::remove_file(self.exits.join(id));
        let _ = std::fs::remove_dir_all(self.attach.join(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cri_log_is_read_up_to_the_cap_of_each_stream() {
        let dir = tempfile::tempdir().expect("tmp");
        let log = dir.path().join("exec.log");
        let mut text = String::new();
        for n in 0..1000 {
            text.push_str(&format!("2026-11-25T10:00:00.1Z stdout F line {n:04}\n"));
            text.push_str("2026-11-25T10:00:00.2Z stderr F e\n");
        }
        text.push_str(&format!(
            "2026-11-25T10:00:00.3Z stdout P {}\n",
            "x".repeat(5000)
        ));
        std::fs::write(&log, text).expect("write");
        let (out, err, truncated) = read_cri_log(&log, 100);
        assert!(truncated);
        assert_eq!(out.len(), 100);
        assert!(
            out.starts_with(b"line 0000\nline 0001\n"),
            "the first bytes are kept"
        );
        assert_eq!(err, b"e\n".repeat(50));
        let (out, err, truncated) = read_cri_log(&log, 1 << 20);
        assert!(!truncated);
        assert_eq!(out.len(), 1000 * 10 + 5000);
        assert_eq!(err.len(), 2000);
        assert_eq!(
            read_cri_log(&dir.path().join("missing"), 10),
            (vec![], vec![], false)
        );
    }

    fn paths_with_exits(exits: &Path) -> OciPaths {
        OciPaths {
            conmon: PathBuf::from("conmon"),
            runtime_root: exits.join("root"),
            exits: exits.to_owned(),
            attach: exits.join("attach"),
            log_size_max: -1,
            exec_output_max: 1 << 20,
        }
    }

    /// A stand-in conmon for container `id`: a shell whose arguments name
    /// it, running `script`. Returned once its arguments show: spawn returns
    /// while the kernel is still setting them up (the vfork parent resumes
    /// before the new program's stack is built).
    fn stand_in_monitor(script: &str, id: &str) -> std::process::Child {
        let mut child = Command::new("sh")
            .args(["-c", script, "conmon", id])
            .spawn()
            .expect("sh");
        let pid = child.id() as i32;
        for _ in 0..5000 {
            if is_monitor_of(pid, id) {
                return child;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the stand-in monitor's arguments never showed");
    }

    #[test]
    fn an_exit_written_by_the_watched_monitor_is_read_when_it_exits() {
        let dir = tempfile::tempdir().expect("tmp");
        let oci = paths_with_exits(dir.path());
        let file = dir.path().join("c1");
        let script = format!(
            "sleep 0.2; echo 137 > {}.tmp; mv {0}.tmp {0}",
            file.display()
        );
        let mut monitor = stand_in_monitor(&script, "c1");
        let (code, _) = oci
            .wait_exit("c1", monitor.id() as i32, Duration::from_secs(30))
            .expect("the exit the monitor wrote");
        assert_eq!(code, 137);
        monitor.wait().expect("reap");
    }

    #[test]
    fn a_wait_on_a_monitor_that_dies_without_an_exit_file_ends_with_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let oci = paths_with_exits(dir.path());
        let mut monitor = stand_in_monitor("sleep 0.2", "c2");
        let limit = Duration::from_secs(300);
        let started = std::time::Instant::now();
        assert_eq!(oci.wait_exit("c2", monitor.id() as i32, limit), None);
        // Polling the file would have waited the whole limit: nobody will
        // write it once its monitor is gone.
        assert!(
            started.elapsed() < limit / 2,
            "the wait outlived its monitor"
        );
        monitor.wait().expect("reap");
    }

    #[test]
    fn a_pid_that_is_not_the_containers_monitor_is_not_waited_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let oci = paths_with_exits(dir.path());
        // Some other process now holds the remembered pid.
        let mut other = stand_in_monitor("sleep 30", "another-container");
        let started = std::time::Instant::now();
        assert_eq!(
            oci.wait_exit("c3", other.id() as i32, Duration::from_secs(300)),
            None
        );
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "waited on a stranger"
        );
        other.kill().expect("kill");
        other.wait().expect("reap");
        // Without a monitor to watch, the file is looked for until the limit.
        std::fs::write(dir.path().join("c3"), "0\n").expect("write");
        assert_eq!(
            oci.wait_exit("c3", 0, Duration::from_secs(30))
                .map(|(code, _)| code),
            Some(0)
        );
    }

    #[test]
    fn cri_logs_split_into_streams_with_partial_lines_joined() {
        let log = "2026-11-25T10:00:00.1Z stdout P hel\n2026-11-25T10:00:00.2Z stdout F lo\n\
                   2026-11-25T10:00:00.3Z stderr F oops\n2026-11-25T10:00:00.4Z stdout F  two spaces\n";
        let (out, err) = split_cri_log(log);
        assert_eq!(String::from_utf8_lossy(&out), "hello\n two spaces\n");
        assert_eq!(String::from_utf8_lossy(&err), "oops\n");
    }
}
