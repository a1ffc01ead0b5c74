//! The holder: a tiny long-lived process that owns the user and mount
//! namespaces, so that mounts and containers outlive the daemon (the role
//! podman's rootless pause process plays).

use std::ffi::CString;
use std::fs::OpenOptions;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::handshake::{self, Channel, HandshakeError, HolderMsg, ParentMsg};
use crate::idmap::{IdMapError, MapPlan};
use crate::nsid::NsId;
use crate::rundir::{remove_if_exists, write_atomic, RuntimeDir};
use crate::syscall::{self, Forked};

/// The hidden argument that makes the binary run as the holder.
pub const HOLDER_ARG: &str = "__holder";
/// Environment variable carrying the holder's handshake descriptor.
const HOLDER_FD_ENV: &str = "_UCRI_HOLDER_FD";
/// Environment variable naming the runtime dir a holder serves: a holder
/// whose record went with an emptied runtime dir is found by it.
const HOLDER_DIR_ENV: &str = "_UCRI_HOLDER_DIR";
/// How long the processes of an ended namespace get to disappear.
const END_WAIT: Duration = Duration::from_secs(5);

/// Errors starting, finding or stopping the holder.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// Reading or writing holder files, or a system call, failed.
    #[error("holder: {0}")]
    Io(#[from] std::io::Error),
    /// The holder record is unreadable.
    #[error("holder record {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The id maps could not be written.
    #[error("cannot map ids into the user namespace: {0}")]
    IdMap(#[from] IdMapError),
    /// The holder failed during its set-up.
    #[error("the namespace holder failed to start: {0}")]
    Startup(String),
    /// The handshake broke.
    #[error("namespace holder handshake: {0}")]
    Handshake(#[from] HandshakeError),
}

/// The record of a live holder, saved as `holder.json` in the runtime dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The holder's pid.
    pub pid: u32,
    /// Its user namespace.
    pub userns: NsId,
    /// Its mount namespace.
    pub mntns: NsId,
}

impl HolderRecord {
    /// Path of the holder's namespace `kind` under /proc.
    pub fn ns_path(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid))
    }

    /// True while the recorded pid is still the process owning the recorded
    /// namespaces (a reused pid has other namespaces).
    pub fn is_alive(&self) -> bool {
        NsId::of_process(self.pid, "user").ok() == Some(self.userns)
            && NsId::of_process(self.pid, "mnt").ok() == Some(self.mntns)
    }

    /// Loads the record and returns it if its holder is alive; a stale record
    /// is removed.
    pub fn load_live(dir: &RuntimeDir) -> Result<Option<HolderRecord>, HolderError> {
        let path = dir.holder_file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let record = match serde_json::from_slice::<HolderRecord>(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(?path, %e, "removing unreadable holder record");
                remove_if_exists(&path)?;
                return Ok(None);
            }
        };
        if record.is_alive() {
            return Ok(Some(record));
        }
        tracing::info!(
            pid = record.pid,
            "namespace holder is gone; removing its stale record"
        );
        remove_if_exists(&path)?;
        Ok(None)
    }

    fn save(&self, dir: &RuntimeDir) -> Result<(), HolderError> {
        let json = serde_json::to_vec(self).map_err(|e| HolderError::Corrupt {
            path: dir.holder_file(),
            reason: e.to_string(),
        })?;
        write_atomic(&dir.holder_file(), &json)?;
        Ok(())
    }

    /// Stops the holder (SIGTERM, then SIGKILL after 5 s) and removes its
    /// record. Its namespaces, and every mount in them, go with it.
    pub fn stop(&self, dir: &RuntimeDir) -> Result<(), HolderError> {
        if self.is_alive() {
            let pid = Pid::from_raw(self.pid as i32);
            let _ = kill(pid, Signal::SIGTERM);
            if !wait_gone(self, Duration::from_secs(5)) {
                let _ = kill(pid, Signal::SIGKILL);
                wait_gone(self, Duration::from_secs(5));
            }
        }
        remove_if_exists(&dir.holder_file())?;
        remove_if_exists(&dir.holder_log())?;
        Ok(())
    }
}

/// Holders serving `dir` that no record names (their record went with an
/// emptied runtime dir while they ran), other than `live`'s: the user's
/// processes running this binary as [`HOLDER_ARG`] with `dir` in their
/// environment.
pub fn orphaned_holders(dir: &RuntimeDir, live: Option<&HolderRecord>) -> Vec<u32> {
    let uid = nix::unistd::getuid().as_raw();
    let marker = format!("{HOLDER_DIR_ENV}={}", dir.path().display());
    proc_pids()
        .filter(|pid| Some(*pid) != live.map(|h| h.pid))
        .filter(|pid| owned_by(*pid, uid))
        .filter(|pid| nul_fields(*pid, "cmdline").get(1).map(String::as_str) == Some(HOLDER_ARG))
        .filter(|pid| nul_fields(*pid, "environ").contains(&marker))
        .collect()
}

