//! `ucri daemon`: choose how to enter namespaces, then serve CRI.

use std::os::unix::net::UnixListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ucri_cri_api::v1::image_service_server::ImageServiceServer;
use ucri_cri_api::v1::runtime_service_server::RuntimeServiceServer;
use ucri_rootless::launch::{self, ChildReporter, DaemonLock, LaunchSpec, Mode};
use ucri_rootless::rundir::{remove_if_exists, write_atomic, RuntimeDir};

use crate::config::Config;
use crate::cri::image::CriImageService;
use crate::cri::runtime::CriRuntimeService;
use crate::image::Images;
use crate::runtime::Lifecycle;
use crate::storage::Storage;

/// Runs `ucri daemon` from the host side; returns the exit code.
///
/// Must be called before any thread exists.
pub fn run(config: Config) -> anyhow::Result<i32> {
    // Private: state and writable layers hold what containers keep (their
    // environment, their files); other local users must not read them. The
    // data dir is traversable but not listable (0711), for crun inside a
    // pod's own user namespace; what lies below is 0700 where it matters.
    make_data_dir(&config.daemon.data_dir)?;
    crate::descriptors::raise_to_hard_limit();
    match launch::detect_mode() {
        Mode::Rootless => run_rootless_parent(config),
        Mode::NestedRoot => {
            tracing::info!("already root inside a user namespace: skipping the rootless bootstrap");
            run_in_process(config, "nested-root")
        }
        Mode::HostRoot if config.daemon.allow_root => {
            tracing::warn!("running as real root on the host (--allow-root): no user namespace");
            run_in_process(config, "host-root")
        }
        Mode::HostRoot => bail!(
            "ucri is a rootless runtime and refuses to run as real root on the host: \
             start it as an ordinary user, or pass --allow-root"
        ),
    }
}

/// The `[node] writable` paths, bound to the user's directories in the
/// daemon's mount namespace (idempotent across restarts).
fn make_node_dirs_writable(config: &Config) -> anyhow::Result<()> {
    if config.node.writable.is_empty() {
        return Ok(());
    }
    let dirs = ucri_rootless::node_dirs::NodeDirs {
        backing: config.daemon.data_dir.join("node"),
        originals: config.daemon.runtime_dir.join("node-originals"),
    };
    dirs.make_writable(&config.node.writable)
        .context("making the [node] writable directories")?;
    tracing::info!(paths = ?config.node.writable, "node directories writable");
    Ok(())
}

/// Creates the data dir, mode 0711.
fn make_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("securing {}", dir.display()))
}

fn run_rootless_parent(config: Config) -> anyhow::Result<i32> {
    let spec = LaunchSpec {
        runtime_dir: RuntimeDir::new(&config.daemon.runtime_dir),
        socket: config.daemon.socket.clone(),
        payload: serde_json::to_value(&config).context("serializing the configuration")?,
    };
    Ok(launch::run_parent(spec)?)
}

/// Serves in this very process (no bootstrap): lock, socket, private mounts.
fn run_in_process(config: Config, mode: &'static str) -> anyhow::Result<i32> {
    let dir = RuntimeDir::new(&config.daemon.runtime_dir);
    dir.create()
        .with_context(|| format!("creating {}", dir.path().display()))?;
    let lock = DaemonLock::acquire(&dir)?;
    let result = (|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
            .context("unshare(CLONE_NEWNS) for the daemon's private mount namespace")?;
        ucri_rootless::mounts::prepare_mount_namespace()?;
        let listener = launch::bind_socket(&config.daemon.socket)?;
        write_atomic(
            &dir.daemon_pid_file(),
            std::process::id().to_string().as_bytes(),
        )?;
        serve(listener, Arc::new(config.clone()), mode, None)
    })();
    let _ = remove_if_exists(&dir.daemon_pid_file());
    let _ = remove_if_exists(&config.daemon.socket);
    lock.release();
    result.map(|()| 0)
}

/// The serving child's main, inside the holder's namespaces. Returns the exit code.
pub fn run_child() -> i32 {
    let ctx = match launch::child_handshake() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("ucri: {e}");
            return 1;
        }
    };
    let config: Config = match serde_json::from_value(ctx.payload) {
        Ok(c) => c,
        Err(e) => {
            ctx.reporter
                .failed(&format!("bad configuration from the parent: {e}"));
            return 1;
        }
    };
    crate::logging::init(&config.daemon.log_level);
    if let Err(e) = prepare_child_process() {
        ctx.reporter.failed(&format!("{e:#}"));
        return 1;
    }
    let _lock = ctx.lock;
    match serve(
        ctx.listener,
        Arc::new(config),
        "rootless",
        Some(ctx.reporter),
    ) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

