//! Work on a thread inside a pod's (or the uplink's) network namespace,
//! from async code: the streaming listener and port forwarding use it.

/// Runs `work` on a new thread that first joins the network namespace
/// pinned at `netns` (or stays in the daemon's for `None`). Sockets made
/// there stay in that namespace wherever they are used.
pub(super) async fn run_in_netns<T: Send + 'static>(
    netns: Option<std::path::PathBuf>,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(move || match netns {
        Some(path) => ucri_rootless::enter::run_in_netns_thread(&path, work)?,
        None => work(),
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
}
