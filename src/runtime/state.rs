//! Pod and container state on disk: one JSON file each, written atomically,
//! reloaded at start-up.

use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use ucri_cri_api::v1::{ContainerConfig, PodSandboxConfig};

use super::LifecycleError;

/// Which namespaces a pod has of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    /// A network (and UTS) namespace of its own; false = host network.
    pub network: bool,
    /// An IPC namespace of its own; false = host IPC.
    pub ipc: bool,
    /// Containers share one PID namespace.
    pub pid_shared: bool,
    /// Containers use the host's PID namespace.
    pub host_pid: bool,
    /// A user namespace of its own (the ids are in the pod's config).
    #[serde(default)]
    pub user: bool,
}

/// A pod sandbox's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    /// Running.
    Ready,
    /// Stopped (or its namespaces are gone).
    NotReady,
}

/// What ucri keeps about a pod sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodState {
    /// The sandbox ID.
    pub id: String,
    /// The CRI config it was created with.
    pub config: PodSandboxConfig,
    /// Its phase.
    pub phase: PodPhase,
    /// Creation time, Unix nanoseconds.
    pub created_at: i64,
    /// The runtime handler.
    pub runtime_handler: String,
    /// Namespaces of its own.
    pub namespaces: PodNamespaces,
    /// Its hostname.
    pub hostname: String,
    /// The pod's init (pid of the `unshare` that holds it) when the pod
    /// shares one PID namespace; 0 otherwise.
    #[serde(default)]
    pub init_pid: i32,
    /// The pod's network attachment (IPs, host ports) while it is attached.
    #[serde(default)]
    pub network: Option<ucri_net::PodAttachment>,
}

/// A container's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
}

/// What ucri keeps about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// The container ID.
    pub id: String,
    /// Its pod.
    pub pod_id: String,
    /// The CRI config it was created with.
    pub config: ContainerConfig,
    /// The image ID.
    pub image_id: String,
    /// The image as the request named it.
    pub image_ref: String,
    /// Its phase.
    pub phase: ContainerPhase,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Unix nanoseconds, 0 until started.
    pub started_at: i64,
    /// Unix nanoseconds, 0 until exited.
    pub finished_at: i64,
    /// Exit code once exited.
    pub exit_code: i32,
    /// The container's main pid while running.
    pub pid: i32,
    /// conmon's pid.
    pub conmon_pid: i32,
    /// The CRI log file.
    pub log_path: String,
    /// The OCI runtime binary.
    pub runtime: PathBuf,
    /// The kernel's OOM killer ended it (read from its memory cgroup).
    #[serde(default)]
    pub oom_killed: bool,
    /// The identity its process runs as (from the generated spec).
    #[serde(default)]
    pub user: Option<ProcessUser>,
    /// Ids of the images its image volumes mount (kept while it exists).
    #[serde(default)]
    pub volume_images: Vec<String>,
}

/// The uid, gid and supplementary groups a container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUser {
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

impl StateStore {
    /// State under `root` (`pods/`, `containers/`).
    pub fn open(root: &Path) -> Result<StateStore, LifecycleError> {
        for dir in ["pods", "containers"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|source| LifecycleError::Io {
                context: format!("creating {}", root.join(dir).display()),
                source,
            })?;
        }
        for dir in ["pods", "containers"] {
            if let Ok(n @ 1..) = ucri_rootless::rundir::remove_stale_temps(&root.join(dir)) {
                tracing::info!(
                    removed = n,
                    dir,
                    "removed state temp files a killed daemon left"
                );
            }
        }
        // A container's state holds its environment: the user's alone.
        let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
        std::fs::set_permissions(root, private).map_err(|source| LifecycleError::Io {
            context: format!("securing {}", root.display()),
            source,
        })?;
        Ok(StateStore {
            root: root.to_owned(),
        })
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.root.join(kind).join(format!("{id}.json"))
    }

    /// Saves a pod atomically.
    pub fn save_pod(&self, pod: &PodState) -> Result<(), LifecycleError> {
        self.save("pods", &pod.id, pod)
    }

    /// Saves a container atomically.
    pub fn save_container(&self, c: &ContainerState) -> Result<(), LifecycleError> {
        self.save("containers", &c.id, c)
    }

    /// Removes a pod's state.
    pub fn delete_pod(&self, id: &str) -> Result<(), LifecycleError> {
        self.delete("pods", id)
    }

    /// Removes a container's state.
    pub fn delete_container(&self, id: &str) -> Result<(), LifecycleError> {
        self.delete("containers", id)
    }

    /// Every saved pod.
    pub fn load_pods(&self) -> Result<Vec<PodState>, LifecycleError> {
        self.load("pods")
    }

    /// Every saved container.
    pub fn load_containers(&self) -> Result<Vec<ContainerState>, LifecycleError> {
        self.load("containers")
    }

    fn save<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> Result<(), LifecycleError> {
        let path = self.path(kind, id);
        let data =
            serde_json::to_vec(value).map_err(|e| LifecycleError::Internal(e.to_string()))?;
        ucri_rootless::rundir::write_atomic(&path, &data).map_err(|source| LifecycleError::Io {
            context: format!("writing {}", path.display()),
            source,
        })
    }

    fn delete(&self, kind: &str, id: &str) -> Result<(), LifecycleError> {
        ucri_rootless::rundir::remove_if_exists(&self.path(kind, id)).map_err(|source| {
            LifecycleError::Io {
                context: format!("removing {kind} state of {id}"),
                source,
            }
        })
    }

    fn load<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, LifecycleError> {
        let dir = self.root.join(kind);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice(&b)) {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), %e, "ignoring unreadable state")
                }
                Err(e) => tracing::warn!(path = %path.display(), %e, "ignoring unreadable state"),
            }
        }
        Ok(out)
    }
}