/// Ends an orphaned holder and what it kept: every process of its user
/// namespace (containers, monitors, pod inits, the uplink's slirp4netns),
/// then the holder itself.
pub fn end_orphaned_holder(pid: u32) {
    // Held first, so that the namespace check and the kill are about the
    // same process even if the pid is reused meanwhile.
    let Ok(Some(holder)) = crate::pidfd::Pidfd::open(pid as i32) else {
        return; // already gone
    };
    let Ok(userns) = NsId::of_process(pid, "user") else {
        return; // already gone
    };
    tracing::warn!(
        pid,
        "ending a namespace holder whose record is gone (the runtime dir was emptied while it ran) and every process of its user namespace"
    );
    end_namespace_members(userns, pid);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = crate::pidfd::wait_and_reap(&holder, pid as i32, END_WAIT);
}

/// SIGKILLs every process whose user namespace is `userns` or one made
/// inside it (pods with a user namespace of their own), except `keep` (its
/// holder) and the caller, until none is left or 5 s have passed.
pub fn end_namespace_members(userns: NsId, keep: u32) {
    let members = || -> Vec<u32> {
        proc_pids()
            .filter(|pid| *pid != keep && *pid != std::process::id())
            .filter(|pid| NsId::user_namespace_within(*pid, userns))
            .collect()
    };
    let deadline = Instant::now() + END_WAIT;
    loop {
        let pids = members();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every pid in /proc.
fn proc_pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// True when process `pid` belongs to `uid`.
fn owned_by(pid: u32, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
}

/// The NUL-separated fields of `/proc/PID/FILE` (empty if unreadable).
fn nul_fields(pid: u32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|f| !f.is_empty())
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits up to `limit` until the holder `record` names is gone, reaping it
/// if it is the caller's child. The wait sleeps on its pidfd (the record
/// is checked once the pidfd holds the process).
fn wait_gone(record: &HolderRecord, limit: Duration) -> bool {
    let pid = record.pid as i32;
    let reap = || {
        let _ = waitpid(
            Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    };
    match crate::pidfd::Pidfd::open(pid) {
        Ok(Some(holder)) if record.is_alive() => {
            let _ = crate::pidfd::wait_and_reap(&holder, pid, limit);
        }
        Ok(_) => reap(),
        Err(e) => {
            tracing::debug!(pid, %e, "no pidfd for the holder; looking once");
            reap();
        }
    }
    !record.is_alive()
}

/// Returns the live holder, starting one with `plan` if there is none.
///
/// Must be called from a single-threaded process.
pub fn ensure_holder(dir: &RuntimeDir, plan: &MapPlan) -> Result<HolderRecord, HolderError> {
    if let Some(record) = HolderRecord::load_live(dir)? {
        tracing::debug!(pid = record.pid, "joining the existing namespace holder");
        return Ok(record);
    }
    spawn_holder(dir, plan)
}

/// Starts a new holder in fresh user and mount namespaces, after ending
/// the holders of `dir` whose record is gone (so that their namespaces,
/// containers and slirp4netns do not run on, unreachable).
fn spawn_holder(dir: &RuntimeDir, plan: &MapPlan) -> Result<HolderRecord, HolderError> {
    for orphan in orphaned_holders(dir, None) {
        end_orphaned_holder(orphan);
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.holder_log())?;
    let (mut from_holder, to_parent) = handshake::pipe()?;
    let (from_parent, mut to_holder) = handshake::pipe()?;
    let served = dir.path().display().to_string();
    let pid = match syscall::fork()? {
        Forked::Child => {
            drop(from_holder);
            drop(to_holder);
            holder_child(&served, to_parent, from_parent, log.as_raw_fd())
        }
        Forked::Parent(pid) => pid,
    };
    drop(to_parent);
    drop(from_parent);
    drop(log);
    let result = drive_holder_handshake(pid, plan, &mut from_holder, &mut to_holder);
    match result {
        Ok(()) => finish_holder(dir, pid),
        Err(e) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            let log_text = std::fs::read_to_string(dir.holder_log()).unwrap_or_default();
            let _ = remove_if_exists(&dir.holder_log());
            Err(with_log(e, &log_text))
        }
    }
}

fn drive_holder_handshake(
    pid: Pid,
    plan: &MapPlan,
    from_holder: &mut Channel,
    to_holder: &mut Channel,
) -> Result<(), HolderError> {
    expect_msg(from_holder.recv()?, HolderMsg::Unshared)?;
    if let Err(e) = plan.apply(pid.as_raw() as u32) {
        let _ = to_holder.send(&ParentMsg::Abort {
            reason: e.to_string(),
        });
        return Err(e.into());
    }
    to_holder.send(&ParentMsg::MapsWritten)?;
    expect_msg(from_holder.recv()?, HolderMsg::Ready)
}

fn expect_msg(got: HolderMsg, want: HolderMsg) -> Result<(), HolderError> {
    match got {
        HolderMsg::Failed { error } => Err(HolderError::Startup(error)),
        m if m == want => Ok(()),
        other => Err(HolderError::Startup(format!(
            "unexpected message {other:?}"
        ))),
    }
}

fn with_log(e: HolderError, log: &str) -> HolderError {
    let log = log.trim();
    match e {
        HolderError::Handshake(HandshakeError::Closed) if !log.is_empty() => {
            HolderError::Startup(format!("it exited early: {log}"))
        }
        other => other,
    }
}

fn finish_holder(dir: &RuntimeDir, pid: Pid) -> Result<HolderRecord, HolderError> {
    let pid = pid.as_raw() as u32;
    let record = HolderRecord {
        pid,
        userns: NsId::of_process(pid, "user")?,
        mntns: NsId::of_process(pid, "mnt")?,
    };
    record.save(dir)?;
    tracing::info!(
        pid,
        userns = record.userns.ino,
        "started the namespace holder"
    );
    Ok(record)
}

/// Runs in the forked child: new session, new namespaces, wait for the maps,
/// then exec the holder role so it starts as mapped root with capabilities.
fn holder_child(served: &str, mut to_parent: Channel, mut from_parent: Channel, log_fd: i32) -> ! {
    let result = prepare_holder_child(served, &mut to_parent, &mut from_parent, log_fd);
    let error = match result {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = to_parent.send(&HolderMsg::Failed { error });
    syscall::exit_now(127)
}

fn prepare_holder_child(
    served: &str,
    to_parent: &mut Channel,
    from_parent: &mut Channel,
    log_fd: i32,
) -> Result<std::convert::Infallible, String> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare(CLONE_NEWUSER|CLONE_NEWNS): {e}"))?;
    to_parent
        .send(&HolderMsg::Unshared)
        .map_err(|e| e.to_string())?;
    match from_parent.recv::<ParentMsg>().map_err(|e| e.to_string())? {
        ParentMsg::MapsWritten => {}
        ParentMsg::Abort { reason } => return Err(reason),
        other => return Err(format!("unexpected message {other:?}")),
    }
    redirect_stdio(log_fd)?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    let fd = to_parent.as_raw_fd();
    syscall::keep_across_exec(fd).map_err(|e| e.to_string())?;
    exec_self(
        &[HOLDER_ARG],
        &[(HOLDER_FD_ENV, &fd.to_string()), (HOLDER_DIR_ENV, served)],
    )
}

fn redirect_stdio(log_fd: i32) -> Result<(), String> {
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    nix::unistd::dup2(null.as_raw_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2(log_fd, 1).map_err(|e| format!("dup2: {e}"))?;
    nix::unistd::dup2(log_fd, 2).map_err(|e| format!("dup2: {e}"))?;
    Ok(())
}

/// Replaces the process with `/proc/self/exe ARGS`, adding `env` to the environment.
pub(crate) fn exec_self(
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<std::convert::Infallible, String> {
    let exe = CString::new("/proc/self/exe").map_err(|e| e.to_string())?;
    let argv0 = std::env::args().next().unwrap_or_else(|| "ucri".into());
    let argv: Vec<CString> = std::iter::once(argv0.as_str())
        .chain(args.iter().copied())
        .map(|a| CString::new(a).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let mut envp: Vec<CString> = std::env::vars()
        .filter(|(k, _)| !env.iter().any(|(n, _)| n == k))
        .map(|(k, v)| format!("{k}={v}"))
        .chain(env.iter().map(|(k, v)| format!("{k}={v}")))
        .map(|kv| CString::new(kv).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    envp.shrink_to_fit();
    nix::unistd::execve(&exe, &argv, &envp).map_err(|e| format!("exec /proc/self/exe: {e}"))
}

/// The holder role's main: prepare the mount namespace, report, then wait
/// for SIGTERM/SIGINT. Called by the binary for [`HOLDER_ARG`].
pub fn run_holder() -> ! {
    let adopted = crate::syscall::adopt_inherited_fds(HOLDER_FD_ENV);
    let file = match adopted.map(|mut files| (files.pop(), files.is_empty())) {
        Ok((Some(file), true)) => file,
        Ok(_) => {
            eprintln!("ucri: {HOLDER_ARG}: {HOLDER_FD_ENV} must name one descriptor");
            std::process::exit(2);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("ucri: {HOLDER_ARG} is internal; run `ucri daemon`");
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("ucri: {HOLDER_ARG}: {e}");
            std::process::exit(2);
        }
    };
    let channel = Channel::from_inherited(file);
    let mut channel = ManuallyDrop::new(channel);
    let msg = match crate::mounts::prepare_mount_namespace() {
        Ok(_) => HolderMsg::Ready,
        Err(e) => HolderMsg::Failed {
            error: e.to_string(),
        },
    };
    let failed = matches!(msg, HolderMsg::Failed { .. });
    let _ = channel.send(&msg);
    ManuallyDrop::into_inner(channel);
    if failed {
        std::process::exit(1);
    }
    wait_for_termination()
}

fn wait_for_termination() -> ! {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => std::process::exit(0),
            _ => continue,
        }
    }
}
