//! Pod and container state on disk: one JSON file each, written atomically,
//! reloaded at start-up.
//!
//! Each record carries a schema version ([`SCHEMA`]). A record from before
//! versions (no `schema`) is version 0 and reads as version 1, which only
//! added the field. Version 2 added the containers' `deferred` and
//! `start_error`, false and none in older records: their containers were
//! created in the OCI runtime by CreateContainer. An older ucri sets a
//! version 2 record aside instead of starting a deferred container as if
//! crun had it. A record that cannot be read (truncated, corrupt, or
//! written by a newer ucri) is moved to `state/quarantine/` and reported,
//! never taken as "this pod or container does not exist": recovery then
//! leaves its processes, bundle and writable layer alone.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use ucri_cri_api::v1::{ContainerConfig, PodSandboxConfig};

/// Errors of the record store (and of the runtime-dir epoch record).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A record could not be encoded.
    #[error("encoding a record: {0}")]
    Encode(#[from] serde_json::Error),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Wraps an I/O error with what was being done.
pub(super) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StateError {
    let context = context.into();
    move |source| StateError::Io { context, source }
}

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
    /// The pod's socket bypass agent; 0 when the pod has none.
    #[serde(default)]
    pub bypass_pid: i32,
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
    /// Why its runtime state is gone (a reboot, an emptied runtime dir):
    /// it reads as exited, and removal asks the OCI runtime nothing.
    #[serde(default)]
    pub lost: Option<String>,
    /// The OCI runtime has not created it: CreateContainer wrote its root
    /// filesystem and bundle, StartContainer has conmon create and start it
    /// (containerd's split). Nothing runs, and removal asks the OCI runtime
    /// nothing, unless crun has it after all (a daemon killed while conmon
    /// ran `crun create`).
    #[serde(default)]
    pub deferred: bool,
    /// Why StartContainer could not create it in the OCI runtime: it reads
    /// as exited with code 128 and reason `StartError`, as in containerd.
    #[serde(default)]
    pub start_error: Option<String>,
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

/// The schema version of the records this ucri writes; it reads this one
/// and every older one.
pub const SCHEMA: u32 = 2;

/// A record as stored: the schema version next to the record's fields.
#[derive(Serialize, Deserialize)]
struct Versioned<T> {
    #[serde(default)]
    schema: u32,
    #[serde(flatten)]
    record: T,
}

/// A record set aside because it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// `pods` or `containers`.
    pub kind: String,
    /// The pod or container id (from the file name).
    pub id: String,
    /// Where the record is now.
    pub path: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

/// The state directory.
#[derive(Debug)]
pub struct StateStore {
    root: PathBuf,
    quarantined: Mutex<Vec<Quarantined>>,
}

impl StateStore {
    /// State under `root` (`pods/`, `containers/`).
    pub fn open(root: &Path) -> Result<StateStore, StateError> {
        for dir in ["pods", "containers"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|source| StateError::Io {
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
        std::fs::set_permissions(root, private).map_err(|source| StateError::Io {
            context: format!("securing {}", root.display()),
            source,
        })?;
        Ok(StateStore {
            root: root.to_owned(),
            quarantined: Mutex::new(Vec::new()),
        })
    }

    /// Records set aside at start-up because they could not be read.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where unreadable records go.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    fn path(&self, kind: &str, id: &str) -> PathBuf {
        self.root.join(kind).join(format!("{id}.json"))
    }

    /// Saves a pod atomically.
    pub fn save_pod(&self, pod: &PodState) -> Result<(), StateError> {
        self.save("pods", &pod.id, pod)
    }

    /// Saves a container atomically.
    pub fn save_container(&self, c: &ContainerState) -> Result<(), StateError> {
        self.save("containers", &c.id, c)
    }

    /// Removes a pod's state.
    pub fn delete_pod(&self, id: &str) -> Result<(), StateError> {
        self.delete("pods", id)
    }

    /// Removes a container's state.
    pub fn delete_container(&self, id: &str) -> Result<(), StateError> {
        self.delete("containers", id)
    }

    /// Every saved pod.
    pub fn load_pods(&self) -> Result<Vec<PodState>, StateError> {
        self.load("pods")
    }

    /// Every saved container.
    pub fn load_containers(&self) -> Result<Vec<ContainerState>, StateError> {
        self.load("containers")
    }

    fn save<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> Result<(), StateError> {
        let path = self.path(kind, id);
        let data = serde_json::to_vec(&Versioned {
            schema: SCHEMA,
            record: value,
        })?;
        ucri_rootless::rundir::write_atomic(&path, &data).map_err(|source| StateError::Io {
            context: format!("writing {}", path.display()),
            source,
        })
    }

    fn delete(&self, kind: &str, id: &str) -> Result<(), StateError> {
        ucri_rootless::rundir::remove_if_exists(&self.path(kind, id)).map_err(|source| {
            StateError::Io {
                context: format!("removing {kind} state of {id}"),
                source,
            }
        })
    }

    /// Every readable record of `kind`; the unreadable ones are moved to
    /// the quarantine. A file that cannot even be opened stops the start:
    /// going on could remove what that record describes.
    fn load<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, StateError> {
        let dir = self.root.join(kind);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(|source| StateError::Io {
                context: format!("reading {}", path.display()),
                source,
            })?;
            match parse_record(&bytes) {
                Ok(record) => out.push(record),
                Err(reason) => self.quarantine(kind, &path, reason)?,
            }
        }
        Ok(out)
    }

    /// Moves an unreadable record out of the way, keeping it for the user.
    fn quarantine(&self, kind: &str, path: &Path, reason: String) -> Result<(), StateError> {
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = self.quarantine_dir();
        let io = |context: String| move |source| StateError::Io { context, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let moved = dir.join(format!("{kind}-{id}-{}.json", crate::clock::now_nanos()));
        std::fs::rename(path, &moved).map_err(io(format!("quarantining {}", path.display())))?;
        tracing::error!(
            kind,
            id = %id,
            path = %moved.display(),
            %reason,
            "an unreadable state record was quarantined; what it describes is left as it is"
        );
        self.quarantined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Quarantined {
                kind: kind.to_owned(),
                id,
                path: moved,
                reason,
            });
        Ok(())
    }
}

/// A record of any schema up to [`SCHEMA`], migrated to this one.
fn parse_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let versioned: Versioned<serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a readable record: {e}"))?;
    if versioned.schema > SCHEMA {
        return Err(format!(
            "written by a newer ucri (schema {}; this one reads up to {SCHEMA})",
            versioned.schema
        ));
    }
    // Schemas 0 (before versions), 1 and 2 differ only in fields that
    // default to what older records meant.
    serde_json::from_value(versioned.record).map_err(|e| format!("not a readable record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        id: String,
    }

    #[test]
    fn records_of_old_and_current_schemas_read_newer_and_broken_ones_do_not() {
        let current: Sample = parse_record(br#"{"schema":1,"id":"a"}"#).expect("current");
        assert_eq!(current.id, "a");
        let legacy: Sample = parse_record(br#"{"id":"b"}"#).expect("before versions");
        assert_eq!(legacy.id, "b");
        let previous: Sample = parse_record(br#"{"schema":2,"id":"d"}"#).expect("schema 2");
        assert_eq!(previous.id, "d");
        let newer = parse_record::<Sample>(br#"{"schema":3,"id":"c"}"#).expect_err("newer");
        assert!(newer.contains("newer ucri (schema 3"), "{newer}");
        let truncated = parse_record::<Sample>(br#"{"schema":1,"id":"#).expect_err("cut");
        assert!(truncated.contains("not a readable record"), "{truncated}");
    }

    #[test]
    fn unreadable_records_are_moved_to_the_quarantine_and_listed() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = StateStore::open(dir.path()).expect("open");
        std::fs::write(
            dir.path().join("pods/good.json"),
            br#"{"schema":1,"id":"good"}"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("pods/bad.json"), b"{\"id\":").expect("write");
        let loaded: Vec<Sample> = store.load("pods").expect("load");
        assert_eq!(loaded, vec![Sample { id: "good".into() }]);
        let quarantined = store.quarantined();
        assert_eq!(quarantined.len(), 1);
        assert_eq!(
            (quarantined[0].kind.as_str(), quarantined[0].id.as_str()),
            ("pods", "bad")
        );
        assert!(quarantined[0].path.exists() && !dir.path().join("pods/bad.json").exists());
    }
}
