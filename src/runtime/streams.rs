//! The container side of the streaming RPCs: an exec'd process with pipes or
//! a terminal (`crun exec`, as CRI-O runs streaming execs), conmon's attach
//! socket, and the pod network namespace port-forward connects in.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::state::{ContainerState, PodPhase};
use super::{new_id, Lifecycle, LifecycleError};

/// How long `crun exec` may take to hand over the terminal.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A process started by a streaming Exec.
#[derive(Debug)]
pub struct ExecProcess {
    /// Its stdin, when asked for.
    pub stdin: Option<tokio::process::ChildStdin>,
    /// Its stdout (without a terminal).
    pub stdout: Option<tokio::process::ChildStdout>,
    /// Its stderr (without a terminal).
    pub stderr: Option<tokio::process::ChildStderr>,
    /// The terminal's master side (with a terminal).
    pub terminal: Option<OwnedFd>,
    child: tokio::process::Child,
    work: PathBuf,
}

impl ExecProcess {
    /// Waits for the process: its exit code (128 + signal when killed) and
    /// what the OCI runtime itself printed (with a terminal, its own errors
    /// such as a missing executable).
    pub async fn wait(mut self) -> Result<(i32, String), LifecycleError> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().await;
        if !status.as_ref().is_ok_and(|s| s.success()) {
            // Only a failed runtime leaves its child to the daemon.
            reap_container_orphans();
        }
        let stderr = std::fs::read_to_string(self.work.join("runtime.stderr")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&self.work);
        let status =
            status.map_err(|e| LifecycleError::Runtime(format!("waiting for exec: {e}")))?;
        let code = status
            .code()
            .or_else(|| status.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        Ok((code, stderr.trim().to_owned()))
    }

    /// The pid file naming the process, for [`kill_by_pid_file`].
    pub fn kill_handle(&self) -> PathBuf {
        self.work.join("pid")
    }

    /// Kills the process in the container (the client went away).
    pub fn kill(&self) {
        kill_by_pid_file(&self.kill_handle());
    }
}

/// Reaps what a failed exec left to the daemon: when the OCI runtime fails
/// after forking into the container (a missing executable), its last child
/// re-parents to the daemon (a subreaper) as a zombie, and an unreaped
/// process in the container's PID namespace keeps the container from ever
/// finishing its exit. Only zombies in a nested PID namespace are taken:
/// the daemon's own children live in its namespace and are waited for by
/// their owners.
fn reap_container_orphans() {
    std::thread::spawn(|| {
        for delay in [0, 50, 500] {
            std::thread::sleep(Duration::from_millis(delay));
            for pid in nested_zombie_children() {
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
        }
    });
}

/// Zombie children of this process whose PID namespace is nested below ours.
fn nested_zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    let depth = |status: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map_or(0, |ids| ids.split_whitespace().count())
    };
    let Ok(own) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let own_depth = depth(&own);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            field("State:").is_some_and(|s| s.starts_with('Z'))
                && field("PPid:").as_deref() == Some(me.as_str())
                && depth(&status) > own_depth
        })
        .collect()
}

/// SIGKILLs the process whose pid the OCI runtime wrote to `pid_file`.
pub fn kill_by_pid_file(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file).unwrap_or_default();
    if let Ok(pid) = pid.trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A connection to conmon's attach socket of a running container.
#[derive(Debug)]
pub struct AttachSocket {
    /// The `SOCK_SEQPACKET` socket (blocking).
    pub socket: OwnedFd,
    /// conmon's control FIFO (terminal resize).
    pub ctl: PathBuf,
}

impl Lifecycle {
    /// Checks that container `id` runs and returns its full ID (the RPC side
    /// of Exec and Attach).
    pub fn streamable_container(&self, id: &str) -> Result<String, LifecycleError> {
        Ok(self.running(id)?.id)
    }

