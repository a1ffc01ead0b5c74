//! Each container's conmon, watched through a pidfd: when one exits, the
//! daemon reaps it at once (it is the daemon's child by the subreaper bit)
//! and records its container's exit, instead of finding both on the next
//! sweep of `Lifecycle::reap_monitors`, which stays, once a second, for
//! the monitors no pidfd could be opened for. The `Lifecycle` side (which
//! monitors to watch, what an exit records) is in `container.rs`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// A conmon that ended: its container and pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorExit {
    /// The container it monitored.
    pub container: String,
    /// Its pid.
    pub pid: i32,
}

/// The watched monitors: one epoll set of their pidfds, waited on by one
/// thread, which reports each exit on a channel.
#[derive(Debug)]
pub(super) struct MonitorWatch {
    /// `None` when no epoll set could be made (the sweep still works).
    epoll: Option<Arc<Epoll>>,
    watched: Arc<Mutex<HashMap<u64, (MonitorExit, OwnedFd)>>>,
    next_token: AtomicU64,
    exits: UnboundedSender<MonitorExit>,
    receiver: Mutex<Option<UnboundedReceiver<MonitorExit>>>,
}

impl MonitorWatch {
    /// An empty watch and its thread.
    pub(super) fn new() -> MonitorWatch {
        let (exits, receiver) = tokio::sync::mpsc::unbounded_channel();
        let watched = Arc::new(Mutex::new(HashMap::new()));
        let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(epoll) => {
                let epoll = Arc::new(epoll);
                let spawned = std::thread::Builder::new()
                    .name("conmon-watch".into())
                    .spawn({
                        let (epoll, watched, exits) =
                            (epoll.clone(), watched.clone(), exits.clone());
                        move || wait_for_exits(&epoll, &watched, &exits)
                    });
                match spawned {
                    Ok(_) => Some(epoll),
                    Err(e) => {
                        tracing::warn!(%e, "no conmon watch thread; exits are found by the sweep");
                        None
                    }
                }
            }
            Err(e) => {
                tracing::warn!(%e, "no epoll set for conmon pidfds; exits are found by the sweep");
                None
            }
        };
        MonitorWatch {
            epoll,
            watched,
            next_token: AtomicU64::new(1),
            exits,
            receiver: Mutex::new(Some(receiver)),
        }
    }

    /// Watches conmon `pid` of `container` until it exits; a monitor
    /// already gone is reported at once.
    pub(super) fn watch(&self, container: &str, pid: i32) {
        let Some(epoll) = &self.epoll else {
            return;
        };
        if pid <= 0 {
            return;
        }
        let exit = MonitorExit {
            container: container.to_owned(),
            pid,
        };
        let pidfd = match ucri_rootless::syscall::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(nix::libc::ESRCH) => {
                let _ = self.exits.send(exit);
                return;
            }
            Err(e) => {
                tracing::debug!(container, pid, %e, "conmon is not watched; the sweep will find its exit");
                return;
            }
        };
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = epoll.add(&pidfd, EpollEvent::new(EpollFlags::EPOLLIN, token)) {
            tracing::debug!(container, pid, %e, "conmon is not watched; the sweep will find its exit");
            return;
        }
        watched.insert(token, (exit, pidfd));
    }

    /// The receiving end, once: the daemon's task that records the exits.
    pub(super) fn take_receiver(&self) -> Option<UnboundedReceiver<MonitorExit>> {
        self.receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The watch thread: reports each monitor whose pidfd turns readable (it
/// exited) and forgets it (closing the pidfd takes it out of the set).
fn wait_for_exits(
    epoll: &Epoll,
    watched: &Mutex<HashMap<u64, (MonitorExit, OwnedFd)>>,
    exits: &UnboundedSender<MonitorExit>,
) {
    let mut events = [EpollEvent::empty(); 32];
    loop {
        let ready = match epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(%e, "the conmon watch stopped; exits are found by the sweep");
                return;
            }
        };
        for event in &events[..ready] {
            let gone = watched
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&event.data());
            if let Some((exit, _pidfd)) = gone {
                if exits.send(exit).is_err() {
                    return; // the daemon is going away
                }
            }
        }
    }
}

/// Reaps `pid` if it has exited; true when it is gone (or not our child).
pub(super) fn reaped(pid: i32) -> bool {
    !matches!(
        nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        ),
        Ok(nix::sys::wait::WaitStatus::StillAlive)
    )
}
