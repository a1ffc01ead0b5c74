//! What cgroups the user may control, and the container resources that
//! follow from it. Three cases, found at start-up:
//!
//! - cgroup v1 (including "hybrid" hosts) with a subtree per hierarchy that
//!   the administrator created and gave to the user
//!   (`packaging/setup-host.sh --delegate-cgroups USER` makes `ucri-USER`);
//! - cgroup v2 with a delegated subtree (a systemd user session with
//!   `Delegate=yes`): the daemon moves itself into a leaf and enables the
//!   controllers for its children;
//! - nothing: limits are dropped with a warning, stats come from /proc.
//!
//! Containers get `<parent>/pod-<pod id>/<container id>` (the pod is the
//! parent cgroup) and crun's cgroupfs manager creates it.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use ucri_cri_api::v1::LinuxContainerResources;

/// The cgroup filesystem's usual mount point.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Controllers a v2 subtree needs for limits and stats.
const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// What the user may control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupSupport {
    /// A writable `parent` directory in every v1 hierarchy.
    V1 {
        /// The cgroup root (`/sys/fs/cgroup`).
        root: PathBuf,
        /// The delegated directory's name under each hierarchy.
        parent: String,
        /// The hierarchies (`memory`, `pids`, ...).
        hierarchies: Vec<String>,
    },
    /// A delegated v2 subtree at `parent` (relative to the root).
    V2 {
        /// The cgroup root.
        root: PathBuf,
        /// The subtree containers go below, e.g. `/user.slice/.../ucri.service/pods`.
        parent: String,
    },
    /// No cgroups: why, and how to fix it.
    None {
        /// Why not.
        reason: String,
        /// The fix.
        fix: String,
    },
}

impl CgroupSupport {
    /// True when limits can be applied.
    pub fn delegated(&self) -> bool {
        !matches!(self, CgroupSupport::None { .. })
    }

    /// One line for logs and `ucri info`.
    pub fn describe(&self) -> String {
        match self {
            CgroupSupport::V1 {
                parent,
                hierarchies,
                ..
            } => format!(
                "cgroup v1, delegated subtree {parent} in {}",
                hierarchies.join(", ")
            ),
            CgroupSupport::V2 { parent, .. } => format!("cgroup v2, delegated subtree {parent}"),
            CgroupSupport::None { reason, .. } => format!("not delegated: {reason}"),
        }
    }

