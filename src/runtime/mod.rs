//! The pod and container lifecycle behind the CRI RuntimeService: pod
//! sandboxes with pinned namespaces, containers under conmon and the OCI
//! runtime, state on disk and recovery after a restart.

pub mod bypass;
mod command;
mod container;
pub mod epoch;
mod error;
mod events;
mod image_volumes;
mod monitors;
mod network;
pub mod oci;
mod pod;
mod pod_dir;
pub mod pod_metrics;
mod resources;
pub mod sandbox;
mod signals;
pub mod spec;
pub mod state;
mod stats;
pub mod streams;
pub mod userns;

pub use error::LifecycleError;
pub use monitors::MonitorExit;

use self::monitors::reaped;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::image::Images;
use crate::storage::Storage;

use self::oci::OciPaths;
use self::state::{ContainerState, PodState, StateStore};

/// Serializes operations on the same pod or container.
type IdLocks = crate::keyed_locks::KeyedLocks<Mutex<()>>;

/// The lifecycle service. Its methods block (processes, mounts, files):
/// call them from `spawn_blocking`.
#[derive(Debug)]
pub struct Lifecycle {
    config: Arc<Config>,
    images: Arc<Images>,
    storage: Arc<Storage>,
    network: Arc<ucri_net::Network>,
    cgroups: crate::cgroups::CgroupSupport,
    states: StateStore,
    oci: OciPaths,
    runtime_root: PathBuf,
    pods: Mutex<HashMap<String, PodState>>,
    containers: Mutex<HashMap<String, ContainerState>>,
    locks: IdLocks,
    /// conmon monitors of removed containers, reaped once they exit (they
    /// re-parent to the daemon, and nothing else waits for them).
    orphan_monitors: Mutex<Vec<i32>>,
    /// The previous CPU sample per container or pod, for usage rates.
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    events: events::EventBus,
    /// Whether pods get the socket bypass; `Err` says why not.
    bypass: Result<(), String>,
    /// Each container's leases on the images it is made from.
    image_leases: Arc<Mutex<HashMap<String, Vec<crate::image::lease::ImageLease>>>>,
    /// Removed containers whose runtime state and root filesystem are being
    /// deleted in the background, by pod: the pod's removal waits for them.
    cleanups: Mutex<HashMap<String, Vec<std::thread::JoinHandle<()>>>>,
    /// Held while a pod's socket bypass agent is started.
    bypass_starts: Mutex<()>,
    /// The pidfd watches of the containers' conmon processes.
    monitors: monitors::MonitorWatch,
}

impl Lifecycle {
    /// Loads state from disk and recovers what the previous daemon left.
    pub fn open(
        config: Arc<Config>,
        images: Arc<Images>,
        storage: Arc<Storage>,
        network: Arc<ucri_net::Network>,
    ) -> Result<Lifecycle, LifecycleError> {
        let runtime_root = config.daemon.runtime_dir.clone();
        let states = StateStore::open(&config.daemon.data_dir.join("state"))?;
        let oci = OciPaths {
            conmon: config.runtime.conmon.clone(),
            runtime_root: runtime_root.join("oci"),
            exits: runtime_root.join("exits"),
            attach: runtime_root.join("attach"),
            log_size_max: config.runtime.log_size_max,
            exec_output_max: config.runtime.exec_sync_output_max,
        };
        oci.prepare()?;
        let cgroups = crate::cgroups::detect_for_daemon(&config.runtime);
        let bypass = bypass::support(&config);
        if let Err(why) = &bypass {
            tracing::info!(%why, "no socket bypass: pod traffic goes through the uplink helper");
        }
        let lifecycle = Lifecycle {
            config,
            images,
            storage,
            network,
            cgroups,
            states,
            oci,
            runtime_root,
            pods: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            locks: IdLocks::default(),
            cpu_samples: Mutex::new(HashMap::new()),
            orphan_monitors: Mutex::new(Vec::new()),
            events: events::EventBus::new(),
            bypass,
            image_leases: Arc::default(),
            cleanups: Mutex::new(HashMap::new()),
            bypass_starts: Mutex::new(()),
            monitors: monitors::MonitorWatch::new(),
        };
        lifecycle.recover()?;
        Ok(lifecycle)
    }

