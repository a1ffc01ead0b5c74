//! Launching the daemon: the parent on the host takes the lock, binds the CRI
//! socket, makes sure the holder lives, and starts the serving child inside
//! the holder's namespaces; then it forwards signals and exits with the child.

use std::fs::{File, OpenOptions};
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use nix::fcntl::{Flock, FlockArg};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;

use crate::handshake::{self, Channel, ChildMsg, HandshakeError, ParentMsg};
use crate::holder::{ensure_holder, HolderError, HolderRecord};
use crate::idmap::MapPlan;
use crate::rundir::{remove_if_exists, write_atomic, RuntimeDir};
use crate::subid::{self, IdRange, SubIdError};
use crate::syscall::{self, PreExec};

/// The hidden argument that makes the binary run as the serving child.
pub const CHILD_ARG: &str = "__daemon-child";
/// Environment variable with the child's inherited descriptors.
const CHILD_FDS_ENV: &str = "_UCRI_CHILD_FDS";

/// How the daemon relates to user namespaces on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An ordinary user: ucri creates (or joins) its own user namespace.
    Rootless,
    /// Already root inside a user namespace (kind node, usernetes,
    /// rootlesskit): no bootstrap needed.
    NestedRoot,
    /// Real root on the host.
    HostRoot,
}

/// Detects the [`Mode`] of the calling process.
pub fn detect_mode() -> Mode {
    if !nix::unistd::geteuid().is_root() {
        Mode::Rootless
    } else if crate::nsid::in_initial_user_namespace() {
        Mode::HostRoot
    } else {
        Mode::NestedRoot
    }
}