/// The serving child joined the holder's mount namespace, which the holder
/// prepared when it made it: making `/` private again here would strip the
/// propagation others (kubelet) set on their mounts since.
fn prepare_child_process() -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    Ok(())
}

/// Runs the CRI server on `listener` until SIGTERM/SIGINT, then drains
/// in-flight RPCs for up to the configured grace period.
fn serve(
    listener: UnixListener,
    config: Arc<Config>,
    mode: &'static str,
    reporter: Option<ChildReporter>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ucri-worker")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve_async(listener, config, mode, reporter))
}

async fn serve_async(
    listener: UnixListener,
    config: Arc<Config>,
    mode: &'static str,
    reporter: Option<ChildReporter>,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    let grace = Duration::from_secs(config.daemon.shutdown_grace_seconds);
    make_node_dirs_writable(&config)?;
    let (images, storage) = open_storage(&config).await?;
    let lifecycle = open_lifecycle(&config, &images, &storage).await?;
    let exits = lifecycle
        .monitor_exits()
        .context("the monitor exits were taken already")?;
    let recorder = tokio::spawn(record_monitor_exits(lifecycle.clone(), exits));
    lifecycle.watch_monitors();
    let reaper = tokio::spawn(reap_monitors(lifecycle.clone()));
    watch_uplink_helper(lifecycle.clone());
    let (streaming, streaming_tasks) =
        crate::streaming::start(&config.streaming, lifecycle.clone()).await?;
    let runtime_service = CriRuntimeService::new(
        config.clone(),
        mode,
        storage.clone(),
        lifecycle.clone(),
        streaming,
    );
    let routes =
        tonic::service::Routes::new(RuntimeServiceServer::new(runtime_service)).add_service(
            ImageServiceServer::new(CriImageService::new(images.clone(), storage)),
        );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::cri::server::serve(
        listener,
        routes,
        async {
            let _ = stop_rx.await;
        },
        grace,
        crate::descriptors::share(config.daemon.max_connections, 4, "CRI connections"),
    ));
    let admin =
        crate::admin::bind(&config.daemon.runtime_dir).context("binding the admin socket")?;
    let admin_task = tokio::spawn(crate::admin::serve(admin, images.clone()));
    let metrics_task = start_metrics(&config, &lifecycle).await?;
    if let Some(reporter) = reporter {
        reporter.serving();
    }
    tracing::info!(socket = %config.daemon.socket.display(), mode, "serving CRI v1");
    let sig = termination_signal().await;
    tracing::info!(signal = sig, "shutting down: draining in-flight RPCs");
    let _ = stop_tx.send(());
    server.await.context("CRI server")?;
    admin_task.abort();
    reaper.abort();
    recorder.abort();
    for task in streaming_tasks {
        task.abort();
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    if mode != "rootless" {
        // No holder keeps the namespaces: the uplink helper goes with us.
        let network = lifecycle.clone();
        let _ = tokio::task::spawn_blocking(move || network.network().shut_down()).await;
    }
    let _ = std::fs::remove_file(crate::admin::socket_path(&config.daemon.runtime_dir));
    tracing::info!("stopped");
    Ok(())
}

/// Opens the image store under the data dir and picks the root filesystem
/// driver (blocking work: recovery may remove content an interrupted pull
/// left behind, and the overlay probe mounts).
async fn open_storage(config: &Config) -> anyhow::Result<(Arc<Images>, Arc<Storage>)> {
    let root = config.daemon.data_dir.join("storage");
    let home = directories::BaseDirs::new()
        .map(|b| b.home_dir().to_owned())
        .unwrap_or_else(|| std::path::PathBuf::from("/"));
    let wanted = config.storage.driver;
    let limits = config.image;
    tokio::task::spawn_blocking(move || {
        let images = Images::open(root.clone(), home, limits)?;
        let storage = Storage::open(&root, wanted)?;
        Ok::<_, anyhow::Error>((Arc::new(images), Arc::new(storage)))
    })
    .await?
}