    /// Starts `cmd` in running container `id`, with pipes for the streams
    /// asked for, or with a terminal. Must run inside a tokio runtime.
    pub fn spawn_exec(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecProcess, LifecycleError> {
        if cmd.is_empty() {
            return Err(LifecycleError::InvalidArgument(
                "Exec needs a command".into(),
            ));
        }
        let state = self.running(id)?;
        let work = self.runtime_root.join("exec").join(&new_id()?[..16]);
        let spawned = self
            .prepare_exec(&state, &work, cmd, tty)
            .and_then(|()| self.start_exec(&state, &work, tty, stdin));
        if spawned.is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
        spawned
    }

    fn start_exec(
        &self,
        state: &ContainerState,
        work: &Path,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecProcess, LifecycleError> {
        let console = tty
            .then(|| UnixListener::bind(work.join("console.sock")))
            .transpose()
            .map_err(|e| io_error("binding the console socket", e))?;
        let stderr_file = std::fs::File::create(work.join("runtime.stderr"))
            .map_err(|e| io_error("creating the exec's stderr file", e))?;
        let mut cmd = tokio::process::Command::new(&state.runtime);
        cmd.arg("--root")
            .arg(&self.oci.runtime_root)
            .arg("exec")
            .arg("--process")
            .arg(work.join("process.json"))
            .arg("--pid-file")
            .arg(work.join("pid"));
        if tty {
            cmd.arg("--console-socket").arg(work.join("console.sock"));
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            cmd.stderr(stderr_file);
        } else {
            cmd.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        cmd.arg(&state.id).kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| io_error(&format!("starting {}", state.runtime.display()), e))?;
        let terminal = match console {
            Some(listener) => match receive_terminal(&listener, &mut child, work) {
                Ok(terminal) => Some(terminal),
                Err(e) => {
                    // Nothing may outlive a failed call.
                    let _ = child.start_kill();
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(ExecProcess {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            terminal,
            child,
            work: work.to_owned(),
        })
    }

    /// Connects to conmon's attach socket of running container `id`.
    pub fn attach_socket(&self, id: &str) -> Result<AttachSocket, LifecycleError> {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
        use std::os::fd::AsRawFd;
        let state = self.running(id)?;
        // conmon (`--full-attach`) binds it in the bundle. Socket addresses
        // are limited to 107 bytes: reach it through an open descriptor of
        // its directory, as conmon binds it.
        let bundle = self.bundle(&state.id);
        let path = bundle.join("attach");
        let dir = std::fs::File::open(&bundle)
            .map_err(|e| io_error("opening the attach socket's directory", e))?;
        let short = format!("/proc/self/fd/{}/attach", dir.as_raw_fd());
        let socket = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| io_error("creating the attach socket", e.into()))?;
        let addr =
            UnixAddr::new(short.as_str()).map_err(|e| io_error("attach socket path", e.into()))?;
        connect(socket.as_raw_fd(), &addr)
            .map_err(|e| io_error(&format!("connecting to {}", path.display()), e.into()))?;
        Ok(AttachSocket {
            socket,
            ctl: bundle.join("ctl"),
        })
    }

    /// The full ID and network namespace of running pod `id`; `None` for a
    /// host-network pod, which shares the daemon's.
    pub fn pod_netns(&self, id: &str) -> Result<(String, Option<PathBuf>), LifecycleError> {
        let pod = self.pod(id)?;
        if pod.phase != PodPhase::Ready {
            return Err(LifecycleError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let netns = if pod.namespaces.network {
            super::sandbox::PodDir::new(&self.runtime_root, &pod.id).ns("net")
        } else {
            self.network.uplink_netns()
        };
        Ok((pod.id, Some(netns)))
    }
}

/// Waits for `crun exec` to send the terminal's master side, or to fail.
fn receive_terminal(
    listener: &UnixListener,
    child: &mut tokio::process::Child,
    work: &Path,
) -> Result<OwnedFd, LifecycleError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| io_error("console socket", e))?;
    let deadline = Instant::now() + CONSOLE_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)
                    .map_err(|e| io_error("console socket", e))?;
                return ucri_rootless::syscall::receive_fd(conn.as_fd())
                    .map_err(|e| io_error("receiving the terminal", e));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io_error("accepting on the console socket", e)),
        }
        if let Ok(Some(status)) = child.try_wait() {
            let stderr = std::fs::read_to_string(work.join("runtime.stderr")).unwrap_or_default();
            return Err(LifecycleError::Runtime(format!(
                "exec failed ({status}): {}",
                stderr.trim()
            )));
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            return Err(LifecycleError::Timeout(
                "the OCI runtime did not send the exec's terminal".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn io_error(context: &str, source: std::io::Error) -> LifecycleError {
    LifecycleError::Io {
        context: context.to_owned(),
        source,
    }
}