    /// Which kinds of limit this subtree can hold.
    pub fn controllers(&self) -> Controllers {
        match self {
            CgroupSupport::V1 { hierarchies, .. } => Controllers {
                v2: false,
                hugetlb: hierarchies.iter().any(|h| h == "hugetlb"),
            },
            CgroupSupport::V2 { root, parent } => Controllers {
                v2: true,
                hugetlb: std::fs::read_to_string(
                    root.join(parent.trim_start_matches('/'))
                        .join("cgroup.controllers"),
                )
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "hugetlb")),
            },
            CgroupSupport::None { .. } => Controllers::default(),
        }
    }

    /// The cgroupsPath of a container.
    pub fn container_path(&self, pod_id: &str, container_id: &str) -> Option<String> {
        let parent = match self {
            CgroupSupport::V1 { parent, .. } => format!("/{parent}"),
            CgroupSupport::V2 { parent, .. } => parent.clone(),
            CgroupSupport::None { .. } => return None,
        };
        Some(format!("{parent}/pod-{pod_id}/{container_id}"))
    }

    /// The directory of controller `controller` for cgroupsPath `path`
    /// (for v2 every controller shares one directory).
    pub fn dir(&self, controller: &str, path: &str) -> Option<PathBuf> {
        let rel = path.trim_start_matches('/');
        match self {
            CgroupSupport::V1 { root, .. } => Some(root.join(controller).join(rel)),
            CgroupSupport::V2 { root, .. } => Some(root.join(rel)),
            CgroupSupport::None { .. } => None,
        }
    }

    /// Readies the parent of a container's cgroup where crun cannot make it:
    /// on a hybrid host the daemon covers `unified` with a tmpfs (crun
    /// refuses hybrid hosts), and crun still mirrors the path there.
    pub fn prepare_container(&self, path: &str) -> std::io::Result<()> {
        let CgroupSupport::V1 { root, .. } = self else {
            return Ok(());
        };
        let unified = root.join("unified");
        let parent = Path::new(path.trim_start_matches('/')).parent();
        match parent {
            Some(parent) if unified.is_dir() => std::fs::create_dir_all(unified.join(parent)),
            _ => Ok(()),
        }
    }

    /// Writes pod-level CPU and memory limits (UpdatePodSandboxResources)
    /// into the pod's parent cgroup, creating it if no container made it yet.
    pub fn apply_pod_limits(&self, pod_id: &str, limits: &PodLimits) -> std::io::Result<()> {
        let Some(path) = self.container_path(pod_id, "") else {
            return Err(std::io::Error::other(format!(
                "cgroups are not delegated ({})",
                self.describe()
            )));
        };
        let path = path.trim_end_matches('/');
        let v2 = matches!(self, CgroupSupport::V2 { .. });
        for (controller, file, value) in limits.files(v2) {
            let dir = self
                .dir(controller, path)
                .ok_or_else(|| std::io::Error::other("no cgroup directory"))?;
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(file), &value).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("writing {value:?} to {}: {e}", dir.join(file).display()),
                )
            })?;
        }
        Ok(())
    }

    /// Removes the pod's parent cgroup (empty once its containers are deleted).
    pub fn remove_pod(&self, pod_id: &str) {
        let Some(path) = self.container_path(pod_id, "") else {
            return;
        };
        let path = path.trim_end_matches('/');
        let dirs: Vec<PathBuf> = match self {
            CgroupSupport::V1 { hierarchies, .. } => hierarchies
                .iter()
                .map(String::as_str)
                .chain(["unified"])
                .filter_map(|h| self.dir(h, path))
                .collect(),
            _ => self.dir("", path).into_iter().collect(),
        };
        for dir in dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Removes every pod cgroup below the delegated parent (after a reset
    /// ended their processes): children first, as rmdir requires.
    pub fn remove_all_pods(&self) {
        let parents: Vec<PathBuf> = match self {
            CgroupSupport::V1 {
                root,
                parent,
                hierarchies,
            } => hierarchies
                .iter()
                .map(String::as_str)
                .chain(["unified"])
                .map(|h| root.join(h).join(parent))
                .collect(),
            CgroupSupport::V2 { root, parent } => vec![root.join(parent.trim_start_matches('/'))],
            CgroupSupport::None { .. } => return,
        };
        for parent in parents {
            for pod in subdirs(&parent).into_iter().filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("pod-"))
            }) {
                for container in subdirs(&pod) {
                    let _ = std::fs::remove_dir(container);
                }
                let _ = std::fs::remove_dir(pod);
            }
        }
    }

    /// Whether the memory controller recorded an OOM kill in the cgroup.
    pub fn oom_killed(&self, path: &str) -> bool {
        let (file, key) = match self {
            CgroupSupport::V1 { .. } => ("memory.oom_control", "oom_kill "),
            CgroupSupport::V2 { .. } => ("memory.events", "oom_kill "),
            CgroupSupport::None { .. } => return false,
        };
        self.dir("memory", path)
            .and_then(|d| std::fs::read_to_string(d.join(file)).ok())
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .is_some_and(|n| n > 0)
    }

    /// CPU (ns), memory usage, working set, RSS and process count from the
    /// cgroup of `path`.
    pub fn usage(&self, path: &str) -> Option<CgroupUsage> {
        let read = |controller: &str, file: &str| {
            std::fs::read_to_string(self.dir(controller, path)?.join(file)).ok()
        };
        let number = |text: Option<String>| text.and_then(|t| t.trim().parse::<u64>().ok());
        let stat = |text: Option<String>, key: &str| {
            text.and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            })
        };
        match self {
            CgroupSupport::V1 { .. } => {
                let memory_stat = read("memory", "memory.stat");
                let usage = number(read("memory", "memory.usage_in_bytes"))?;
                let inactive = stat(memory_stat.clone(), "total_inactive_file ").unwrap_or(0);
                Some(CgroupUsage {
                    cpu_ns: number(read("cpuacct", "cpuacct.usage"))?,
                    memory_bytes: usage,
                    working_set_bytes: usage.saturating_sub(inactive),
                    rss_bytes: stat(memory_stat, "total_rss ").unwrap_or(0),
                    processes: number(read("pids", "pids.current")).unwrap_or(0),
                })
            }
            CgroupSupport::V2 { .. } => {
                let memory_stat = read("", "memory.stat");
                let usage = number(read("", "memory.current"))?;
                let inactive = stat(memory_stat.clone(), "inactive_file ").unwrap_or(0);
                Some(CgroupUsage {
                    cpu_ns: stat(read("", "cpu.stat"), "usage_usec ")? * 1000,
                    memory_bytes: usage,
                    working_set_bytes: usage.saturating_sub(inactive),
                    rss_bytes: stat(memory_stat, "anon ").unwrap_or(0),
                    processes: number(read("", "pids.current")).unwrap_or(0),
                })
            }
            CgroupSupport::None { .. } => None,
        }
    }
}

