//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox.

use std::collections::HashMap;

use ucri_cri_api::v1::{
    ContainerEventType, LinuxPodSandboxStatus, Namespace, NamespaceMode, NamespaceOption,
    PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxState, PodSandboxStatus,
};

use super::sandbox::{self, PodDir};
use super::state::{PodPhase, PodState};
use super::{new_id, now_nanos, resolve_id, Lifecycle, LifecycleError};

impl Lifecycle {
    /// Creates a pod sandbox; returns its ID. Nothing remains on failure.
    pub fn run_pod(
        &self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> Result<String, LifecycleError> {
        let metadata = config.metadata.clone().unwrap_or_default();
        if metadata.name.is_empty() || metadata.namespace.is_empty() || metadata.uid.is_empty() {
            return Err(LifecycleError::InvalidArgument(
                "pod metadata needs a name, namespace and uid".into(),
            ));
        }
        super::check_metadata_field("the pod name", &metadata.name)?;
        super::check_metadata_field("the pod namespace", &metadata.namespace)?;
        super::check_metadata_field("the pod uid", &metadata.uid)?;
        super::check_pod_strings(&config)?;
        self.runtime_for(handler)?;
        let namespaces = sandbox::own_namespaces(&config);
        let port_mappings = super::network::port_mappings(&config)?;
        ucri_net::hostport::validate(&port_mappings)?;
        let hostname = pod_hostname(&config)?;
        refuse_named_pod_apparmor(&config)?;
        super::bypass::annotation_allows(&config)?;
        let available =
            super::userns::available_ids("uid").min(super::userns::available_ids("gid"));
        let user_maps = super::userns::requested_maps(&config, available)?;
        let id = new_id()?;
        self.claim_pod_name(&config, &id)?;
        let dir = PodDir::new(&self.runtime_root, &id);
        let mut state = PodState {
            id: id.clone(),
            config,
            phase: PodPhase::Ready,
            created_at: now_nanos(),
            runtime_handler: handler.to_owned(),
            namespaces,
            hostname: hostname.clone(),
            init_pid: 0,
            bypass_pid: 0,
            network: None,
        };
        // Host-network pods live in the node namespace too: the host's
        // loopback resolvers are not there, the uplink's is.
        let nameserver = self.network.dns_server();
        let created = sandbox::create(
            &dir,
            &state.config,
            &namespaces,
            &hostname,
            nameserver,
            user_maps.as_ref(),
        )
        .map_err(LifecycleError::from)
        .and_then(|()| self.start_init(&dir, &mut state))
        .and_then(|()| self.attach_network(&dir, &mut state, port_mappings))
        .and_then(|()| Ok(self.states.save_pod(&state)?));
        if let Err(e) = created {
            if state.network.is_some() {
                let _ = self.network.detach(&id);
            }
            self.stop_bypass(&id, state.bypass_pid);
            sandbox::stop_pid_init(&dir, state.init_pid);
            let _ = sandbox::teardown(&dir);
            let _ = self.states.delete_pod(&id);
            self.pods_mut().remove(&id);
            return Err(e);
        }
        self.pods_mut().insert(id.clone(), state);
        tracing::info!(pod = %id, name = %metadata.name, namespace = %metadata.namespace, "pod sandbox ready");
        self.emit_pod(&id, ContainerEventType::ContainerCreatedEvent);
        self.emit_pod(&id, ContainerEventType::ContainerStartedEvent);
        Ok(id)
    }

    /// Reserves the pod's name/namespace/uid/attempt, holding a placeholder.
    fn claim_pod_name(&self, config: &PodSandboxConfig, id: &str) -> Result<(), LifecycleError> {
        let mut pods = self.pods_mut();
        let key = pod_key(config);
        if let Some(holder) = pods.values().find(|p| pod_key(&p.config) == key) {
            return Err(LifecycleError::AlreadyExists(format!(
                "pod sandbox {key} already exists as {}",
                holder.id
            )));
        }
        let placeholder = PodState {
            id: id.to_owned(),
            config: config.clone(),
            phase: PodPhase::NotReady,
            created_at: 0,
            runtime_handler: String::new(),
            namespaces: sandbox::own_namespaces(config),
            hostname: String::new(),
            init_pid: 0,
            bypass_pid: 0,
            network: None,
        };
        pods.insert(id.to_owned(), placeholder);
        Ok(())
    }

    /// Starts the shared PID namespace's init when the pod wants one.
    fn start_init(&self, dir: &PodDir, state: &mut PodState) -> Result<(), LifecycleError> {
        if state.namespaces.pid_shared {
            state.init_pid = sandbox::start_pid_init(dir)?;
        }
        Ok(())
    }

    /// Stops every container of the pod and releases its namespaces.
    /// Stopping a stopped or unknown pod succeeds.
    pub fn stop_pod(&self, id: &str) -> Result<(), LifecycleError> {
        let Some(id) = self.resolve_pod(id) else {
            return Ok(());
        };
        let lock = self.locks.get(&id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        for container in self.containers_of(&id) {
            self.stop_container(&container, 0)?;
        }
        self.release_pod(&id)?;
        self.update_pod(&id, |p| {
            p.phase = PodPhase::NotReady;
            p.init_pid = 0;
            p.bypass_pid = 0;
        })?;
        self.emit_pod(&id, ContainerEventType::ContainerStoppedEvent);
        Ok(())
    }

    /// Undoes the pod's network, ends its init and bypass agent and unpins
    /// its namespaces; its containers are stopped already. When the CNI
    /// chain releases all it holds without the namespace (the default
    /// network does), the pins go first: the kernel then deletes the pod's
    /// veth with its namespace, after the RPC returns, instead of bridge DEL
    /// waiting 15–30 ms for the deletion. Idempotent.
    fn release_pod(&self, id: &str) -> Result<(), LifecycleError> {
        let dir = PodDir::new(&self.runtime_root, id);
        let unpin_first = self.network.releases_without_netns(id);
        if !unpin_first {
            self.detach_network(id)?;
        }
        let pids = self.pods_mut().get(id).map(|p| (p.init_pid, p.bypass_pid));
        if let Some((init_pid, bypass_pid)) = pids {
            self.stop_bypass(id, bypass_pid);
            sandbox::stop_pid_init(&dir, init_pid);
        }
        sandbox::release_namespaces(&dir)?;
        if unpin_first {
            self.detach_network(id)?;
        }
        Ok(())
    }

    /// Removes the pod and its containers. Removing an unknown pod succeeds.
    pub fn remove_pod(&self, id: &str) -> Result<(), LifecycleError> {
        let Some(id) = self.resolve_pod(id) else {
            return Ok(());
        };
        let lock = self.locks.get(&id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        for container in self.containers_of(&id) {
            self.remove_container(&container)?;
        }
        self.finish_cleanups(&id);
        self.remove_pod_cgroup(&id);
        self.release_pod(&id)?;
        sandbox::teardown(&PodDir::new(&self.runtime_root, &id))?;
        self.states.delete_pod(&id)?;
        self.pods_mut().remove(&id);
        tracing::info!(pod = %id, "pod sandbox removed");
        self.emit_pod(&id, ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }

    /// The pod's status.
    pub fn pod_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(PodSandboxStatus, HashMap<String, String>), LifecycleError> {
        let pod = self.pod(id)?;
        let info = if verbose {
            self.pod_info(&pod)
        } else {
            HashMap::new()
        };
        Ok((cri_pod_status(&pod), info))
    }

    fn pod_info(&self, pod: &PodState) -> HashMap<String, String> {
        let dir = PodDir::new(&self.runtime_root, &pod.id);
        // The latest background CNI CHECK (every minute; the ADD counts as
        // the first): the status path runs no plugin.
        let check = self.network.last_check(&pod.id);
        let info = serde_json::json!({
            "network": pod.network,
            "cniCheck": check.as_ref().map(|c| &c.result),
            "cniCheckedAt": check.map(|c| c.at),
            "hostname": pod.hostname,
            "namespaces": pod.namespaces,
            "netns": pod.namespaces.network.then(|| dir.ns("net")),
            "runtimeHandler": pod.runtime_handler,
            "socketBypass": self.bypass_stats(pod),
            "containers": self.containers_of(&pod.id),
        });
        HashMap::from([("info".to_owned(), info.to_string())])
    }

    /// Pods matching `filter`.
    pub fn list_pods(&self, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
        self.refresh_pods();
        let pods = self.pods_mut();
        pods.values()
            .filter(|p| p.created_at != 0)
            .filter(|p| filter.as_ref().is_none_or(|f| pod_matches(p, f)))
            .map(pod_summary)
            .collect()
    }

    /// Marks pods whose namespaces vanished (e.g. after a reboot) not ready.
    /// An unreadable mount table says nothing about the pods: none is marked.
    pub(super) fn refresh_pods(&self) {
        let mounts = ucri_rootless::mounts::try_mountpoints();
        let mut stale = Vec::new();
        {
            let mut pods = self.pods_mut();
            for id in pods_whose_netns_vanished(pods.values(), &mounts, &self.runtime_root) {
                if let Some(pod) = pods.get_mut(&id) {
                    pod.phase = PodPhase::NotReady;
                    stale.push(pod.clone());
                }
            }
        }
        for pod in stale {
            if let Err(e) = self.states.save_pod(&pod) {
                tracing::warn!(pod = %pod.id, %e, "cannot record that the pod is not ready; it reads so until a restart");
            }
        }
    }

    pub(super) fn resolve_pod(&self, id: &str) -> Option<String> {
        let pods = self.pods_mut();
        resolve_id(pods.keys(), id)
    }

    pub(super) fn pod(&self, id: &str) -> Result<PodState, LifecycleError> {
        self.resolve_pod(id)
            .and_then(|id| self.pods_mut().get(&id).cloned())
            .filter(|p| p.created_at != 0)
            .ok_or_else(|| LifecycleError::NotFound(format!("pod sandbox {id} not found")))
    }

    pub(super) fn update_pod(
        &self,
        id: &str,
        change: impl FnOnce(&mut PodState),
    ) -> Result<(), LifecycleError> {
        let updated = {
            let mut pods = self.pods_mut();
            let Some(pod) = pods.get_mut(id) else {
                return Ok(());
            };
            change(pod);
            pod.clone()
        };
        Ok(self.states.save_pod(&updated)?)
    }

    /// The OCI runtime binary of `handler` ("" = the default).
    pub(super) fn runtime_for(&self, handler: &str) -> Result<std::path::PathBuf, LifecycleError> {
        let runtime = &self.config.runtime;
        let name = if handler.is_empty() {
            runtime.default_runtime.as_str()
        } else {
            handler
        };
        let handler = runtime.runtimes.get(name).ok_or_else(|| {
            LifecycleError::InvalidArgument(format!("unknown runtime handler {name:?}"))
        })?;
        ucri_rootless::which(&handler.path.to_string_lossy()).ok_or_else(|| {
            LifecycleError::FailedPrecondition(format!(
                "OCI runtime {} of handler {name:?} is not installed",
                handler.path.display()
            ))
        })
    }
}

fn pod_key(config: &PodSandboxConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!(
        "{}/{} (uid {}, attempt {})",
        m.namespace, m.name, m.uid, m.attempt
    )
}

fn cri_state(pod: &PodState) -> PodSandboxState {
    match pod.phase {
        PodPhase::Ready => PodSandboxState::SandboxReady,
        PodPhase::NotReady => PodSandboxState::SandboxNotready,
    }
}

fn pod_matches(pod: &PodState, f: &PodSandboxFilter) -> bool {
    (f.id.is_empty() || pod.id.starts_with(&f.id))
        && f.state
            .as_ref()
            .is_none_or(|s| s.state == cri_state(pod) as i32)
        && f.label_selector
            .iter()
            .all(|(k, v)| pod.config.labels.get(k) == Some(v))
}

fn pod_summary(pod: &PodState) -> PodSandbox {
    PodSandbox {
        id: pod.id.clone(),
        metadata: pod.config.metadata.clone(),
        state: cri_state(pod) as i32,
        created_at: pod.created_at,
        labels: pod.config.labels.clone(),
        annotations: pod.config.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// The CRI view of a pod sandbox.
pub(super) fn cri_pod_status(pod: &PodState) -> PodSandboxStatus {
    let mode = |own: bool| if own { NamespaceMode::Pod } else { NamespaceMode::Node } as i32;
    let pid = match (pod.namespaces.host_pid, pod.namespaces.pid_shared) {
        (true, _) => NamespaceMode::Node,
        (_, true) => NamespaceMode::Pod,
        _ => NamespaceMode::Container,
    } as i32;
    PodSandboxStatus {
        id: pod.id.clone(),
        metadata: pod.config.metadata.clone(),
        state: cri_state(pod) as i32,
        created_at: pod.created_at,
        network: Some(super::network::network_status(pod)),
        linux: Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace {
                options: Some(NamespaceOption {
                    network: mode(pod.namespaces.network),
                    pid,
                    ipc: mode(pod.namespaces.ipc),
                    ..Default::default()
                }),
            }),
        }),
        labels: pod.config.labels.clone(),
        annotations: pod.config.annotations.clone(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

/// A pod-level `Localhost` AppArmor profile cannot be honoured, as a
/// container's cannot: refused, not dropped.
fn refuse_named_pod_apparmor(config: &PodSandboxConfig) -> Result<(), LifecycleError> {
    let profile = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|sc| sc.apparmor.as_ref());
    if super::spec::is_named_apparmor(profile) {
        return Err(LifecycleError::InvalidArgument(format!(
            "the pod's {}",
            super::spec::NAMED_APPARMOR_REFUSED
        )));
    }
    Ok(())
}

/// The hostname a pod gets: the one its config names, else the node's (as
/// CRI-O and containerd do; a pod name can be longer than a hostname may be).
fn pod_hostname(config: &PodSandboxConfig) -> Result<String, LifecycleError> {
    let hostname = if config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(|e| LifecycleError::Internal(format!("reading the node's hostname: {e}")))?
            .to_string_lossy()
            .into_owned()
    } else {
        config.hostname.clone()
    };
    if hostname.len() > 64 || hostname.contains(['\0', '/']) {
        return Err(LifecycleError::InvalidArgument(format!(
            "hostname {hostname:?} is not valid: at most 64 characters, no NUL or '/'"
        )));
    }
    Ok(hostname)
}

/// The ready pods with a network namespace of their own whose pinned
/// namespace is no longer mounted under `runtime_root`. When the mount table
/// could not be read it says nothing about them: none is named.
fn pods_whose_netns_vanished<'a>(
    pods: impl Iterator<Item = &'a PodState>,
    mounts: &std::io::Result<Vec<std::path::PathBuf>>,
    runtime_root: &std::path::Path,
) -> Vec<String> {
    let mounts = match mounts {
        Ok(mounts) => mounts,
        Err(e) => {
            tracing::warn!(%e, "cannot read the mount table; pods keep their phase");
            return Vec::new();
        }
    };
    pods.filter(|pod| {
        pod.phase == PodPhase::Ready
            && pod.namespaces.network
            && pod.created_at != 0
            && !mounts.contains(&PodDir::new(runtime_root, &pod.id).ns("net"))
    })
    .map(|pod| pod.id.clone())
    .collect()
}

/// The pod's socket bypass agent (`bypass.rs` decides what it changes in
/// a container's spec).
impl Lifecycle {
    /// Whether the pod gets the bypass: its own network namespace, the
    /// daemon runs it, crun runs its containers, and it did not opt out.
    fn wants_bypass(&self, pod: &PodState) -> Result<bool, LifecycleError> {
        if !pod.namespaces.network
            || self.bypass.is_err()
            || !super::bypass::annotation_allows(&pod.config)?
        {
            return Ok(false);
        }
        self.runtime_receives_listeners(pod)
    }

    /// crun hands seccomp listeners to a receiver; runc does not.
    fn runtime_receives_listeners(&self, pod: &PodState) -> Result<bool, LifecycleError> {
        let runtime = self.runtime_for(&pod.runtime_handler)?;
        Ok(runtime
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("crun")))
    }

    /// Starts the pod's agent; records its pid in `pod`.
    fn start_bypass(&self, pod: &mut PodState) -> Result<(), LifecycleError> {
        let socket = super::bypass::agent_socket(&self.runtime_root, &pod.id);
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(super::error::io("creating the bypass dir"))?;
        }
        let log = super::sandbox::PodDir::new(&self.runtime_root, &pod.id)
            .path()
            .join("bypass.log");
        let exe = std::env::current_exe().map_err(super::error::io("finding the ucri binary"))?;
        pod.bypass_pid =
            ucri_net::bypass::start_agent(&exe, &socket, &self.bypass_policy(pod), &log)?;
        Ok(())
    }

    /// The receiver a new container of the pod sends its listener to, or
    /// `None` when the container does without the bypass. The pod's agent
    /// starts with its first container that has a seccomp filter to join
    /// (pods of Unconfined containers never pay for one), and again if it
    /// is gone.
    pub(super) fn bypass_receiver(
        &self,
        pod_id: &str,
        container: &ucri_cri_api::v1::ContainerConfig,
    ) -> Result<Option<super::bypass::Receiver>, LifecycleError> {
        let Some(pod) = self.pods_mut().get(pod_id).cloned() else {
            return Ok(None);
        };
        if !self.wants_bypass(&pod)? {
            return Ok(None);
        }
        let unconfined_too = pod
            .config
            .annotations
            .get(super::bypass::POD_ANNOTATION)
            .map(String::as_str)
            == Some("true");
        if !unconfined_too && !super::bypass::has_seccomp_profile(container) {
            return Ok(None);
        }
        let receiver = super::bypass::Receiver {
            socket: super::bypass::agent_socket(&self.runtime_root, pod_id),
            unconfined_too,
        };
        // One start per pod, however many containers are created at once.
        let _starting = self.bypass_starts.lock().unwrap_or_else(|p| p.into_inner());
        let pid = self
            .pods_mut()
            .get(pod_id)
            .map(|p| p.bypass_pid)
            .unwrap_or(0);
        if pid > 0 && ucri_net::bypass::is_agent_of(&receiver.socket, pid) {
            return Ok(Some(receiver));
        }
        if pid > 0 {
            tracing::warn!(pod = %pod_id, pid, "the socket bypass agent is gone; starting it again");
        }
        let mut started = pod;
        self.start_bypass(&mut started)?;
        let pid = started.bypass_pid;
        if let Err(e) = self.update_pod(pod_id, |p| p.bypass_pid = pid) {
            self.stop_bypass(pod_id, pid);
            return Err(e);
        }
        Ok(Some(receiver))
    }

    /// Ends the agents whose pods have no record (a daemon killed while it
    /// created or removed them).
    pub(super) fn stop_unknown_agents(&self, pods: &std::collections::HashSet<String>) {
        let dir = self.runtime_root.join("bypass");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(prefix) = name.strip_suffix(".sock") else {
                continue;
            };
            if !pods.iter().any(|p| p.starts_with(prefix)) {
                tracing::info!(pod = %prefix, "ending the socket bypass agent of a pod that is gone");
                ucri_net::bypass::stop_agent_by_pid_file(&entry.path());
            }
        }
    }