    fn recover(&self) -> Result<(), LifecycleError> {
        let mut pods = self.states.load_pods()?;
        let mut containers = self.states.load_containers()?;
        let epoch = epoch::Epoch::new(
            &self.config.daemon.data_dir.join("state"),
            &self.config.daemon.runtime_dir,
        );
        if let Some(reason) = epoch.fate()?.reason() {
            tracing::warn!(
                reason,
                "the runtime dir was lost: every container reads as exited"
            );
            self.mark_lost(&mut pods, &mut containers, reason)?;
        }
        // What a quarantined record describes is kept as it is: it may run.
        let quarantined = self.states.quarantined();
        let set_aside = |kind: &str| {
            quarantined
                .iter()
                .filter(|q| q.kind == kind)
                .map(|q| q.id.clone())
                .collect::<Vec<_>>()
        };
        let mut live: std::collections::HashSet<String> = containers
            .iter()
            .flat_map(|c| {
                std::iter::once(c.id.clone()).chain(image_volumes::rootfs_ids(&c.id, &c.config))
            })
            .collect();
        live.extend(set_aside("containers"));
        if !quarantined.is_empty() {
            // Image volumes of a quarantined container cannot be told from
            // leftovers without its record: keep every root filesystem.
            live.extend(self.storage.rootfs().ids());
        }
        let report =
            self.storage.rootfs().recover(&live).map_err(|e| {
                LifecycleError::Internal(format!("recovering root filesystems: {e}"))
            })?;
        tracing::info!(pods = pods.len(), containers = containers.len(), remounted = ?report.remounted, removed = ?report.removed, "recovered state");
        for (id, error) in &report.failed {
            tracing::error!(container = %id, %error, "its root filesystem could not be mounted again");
        }
        let mut known_pods: std::collections::HashSet<String> =
            pods.iter().map(|p| p.id.clone()).collect();
        known_pods.extend(set_aside("pods"));
        self.remove_half_created(&known_pods, &live);
        self.remove_half_started(&containers);
        self.stop_unknown_agents(&known_pods);
        self.pods_mut()
            .extend(pods.into_iter().map(|p| (p.id.clone(), p)));
        self.containers_mut()
            .extend(containers.into_iter().map(|c| (c.id.clone(), c)));
        self.lease_recovered_images();
        for id in self.container_ids() {
            self.refresh(&id);
        }
        self.refresh_pods();
        self.recover_networks();
        Ok(epoch.renew()?)
    }

    /// After the runtime dir was lost: containers exited (with `reason`),
    /// pods not ready and detached, each record saved so.
    fn mark_lost(
        &self,
        pods: &mut [PodState],
        containers: &mut [ContainerState],
        reason: &str,
    ) -> Result<(), LifecycleError> {
        let now = now_nanos();
        for c in containers.iter_mut() {
            if c.phase != state::ContainerPhase::Exited {
                c.phase = state::ContainerPhase::Exited;
                c.exit_code = LOST_EXIT_CODE;
                c.finished_at = now.max(c.started_at);
                c.pid = 0;
                c.lost = Some(reason.to_owned());
            } else if c.lost.is_none() {
                c.lost = Some(reason.to_owned());
            }
            self.states.save_container(c)?;
        }
        for p in pods.iter_mut() {
            p.phase = state::PodPhase::NotReady;
            p.init_pid = 0;
            p.network = None;
            self.states.save_pod(p)?;
        }
        Ok(())
    }