/// Errors launching the daemon.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Another daemon holds the lock.
    #[error("another ucri daemon is already running for this user (pid {pid}, lock {lock}); stop it first or use another --runtime-dir")]
    AlreadyRunning {
        /// Pid from the pid file, or "unknown".
        pid: String,
        /// The lock file.
        lock: PathBuf,
    },
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading /etc/subuid or /etc/subgid failed.
    #[error(transparent)]
    SubId(#[from] SubIdError),
    /// The holder could not be started or joined.
    #[error(transparent)]
    Holder(#[from] HolderError),
    /// The handshake with the child broke.
    #[error("daemon child: {0}")]
    Handshake(#[from] HandshakeError),
    /// The child reported a start-up failure.
    #[error("daemon failed to start: {0}")]
    ChildFailed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LaunchError {
    let what = what.into();
    move |source| LaunchError::Io { what, source }
}

/// The exclusive daemon lock on the runtime directory.
#[derive(Debug)]
pub struct DaemonLock {
    lock: Flock<File>,
    path: PathBuf,
}

impl DaemonLock {
    /// Takes the lock without waiting; fails with [`LaunchError::AlreadyRunning`].
    pub fn acquire(dir: &RuntimeDir) -> Result<DaemonLock, LaunchError> {
        let path = dir.lock_file();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(DaemonLock { lock, path }),
            Err((_, _)) => Err(LaunchError::AlreadyRunning {
                pid: std::fs::read_to_string(dir.daemon_pid_file())
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "unknown".into()),
                lock: path,
            }),
        }
    }

    /// The raw descriptor, to be inherited by the child.
    fn raw_fd(&self) -> i32 {
        self.lock.as_raw_fd()
    }

    /// Removes the lock file, then releases the lock.
    pub fn release(self) {
        let _ = remove_if_exists(&self.path);
        drop(self.lock);
    }
}

/// Binds the CRI socket at `path` (replacing a stale one: the caller holds
/// the lock), with mode 0660.
pub fn bind_socket(path: &Path) -> Result<UnixListener, LaunchError> {
    if let Some(parent) = path.parent() {
        RuntimeDir::new(parent)
            .create()
            .map_err(io(format!("creating {}", parent.display())))?;
    }
    remove_if_exists(path).map_err(io(format!("removing stale socket {}", path.display())))?;
    let listener = UnixListener::bind(path).map_err(io(format!("binding {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(io(format!("chmod {}", path.display())))?;
    Ok(listener)
}

/// The host user and its subordinate ranges, turned into an id-map plan.
/// Without ranges the plan is a single-id map, with a loud warning.
pub fn map_plan_for_current_user() -> Result<MapPlan, LaunchError> {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let uid_ranges = subid::ranges_for(Path::new(subid::SUBUID_FILE), &name, uid.as_raw())?;
    let gid_ranges = subid::ranges_for(Path::new(subid::SUBGID_FILE), &name, gid.as_raw())?;
    let plan = MapPlan {
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        uid_ranges,
        gid_ranges,
    };
    if plan.is_single_id() {
        warn_single_id(&name, &plan.uid_ranges, &plan.gid_ranges);
    }
    Ok(plan)
}

fn warn_single_id(name: &str, uids: &[IdRange], gids: &[IdRange]) {
    let missing = match (uids.is_empty(), gids.is_empty()) {
        (true, true) => "/etc/subuid and /etc/subgid",
        (true, false) => "/etc/subuid",
        _ => "/etc/subgid",
    };
    tracing::warn!(
        user = name,
        "no subordinate id range for {name} in {missing}: falling back to a single-id \
         user namespace (only root inside). Images with files owned by other users will \
         fail to unpack. Fix: `sudo usermod --add-subuids 100000-165535 --add-subgids \
         100000-165535 {name}`, then `ucri system reset`"
    );
}

/// What the parent needs to launch the serving child.
#[derive(Debug)]
pub struct LaunchSpec {
    /// The runtime directory.
    pub runtime_dir: RuntimeDir,
    /// The CRI socket path.
    pub socket: PathBuf,
    /// Settings handed to the child in the handshake.
    pub payload: serde_json::Value,
}

/// Runs the host-side parent: returns the exit code to exit with.
///
/// Must be called from a single-threaded process.
pub fn run_parent(spec: LaunchSpec) -> Result<i32, LaunchError> {
    let dir = &spec.runtime_dir;
    dir.create()
        .map_err(io(format!("creating {}", dir.path().display())))?;
    let lock = DaemonLock::acquire(dir)?;
    let result = run_locked(&spec, &lock);
    let _ = remove_if_exists(&dir.daemon_pid_file());
    let _ = remove_if_exists(&spec.socket);
    lock.release();
    result
}

fn run_locked(spec: &LaunchSpec, lock: &DaemonLock) -> Result<i32, LaunchError> {
    let plan = map_plan_for_current_user()?;
    let holder = ensure_holder(&spec.runtime_dir, &plan)?;
    let listener = bind_socket(&spec.socket)?;
    let signals = block_forwarded_signals();
    let (mut child, mut from_child) = spawn_child(&holder, &listener, lock)?;
    drop(listener);
    let pid = child.id();
    write_atomic(
        &spec.runtime_dir.daemon_pid_file(),
        pid.to_string().as_bytes(),
    )
    .map_err(io("writing daemon.pid"))?;
    if let Err(e) = await_serving(&mut from_child, spec.payload.clone()) {
        let ended = crate::pidfd::wait_child(&mut child, std::time::Duration::from_secs(1));
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = child.wait();
        return Err(match (e, ended) {
            (LaunchError::Handshake(HandshakeError::Closed), Some(status)) => {
                LaunchError::ChildFailed(format!(
                    "the daemon child ended before it served ({status})"
                ))
            }
            (e, _) => e,
        });
    }
    tracing::info!(pid, socket = %spec.socket.display(), "ucri daemon is serving");
    Ok(forward_signals_until_exit(&mut child, &signals, holder.pid))
}

fn block_forwarded_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    let _ = set.thread_block();
    set
}

fn spawn_child(
    holder: &HolderRecord,
    listener: &UnixListener,
    lock: &DaemonLock,
) -> Result<(Child, ChildChannels), LaunchError> {
    let userns = File::open(holder.ns_path("user")).map_err(io("opening holder user ns"))?;
    let mntns = File::open(holder.ns_path("mnt")).map_err(io("opening holder mount ns"))?;
    let (from_child, to_parent) = handshake::pipe()?;
    let (from_parent, to_child) = handshake::pipe()?;
    let inherited = [
        listener.as_raw_fd(),
        lock.raw_fd(),
        to_parent.as_raw_fd(),
        from_parent.as_raw_fd(),
    ];
    let fds_env = inherited.map(|fd| fd.to_string()).join(",");
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(std::env::args_os().next().unwrap_or_else(|| "ucri".into()))
        .arg(CHILD_ARG)
        .env(CHILD_FDS_ENV, fds_env);
    let (user_fd, mnt_fd) = (userns.as_raw_fd(), mntns.as_raw_fd());
    let parent_pid = nix::unistd::getpid();
    let steps = [
        PreExec::Setns(user_fd, CloneFlags::CLONE_NEWUSER),
        PreExec::Setns(mnt_fd, CloneFlags::CLONE_NEWNS),
        PreExec::ParentDeathSignal(Signal::SIGTERM),
        // The parent blocks the signals it forwards; the child must not inherit that.
        PreExec::UnblockAllSignals,
        PreExec::RequireParent(parent_pid),
    ]
    .into_iter()
    .chain(inherited.iter().map(|fd| PreExec::KeepAcrossExec(*fd)))
    .collect();
    syscall::before_exec(&mut cmd, steps);
    let child = cmd
        .spawn()
        .map_err(io("starting the daemon inside the user namespace"))?;
    Ok((
        child,
        ChildChannels {
            from_child,
            to_child,
        },
    ))
}

struct ChildChannels {
    from_child: Channel,
    to_child: Channel,
}

fn await_serving(ch: &mut ChildChannels, payload: serde_json::Value) -> Result<(), LaunchError> {
    ch.to_child.send(&ParentMsg::Start { payload })?;
    match ch.from_child.recv::<ChildMsg>()? {
        ChildMsg::Serving => Ok(()),
        ChildMsg::Failed { error } => Err(LaunchError::ChildFailed(error)),
    }
}

fn forward_signals_until_exit(child: &mut Child, signals: &SigSet, holder_pid: u32) -> i32 {
    let pid = Pid::from_raw(child.id() as i32);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return exit_code(status);
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) => reap_holder_if_dead(holder_pid),
            Ok(sig) => {
                tracing::debug!(?sig, "forwarding signal to the daemon");
                let _ = kill(pid, sig);
            }
            Err(_) => continue,
        }
    }
}

