//! Running processes and threads inside namespaces ucri owns.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use nix::sched::CloneFlags;

use crate::holder::HolderRecord;
use crate::syscall::{self, PreExec};

/// A set of namespaces to enter, opened ahead of time (user first, then
/// mount, then network, as the kernel requires).
#[derive(Debug, Default)]
pub struct Namespaces {
    entries: Vec<(File, CloneFlags)>,
}

impl Namespaces {
    /// The holder's user and mount namespaces.
    pub fn of_holder(holder: &HolderRecord) -> std::io::Result<Namespaces> {
        Namespaces::default()
            .with(&holder.ns_path("user"), CloneFlags::CLONE_NEWUSER)?
            .with(&holder.ns_path("mnt"), CloneFlags::CLONE_NEWNS)
    }

    /// Adds the namespace at `path` (an nsfs file, pinned or under /proc).
    pub fn with(mut self, path: &Path, kind: CloneFlags) -> std::io::Result<Namespaces> {
        let file = File::open(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening namespace {}: {e}", path.display()),
            )
        })?;
        self.entries.push((file, kind));
        Ok(self)
    }

    /// Makes `cmd` enter these namespaces before it execs, then return to
    /// the caller's working directory (or `/` when that does not exist there).
    ///
    /// The `Namespaces` must outlive the spawn. Joining a user namespace
    /// needs a single-threaded spawner; network and mount alone do not.
    pub fn apply_to(&self, cmd: &mut Command) {
        let fds: Vec<(i32, CloneFlags)> = self
            .entries
            .iter()
            .map(|(f, k)| (f.as_raw_fd(), *k))
            .collect();
        let cwd = std::env::current_dir()
            .ok()
            .and_then(|d| CString::new(d.as_os_str().as_bytes()).ok());
        let steps = fds
            .into_iter()
            .map(|(fd, kind)| PreExec::Setns(fd, kind))
            .chain([PreExec::ChdirOrRoot(cwd)])
            .collect();
        syscall::before_exec(cmd, steps);
    }
}

/// Moves the calling thread into the network namespace `ns` (an open pin).
/// Only for a thread of its own that ends with its work (a forwarded
/// connection's, or [`run_in_netns_thread`]'s): the daemon's other threads
/// stay where they are.
pub fn join_netns(ns: &File) -> std::io::Result<()> {
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `work` on a fresh thread that has joined the network namespace
/// pinned at `netns`; the caller's thread is untouched. Sockets made there
/// stay in that namespace wherever they are used.
pub fn run_in_netns_thread<T, F>(netns: &Path, work: F) -> std::io::Result<T>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                join_netns(&ns)?;
                Ok(work())
            })
            .join()
            .map_err(|_| std::io::Error::other("namespace thread panicked"))?
    })
}

/// Namespaces to create and pin for a pod (see [`pin_new_namespaces`]).
#[derive(Debug, Default)]
pub struct NewNamespaces<'a> {
    /// Pin file of a new network namespace, where loopback is set up.
    pub net: Option<&'a Path>,
    /// Pin file of a new IPC namespace.
    pub ipc: Option<&'a Path>,
    /// Pin file of a new UTS namespace and the hostname it gets.
    pub uts: Option<(&'a Path, &'a str)>,
}

/// Creates the namespaces `wanted` asks for on a thread of its own and
/// bind-mounts each onto its pin file (an existing regular file), with
/// loopback up in the network namespace and the hostname set in the UTS
/// one: what `unshare --net=PIN … -- sh -c 'hostname H; ip link set lo up'`
/// does, without a process. The caller's threads stay where they are, and
/// the namespaces live on in their pins after the thread ends.
pub fn pin_new_namespaces(wanted: &NewNamespaces<'_>) -> std::io::Result<()> {
    let mut flags = CloneFlags::empty();
    let mut pins = Vec::new();
    for (flag, kind, pin) in [
        (CloneFlags::CLONE_NEWNET, "net", wanted.net),
        (CloneFlags::CLONE_NEWIPC, "ipc", wanted.ipc),
        (CloneFlags::CLONE_NEWUTS, "uts", wanted.uts.map(|(p, _)| p)),
    ] {
        if let Some(pin) = pin {
            flags |= flag;
            pins.push((kind, pin));
        }
    }
    if flags.is_empty() {
        return Ok(());
    }
    let context = |what: String| move |e: nix::Error| std::io::Error::other(format!("{what}: {e}"));
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> std::io::Result<()> {
                nix::sched::unshare(flags).map_err(context("unshare".into()))?;
                if let Some((_, hostname)) = wanted.uts {
                    nix::unistd::sethostname(hostname)
                        .map_err(context(format!("setting the hostname {hostname:?}")))?;
                }
                if wanted.net.is_some() {
                    syscall::set_link_up("lo").map_err(|e| {
                        std::io::Error::new(e.kind(), format!("setting loopback up: {e}"))
                    })?;
                }
                for (kind, pin) in &pins {
                    let source = format!("/proc/thread-self/ns/{kind}");
                    nix::mount::mount(
                        Some(source.as_str()),
                        *pin,
                        None::<&str>,
                        nix::mount::MsFlags::MS_BIND,
                        None::<&str>,
                    )
                    .map_err(context(format!(
                        "pinning the {kind} namespace at {}",
                        pin.display()
                    )))?;
                }
                Ok(())
            })
            .join()
            .map_err(|_| std::io::Error::other("namespace thread panicked"))?
    })
}

/// A command that will run inside the network namespace pinned at `netns`.
/// Keep the returned guard alive until the command is spawned.
pub fn command_in_netns(cmd: &mut Command, netns: &Path) -> std::io::Result<Namespaces> {
    let ns = Namespaces::default().with(netns, CloneFlags::CLONE_NEWNET)?;
    ns.apply_to(cmd);
    Ok(ns)
}