    /// Pod dirs and container bundles without state were being created when
    /// the previous daemon died: tear them down.
    fn remove_half_created(
        &self,
        pods: &std::collections::HashSet<String>,
        containers: &std::collections::HashSet<String>,
    ) {
        // ExecSync sessions never outlive the daemon that ran them.
        let _ = std::fs::remove_dir_all(self.runtime_root.join("exec"));
        for id in dir_names(&self.runtime_root.join("pods")).difference(pods) {
            tracing::info!(pod = %id, "removing a pod sandbox that was never finished");
            if let Err(e) = self.network.detach(id) {
                tracing::warn!(pod = %id, %e, "cannot release a half-created pod's network");
            }
            if let Err(e) = sandbox::teardown(&sandbox::PodDir::new(&self.runtime_root, id)) {
                tracing::warn!(pod = %id, %e, "cannot remove a half-created pod");
            }
        }
        for id in dir_names(&self.runtime_root.join("containers")).difference(containers) {
            tracing::info!(container = %id, "removing a container that was never finished");
            let runtime = self.runtime_for("").unwrap_or_default();
            let _ = self.oci.runtime(
                &runtime,
                &["delete", "--force", id],
                "deleting a half-created container",
            );
            let bundle = self.runtime_root.join("containers").join(id);
            oci::wait_monitor_gone(&bundle.join("conmon.pid"), LEFT_MONITOR_EXIT);
            let _ = std::fs::remove_dir_all(bundle);
            self.oci.forget(id);
        }
        // Exit files and attach sockets of containers nobody knows (their
        // monitor outlived a half-finished removal).
        for dir in [&self.oci.exits, &self.oci.attach] {
            let known = |name: &str| containers.contains(name);
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known(&name) {
                    tracing::info!(container = %name, "removing the exit file or attach socket of a container that is gone");
                    self.oci.forget(&name);
                }
            }
        }
    }

    /// A deferred container whose StartContainer the previous daemon did
    /// not finish may have an OCI container (and conmon) its record does not
    /// know: delete it, so that the container is created again at start.
    fn remove_half_started(&self, containers: &[ContainerState]) {
        let deferred = containers.iter().filter(|c| c.deferred && c.lost.is_none());
        for c in deferred {
            let bundle = self.runtime_root.join("containers").join(&c.id);
            let state_dir = self.oci.runtime_root.join(&c.id);
            // A conmon of the previous daemon may still be running `crun
            // create`: let it finish (or fail) before looking.
            oci::wait_create_settled(
                &bundle.join("conmon.pid"),
                &c.id,
                &state_dir,
                LEFT_MONITOR_EXIT,
            );
            if !state_dir.exists() {
                continue;
            }
            tracing::info!(container = %c.id, "deleting the OCI container of a start that was never finished");
            if let Err(e) = self.oci.runtime(
                &c.runtime,
                &["delete", "--force", &c.id],
                "deleting a half-started container",
            ) {
                tracing::warn!(container = %c.id, %e, "cannot delete a half-started container");
            }
            oci::wait_monitor_gone(&bundle.join("conmon.pid"), LEFT_MONITOR_EXIT);
            self.oci.forget(&c.id);
        }
    }

    fn pods_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodState>> {
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn containers_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, ContainerState>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container_ids(&self) -> Vec<String> {
        self.containers_mut().keys().cloned().collect()
    }

    /// Whether pods get the socket bypass; `Err` says why not.
    pub fn socket_bypass(&self) -> &Result<(), String> {
        &self.bypass
    }

    /// State records set aside at start-up because they could not be read.
    pub fn quarantined(&self) -> Vec<state::Quarantined> {
        self.states.quarantined()
    }

    /// Pod networking.
    pub fn network(&self) -> &ucri_net::Network {
        &self.network
    }

    /// The image store.
    pub fn images(&self) -> &Images {
        &self.images
    }

    /// Keeps `lease` for container `id` until the container is removed.
    fn hold_lease(&self, id: &str, lease: crate::image::lease::ImageLease) {
        self.image_leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default()
            .push(lease);
    }

    /// Ends container `id`'s image leases.
    fn release_leases(&self, id: &str) {
        let leases = self
            .image_leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        drop(leases);
    }

    /// Leases the images of the containers a previous daemon left.
    fn lease_recovered_images(&self) {
        let containers: Vec<(String, Vec<String>)> = self
            .containers_mut()
            .values()
            .map(|c| {
                let mut images = vec![c.image_id.clone()];
                images.extend(c.volume_images.iter().cloned());
                (c.id.clone(), images)
            })
            .collect();
        for (id, images) in containers {
            for image in images {
                match self.images.lease_by_id(&image) {
                    Some(lease) => self.hold_lease(&id, lease),
                    None => {
                        tracing::warn!(container = %id, %image, "the container's image is not in the store")
                    }
                }
            }
        }
    }

    /// Periodic upkeep: records exits conmon reported (so a container that
    /// ends on its own is exited on disk without anyone asking) and reaps
    /// conmon processes that exited (the daemon is their subreaper).
    pub fn reap_monitors(&self) {
        for id in self.container_ids() {
            self.refresh(&id);
        }
        let pids: Vec<i32> = self
            .containers_mut()
            .values()
            .map(|c| c.conmon_pid)
            .filter(|p| *p > 0)
            .collect();
        for pid in pids {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
        self.orphan_monitors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|pid| !reaped(*pid));
    }

    /// Takes over reaping the monitor of a container being removed.
    fn adopt_monitor(&self, pid: i32) {
        if pid > 0 && !reaped(pid) {
            self.orphan_monitors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(pid);
        }
    }
}