    /// Ends the pod's agent (its containers are stopped by now).
    pub(super) fn stop_bypass(&self, pod_id: &str, pid: i32) {
        ucri_net::bypass::stop_agent(
            &super::bypass::agent_socket(&self.runtime_root, pod_id),
            pid,
        );
    }

    /// What the pod's agent has done, for verbose status; `None` without it.
    pub(super) fn bypass_stats(&self, pod: &PodState) -> Option<serde_json::Value> {
        if pod.bypass_pid <= 0 {
            return None;
        }
        let socket = super::bypass::agent_socket(&self.runtime_root, &pod.id);
        Some(match ucri_net::bypass::query_stats(&socket) {
            Ok(stats) => serde_json::to_value(stats).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        })
    }

    /// Networks the pod's connections keep to its own path: the
    /// configured ones, the node's pod CIDRs, the pod's own subnets and the
    /// uplink's addresses.
    fn bypass_policy(&self, pod: &PodState) -> ucri_net::bypass::Policy {
        let mut keep: Vec<ucri_net::bypass::Cidr> = self.config.network.bypass_keep.clone();
        let own = pod.network.iter().flat_map(|a| a.subnets.iter());
        let node = self.network.pod_cidrs();
        keep.extend(
            own.chain(node.iter())
                .chain(self.network.uplink_networks().iter())
                .filter_map(|c| c.parse::<ucri_net::bypass::Cidr>().ok()),
        );
        keep.dedup();
        ucri_net::bypass::Policy { keep }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::PodNamespaces;
    use std::path::{Path, PathBuf};

    fn ready_pod(id: &str, network: bool) -> PodState {
        PodState {
            id: id.into(),
            config: PodSandboxConfig::default(),
            phase: PodPhase::Ready,
            created_at: 1,
            runtime_handler: String::new(),
            namespaces: PodNamespaces {
                network,
                ipc: true,
                pid_shared: false,
                host_pid: false,
                user: false,
            },
            hostname: id.into(),
            init_pid: 0,
            bypass_pid: 0,
            network: None,
        }
    }

    #[test]
    fn only_pods_whose_pinned_netns_is_gone_are_named() {
        let root = Path::new("/run/ucri");
        let pods = [
            ready_pod("kept", true),
            ready_pod("gone", true),
            ready_pod("host", false),
        ];
        let mounts: std::io::Result<Vec<PathBuf>> = Ok(vec![
            PodDir::new(root, "kept").ns("net"),
            PathBuf::from("/"),
        ]);
        assert_eq!(
            pods_whose_netns_vanished(pods.iter(), &mounts, root),
            vec!["gone".to_owned()]
        );
    }

    #[test]
    fn an_unreadable_mount_table_names_no_pod() {
        let pods = [ready_pod("a", true), ready_pod("b", true)];
        let unreadable = Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied));
        assert!(
            pods_whose_netns_vanished(pods.iter(), &unreadable, Path::new("/run/ucri")).is_empty()
        );
    }
}