/// Loads pod and container state and recovers what the previous daemon
/// left; images used by containers are protected from removal.
async fn open_lifecycle(
    config: &Arc<Config>,
    images: &Arc<Images>,
    storage: &Arc<Storage>,
) -> anyhow::Result<Arc<Lifecycle>> {
    let (config, images, storage) = (config.clone(), images.clone(), storage.clone());
    let lifecycle = tokio::task::spawn_blocking(move || {
        let network = Arc::new(ucri_net::Network::open(network_options(&config)));
        Lifecycle::open(config, images, storage, network)
    })
    .await??;
    Ok(Arc::new(lifecycle))
}

/// Binds the Prometheus endpoint when the configuration enables it.
async fn start_metrics(
    config: &Config,
    lifecycle: &Arc<Lifecycle>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !config.metrics.enabled {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(&config.metrics.address)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", config.metrics.address))?;
    tracing::info!(address = %listener.local_addr()?, "serving Prometheus metrics on /metrics");
    let weak = Arc::downgrade(lifecycle);
    let gauges = Arc::new(move || weak.upgrade().map(|l| l.gauges()).unwrap_or_default());
    Ok(Some(tokio::spawn(crate::metrics::serve(listener, gauges))))
}

/// Pod networking settings from the configuration.
pub fn network_options(config: &Config) -> ucri_net::NetworkOptions {
    let net = &config.network;
    ucri_net::NetworkOptions {
        uplink: ucri_net::uplink::UplinkOptions {
            kind: net.uplink,
            mtu: net.mtu,
            allow_host_loopback: net.allow_host_loopback,
        },
        cni_config_dir: net.cni_config_dir.clone(),
        cni_plugin_dirs: net.cni_plugin_dirs.clone(),
        runtime_dir: config.daemon.runtime_dir.clone(),
        cni_check_interval: std::time::Duration::from_secs(net.cni_check_seconds.max(1)),
        node: ucri_net::node::NodeOptions {
            address: config.node.resolved_address().unwrap_or_else(|why| {
                tracing::error!(%why, "the node namespace gets no address");
                None
            }),
            published_ports: config.node.ports.clone(),
            host_loopback_ports: config.node.host_loopback_ports.clone(),
        },
    }
}

/// Reaps each watched conmon as it exits and records its container's exit.
async fn record_monitor_exits(
    lifecycle: Arc<Lifecycle>,
    mut exits: tokio::sync::mpsc::UnboundedReceiver<crate::runtime::MonitorExit>,
) {
    while let Some(exit) = exits.recv().await {
        let l = lifecycle.clone();
        let _ = tokio::task::spawn_blocking(move || l.monitor_exited(&exit)).await;
    }
}

/// conmon monitors re-parent to the daemon (its subreaper); reap them.
async fn reap_monitors(lifecycle: Arc<Lifecycle>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let l = lifecycle.clone();
        let _ = tokio::task::spawn_blocking(move || {
            l.reap_monitors();
            l.network().check_attachments();
        })
        .await;
    }
}

/// How long the uplink watch waits before it looks again while no helper
/// can be held by a pidfd (it is down and its restart failed, or the pidfd
/// could not be opened).
const UPLINK_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// Restarts the uplink helper the moment it exits, on a thread of its own
/// (as the conmon watch): it sleeps on the helper's pidfd, so a dead helper
/// is neither found late nor looked for in `/proc` every second. While no
/// pidfd holds one, it checks and retries every [`UPLINK_RETRY`]. After
/// [`ucri_net::manager::Network::shut_down`], restarts are refused.
fn watch_uplink_helper(lifecycle: Arc<Lifecycle>) {
    if !lifecycle.network().has_uplink_helper() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("uplink-watch".into())
        .spawn(move || loop {
            match lifecycle.network().uplink_helper_pidfd() {
                Some(helper) => {
                    // False only when the pidfd cannot be polled: look again
                    // later instead of at once.
                    if !helper.wait_exit(std::time::Duration::MAX) {
                        std::thread::sleep(UPLINK_RETRY);
                    }
                }
                None => std::thread::sleep(UPLINK_RETRY),
            }
            lifecycle.network().supervise_uplink();
        });
    if let Err(e) = spawned {
        tracing::warn!(%e, "no uplink watch thread: a dead uplink helper is not restarted");
    }
}

async fn termination_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending::<&'static str>().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