/// Names of the subdirectories of `dir`.
fn dir_names(dir: &std::path::Path) -> std::collections::HashSet<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// How long a monitor left by a killed daemon may take to exit once its
/// half-created container is deleted.
const LEFT_MONITOR_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The exit code of a container whose processes ended with the runtime
/// dir (as containerd reports a lost task: 255).
const LOST_EXIT_CODE: i32 = 255;

use crate::clock::{now_nanos, unix_nanos as nanos};

/// The longest name, namespace or uid a pod or container may have (what
/// Kubernetes allows a DNS subdomain name: longer ones never come from kubelet).
pub const MAX_METADATA_FIELD: usize = 253;

/// Checks one metadata field (`what` names it in the error): at most
/// [`MAX_METADATA_FIELD`] bytes and no control characters (a NUL would
/// reach paths, process arguments and logs).
fn check_metadata_field(what: &str, value: &str) -> Result<(), LifecycleError> {
    if value.len() > MAX_METADATA_FIELD {
        return Err(LifecycleError::InvalidArgument(format!(
            "{what} is {} bytes long; at most {MAX_METADATA_FIELD} are allowed",
            value.len()
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(LifecycleError::InvalidArgument(format!(
            "{what} {:?} contains a control character",
            value
        )));
    }
    Ok(())
}

/// Refuses a NUL byte in `value` (`what` names the field): every string a
/// request carries ends up in a path, a process argument, the environment
/// or a file, where the kernel cuts at the NUL or refuses it.
fn check_no_nul(what: &str, value: &str) -> Result<(), LifecycleError> {
    if !value.contains('\0') {
        return Ok(());
    }
    let shown: String = value.chars().take(64).collect();
    Err(LifecycleError::InvalidArgument(format!(
        "{what} contains a NUL byte: {shown:?}{}",
        if shown.len() < value.len() { "…" } else { "" }
    )))
}

/// [`check_no_nul`] for each of `values`.
fn check_all_no_nul<'a>(
    what: &str,
    values: impl IntoIterator<Item = &'a String>,
) -> Result<(), LifecycleError> {
    values.into_iter().try_for_each(|v| check_no_nul(what, v))
}

/// No string of a container's config holds a NUL byte.
fn check_container_strings(
    config: &ucri_cri_api::v1::ContainerConfig,
) -> Result<(), LifecycleError> {
    check_no_nul("the image", config.image.as_ref().map_or("", |i| &i.image))?;
    check_all_no_nul("the command", &config.command)?;
    check_all_no_nul("an argument", &config.args)?;
    check_no_nul("the working directory", &config.working_dir)?;
    check_no_nul("the log path", &config.log_path)?;
    for env in &config.envs {
        check_no_nul("an environment variable's name", &env.key)?;
        if env.value.contains(&0) {
            return Err(LifecycleError::InvalidArgument(format!(
                "the value of environment variable {:?} contains a NUL byte",
                env.key
            )));
        }
    }
    for mount in &config.mounts {
        check_no_nul("a mount's container path", &mount.container_path)?;
        check_no_nul("a mount's host path", &mount.host_path)?;
        check_no_nul("a mount's image sub-path", &mount.image_sub_path)?;
    }
    for device in &config.devices {
        check_no_nul("a device's container path", &device.container_path)?;
        check_no_nul("a device's host path", &device.host_path)?;
    }
    check_map_no_nul("a label", &config.labels)?;
    check_map_no_nul("an annotation", &config.annotations)
}

/// No string of a pod's config holds a NUL byte (the metadata and the
/// hostname have their own checks).
fn check_pod_strings(config: &ucri_cri_api::v1::PodSandboxConfig) -> Result<(), LifecycleError> {
    check_no_nul("the log directory", &config.log_directory)?;
    if let Some(dns) = &config.dns_config {
        check_all_no_nul("a DNS server", &dns.servers)?;
        check_all_no_nul("a DNS search domain", &dns.searches)?;
        check_all_no_nul("a DNS option", &dns.options)?;
    }
    for port in &config.port_mappings {
        check_no_nul("a port mapping's host IP", &port.host_ip)?;
    }
    if let Some(linux) = &config.linux {
        check_no_nul("the cgroup parent", &linux.cgroup_parent)?;
        check_map_no_nul("a sysctl", &linux.sysctls)?;
    }
    check_map_no_nul("a label", &config.labels)?;
    check_map_no_nul("an annotation", &config.annotations)
}

/// [`check_no_nul`] for the keys and values of `map`.
fn check_map_no_nul(
    what: &str,
    map: &std::collections::HashMap<String, String>,
) -> Result<(), LifecycleError> {
    for (key, value) in map {
        check_no_nul(&format!("{what}'s name"), key)?;
        check_no_nul(&format!("{what} ({key:?})"), value)?;
    }
    Ok(())
}

/// A new random 64-hex-digit ID; an error, never a predictable id, when the
/// kernel's generator cannot be read.
fn new_id() -> Result<String, LifecycleError> {
    crate::random::hex(32).map_err(|source| LifecycleError::Io {
        context: "reading /dev/urandom for a new id".into(),
        source,
    })
}

/// Resolves `id` (full or unique prefix) among `ids`.
fn resolve_id<'a>(ids: impl Iterator<Item = &'a String>, id: &str) -> Option<String> {
    if id.is_empty() {
        return None;
    }
    let mut found = ids.filter(|k| k.starts_with(id));
    let first = found.next()?;
    found.next().is_none().then(|| first.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        //! Fuzzing by properties: the request checks of RunPodSandbox and
        //! CreateContainer take any text, and refuse exactly what is too
        //! long or holds a control character (metadata) or a NUL (every
        //! other string of the configs).
        use super::*;
        use proptest::prelude::*;

        /// Text that holds a NUL now and then.
        fn text() -> impl Strategy<Value = String> {
            "[a-z/.\\x00 ]{0,12}"
        }

        fn container(
            strings: Vec<String>,
            env_value: Vec<u8>,
        ) -> ucri_cri_api::v1::ContainerConfig {
            use ucri_cri_api::v1::{KeyValue, Mount};
            let at = |n: usize| strings.get(n).cloned().unwrap_or_default();
            ucri_cri_api::v1::ContainerConfig {
                command: vec![at(0)],
                args: vec![at(1), at(2)],
                working_dir: at(3),
                log_path: at(4),
                envs: vec![KeyValue {
                    key: at(5),
                    value: env_value,
                }],
                mounts: vec![Mount {
                    container_path: at(6),
                    host_path: at(7),
                    ..Default::default()
                }],
                labels: std::collections::HashMap::from([(at(8), at(9))]),
                annotations: std::collections::HashMap::from([(at(10), at(11))]),
                ..Default::default()
            }
        }

        proptest! {
            #[test]
            fn a_container_config_is_refused_exactly_when_a_string_holds_a_nul(
                strings in proptest::collection::vec(text(), 12),
                env_value in proptest::collection::vec(any::<u8>(), 0..8),
            ) {
                let config = container(strings.clone(), env_value.clone());
                let has_nul = strings.iter().any(|s| s.contains('\0')) || env_value.contains(&0);
                match check_container_strings(&config) {
                    Ok(()) => prop_assert!(!has_nul),
                    Err(e) => {
                        prop_assert!(has_nul);
                        prop_assert!(matches!(e, LifecycleError::InvalidArgument(_)));
                    }
                }
            }

            #[test]
            fn a_pod_config_is_refused_exactly_when_a_string_holds_a_nul(
                strings in proptest::collection::vec(text(), 6),
            ) {
                let at = |n: usize| strings[n].clone();
                let config = ucri_cri_api::v1::PodSandboxConfig {
                    log_directory: at(0),
                    dns_config: Some(ucri_cri_api::v1::DnsConfig {
                        servers: vec![at(1)],
                        searches: vec![at(2)],
                        options: vec![at(3)],
                    }),
                    labels: std::collections::HashMap::from([(at(4), at(5))]),
                    ..Default::default()
                };
                let has_nul = strings.iter().any(|s| s.contains('\0'));
                prop_assert_eq!(check_pod_strings(&config).is_err(), has_nul);
            }

            #[test]
            fn metadata_is_refused_exactly_when_too_long_or_controlled(value in "(\\PC|\\PZ|[\\x00-\\x1f\\x7f]){0,300}") {
                let refused = check_metadata_field("the name", &value).is_err();
                let bad = value.len() > MAX_METADATA_FIELD || value.chars().any(char::is_control);
                prop_assert_eq!(refused, bad);
            }
        }
    }
}