/// Usage read from a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// Cumulative CPU time.
    pub cpu_ns: u64,
    /// Memory charged to the cgroup.
    pub memory_bytes: u64,
    /// Usage minus inactive file pages (what kubelet evicts on).
    pub working_set_bytes: u64,
    /// Anonymous memory.
    pub rss_bytes: u64,
    /// Tasks in the cgroup.
    pub processes: u64,
}

/// What cgroups the user may control with `config`, seen from here (for
/// `ucri info` and `system reset`; [`detect_for_daemon`] also prepares a
/// v2 subtree).
pub fn probe(config: &crate::config::RuntimeConfig) -> CgroupSupport {
    let parent = if config.cgroup_parent.is_empty() {
        format!(
            "ucri-{}",
            std::env::var("USER").unwrap_or_else(|_| "user".into())
        )
    } else {
        config.cgroup_parent.clone()
    };
    detect(Path::new(CGROUP_ROOT), &parent, own_v2_cgroup().as_deref())
}

/// Finds what the daemon's user may control (and, on cgroup v2, moves the
/// daemon into a leaf so its subtree can hold containers), and logs it.
pub fn detect_for_daemon(config: &crate::config::RuntimeConfig) -> CgroupSupport {
    let root = Path::new(CGROUP_ROOT);
    let own = own_v2_cgroup();
    let mut support = probe(config);
    if let (CgroupSupport::V2 { .. }, Some(own)) = (&support, &own) {
        if let Err(e) = prepare_v2(root, own) {
            support = CgroupSupport::None {
                reason: format!("cgroup v2: preparing the delegated subtree {own}: {e}"),
                fix: "run ucri in a cgroup of its own (packaging/ucri.service)".into(),
            };
        }
    }
    if support.delegated() {
        tracing::info!(cgroups = %support.describe(), "container resource limits are applied");
    } else {
        tracing::warn!(cgroups = %support.describe(), "container resource limits are not applied");
    }
    support
}

