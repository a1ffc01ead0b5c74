//! CreateContainer, StartContainer, StopContainer, RemoveContainer,
//! ContainerStatus and ListContainers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ucri_cri_api::v1::{
    Container, ContainerConfig, ContainerEventType, ContainerFilter, ContainerState as CriState,
    ContainerStatus, ContainerUser, ImageSpec, LinuxContainerUser, PodSandboxConfig,
};

use super::oci::CreateArgs;
use super::sandbox::PodDir;
use super::state::{ContainerPhase, ContainerState, PodPhase, PodState, ProcessUser};
use super::{nanos, new_id, now_nanos, resolve_id, Lifecycle, LifecycleError};
use crate::runtime::spec::{self, PodContext, SpecInputs};

/// How long a SIGKILLed container may take to be reported gone.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long ReopenContainerLog waits for conmon to create the new file.
const LOG_REOPEN_GRACE: Duration = Duration::from_secs(5);
/// How long a failed signal waits for conmon to record an exit that raced it.
const EXIT_RECORD_GRACE: Duration = Duration::from_secs(2);
/// The exit code of a container the OCI runtime could not create at
/// StartContainer (containerd's `errorStartExitCode`).
const START_ERROR_EXIT_CODE: i32 = 128;

impl Lifecycle {
    /// Creates a container in pod `pod_id`; nothing remains on failure.
    /// The pod's settings (log directory, security context, namespaces)
    /// come from the pod as it was created, not from the request.
    pub fn create_container(
        &self,
        pod_id: &str,
        config: ContainerConfig,
    ) -> Result<String, LifecycleError> {
        let pod = self.pod(pod_id)?;
        let sandbox = &pod.config.clone();
        if pod.phase != PodPhase::Ready {
            return Err(LifecycleError::FailedPrecondition(format!(
                "pod sandbox {} is not ready",
                pod.id
            )));
        }
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        if name.is_empty() {
            return Err(LifecycleError::InvalidArgument(
                "container metadata needs a name".into(),
            ));
        }
        super::check_metadata_field("the container name", &name)?;
        super::check_container_strings(&config)?;
        if ucri_cri_api::v1::Signal::try_from(config.stop_signal).is_err() {
            return Err(LifecycleError::InvalidArgument(format!(
                "unknown stop signal {}",
                config.stop_signal
            )));
        }
        let image_spec = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let (image, lease) = self.images.lease(&image_spec).ok_or_else(|| {
            LifecycleError::NotFound(format!("image {image_spec:?} not found; pull it first"))
        })?;
        let id = new_id()?;
        let state =
            self.claim_container_name(&pod, &id, &config, image.id.to_string(), image_spec)?;
        self.hold_lease(&id, lease);
        let lock = self.locks.get(&id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.build_container(&pod, state, sandbox, &image) {
            Ok(state) => {
                self.states
                    .save_container(&state)
                    .inspect_err(|_| self.discard(&id))?;
                self.containers_mut().insert(id.clone(), state);
                tracing::info!(container = %id, pod = %pod.id, name = %name, "container created");
                self.emit_container(&id, ContainerEventType::ContainerCreatedEvent);
                Ok(id)
            }
            Err(e) => {
                self.discard(&id);
                Err(e)
            }
        }
    }

    fn claim_container_name(
        &self,
        pod: &PodState,
        id: &str,
        config: &ContainerConfig,
        image_id: String,
        image_ref: String,
    ) -> Result<ContainerState, LifecycleError> {
        let mut containers = self.containers_mut();
        let key = container_key(config);
        if let Some(holder) = containers
            .values()
            .find(|c| c.pod_id == pod.id && container_key(&c.config) == key)
        {
            return Err(LifecycleError::AlreadyExists(format!(
                "container {key} already exists in pod {} as {}",
                pod.id, holder.id
            )));
        }
        let state = ContainerState {
            id: id.to_owned(),
            pod_id: pod.id.clone(),
            config: config.clone(),
            image_id,
            image_ref,
            phase: ContainerPhase::Created,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            pid: 0,
            conmon_pid: 0,
            log_path: String::new(),
            runtime: self.runtime_for(&pod.runtime_handler)?,
            oom_killed: false,
            user: None,
            volume_images: Vec::new(),
            lost: None,
            deferred: false,
            start_error: None,
        };
        containers.insert(id.to_owned(), state.clone());
        Ok(state)
    }

    pub(super) fn bundle(&self, id: &str) -> PathBuf {
        self.runtime_root.join("containers").join(id)
    }

    /// Root filesystem, image volumes and the bundle's spec. The OCI
    /// runtime creates the container at StartContainer
    /// ([`Self::create_in_runtime`]), as in containerd: CreateContainer
    /// spawns no process.
    fn build_container(
        &self,
        pod: &PodState,
        mut state: ContainerState,
        sandbox: &PodSandboxConfig,
        image: &ucri_storage::store::ImageRecord,
    ) -> Result<ContainerState, LifecycleError> {
        let layers: Vec<_> = image.layers.iter().map(|l| l.chain_id.clone()).collect();
        let rootfs = match super::userns::id_shift(&pod.config) {
            Some(shift) => self
                .storage
                .rootfs()
                .create_shifted(&state.id, &layers, shift),
            None => self.storage.rootfs().create(&state.id, &layers, false),
        }
        .map_err(|e| LifecycleError::Internal(format!("root filesystem: {e}")))?;
        let (spec_config, volume_images) = super::image_volumes::mount(
            &self.images,
            self.storage.rootfs(),
            &state.id,
            &state.config,
            |lease| self.hold_lease(&state.id, lease),
        )?;
        state.volume_images = volume_images;
        let bundle = self.bundle(&state.id);
        std::fs::create_dir_all(&bundle).map_err(|source| LifecycleError::Io {
            context: "creating the bundle".into(),
            source,
        })?;
        // Fail closed: without its config an image's USER, Env and
        // Entrypoint would silently become root and nothing.
        let image_config: serde_json::Value = self
            .images
            .store()
            .read_blob(&image.id)
            .map_err(|e| LifecycleError::Internal(format!("image {}: its config: {e}", image.id)))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    LifecycleError::Internal(format!(
                        "image {}: its config is not JSON: {e}",
                        image.id
                    ))
                })
            })?;
        state.user =
            Some(self.write_spec(pod, &spec_config, sandbox, &image_config, &rootfs, &bundle)?);
        let log_path = log_path(sandbox, &state.config, &bundle)?;
        state.log_path = log_path.display().to_string();
        state.deferred = true;
        state.created_at = now_nanos();
        Ok(state)
    }

    /// Has conmon create a deferred container in the OCI runtime (its
    /// process waits to be started) and records the pids. On failure the
    /// container stays deferred and nothing of the attempt remains.
    fn create_in_runtime(&self, state: &ContainerState) -> Result<(), LifecycleError> {
        let bundle = self.bundle(&state.id);
        let created = self.oci.create(&CreateArgs {
            id: &state.id,
            runtime: &state.runtime,
            bundle: &bundle,
            log_path: Path::new(&state.log_path),
            tty: state.config.tty,
            stdin: state.config.stdin,
            stdin_once: state.config.stdin_once,
            name: &state.id,
        })?;
        // Saved before `crun start`: a daemon killed in between finds a
        // container crun created, as one created by an older ucri.
        self.update(&state.id, |c| {
            c.pid = created.pid;
            c.conmon_pid = created.conmon_pid;
            c.deferred = false;
        })?;
        self.monitors.watch(&state.id, created.conmon_pid);
        Ok(())
    }

    /// Records that a deferred container could not be created at start: it
    /// reads as exited (code 128, `StartError`, the runtime's message).
    fn record_start_error(&self, id: &str, error: &LifecycleError) {
        let message = error.to_string();
        let recorded = self.update(id, |c| {
            c.phase = ContainerPhase::Exited;
            c.exit_code = START_ERROR_EXIT_CODE;
            c.finished_at = now_nanos().max(c.started_at);
            c.start_error = Some(message);
        });
        if let Err(e) = recorded {
            tracing::warn!(container = %id, %e, "recording the failed start");
        }
        self.emit_container(id, ContainerEventType::ContainerStoppedEvent);
    }

    fn write_spec(
        &self,
        pod: &PodState,
        config: &ContainerConfig,
        sandbox: &PodSandboxConfig,
        image_config: &serde_json::Value,
        rootfs: &Path,
        bundle: &Path,
    ) -> Result<ProcessUser, LifecycleError> {
        let dir = PodDir::new(&self.runtime_root, &pod.id);
        let ns = pod.namespaces;
        let context = PodContext {
            hostname: pod.hostname.clone(),
            // Host-network pods join the node's network namespace (the
            // uplink), where kubelet, critest and node daemons run.
            netns: Some(if ns.network {
                dir.ns("net")
            } else {
                self.network.uplink_netns()
            }),
            ipcns: ns.ipc.then(|| dir.ns("ipc")),
            utsns: ns.network.then(|| dir.ns("uts")),
            pidns: ns.pid_shared.then(|| dir.ns("pid")),
            host_pid: ns.host_pid,
            userns: ns.user.then(|| dir.ns("user")),
            shm: ns.ipc.then(|| dir.shm()),
            resolv_conf: dir.resolv_conf(),
            hosts: dir.hosts(),
            hostname_file: dir.hostname_file(),
            bypass_receiver: self.bypass_receiver(&pod.id, config)?,
        };
        let container_id = bundle
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let placement = self.cgroup_placement(&pod.id, container_id, config);
        let inputs = SpecInputs {
            config,
            sandbox,
            image_config,
            rootfs,
            pod: &context,
            termination_log: None,
            cgroup: placement.as_ref(),
        };
        let mut spec = spec::generate(&inputs).map_err(spec_error)?;
        spec.set_root(Some(
            oci_spec::runtime::RootBuilder::default()
                .path(rootfs.to_owned())
                .readonly(
                    spec.root()
                        .as_ref()
                        .and_then(|r| r.readonly())
                        .unwrap_or(false),
                )
                .build()
                .map_err(|e| LifecycleError::Internal(e.to_string()))?,
        ));
        let json =
            serde_json::to_vec(&spec).map_err(|e| LifecycleError::Internal(e.to_string()))?;
        ucri_rootless::rundir::write_atomic_volatile(&bundle.join("config.json"), &json).map_err(
            |source| LifecycleError::Io {
                context: "writing config.json".into(),
                source,
            },
        )?;
        Ok(process_user(&spec))
    }

    /// Removes every trace of a half-created container (the OCI runtime
    /// never had it: that happens at start).
    fn discard(&self, id: &str) {
        self.release_leases(id);
        let removed = self.containers_mut().remove(id);
        if let Some(state) = removed {
            super::image_volumes::remove(self.storage.rootfs(), id, &state.config);
        }
        let _ = self.storage.rootfs().remove(id);
        let _ = std::fs::remove_dir_all(self.bundle(id));
        self.oci.forget(id);
        let _ = self.states.delete_container(id);
    }

    /// Starts a created container.
    pub fn start_container(&self, id: &str) -> Result<(), LifecycleError> {
        let state = self.container(id)?;
        let lock = self.locks.get(&state.id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.refresh(&state.id).ok_or_else(|| not_found(id))?;
        if state.phase != ContainerPhase::Created {
            return Err(LifecycleError::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                state.id, state.phase
            )));
        }
        if state.deferred {
            self.require_ready_pod(&state)?;
            let creating = std::time::Instant::now();
            if let Err(e) = self.create_in_runtime(&state) {
                self.record_start_error(&state.id, &e);
                return Err(e);
            }
            tracing::debug!(container = %state.id,
                elapsed_us = creating.elapsed().as_micros() as u64, "created in the OCI runtime");
        }
        // Taken before the start: a container may exit before crun returns.
        let started_at = now_nanos();
        let starting = std::time::Instant::now();
        self.oci.runtime(
            &state.runtime,
            &["start", &state.id],
            "starting the container",
        )?;
        tracing::debug!(container = %state.id,
            elapsed_us = starting.elapsed().as_micros() as u64, "started by the OCI runtime");
        self.update(&state.id, |c| {
            c.phase = ContainerPhase::Running;
            c.started_at = started_at;
        })?;
        self.emit_container(&state.id, ContainerEventType::ContainerStartedEvent);
        self.refresh(&state.id);
        Ok(())
    }

    /// A deferred container is created in its pod's namespaces: the pod
    /// must still have them (not stopped since CreateContainer).
    fn require_ready_pod(&self, state: &ContainerState) -> Result<(), LifecycleError> {
        let pod = self.pod(&state.pod_id)?;
        if pod.phase != PodPhase::Ready {
            return Err(LifecycleError::FailedPrecondition(format!(
                "pod sandbox {} of container {} is not ready",
                pod.id, state.id
            )));
        }
        Ok(())
    }

    /// Stops a container: its stop signal, then SIGKILL after `timeout`
    /// seconds (0: at once). Stopping a stopped container succeeds.
    pub fn stop_container(&self, id: &str, timeout: i64) -> Result<(), LifecycleError> {
        let Ok(state) = self.container(id) else {
            // Stopping is idempotent: kubelet and critest stop what may
            // already be gone (CRI-O and containerd answer OK too).
            tracing::debug!(container = %id, "stop of an unknown container");
            return Ok(());
        };
        let lock = self.locks.get(&state.id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let Some(state) = self.refresh(&state.id) else {
            return Ok(());
        };
        // Nothing runs before StartContainer created it in the OCI
        // runtime: it stays created, as in containerd.
        if state.phase == ContainerPhase::Exited || state.deferred {
            return Ok(());
        }
        let signal = self.stop_signal(&state);
        if timeout > 0 && signal != "KILL" {
            let deadline = std::time::Instant::now() + Duration::from_secs(timeout as u64);
            // A signal the container's init cannot take yet would be lost.
            super::signals::wait_until_deliverable(state.pid, &signal, deadline);
            self.signal(&state, &signal)?;
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if self
                .oci
                .wait_exit(&state.id, state.conmon_pid, left)
                .is_some()
            {
                self.refresh(&state.id);
                return Ok(());
            }
        }
        self.signal(&state, "KILL")?;
        if self
            .oci
            .wait_exit(&state.id, state.conmon_pid, KILL_GRACE)
            .is_none()
        {
            return Err(LifecycleError::Runtime(format!(
                "container {} did not exit after SIGKILL",
                state.id
            )));
        }
        self.refresh(&state.id);
        Ok(())
    }

    fn signal(&self, state: &ContainerState, signal: &str) -> Result<(), LifecycleError> {
        let sent = self.oci.runtime(
            &state.runtime,
            &["kill", &state.id, signal],
            "signalling the container",
        );
        match sent {
            // The container exited between the state check and the signal
            // (crun: "open pidfd: No such process"); conmon writes the exit
            // file a moment later.
            Err(_)
                if self
                    .oci
                    .wait_exit(&state.id, state.conmon_pid, EXIT_RECORD_GRACE)
                    .is_some() =>
            {
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// The container's stop signal (Kubernetes 1.33+ lifecycle.stopSignal),
    /// else the image's StopSignal, else TERM; as the OCI runtime names it.
    fn stop_signal(&self, state: &ContainerState) -> String {
        if let Some(signal) = requested_stop_signal(&state.config) {
            return signal;
        }
        let config: Option<serde_json::Value> = state
            .image_id
            .parse()
            .ok()
            .and_then(|d| self.images.store().read_blob(&d).ok())
            .and_then(|b| serde_json::from_slice(&b).ok());
        config
            .and_then(|c| {
                c["config"]["StopSignal"]
                    .as_str()
                    .map(|s| s.trim_start_matches("SIG").to_owned())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "TERM".into())
    }

    /// Removes a container, stopping it first. Removing an unknown one succeeds.
    pub fn remove_container(&self, id: &str) -> Result<(), LifecycleError> {
        let Some(id) = self.resolve_container(id) else {
            return Ok(());
        };
        if self
            .refresh(&id)
            .is_some_and(|c| c.phase != ContainerPhase::Exited)
        {
            self.stop_container(&id, 0)?;
        }
        let lock = self.locks.get(&id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.container(&id)?;
        // The record goes first: from here the container is gone for every
        // client, and a daemon killed before the cleanup below is done
        // finishes it at start (a bundle without a record).
        self.states.delete_container(&id)?;
        self.containers_mut().remove(&id);
        self.adopt_monitor(state.conmon_pid);
        self.start_cleanup(state);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    /// Deletes a removed container's runtime state, root filesystem, image
    /// volumes and bundle on a thread of its own (what `crun delete` and the
    /// unmount cost is not the client's wait), then ends its image leases
    /// and lets go of images removed meanwhile. When the root filesystem
    /// cannot be removed, the leases stay, so its layers do too.
    fn start_cleanup(&self, state: ContainerState) {
        let id = state.id.clone();
        let pod_id = state.pod_id.clone();
        let oci = self.oci.clone();
        let storage = std::sync::Arc::clone(&self.storage);
        let bundle = self.bundle(&id);
        let leases = std::sync::Arc::clone(&self.image_leases);
        let images = std::sync::Arc::clone(&self.images);
        let runtime = tokio::runtime::Handle::try_current().ok();
        let cleanup = move || {
            let done = delete_container_files(&oci, &storage, &bundle, &state);
            let mut held = leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = done {
                tracing::warn!(container = %state.id, %e, "removing the container's files; they go at the next start");
                return;
            }
            drop(held.remove(&state.id));
            drop(held);
            if let Some(runtime) = runtime {
                runtime.spawn(async move {
                    if let Err(e) = images.release_unused().await {
                        tracing::warn!(%e, "releasing images no container uses");
                    }
                });
            }
        };
        let spawned = std::thread::Builder::new()
            .name("remove-container".into())
            .spawn(cleanup);
        match spawned {
            Ok(handle) => {
                let mut cleanups = self.cleanups.lock().unwrap_or_else(|p| p.into_inner());
                let pending = cleanups.entry(pod_id.clone()).or_default();
                pending.retain(|h| !h.is_finished());
                pending.push(handle);
            }
            Err(e) => tracing::warn!(container = %id, %e, "cannot start the cleanup thread"),
        }
        self.emit(&id, &pod_id, ContainerEventType::ContainerDeletedEvent);
    }

    /// Waits for the background cleanups of pod `pod_id`'s removed containers.
    pub(super) fn finish_cleanups(&self, pod_id: &str) {
        let pending = self
            .cleanups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod_id)
            .unwrap_or_default();
        for handle in pending {
            let _ = handle.join();
        }
    }

    /// Runs `cmd` in the running container and waits for it (ExecSync);
    /// `timeout` 0 means no limit. The process is killed when `cancel` fires.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
        cancel: &crate::cancel::Cancellation,
    ) -> Result<super::oci::ExecOutput, LifecycleError> {
        if cmd.is_empty() {
            return Err(LifecycleError::InvalidArgument(
                "ExecSync needs a command".into(),
            ));
        }
        let state = self.running(id)?;
        let session = new_id()?;
        let work = self.runtime_root.join("exec").join(&session);
        let result = self.prepare_exec(&state, &work, cmd, false).and_then(|()| {
            Ok(self.oci.exec_sync(&super::oci::ExecArgs {
                id: &state.id,
                session: &session,
                runtime: &state.runtime,
                bundle: &self.bundle(&state.id),
                work: &work,
                timeout: (timeout > 0).then(|| Duration::from_secs(timeout as u64)),
                cancel,
            })?)
        });
        let _ = std::fs::remove_dir_all(&work);
        self.oci.forget(&session);
        result
    }

    /// The exec's process.json: the container's process with new args, with
    /// or without a terminal.
    pub(super) fn prepare_exec(
        &self,
        state: &ContainerState,
        work: &Path,
        cmd: Vec<String>,
        terminal: bool,
    ) -> Result<(), LifecycleError> {
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| LifecycleError::Io { context, source }
        };
        std::fs::create_dir_all(work.join("exits")).map_err(io("creating the exec dir"))?;
        let spec = std::fs::read(self.bundle(&state.id).join("config.json"))
            .map_err(io("reading config.json"))?;
        let spec: serde_json::Value =
            serde_json::from_slice(&spec).map_err(|e| LifecycleError::Internal(e.to_string()))?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(terminal);
        let json =
            serde_json::to_vec(&process).map_err(|e| LifecycleError::Internal(e.to_string()))?;
        std::fs::write(work.join("process.json"), json).map_err(io("writing process.json"))
    }

    /// The current state of container `id`, which must be running.
    pub(super) fn running(&self, id: &str) -> Result<ContainerState, LifecycleError> {
        let state = self.container(id)?;
        let state = self.refresh(&state.id).ok_or_else(|| not_found(id))?;
        if state.phase != ContainerPhase::Running {
            return Err(LifecycleError::FailedPrecondition(format!(
                "container {} is not running",
                state.id
            )));
        }
        Ok(state)
    }

    /// Makes conmon reopen the log file after kubelet rotated it.
    /// Returns once the new file exists, as kubelet and critest expect.
    pub fn reopen_log(&self, id: &str) -> Result<(), LifecycleError> {
        let state = self.running(id)?;
        self.oci.reopen_log(&self.bundle(&state.id))?;
        if state.log_path.is_empty() {
            return Ok(());
        }
        let log = std::path::Path::new(&state.log_path);
        let deadline = std::time::Instant::now() + LOG_REOPEN_GRACE;
        while !log.exists() {
            if std::time::Instant::now() >= deadline {
                return Err(LifecycleError::Runtime(format!(
                    "conmon did not reopen {} within {LOG_REOPEN_GRACE:?}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// The container's status.
    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<(ContainerStatus, HashMap<String, String>), LifecycleError> {
        let state = self.container(id)?;
        let state = self.refresh(&state.id).ok_or_else(|| not_found(id))?;
        let info = if verbose {
            self.container_info(&state)
        } else {
            HashMap::new()
        };
        Ok((cri_container_status(&state), info))
    }

    /// True when the container's exit is on disk (conmon wrote it) but not
    /// yet in its record: a status call records it, a state write.
    pub fn exit_unrecorded(&self, id: &str) -> bool {
        self.container(id).is_ok_and(|c| {
            c.phase != ContainerPhase::Exited && self.oci.exit_status(&c.id).is_some()
        })
    }

    /// Verbose ContainerStatus info: the pid, the pod and the OCI spec. The
    /// spec is the bundle's config.json as written (ucri wrote it, as JSON),
    /// embedded without parsing it again; `null` when it cannot be read.
    fn container_info(&self, state: &ContainerState) -> HashMap<String, String> {
        let spec = std::fs::read_to_string(self.bundle(&state.id).join("config.json"))
            .ok()
            .filter(|text| !text.trim().is_empty())
            .unwrap_or_else(|| "null".into());
        let sandbox = serde_json::Value::String(state.pod_id.clone());
        let info = format!(
            r#"{{"pid":{},"sandboxID":{sandbox},"runtimeSpec":{spec}}}"#,
            state.pid
        );
        HashMap::from([("info".to_owned(), info)])
    }

    /// Containers matching `filter`.
    pub fn list_containers(&self, filter: Option<ContainerFilter>) -> Vec<Container> {
        for id in self.container_ids() {
            self.refresh(&id);
        }
        let containers = self.containers_mut();
        containers
            .values()
            .filter(|c| c.created_at != 0)
            .filter(|c| filter.as_ref().is_none_or(|f| container_matches(c, f)))
            .map(container_summary)
            .collect()
    }

    /// Picks up an exit conmon recorded; returns the current state.
    pub(super) fn refresh(&self, id: &str) -> Option<ContainerState> {
        let current = self.containers_mut().get(id).cloned()?;
        if current.phase == ContainerPhase::Exited || current.created_at == 0 {
            return Some(current);
        }
        let Some((code, when)) = self.oci.exit_status(id) else {
            return Some(current);
        };
        let mut exited = current;
        exited.phase = ContainerPhase::Exited;
        exited.exit_code = code;
        // File times come from the kernel's coarse clock: an instant exit can
        // look older than the precise start time taken just before it.
        exited.finished_at = nanos(when).max(exited.started_at);
        exited.oom_killed = self.was_oom_killed(&exited);
        // Only the caller that records the exit announces it (the reaper and
        // an RPC may both see it at once).
        let recorded = {
            let mut containers = self.containers_mut();
            let still_running = containers
                .get(id)
                .is_some_and(|c| c.phase != ContainerPhase::Exited);
            if still_running {
                containers.insert(id.to_owned(), exited.clone());
            }
            still_running
        };
        if recorded {
            let _ = self.states.save_container(&exited);
            self.emit_container(id, ContainerEventType::ContainerStoppedEvent);
        }
        Some(exited)
    }

    pub(super) fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ContainerState),
    ) -> Result<(), LifecycleError> {
        let updated = {
            let mut containers = self.containers_mut();
            let Some(c) = containers.get_mut(id) else {
                return Err(not_found(id));
            };
            change(c);
            c.clone()
        };
        Ok(self.states.save_container(&updated)?)
    }

    fn resolve_container(&self, id: &str) -> Option<String> {
        let containers = self.containers_mut();
        resolve_id(containers.keys(), id)
    }

    pub(super) fn container(&self, id: &str) -> Result<ContainerState, LifecycleError> {
        self.resolve_container(id)
            .and_then(|id| self.containers_mut().get(&id).cloned())
            .filter(|c| c.created_at != 0)
            .ok_or_else(|| not_found(id))
    }

    pub(super) fn containers_of(&self, pod_id: &str) -> Vec<String> {
        self.containers_mut()
            .values()
            .filter(|c| c.pod_id == pod_id && c.created_at != 0)
            .map(|c| c.id.clone())
            .collect()
    }
}

fn not_found(id: &str) -> LifecycleError {
    LifecycleError::NotFound(format!("container {id} not found"))
}

fn spec_error(e: spec::SpecError) -> LifecycleError {
    match e {
        spec::SpecError::InvalidArgument(m) => LifecycleError::InvalidArgument(m),
        spec::SpecError::NotFound(m) => LifecycleError::NotFound(m),
        other => LifecycleError::Internal(other.to_string()),
    }
}

fn container_key(config: &ContainerConfig) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{} (attempt {})", m.name, m.attempt)
}

/// The CRI log file (`log_directory/log_path`), created with its directory;
/// without a log directory, a file in the bundle.
fn log_path(
    sandbox: &PodSandboxConfig,
    config: &ContainerConfig,
    bundle: &Path,
) -> Result<PathBuf, LifecycleError> {
    if Path::new(&config.log_path).is_absolute() {
        // Joined to the pod's log directory, it would replace it.
        return Err(LifecycleError::InvalidArgument(format!(
            "log path {} must be relative to the pod's log directory",
            config.log_path
        )));
    }
    let path = match (sandbox.log_directory.as_str(), config.log_path.as_str()) {
        ("", _) | (_, "") => bundle.join("container.log"),
        (dir, file) => Path::new(dir).join(file),
    };
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(LifecycleError::InvalidArgument(format!(
            "log path {} contains ..",
            path.display()
        )));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| LifecycleError::Io {
            context: format!("creating {}", parent.display()),
            source,
        })?;
    }
    Ok(path)
}

fn cri_state(c: &ContainerState) -> CriState {
    match c.phase {
        ContainerPhase::Created => CriState::ContainerCreated,
        ContainerPhase::Running => CriState::ContainerRunning,
        ContainerPhase::Exited => CriState::ContainerExited,
    }
}

fn container_matches(c: &ContainerState, f: &ContainerFilter) -> bool {
    (f.id.is_empty() || c.id.starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
        && f.state
            .as_ref()
            .is_none_or(|s| s.state == cri_state(c) as i32)
        && f.label_selector
            .iter()
            .all(|(k, v)| c.config.labels.get(k) == Some(v))
}

fn image_spec(c: &ContainerState) -> ImageSpec {
    ImageSpec {
        image: c.image_id.clone(),
        ..Default::default()
    }
}

fn container_summary(c: &ContainerState) -> Container {
    Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: c.config.metadata.clone(),
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        state: cri_state(c) as i32,
        created_at: c.created_at,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        image_id: c.image_id.clone(),
    }
}

/// The CRI view of a container.
pub(super) fn cri_container_status(c: &ContainerState) -> ContainerStatus {
    let reason = match (c.phase, c.exit_code) {
        (ContainerPhase::Exited, _) if c.start_error.is_some() => "StartError",
        (ContainerPhase::Exited, _) if c.oom_killed => "OOMKilled",
        (ContainerPhase::Exited, 0) => "Completed",
        (ContainerPhase::Exited, _) => "Error",
        _ => "",
    };
    ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: cri_state(c) as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        reason: reason.to_owned(),
        message: c
            .start_error
            .clone()
            .or_else(|| c.lost.clone())
            .unwrap_or_default(),
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.clone(),
        resources: None,
        image_id: c.image_id.clone(),
        stop_signal: c.config.stop_signal,
        user: c.user.as_ref().map(|u| ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                supplemental_groups: u.groups.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
    }
}

/// Whether the OCI runtime holds container `state` (`crun_knows`: its
/// state dir exists). A deferred one normally is not there yet, but a
/// daemon killed while conmon ran `crun create` leaves one that is: its
/// process waits to be started, and only `crun delete` ends it.
fn has_runtime_state(state: &ContainerState, crun_knows: bool) -> bool {
    state.lost.is_none() && (!state.deferred || crun_knows)
}

/// What removing a container leaves to delete: crun's state (unless the
/// runtime dir it lived in was lost), the root filesystem and image
/// volumes, the bundle, the exit file and attach socket.
fn delete_container_files(
    oci: &super::oci::OciPaths,
    storage: &crate::storage::Storage,
    bundle: &Path,
    state: &ContainerState,
) -> Result<(), LifecycleError> {
    let id = &state.id;
    if has_runtime_state(state, oci.runtime_root.join(id).exists()) {
        oci.runtime(
            &state.runtime,
            &["delete", "--force", id],
            "deleting the container",
        )?;
    }
    storage
        .rootfs()
        .remove(id)
        .map_err(|e| LifecycleError::Internal(format!("removing the root filesystem: {e}")))?;
    for rootfs in super::image_volumes::rootfs_ids(id, &state.config) {
        storage.rootfs().remove(&rootfs).map_err(|e| {
            LifecycleError::Internal(format!("removing image volume {rootfs}: {e}"))
        })?;
    }
    let _ = std::fs::remove_dir_all(bundle);
    oci.forget(id);
    Ok(())
}

/// The stop signal the container config asks for, without its SIG prefix
/// (None for RUNTIME_DEFAULT). The CRI's Signal numbers are not Linux's: the
/// name is what maps.
fn requested_stop_signal(config: &ContainerConfig) -> Option<String> {
    let signal = ucri_cri_api::v1::Signal::try_from(config.stop_signal).ok()?;
    if signal == ucri_cri_api::v1::Signal::RuntimeDefault {
        return None;
    }
    let name = signal.as_str_name().trim_start_matches("SIG");
    // SIGRTMINPLUS1 / SIGRTMAXMINUS2: crun and kill spell them RTMIN+1, RTMAX-2.
    let name = name
        .replace("RTMINPLUS", "RTMIN+")
        .replace("RTMAXMINUS", "RTMAX-");
    Some(name)
}

/// The identity the spec's process runs as.
fn process_user(spec: &oci_spec::runtime::Spec) -> ProcessUser {
    spec.process()
        .as_ref()
        .map(|p| {
            let user = p.user();
            ProcessUser {
                uid: user.uid(),
                gid: user.gid(),
                groups: user.additional_gids().clone().unwrap_or_default(),
            }
        })
        .unwrap_or_default()
}

/// The conmon watch, as the lifecycle uses it: which monitors to watch,
/// and what an exit records.
impl Lifecycle {
    /// Watches the monitor of every container that has one (after a
    /// restart: the previous daemon's), checked to still be that
    /// container's conmon before its pidfd is opened.
    pub fn watch_monitors(&self) {
        let monitors: Vec<(String, i32)> = self
            .containers_mut()
            .values()
            .filter(|c| c.conmon_pid > 0)
            .map(|c| (c.id.clone(), c.conmon_pid))
            .collect();
        for (id, pid) in monitors {
            if super::oci::is_monitor_of(pid, &id) {
                self.monitors.watch(&id, pid);
            }
        }
    }

    /// The receiver of monitor exits (once; the daemon records them).
    pub fn monitor_exits(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<super::MonitorExit>> {
        self.monitors.take_receiver()
    }

    /// A watched monitor ended: reaps it if it is this daemon's child, then
    /// records the exit conmon wrote (the reap comes first, so no zombie is
    /// left when the exit is announced).
    pub fn monitor_exited(&self, exit: &super::MonitorExit) {
        let _ = super::monitors::reaped(exit.pid);
        self.refresh(&exit.container);
    }
}

/// Lifecycle events (the stream is `events.rs`): what kubelet's evented
/// PLEG reads, with the pod's status and its containers' statuses.
impl Lifecycle {
    /// A new subscription to lifecycle events.
    pub fn subscribe(
        &self,
    ) -> tokio::sync::broadcast::Receiver<ucri_cri_api::v1::ContainerEventResponse> {
        self.events.subscribe()
    }

    /// Announces a change of container `id`.
    pub(super) fn emit_container(&self, id: &str, kind: ContainerEventType) {
        let pod = self
            .containers_mut()
            .get(id)
            .map(|c| c.pod_id.clone())
            .unwrap_or_default();
        self.emit(id, &pod, kind);
    }

    /// Announces a change of pod sandbox `id`.
    pub(super) fn emit_pod(&self, id: &str, kind: ContainerEventType) {
        self.emit(id, id, kind);
    }

    /// Announces a change of `id` (a container of `pod_id`, or the pod).
    pub(super) fn emit(&self, id: &str, pod_id: &str, kind: ContainerEventType) {
        if !self.events.has_subscribers() {
            return;
        }
        let pod_sandbox_status = self
            .pods_mut()
            .get(pod_id)
            .filter(|p| p.created_at != 0)
            .map(super::pod::cri_pod_status);
        let containers_statuses = self
            .containers_of(pod_id)
            .iter()
            .filter_map(|c| self.containers_mut().get(c).cloned())
            .filter(|c| c.created_at != 0)
            .map(|c| cri_container_status(&c))
            .collect();
        self.events
            .publish(ucri_cri_api::v1::ContainerEventResponse {
                container_id: id.to_owned(),
                container_event_type: kind as i32,
                created_at: now_nanos(),
                pod_sandbox_status,
                containers_statuses,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucri_cri_api::v1::Signal;

    #[test]
    fn log_paths_stay_in_the_pods_log_directory() {
        let dir = tempfile::tempdir().expect("tmp");
        let sandbox = PodSandboxConfig {
            log_directory: dir.path().join("pod").display().to_string(),
            ..Default::default()
        };
        let mut config = ContainerConfig {
            log_path: "c/0.log".into(),
            ..Default::default()
        };
        let bundle = dir.path().join("bundle");
        assert_eq!(
            log_path(&sandbox, &config, &bundle).expect("ok"),
            dir.path().join("pod/c/0.log")
        );
        for bad in ["/tmp/evil.log", "../escape.log", "c/../../x.log"] {
            config.log_path = bad.into();
            let err = log_path(&sandbox, &config, &bundle).expect_err(bad);
            assert!(
                matches!(err, LifecycleError::InvalidArgument(_)),
                "{bad}: {err}"
            );
        }
    }

    fn record(deferred: bool, lost: Option<&str>) -> ContainerState {
        ContainerState {
            id: "c".into(),
            pod_id: "p".into(),
            config: ContainerConfig::default(),
            image_id: String::new(),
            image_ref: String::new(),
            phase: ContainerPhase::Created,
            created_at: 1,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            pid: 0,
            conmon_pid: 0,
            log_path: String::new(),
            runtime: PathBuf::from("crun"),
            oom_killed: false,
            user: None,
            volume_images: vec![],
            lost: lost.map(str::to_owned),
            deferred,
            start_error: None,
        }
    }

    #[test]
    fn removal_deletes_what_crun_holds_even_of_a_deferred_record() {
        assert!(has_runtime_state(&record(false, None), true));
        assert!(has_runtime_state(&record(false, None), false), "crun says");
        assert!(!has_runtime_state(&record(true, None), false));
        // A daemon killed while conmon ran `crun create`: its process waits
        // to be started, and only `crun delete` ends it.
        assert!(has_runtime_state(&record(true, None), true));
        assert!(!has_runtime_state(&record(false, Some("reboot")), true));
    }

    #[test]
    fn the_containers_stop_signal_maps_by_name() {
        let mut config = ContainerConfig::default();
        assert_eq!(requested_stop_signal(&config), None, "RUNTIME_DEFAULT");
        config.stop_signal = Signal::Sigquit as i32;
        assert_eq!(requested_stop_signal(&config).as_deref(), Some("QUIT"));
        config.stop_signal = Signal::Sigrtminplus3 as i32;
        assert_eq!(requested_stop_signal(&config).as_deref(), Some("RTMIN+3"));
        config.stop_signal = Signal::Sigrtmaxminus1 as i32;
        assert_eq!(requested_stop_signal(&config).as_deref(), Some("RTMAX-1"));
        config.stop_signal = 999;
        assert_eq!(requested_stop_signal(&config), None, "unknown values");
    }
}