fn reap_holder_if_dead(holder_pid: u32) {
    let flags = Some(nix::sys::wait::WaitPidFlag::WNOHANG);
    if let Ok(status) = nix::sys::wait::waitpid(Pid::from_raw(holder_pid as i32), flags) {
        if status != nix::sys::wait::WaitStatus::StillAlive {
            tracing::error!(?status, "the namespace holder exited while the daemon runs");
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// What the serving child receives from the parent.
#[derive(Debug)]
pub struct ChildContext {
    /// The bound CRI socket.
    pub listener: UnixListener,
    /// The settings the parent sent.
    pub payload: serde_json::Value,
    /// Where to report readiness.
    pub reporter: ChildReporter,
    /// The daemon lock, held for the child's lifetime.
    pub lock: File,
}

/// Reports the child's start-up outcome to the parent.
#[derive(Debug)]
pub struct ChildReporter {
    channel: Channel,
}

impl ChildReporter {
    /// Tells the parent the server accepts connections.
    pub fn serving(mut self) {
        let _ = self.channel.send(&ChildMsg::Serving);
    }

    /// Tells the parent start-up failed.
    pub fn failed(mut self, error: &str) {
        let _ = self.channel.send(&ChildMsg::Failed {
            error: error.to_owned(),
        });
    }
}

/// The child's side of the handshake: adopts the inherited descriptors and
/// receives the settings.
pub fn child_handshake() -> Result<ChildContext, LaunchError> {
    let internal =
        || LaunchError::ChildFailed(format!("{CHILD_ARG} is internal; run `ucri daemon`"));
    let files = syscall::adopt_inherited_fds(CHILD_FDS_ENV).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => internal(),
        _ => LaunchError::Handshake(HandshakeError::Io(e)),
    })?;
    let Ok([listen, lock, to_parent, from_parent]) = <[File; 4]>::try_from(files) else {
        return Err(internal());
    };
    let mut from_parent = ManuallyDrop::new(Channel::from_inherited(from_parent));
    let payload = match from_parent.recv::<ParentMsg>()? {
        ParentMsg::Start { payload } => payload,
        other => return Err(LaunchError::ChildFailed(format!("unexpected {other:?}"))),
    };
    ManuallyDrop::into_inner(from_parent);
    let listener = UnixListener::from(std::os::fd::OwnedFd::from(listen));
    Ok(ChildContext {
        listener,
        payload,
        reporter: ChildReporter {
            channel: Channel::from_inherited(to_parent),
        },
        lock,
    })
}