/// Finds what the user may control under `root`. `parent_name` is the v1
/// subtree's name (`ucri-USER`); `own_cgroup` is this process's v2 cgroup
/// (from /proc/self/cgroup).
pub fn detect(root: &Path, parent_name: &str, own_cgroup: Option<&str>) -> CgroupSupport {
    let fix_v1 = format!(
        "sudo packaging/setup-host.sh --delegate-cgroups $USER (creates {parent_name} in every \
         cgroup v1 hierarchy, owned by you)"
    );
    if root.join("cgroup.controllers").exists() {
        return detect_v2(root, own_cgroup);
    }
    let hierarchies = v1_hierarchies(root);
    if hierarchies.is_empty() {
        return CgroupSupport::None {
            reason: format!("no cgroup hierarchy under {}", root.display()),
            fix: "mount the cgroup filesystems".into(),
        };
    }
    let missing: Vec<&String> = hierarchies
        .iter()
        .filter(|h| !writable_dir(&root.join(h).join(parent_name)))
        .collect();
    if !missing.is_empty() {
        return CgroupSupport::None {
            reason: format!(
                "cgroup v1: no writable {parent_name} in {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix: fix_v1,
        };
    }
    CgroupSupport::V1 {
        root: root.to_owned(),
        parent: parent_name.to_owned(),
        hierarchies,
    }
}

/// The v1 hierarchies mounted under `root` (not the hybrid `unified` one).
fn v1_hierarchies(root: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| e.path().join("cgroup.procs").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "unified")
        .collect();
    found.sort();
    found
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn writable_dir(dir: &Path) -> bool {
    dir.is_dir() && nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

fn detect_v2(root: &Path, own: Option<&str>) -> CgroupSupport {
    let none = |reason: String| CgroupSupport::None {
        reason,
        fix: "run ucri as a systemd user service with Delegate=yes (packaging/ucri.service), \
              or enable delegation for user@.service"
            .into(),
    };
    let Some(own) = own else {
        return none("cgroup v2: this process's cgroup is unknown".into());
    };
    let dir = root.join(own.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let missing: Vec<&str> = V2_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !controllers.split_whitespace().any(|x| x == *c))
        .collect();
    if !missing.is_empty() {
        return none(format!(
            "cgroup v2: {} not delegated to {own}",
            missing.join(", ")
        ));
    }
    if !writable_dir(&dir) {
        return none(format!("cgroup v2: {own} is not writable"));
    }
    CgroupSupport::V2 {
        root: root.to_owned(),
        parent: format!("{}/pods", own.trim_end_matches('/')),
    }
}

/// cgroup v2's "no internal processes" rule: the daemon moves into
/// `<own>/daemon`, and `<own>` and `<own>/pods` enable the controllers for
/// their children.
pub fn prepare_v2(root: &Path, own: &str) -> std::io::Result<()> {
    let own_dir = root.join(own.trim_start_matches('/'));
    let leaf = own_dir.join("daemon");
    std::fs::create_dir_all(&leaf)?;
    let procs = std::fs::read_to_string(own_dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter(|l| !l.trim().is_empty()) {
        std::fs::write(leaf.join("cgroup.procs"), pid.trim())?;
    }
    let enable: String = V2_CONTROLLERS.iter().map(|c| format!("+{c} ")).collect();
    std::fs::write(own_dir.join("cgroup.subtree_control"), enable.trim_end())?;
    let pods = own_dir.join("pods");
    std::fs::create_dir_all(&pods)?;
    std::fs::write(pods.join("cgroup.subtree_control"), enable.trim_end())
}

/// This process's v2 cgroup (the `0::` line of /proc/self/cgroup).
pub fn own_v2_cgroup() -> Option<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The kinds of limit a delegated subtree can hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Controllers {
    /// cgroup v2 (`unified` limits apply).
    pub v2: bool,
    /// The hugetlb controller is there.
    pub hugetlb: bool,
}

/// Logged once: hugepage limits dropped for want of the hugetlb controller.
static HUGEPAGES_OMITTED: std::sync::Once = std::sync::Once::new();

/// The OCI `linux.resources` of a CRI resource request (zero means unset),
/// with `pids_limit` from the runtime config (0: none). A memory limit
/// without a swap limit forbids swap, as CRI-O does. Hugepage limits (kubelet
/// sends a zero limit per page size the node has) need the hugetlb
/// controller; without it crun could not place the container at all, so
/// they are omitted, as on a node without hugepages.
pub fn oci_resources(
    r: Option<&LinuxContainerResources>,
    pids_limit: i64,
    controllers: Controllers,
) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(r) = r {
        let mut cpu = serde_json::Map::new();
        if r.cpu_shares > 0 {
            cpu.insert("shares".into(), json!(r.cpu_shares));
        }
        if r.cpu_quota > 0 {
            cpu.insert("quota".into(), json!(r.cpu_quota));
        }
        if r.cpu_period > 0 {
            cpu.insert("period".into(), json!(r.cpu_period));
        }
        if !r.cpuset_cpus.is_empty() {
            cpu.insert("cpus".into(), json!(r.cpuset_cpus));
        }
        if !r.cpuset_mems.is_empty() {
            cpu.insert("mems".into(), json!(r.cpuset_mems));
        }
        if !cpu.is_empty() {
            out.insert("cpu".into(), Value::Object(cpu));
        }
        if r.memory_limit_in_bytes > 0 {
            let swap = if r.memory_swap_limit_in_bytes > 0 {
                r.memory_swap_limit_in_bytes
            } else {
                r.memory_limit_in_bytes
            };
            out.insert(
                "memory".into(),
                json!({"limit": r.memory_limit_in_bytes, "swap": swap}),
            );
        }
        let hugepages: Vec<Value> = r
            .hugepage_limits
            .iter()
            .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
            .collect();
        if !hugepages.is_empty() && controllers.hugetlb {
            out.insert("hugepageLimits".into(), Value::Array(hugepages));
        } else if !hugepages.is_empty() {
            HUGEPAGES_OMITTED.call_once(|| {
                tracing::warn!(
                    "hugepage limits are omitted: the delegated cgroup subtree has no hugetlb controller"
                )
            });
        }
        if controllers.v2 && !r.unified.is_empty() {
            out.insert("unified".into(), json!(r.unified));
        }
    }
    if pids_limit > 0 {
        out.insert("pids".into(), json!({"limit": pids_limit}));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn v1_needs_the_subtree_in_every_hierarchy() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        for h in ["memory", "pids", "cpu", "unified"] {
            touch(&root.join(h).join("cgroup.procs"), "");
        }
        std::fs::create_dir_all(root.join("memory/ucri-alice")).expect("mkdir");
        let none = detect(root, "ucri-alice", None);
        assert!(
            matches!(&none, CgroupSupport::None { reason, fix } if reason.contains("cpu, pids") && fix.contains("--delegate-cgroups")),
            "{none:?}"
        );
        for h in ["pids", "cpu"] {
            std::fs::create_dir_all(root.join(h).join("ucri-alice")).expect("mkdir");
        }
        let v1 = detect(root, "ucri-alice", None);
        assert_eq!(
            v1,
            CgroupSupport::V1 {
                root: root.to_owned(),
                parent: "ucri-alice".into(),
                hierarchies: vec!["cpu".into(), "memory".into(), "pids".into()],
            }
        );
        assert_eq!(
            v1.container_path("p1", "c1").as_deref(),
            Some("/ucri-alice/pod-p1/c1")
        );
        let dir = v1.dir("memory", "/ucri-alice/pod-p1/c1").expect("dir");
        touch(
            &dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        assert!(v1.oom_killed("/ucri-alice/pod-p1/c1"));
        touch(&dir.join("memory.usage_in_bytes"), "1000\n");
        touch(
            &dir.join("memory.stat"),
            "cache 10\ntotal_rss 600\ntotal_inactive_file 300\n",
        );
        touch(
            &v1.dir("cpuacct", "/ucri-alice/pod-p1/c1")
                .expect("d")
                .join("cpuacct.usage"),
            "5000\n",
        );
        touch(
            &v1.dir("pids", "/ucri-alice/pod-p1/c1")
                .expect("d")
                .join("pids.current"),
            "3\n",
        );
        assert_eq!(
            v1.usage("/ucri-alice/pod-p1/c1"),
            Some(CgroupUsage {
                cpu_ns: 5000,
                memory_bytes: 1000,
                working_set_bytes: 700,
                rss_bytes: 600,
                processes: 3
            })
        );
    }

    #[test]
    fn v2_needs_the_controllers_and_moves_the_daemon_into_a_leaf() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path();
        let own = "/user.slice/user-1000.slice/user@1000.service/app.slice/ucri.service";
        touch(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        );
        let dir = root.join(own.trim_start_matches('/'));
        touch(&dir.join("cgroup.controllers"), "memory pids");
        assert!(
            matches!(detect(root, "x", Some(own)), CgroupSupport::None { reason, .. } if reason.contains("cpu"))
        );
        touch(&dir.join("cgroup.controllers"), "cpu memory pids");
        touch(&dir.join("cgroup.procs"), "4242\n");
        let v2 = detect(root, "x", Some(own));
        assert_eq!(
            v2.container_path("p", "c"),
            Some(format!("{own}/pods/pod-p/c"))
        );
        prepare_v2(root, own).expect("prepare");
        assert_eq!(
            std::fs::read_to_string(dir.join("daemon/cgroup.procs")).expect("read"),
            "4242"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.subtree_control")).expect("read"),
            "+cpu +memory +pids"
        );
        assert!(dir.join("pods/cgroup.subtree_control").exists());
        let c = v2
            .dir("memory", &format!("{own}/pods/pod-p/c"))
            .expect("dir");
        touch(
            &c.join("memory.events"),
            "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n",
        );
        touch(&c.join("memory.current"), "2048\n");
        touch(&c.join("memory.stat"), "anon 1024\ninactive_file 48\n");
        touch(&c.join("cpu.stat"), "usage_usec 7\nuser_usec 5\n");
        assert!(v2.oom_killed(&format!("{own}/pods/pod-p/c")));
        let usage = v2.usage(&format!("{own}/pods/pod-p/c")).expect("usage");
        assert_eq!(
            (usage.cpu_ns, usage.working_set_bytes, usage.rss_bytes),
            (7000, 2000, 1024)
        );
    }

    #[test]
    fn cri_resources_become_oci_resources() {
        let r = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            unified: [("memory.high".to_owned(), "50M".to_owned())].into(),
            hugepage_limits: vec![ucri_cri_api::v1::HugepageLimit {
                page_size: "2MB".into(),
                limit: 0,
            }],
            ..Default::default()
        };
        let plain_v1 = Controllers::default();
        let v1 = oci_resources(Some(&r), 64, plain_v1);
        assert!(v1.get("hugepageLimits").is_none(), "no hugetlb controller");
        let with_hugetlb = Controllers {
            v2: false,
            hugetlb: true,
        };
        assert_eq!(
            oci_resources(Some(&r), 64, with_hugetlb)["hugepageLimits"],
            json!([{"pageSize": "2MB", "limit": 0}])
        );
        assert_eq!(
            v1["cpu"],
            json!({"shares": 512, "quota": 50000, "period": 100000})
        );
        assert_eq!(v1["memory"], json!({"limit": 64 << 20, "swap": 64 << 20}));
        assert_eq!(v1["pids"], json!({"limit": 64}));
        assert!(v1.get("unified").is_none());
        assert_eq!(
            oci_resources(
                Some(&r),
                0,
                Controllers {
                    v2: true,
                    hugetlb: false
                }
            )["unified"]["memory.high"],
            "50M"
        );
        assert_eq!(oci_resources(None, 0, plain_v1), json!({}));
        let parsed: oci_spec::runtime::LinuxResources =
            serde_json::from_value(v1).expect("valid OCI resources");
        assert_eq!(parsed.pids().as_ref().map(|p| p.limit()), Some(64));
    }
}

/// A pod's cgroup limits: the sum of its containers' resources and the
/// pod's overhead (what kubelet sends with UpdatePodSandboxResources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodLimits {
    /// CPU shares (v1 semantics; 0 = unset).
    pub cpu_shares: i64,
    /// CFS quota in µs per period (0 = unlimited).
    pub cpu_quota: i64,
    /// CFS period in µs (0 = the kernel's default, 100 ms).
    pub cpu_period: i64,
    /// Memory limit in bytes (0 = unlimited).
    pub memory: i64,
}

impl PodLimits {
    /// The sum of `parts` (each a LinuxContainerResources or none).
    pub fn sum<'a>(
        parts: impl IntoIterator<Item = Option<&'a LinuxContainerResources>>,
    ) -> PodLimits {
        let mut total = PodLimits::default();
        for r in parts.into_iter().flatten() {
            total.cpu_shares += r.cpu_shares.max(0);
            total.memory += r.memory_limit_in_bytes.max(0);
            if r.cpu_quota > 0 {
                let period = if r.cpu_period > 0 {
                    r.cpu_period
                } else {
                    100_000
                };
                let base = if total.cpu_period > 0 {
                    total.cpu_period
                } else {
                    period
                };
                // Quotas add up at a common period.
                total.cpu_quota += r.cpu_quota * base / period;
                total.cpu_period = base;
            }
        }
        total
    }

    /// (controller, file, value) to write, for cgroup v1 or v2.
    fn files(&self, v2: bool) -> Vec<(&'static str, &'static str, String)> {
        let mut out = Vec::new();
        let period = if self.cpu_period > 0 {
            self.cpu_period
        } else {
            100_000
        };
        if v2 {
            if self.cpu_shares > 0 {
                let weight = 1 + ((self.cpu_shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
                out.push(("cpu", "cpu.weight", weight.to_string()));
            }
            let quota = if self.cpu_quota > 0 {
                self.cpu_quota.to_string()
            } else {
                "max".into()
            };
            out.push(("cpu", "cpu.max", format!("{quota} {period}")));
            let memory = if self.memory > 0 {
                self.memory.to_string()
            } else {
                "max".into()
            };
            out.push(("memory", "memory.max", memory));
        } else {
            if self.cpu_shares > 0 {
                out.push(("cpu", "cpu.shares", self.cpu_shares.max(2).to_string()));
            }
            out.push(("cpu", "cpu.cfs_period_us", period.to_string()));
            let quota = if self.cpu_quota > 0 {
                self.cpu_quota
            } else {
                -1
            };
            out.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
            let memory = if self.memory > 0 { self.memory } else { -1 };
            out.push(("memory", "memory.limit_in_bytes", memory.to_string()));
        }
        out
    }
}

#[cfg(test)]
mod pod_limit_tests {
    use super::*;

    #[test]
    fn pod_limits_sum_the_containers_and_the_overhead() {
        let a = LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let b = LinuxContainerResources {
            cpu_shares: 102,
            cpu_quota: 10_000,
            cpu_period: 50_000,
            memory_limit_in_bytes: 16 << 20,
            ..Default::default()
        };
        let total = PodLimits::sum([Some(&a), Some(&b), None]);
        assert_eq!(
            total,
            PodLimits {
                cpu_shares: 614,
                cpu_quota: 70_000,
                cpu_period: 100_000,
                memory: 80 << 20
            }
        );
        let v1 = total.files(false);
        assert!(v1.contains(&("cpu", "cpu.cfs_quota_us", "70000".into())));
        assert!(v1.contains(&("memory", "memory.limit_in_bytes", (80i64 << 20).to_string())));
        let v2 = PodLimits::default().files(true);
        assert!(v2.contains(&("cpu", "cpu.max", "max 100000".into())));
        assert!(v2.contains(&("memory", "memory.max", "max".into())));
    }
}
