//! The OCI runtime spec (config.json) of a CRI container.
//!
//! Built the way CRI-O builds it (kubelet's command/args semantics, CRI-O's
//! default capabilities, masked paths and mounts), adapted to a daemon that
//! already runs as root inside its own user namespace: the spec has no user
//! namespace entry and no id mappings, and, because cgroups are not delegated
//! on the hosts ucri targets, no `linux.resources` and no `cgroupsPath`. Each
//! such rootless adaptation is logged once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Once;

use nix::libc;
use oci_spec::runtime::{
    Arch, Capabilities, Capability, Linux, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType,
    LinuxSeccomp, LinuxSeccompAction, LinuxSyscall, Mount, Process, Root, Spec, User,
};
use serde::Deserialize;
use ucri_cri_api::v1 as cri;
use ucri_cri_api::v1::security_profile::ProfileType;

/// The OCI runtime spec version the generated config.json declares.
const OCI_VERSION: &str = "1.0.2";

/// Paths and settings of the pod a container joins.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    /// The pod's hostname (set only when the container gets the pod's UTS namespace).
    pub hostname: String,
    /// Pinned network namespace file; `None` = host network (inherit, no entry).
    pub netns: Option<PathBuf>,
    /// Pinned IPC namespace file; `None` = host IPC.
    pub ipcns: Option<PathBuf>,
    /// Pinned UTS namespace file; `None` = host UTS (with host network).
    pub utsns: Option<PathBuf>,
    /// The pod's shared pid namespace; `None` = a new one per container unless `host_pid`.
    pub pidns: Option<PathBuf>,
    /// The container shares the host's (the daemon's) pid namespace.
    pub host_pid: bool,
    /// The pod's own user namespace, joined before the others; `None` = the
    /// daemon's.
    pub userns: Option<PathBuf>,
    /// The pod's /dev/shm tmpfs directory to bind; `None` with host IPC (host /dev/shm).
    pub shm: Option<PathBuf>,
    /// The pod's resolv.conf, bound at /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// The pod's hosts file, bound at /etc/hosts (a CRI mount there wins).
    pub hosts: PathBuf,
    /// The pod's hostname file, bound at /etc/hostname.
    pub hostname_file: PathBuf,
    /// The socket bypass agent's receiver when the pod has one.
    pub bypass_receiver: Option<super::bypass::Receiver>,
}

/// Everything the spec of one container is made from.
pub struct SpecInputs<'a> {
    /// The CRI container config.
    pub config: &'a cri::ContainerConfig,
    /// The CRI config of the pod the container belongs to.
    pub sandbox: &'a cri::PodSandboxConfig,
    /// The image config JSON, the whole blob: `{"config": {"User", "Env",
    /// "Entrypoint", "Cmd", "WorkingDir", "StopSignal", ...}, ...}`.
    pub image_config: &'a serde_json::Value,
    /// The container's mounted root filesystem (read its etc/passwd and etc/group).
    pub rootfs: &'a Path,
    /// The pod's namespaces and files.
    pub pod: &'a PodContext,
    /// Host path of the termination message file (already created), if any.
    pub termination_log: Option<&'a Path>,
    /// Where the container's cgroup goes and its limits, when the user has
    /// delegated cgroups; `None` = no cgroupsPath and no resources.
    pub cgroup: Option<&'a CgroupPlacement>,
}

/// A container's cgroup: its path and OCI `linux.resources`.
#[derive(Debug, Clone)]
pub struct CgroupPlacement {
    /// The cgroupsPath.
    pub path: String,
    /// The resources, as OCI JSON.
    pub resources: serde_json::Value,
}

/// Why a spec cannot be generated.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The request (or the image it names) asks for something malformed or impossible.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something the spec is built from does not exist (the root filesystem).
    #[error("{0}")]
    NotFound(String),
    /// Reading a file the spec depends on failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being read.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError::InvalidArgument(message.into())
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> SpecError {
    move |source| SpecError::Io { context, source }
}

/// Generates the OCI runtime spec of a CRI container.
pub fn generate(inputs: &SpecInputs) -> Result<Spec, SpecError> {
    validate(inputs)?;
    refuse_named_apparmor(security_context(inputs.config))?;
    note_rootless_adaptations(inputs);
    let sc = security_context(inputs.config);
    let privileged = sc.is_some_and(|s| s.privileged);
    let readonly = sc.is_some_and(|s| s.readonly_rootfs);
    let image = ImageProcess::from_config(inputs.image_config)?;
    let caps = capability_set(sc)?;
    let mounts = mounts(inputs, privileged, readonly)?;
    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string())
        .set_root(Some(root(inputs.rootfs, readonly)))
        .set_process(Some(process(inputs, &image, sc, &caps)?))
        .set_hostname(hostname(inputs.pod))
        .set_domainname(None)
        .set_mounts(Some(mounts))
        .set_annotations(Some(annotations(inputs, &image)))
        .set_linux(Some(linux(inputs, sc, &caps)?))
        .set_hooks(None);
    if let Some(receiver) = &inputs.pod.bypass_receiver {
        super::bypass::apply(&mut spec, receiver);
    }
    Ok(spec)
}

fn security_context(config: &cri::ContainerConfig) -> Option<&cri::LinuxContainerSecurityContext> {
    config.linux.as_ref()?.security_context.as_ref()
}

fn resources(config: &cri::ContainerConfig) -> Option<&cri::LinuxContainerResources> {
    config.linux.as_ref()?.resources.as_ref()
}

fn root(rootfs: &Path, readonly: bool) -> Root {
    let mut root = Root::default();
    root.set_path(rootfs.to_path_buf())
        .set_readonly(Some(readonly));
    root
}

/// The hostname is set only with the pod's UTS namespace: crun refuses a
/// hostname for a container that stays in the host's.
fn hostname(pod: &PodContext) -> Option<String> {
    (pod.utsns.is_some() && !pod.hostname.is_empty()).then(|| pod.hostname.clone())
}

// ---------------------------------------------------------------- validation

fn validate(inputs: &SpecInputs) -> Result<(), SpecError> {
    let name = inputs
        .config
        .metadata
        .as_ref()
        .map_or("", |m| m.name.as_str());
    if name.is_empty() {
        return Err(invalid("container config has no metadata name"));
    }
    if !inputs.rootfs.is_dir() {
        return Err(SpecError::NotFound(format!(
            "container root filesystem {} does not exist",
            inputs.rootfs.display()
        )));
    }
    validate_privileged(inputs)?;
    resources(inputs.config).map_or(Ok(()), validate_resources)
}

/// As CRI-O: a privileged container needs a privileged pod.
fn validate_privileged(inputs: &SpecInputs) -> Result<(), SpecError> {
    let container = security_context(inputs.config).is_some_and(|s| s.privileged);
    let pod = inputs
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if container && !pod {
        return Err(invalid(
            "privileged container in a pod that is not privileged",
        ));
    }
    Ok(())
}

fn validate_resources(r: &cri::LinuxContainerResources) -> Result<(), SpecError> {
    let fields = [
        ("cpu_period", r.cpu_period, 0),
        ("cpu_quota", r.cpu_quota, -1),
        ("cpu_shares", r.cpu_shares, 0),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes, 0),
        (
            "memory_swap_limit_in_bytes",
            r.memory_swap_limit_in_bytes,
            -1,
        ),
    ];
    if let Some((field, value, _)) = fields.iter().find(|(_, value, min)| value < min) {
        return Err(invalid(format!(
            "resources.{field} must not be negative (got {value})"
        )));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(format!(
            "resources.oom_score_adj {} is outside -1000..=1000",
            r.oom_score_adj
        )));
    }
    Ok(())
}

/// A CRI id (uid, gid) as the u32 the kernel takes.
fn id_from(field: &str, value: i64) -> Result<u32, SpecError> {
    u32::try_from(value).map_err(|_| invalid(format!("{field} {value} is not a valid id")))
}

// ---------------------------------------------------------------- rootless notes

static RESOURCES_IGNORED: Once = Once::new();
static CGROUP_PARENT_IGNORED: Once = Once::new();
static OOM_SCORE_OMITTED: Once = Once::new();
static APPARMOR_IGNORED: Once = Once::new();
static DEVICE_RULES_OMITTED: Once = Once::new();

fn warn_once(once: &'static Once, adaptation: &'static str, message: &'static str) {
    once.call_once(|| tracing::warn!(adaptation, "rootless: {message}"));
}

/// Logs, once per daemon, each request ucri cannot honour without delegated
/// cgroups or root on the host.
fn note_rootless_adaptations(inputs: &SpecInputs) {
    if inputs.cgroup.is_none() && resources(inputs.config).is_some_and(has_limits) {
        warn_once(
            &RESOURCES_IGNORED,
            "resources",
            "resource limits are not applied (cgroups are not delegated): no linux.resources",
        );
    }
    let parent = inputs
        .sandbox
        .linux
        .as_ref()
        .map_or("", |l| l.cgroup_parent.as_str());
    if inputs.cgroup.is_none() && !parent.is_empty() {
        warn_once(
            &CGROUP_PARENT_IGNORED,
            "cgroups_path",
            "the pod cgroup parent is ignored; containers get no cgroupsPath",
        );
    }
    if apparmor_requested(security_context(inputs.config)) {
        warn_once(
            &APPARMOR_IGNORED,
            "apparmor",
            "AppArmor profiles are ignored",
        );
    }
    if !inputs.config.devices.is_empty() {
        warn_once(
            &DEVICE_RULES_OMITTED,
            "devices",
            "devices are bind-mounted (mknod is denied); device cgroup rules are omitted",
        );
    }
}

fn cgroup_resources(
    cgroup: Option<&CgroupPlacement>,
) -> Result<Option<oci_spec::runtime::LinuxResources>, SpecError> {
    cgroup
        .map(|c| serde_json::from_value(c.resources.clone()))
        .transpose()
        .map_err(|e| invalid(format!("container resources: {e}")))
}

fn has_limits(r: &cri::LinuxContainerResources) -> bool {
    r.cpu_period != 0
        || r.cpu_quota != 0
        || r.cpu_shares != 0
        || r.memory_limit_in_bytes != 0
        || r.memory_swap_limit_in_bytes != 0
        || !r.cpuset_cpus.is_empty()
        || !r.cpuset_mems.is_empty()
        || !r.hugepage_limits.is_empty()
        || !r.unified.is_empty()
}

fn apparmor_requested(sc: Option<&cri::LinuxContainerSecurityContext>) -> bool {
    sc.and_then(|s| s.apparmor.as_ref())
        .is_some_and(|p| p.profile_type != ProfileType::Unconfined as i32)
}

/// A named AppArmor profile cannot be honoured (no AppArmor for a rootless
/// runtime to load or switch to): refused, not silently dropped. The
/// runtime's default is accepted, as CRI-O does on hosts without AppArmor.
/// Older kubelets still send the deprecated `apparmor_profile` string.
#[allow(deprecated)]
fn refuse_named_apparmor(sc: Option<&cri::LinuxContainerSecurityContext>) -> Result<(), SpecError> {
    let Some(sc) = sc else {
        return Ok(());
    };
    let named =
        is_named_apparmor(sc.apparmor.as_ref()) || sc.apparmor_profile.starts_with("localhost/");
    if named {
        return Err(invalid(NAMED_APPARMOR_REFUSED.to_owned()));
    }
    Ok(())
}

/// Why a named AppArmor profile is refused.
pub(super) const NAMED_APPARMOR_REFUSED: &str =
    "AppArmor profiles cannot be applied by ucri (rootless, no AppArmor); \
     use RuntimeDefault or Unconfined";

/// True for a `Localhost` (named) AppArmor profile.
pub(super) fn is_named_apparmor(profile: Option<&cri::SecurityProfile>) -> bool {
    profile.is_some_and(|p| p.profile_type == ProfileType::Localhost as i32)
}

/// The requested oom_score_adj, unless it is below the daemon's own: an
/// unprivileged process may raise its score but not lower it.
fn oom_score_adj(config: &cri::ContainerConfig) -> Option<i32> {
    let wanted = i32::try_from(resources(config)?.oom_score_adj).ok()?;
    if wanted >= current_oom_score_adj() {
        return Some(wanted);
    }
    warn_once(
        &OOM_SCORE_OMITTED,
        "oom_score_adj",
        "an oom_score_adj below the daemon's own cannot be set; it is omitted",
    );
    None
}

fn current_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- image config

/// The process-related part of an image config (`config` in the blob).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ImageProcess {
    user: Option<String>,
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    stop_signal: Option<String>,
}

impl ImageProcess {
    fn from_config(blob: &serde_json::Value) -> Result<ImageProcess, SpecError> {
        match blob.get("config") {
            None | Some(serde_json::Value::Null) => Ok(ImageProcess::default()),
            Some(config) => ImageProcess::deserialize(config)
                .map_err(|e| invalid(format!("malformed image config: {e}"))),
        }
    }
}

// ---------------------------------------------------------------- process

fn process(
    inputs: &SpecInputs,
    image: &ImageProcess,
    sc: Option<&cri::LinuxContainerSecurityContext>,
    caps: &BTreeSet<usize>,
) -> Result<Process, SpecError> {
    let image_user = image.user.as_deref().unwrap_or("");
    let mut process = Process::default();
    process
        .set_terminal(Some(inputs.config.tty))
        .set_console_size(None)
        .set_args(Some(process_args(inputs.config, image)?))
        .set_env(Some(process_env(
            inputs.config,
            image,
            &inputs.pod.hostname,
        )?))
        .set_cwd(process_cwd(inputs.config, image)?)
        .set_user(user(inputs.rootfs, sc, image_user)?)
        .set_capabilities(Some(linux_capabilities(caps, &ambient_set(sc)?)))
        .set_rlimits(None)
        .set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)))
        .set_apparmor_profile(None)
        .set_selinux_label(None)
        .set_oom_score_adj(oom_score_adj(inputs.config));
    Ok(process)
}

/// kubelet's semantics: `command` replaces the image Entrypoint and `args`
/// its Cmd; a `command` without `args` drops the image Cmd.
fn process_args(
    config: &cri::ContainerConfig,
    image: &ImageProcess,
) -> Result<Vec<String>, SpecError> {
    let image_cmd = image.cmd.as_deref().unwrap_or_default();
    let (entrypoint, cmd) = if !config.command.is_empty() {
        (config.command.as_slice(), config.args.as_slice())
    } else if !config.args.is_empty() {
        (
            image.entrypoint.as_deref().unwrap_or_default(),
            config.args.as_slice(),
        )
    } else {
        (image.entrypoint.as_deref().unwrap_or_default(), image_cmd)
    };
    let args = [entrypoint, cmd].concat();
    if args.is_empty() {
        return Err(invalid(
            "no command: the container config and the image give neither an entrypoint nor a cmd",
        ));
    }
    Ok(args)
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An environment in which a later value of a key replaces the earlier one in place.
#[derive(Default)]
struct EnvList(Vec<(String, String)>);

impl EnvList {
    fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    fn set_default(&mut self, key: &str, value: &str) {
        if !self.0.iter().any(|(k, _)| k == key) {
            self.0.push((key.to_string(), value.to_string()));
        }
    }

    fn into_strings(self) -> Vec<String> {
        self.0
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }
}

/// HOSTNAME, then the image's Env, then the CRI envs (later keys override
/// earlier ones in place); PATH (and TERM with a tty) when still missing.
fn process_env(
    config: &cri::ContainerConfig,
    image: &ImageProcess,
    hostname: &str,
) -> Result<Vec<String>, SpecError> {
    let mut env = EnvList::default();
    if !hostname.is_empty() {
        env.set("HOSTNAME", hostname);
    }
    for entry in image.env.iter().flatten() {
        let (key, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        if !key.is_empty() {
            env.set(key, value);
        }
    }
    for kv in &config.envs {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(invalid(format!(
                "invalid environment variable name {:?}",
                kv.key
            )));
        }
        // KeyValue.value is bytes since Kubernetes 1.36; an OCI process
        // environment is strings.
        let value = std::str::from_utf8(&kv.value).map_err(|_| {
            invalid(format!(
                "environment variable {} is not valid UTF-8",
                kv.key
            ))
        })?;
        env.set(&kv.key, value);
    }
    env.set_default("PATH", DEFAULT_PATH);
    if config.tty {
        env.set_default("TERM", "xterm");
    }
    Ok(env.into_strings())
}

/// The CRI working_dir, else the image's WorkingDir, else "/".
fn process_cwd(config: &cri::ContainerConfig, image: &ImageProcess) -> Result<PathBuf, SpecError> {
    if !config.working_dir.is_empty() {
        if !config.working_dir.starts_with('/') {
            return Err(invalid(format!(
                "working_dir {:?} is not an absolute path",
                config.working_dir
            )));
        }
        return Ok(PathBuf::from(&config.working_dir));
    }
    match image.working_dir.as_deref() {
        None | Some("") => Ok(PathBuf::from("/")),
        // Docker makes a relative image WorkingDir absolute.
        Some(dir) => Ok(Path::new("/").join(dir)),
    }
}

// ---------------------------------------------------------------- user

/// A user or group as asked for: a number, or a name to look up in the image.
#[derive(Debug)]
enum Who {
    Id(u32),
    Name(String),
}

impl Who {
    fn parse(s: &str) -> Who {
        s.parse().map_or_else(|_| Who::Name(s.to_string()), Who::Id)
    }
}

/// uid, gid and additional gids, from the security context or the image's
/// User, names resolved in the image's /etc/passwd and /etc/group.
fn user(
    rootfs: &Path,
    sc: Option<&cri::LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<User, SpecError> {
    let (who, group) = requested_user(sc, image_user)?;
    let db = UserDb::load(rootfs)?;
    let entry = match &who {
        Who::Id(uid) => db.passwd.iter().find(|p| p.id == *uid),
        Who::Name(name) => Some(db.passwd.iter().find(|p| p.name == *name).ok_or_else(|| {
            invalid(format!(
                "user {name:?} not found in the image's /etc/passwd"
            ))
        })?),
    };
    let uid = entry.map_or(0, |e| e.id);
    let uid = if let Who::Id(id) = who { id } else { uid };
    let gid = match group {
        Some(Who::Id(gid)) => gid,
        Some(Who::Name(name)) => db.gid_of(&name)?,
        None => entry.map_or(0, |e| e.gid),
    };
    let mut user = User::default();
    user.set_uid(uid)
        .set_gid(gid)
        .set_umask(None)
        .set_username(None)
        .set_additional_gids(Some(additional_gids(
            sc,
            &db,
            entry.map(|e| e.name.as_str()),
            gid,
        )?));
    Ok(user)
}

/// run_as_user, else run_as_username, else the image's User ("uid",
/// "uid:gid", "name", "name:group"); run_as_group overrides the group.
fn requested_user(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<(Who, Option<Who>), SpecError> {
    let run_as_group = match sc.and_then(|s| s.run_as_group.as_ref()) {
        Some(g) => Some(Who::Id(id_from("run_as_group", g.value)?)),
        None => None,
    };
    let username = sc.map_or("", |s| s.run_as_username.as_str());
    let has_user = sc.is_some_and(|s| s.run_as_user.is_some()) || !username.is_empty();
    if run_as_group.is_some() && !has_user {
        // The CRI API: the runtime MUST error when run_as_group comes
        // without run_as_user or run_as_username.
        return Err(invalid(
            "run_as_group needs run_as_user or run_as_username".to_owned(),
        ));
    }
    let (who, image_group) = match sc.and_then(|s| s.run_as_user.as_ref()) {
        Some(u) => (Who::Id(id_from("run_as_user", u.value)?), None),
        None if !username.is_empty() => (Who::Name(username.to_string()), None),
        None => parse_image_user(image_user),
    };
    Ok((who, run_as_group.or(image_group)))
}

fn parse_image_user(user: &str) -> (Who, Option<Who>) {
    let (name, group) = match user.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (user, None),
    };
    let who = if name.is_empty() {
        Who::Id(0)
    } else {
        Who::parse(name)
    };
    (who, group.filter(|g| !g.is_empty()).map(Who::parse))
}

/// The primary gid, the /etc/group groups listing the user (policy Merge,
/// the default) and the CRI supplemental groups; deduplicated, in that order.
fn additional_gids(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    db: &UserDb,
    username: Option<&str>,
    gid: u32,
) -> Result<Vec<u32>, SpecError> {
    let strict = sc.is_some_and(|s| {
        s.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32
    });
    let mut gids = vec![gid];
    if let (false, Some(name)) = (strict, username) {
        gids.extend(
            db.group
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.id),
        );
    }
    for &g in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
    {
        gids.push(id_from("supplemental_groups", g)?);
    }
    let mut seen = HashSet::new();
    gids.retain(|g| seen.insert(*g));
    Ok(gids)
}

/// One line of /etc/passwd or /etc/group.
struct DbEntry {
    name: String,
    id: u32,
    gid: u32,
    members: Vec<String>,
}

/// The image's /etc/passwd and /etc/group (empty when absent).
struct UserDb {
    passwd: Vec<DbEntry>,
    group: Vec<DbEntry>,
}

impl UserDb {
    fn load(rootfs: &Path) -> Result<UserDb, SpecError> {
        let passwd = read_rootfs_etc(rootfs, "passwd")?.unwrap_or_default();
        let group = read_rootfs_etc(rootfs, "group")?.unwrap_or_default();
        Ok(UserDb {
            passwd: passwd.lines().filter_map(parse_passwd_line).collect(),
            group: group.lines().filter_map(parse_group_line).collect(),
        })
    }

    fn gid_of(&self, name: &str) -> Result<u32, SpecError> {
        self.group
            .iter()
            .find(|g| g.name == name)
            .map(|g| g.id)
            .ok_or_else(|| {
                invalid(format!(
                    "group {name:?} not found in the image's /etc/group"
                ))
            })
    }
}

/// `name:password:uid:gid:gecos:home:shell`
fn parse_passwd_line(line: &str) -> Option<DbEntry> {
    let fields: Vec<&str> = line.split(':').collect();
    if line.starts_with('#') || fields.len() < 4 || fields[0].is_empty() {
        return None;
    }
    Some(DbEntry {
        name: fields[0].to_string(),
        id: fields[2].trim().parse().ok()?,
        gid: fields[3].trim().parse().ok()?,
        members: Vec::new(),
    })
}

/// `name:password:gid:member,member`
fn parse_group_line(line: &str) -> Option<DbEntry> {
    let fields: Vec<&str> = line.split(':').collect();
    if line.starts_with('#') || fields.len() < 3 || fields[0].is_empty() {
        return None;
    }
    let id = fields[2].trim().parse().ok()?;
    let members = fields.get(3).map_or("", |m| m.trim());
    Some(DbEntry {
        name: fields[0].to_string(),
        id,
        gid: id,
        members: members
            .split(',')
            .filter(|m| !m.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// Upper bound on what is read of an image's passwd or group file.
const MAX_ETC_FILE: u64 = 4 << 20;

/// Reads `<rootfs>/etc/<name>` without following a symlink at `etc` or at
/// `<name>` (an image must not make the daemon read a host file); a symlink,
/// a missing file or a non-regular file reads as `None`.
fn read_rootfs_etc(rootfs: &Path, name: &str) -> Result<Option<String>, SpecError> {
    let context = || format!("reading {}/etc/{name}", rootfs.display());
    let Some(etc) =
        open_no_follow(&rootfs.join("etc"), libc::O_DIRECTORY).map_err(io_error(context()))?
    else {
        return Ok(None);
    };
    // Resolved through the directory fd: "etc" cannot be swapped in between.
    let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", etc.as_raw_fd()));
    let Some(file) = open_no_follow(&path, libc::O_NONBLOCK).map_err(io_error(context()))? else {
        return Ok(None);
    };
    if !file.metadata().map_err(io_error(context()))?.is_file() {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_ETC_FILE)
        .read_to_end(&mut bytes)
        .map_err(io_error(context()))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Opens `path` read-only refusing a symlink as its last component; `None`
/// when it is absent, a symlink or (for a directory) not a directory.
fn open_no_follow(path: &Path, flags: libc::c_int) -> std::io::Result<Option<File>> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
        .open(path);
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- capabilities

/// Every capability, indexed by its kernel number.
const ALL_CAPABILITIES: [(&str, Capability); 41] = [
    ("CHOWN", Capability::Chown),
    ("DAC_OVERRIDE", Capability::DacOverride),
    ("DAC_READ_SEARCH", Capability::DacReadSearch),
    ("FOWNER", Capability::Fowner),
    ("FSETID", Capability::Fsetid),
    ("KILL", Capability::Kill),
    ("SETGID", Capability::Setgid),
    ("SETUID", Capability::Setuid),
    ("SETPCAP", Capability::Setpcap),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", Capability::NetBindService),
    ("NET_BROADCAST", Capability::NetBroadcast),
    ("NET_ADMIN", Capability::NetAdmin),
    ("NET_RAW", Capability::NetRaw),
    ("IPC_LOCK", Capability::IpcLock),
    ("IPC_OWNER", Capability::IpcOwner),
    ("SYS_MODULE", Capability::SysModule),
    ("SYS_RAWIO", Capability::SysRawio),
    ("SYS_CHROOT", Capability::SysChroot),
    ("SYS_PTRACE", Capability::SysPtrace),
    ("SYS_PACCT", Capability::SysPacct),
    ("SYS_ADMIN", Capability::SysAdmin),
    ("SYS_BOOT", Capability::SysBoot),
    ("SYS_NICE", Capability::SysNice),
    ("SYS_RESOURCE", Capability::SysResource),
    ("SYS_TIME", Capability::SysTime),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("MKNOD", Capability::Mknod),
    ("LEASE", Capability::Lease),
    ("AUDIT_WRITE", Capability::AuditWrite),
    ("AUDIT_CONTROL", Capability::AuditControl),
    ("SETFCAP", Capability::Setfcap),
    ("MAC_OVERRIDE", Capability::MacOverride),
    ("MAC_ADMIN", Capability::MacAdmin),
    ("SYSLOG", Capability::Syslog),
    ("WAKE_ALARM", Capability::WakeAlarm),
    ("BLOCK_SUSPEND", Capability::BlockSuspend),
    ("AUDIT_READ", Capability::AuditRead),
    ("PERFMON", Capability::Perfmon),
    ("BPF", Capability::Bpf),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// CRI-O's default capabilities.
const DEFAULT_CAPABILITIES: [&str; 9] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "KILL",
];

/// Index into [`ALL_CAPABILITIES`] of a name with or without "CAP_", any case.
fn capability_index(name: &str) -> Result<usize, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    ALL_CAPABILITIES
        .iter()
        .position(|(n, _)| *n == bare)
        .ok_or_else(|| invalid(format!("unknown capability {name:?}")))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// Every capability the running kernel knows.
fn all_capabilities() -> BTreeSet<usize> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(ALL_CAPABILITIES.len() - 1);
    (0..=last.min(ALL_CAPABILITIES.len() - 1)).collect()
}

/// The bounding/effective/permitted set: all when privileged, else CRI-O's
/// defaults with "ALL" in add, then "ALL" in drop, then single adds and drops.
fn capability_set(
    sc: Option<&cri::LinuxContainerSecurityContext>,
) -> Result<BTreeSet<usize>, SpecError> {
    if sc.is_some_and(|s| s.privileged) {
        return Ok(all_capabilities());
    }
    let mut set = DEFAULT_CAPABILITIES
        .iter()
        .map(|n| capability_index(n))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let Some(requested) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(set);
    };
    if requested.add_capabilities.iter().any(|n| is_all(n)) {
        set = all_capabilities();
    }
    if requested.drop_capabilities.iter().any(|n| is_all(n)) {
        set.clear();
    }
    for name in requested.add_capabilities.iter().filter(|n| !is_all(n)) {
        set.insert(capability_index(name)?);
    }
    for name in requested.drop_capabilities.iter().filter(|n| !is_all(n)) {
        set.remove(&capability_index(name)?);
    }
    Ok(set)
}

/// The ambient capabilities asked for (they are also inheritable).
fn ambient_set(
    sc: Option<&cri::LinuxContainerSecurityContext>,
) -> Result<BTreeSet<usize>, SpecError> {
    let names = sc
        .and_then(|s| s.capabilities.as_ref())
        .map(|c| c.add_ambient_capabilities.as_slice())
        .unwrap_or_default();
    names.iter().map(|n| capability_index(n)).collect()
}

fn to_capabilities(set: &BTreeSet<usize>) -> Capabilities {
    set.iter().map(|&i| ALL_CAPABILITIES[i].1).collect()
}

fn linux_capabilities(set: &BTreeSet<usize>, ambient: &BTreeSet<usize>) -> LinuxCapabilities {
    let main = to_capabilities(&set.union(ambient).copied().collect());
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(main.clone()))
        .set_effective(Some(main.clone()))
        .set_permitted(Some(main))
        .set_inheritable(Some(to_capabilities(ambient)))
        .set_ambient(Some(to_capabilities(ambient)));
    caps
}

// ---------------------------------------------------------------- seccomp

/// The syscalls Docker's default profile denies to a container without the
/// matching capability; [`default_seccomp`] returns EPERM for them.
const BLOCKED_SYSCALLS: [&str; 54] = [
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapon",
    "swapoff",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsmount",
    "fspick",
];

/// Blocked syscalls a capability makes available again, as in Docker's
/// profile (`includes.caps`).
const SYSCALLS_BY_CAPABILITY: [(&str, &[&str]); 10] = [
    (
        "SYS_ADMIN",
        &[
            "bpf",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "setns",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("SYS_BOOT", &["reboot"]),
    (
        "SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("SYS_PACCT", &["acct"]),
    (
        "SYS_PTRACE",
        &["kcmp", "process_vm_readv", "process_vm_writev", "ptrace"],
    ),
    ("SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "SYS_TIME",
        &["clock_adjtime", "clock_settime", "settimeofday", "stime"],
    ),
    ("SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy"]),
    ("DAC_READ_SEARCH", &["open_by_handle_at"]),
    ("BPF", &["bpf"]),
];

/// The default seccomp profile (RuntimeDefault): allow everything but the
/// syscalls Docker's default profile blocks, which fail with EPERM.
pub fn default_seccomp() -> LinuxSeccomp {
    seccomp_denying(BLOCKED_SYSCALLS.iter().map(|s| s.to_string()).collect())
}

/// [`default_seccomp`] minus what the container's capabilities grant.
fn runtime_default_seccomp(caps: &BTreeSet<usize>) -> LinuxSeccomp {
    let granted: HashSet<&str> = SYSCALLS_BY_CAPABILITY
        .iter()
        .filter(|(cap, _)| capability_index(cap).is_ok_and(|i| caps.contains(&i)))
        .flat_map(|(_, syscalls)| syscalls.iter().copied())
        .collect();
    let mut seccomp = default_seccomp();
    let rules = seccomp
        .syscalls()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|mut rule| {
            let names = rule
                .names()
                .iter()
                .filter(|n| !granted.contains(n.as_str()))
                .cloned()
                .collect();
            rule.set_names(names);
            rule
        });
    seccomp.set_syscalls(Some(rules.collect()));
    seccomp
}

fn seccomp_denying(names: Vec<String>) -> LinuxSeccomp {
    let mut rule = LinuxSyscall::default();
    rule.set_names(names)
        .set_action(LinuxSeccompAction::ScmpActErrno)
        .set_errno_ret(Some(libc::EPERM as u32));
    let archs = seccomp_architectures();
    let mut seccomp = LinuxSeccomp::default();
    seccomp
        .set_default_action(LinuxSeccompAction::ScmpActAllow)
        .set_architectures((!archs.is_empty()).then_some(archs))
        .set_syscalls(Some(vec![rule]));
    seccomp
}

/// The native architecture and the compat ones it runs.
fn seccomp_architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        Vec::new()
    }
}

/// The security context's seccomp profile; none for a privileged container.
/// A missing profile means unconfined, as the CRI API defines it and critest
/// checks (kubelet always sends an explicit one).
fn seccomp(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    caps: &BTreeSet<usize>,
) -> Result<Option<LinuxSeccomp>, SpecError> {
    if sc.is_some_and(|s| s.privileged) {
        return Ok(None);
    }
    let Some(profile) = sc.and_then(|s| s.seccomp.as_ref()) else {
        return Ok(None);
    };
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::RuntimeDefault) => Ok(Some(runtime_default_seccomp(caps))),
        Ok(ProfileType::Unconfined) => Ok(None),
        Ok(ProfileType::Localhost) => localhost_seccomp(&profile.localhost_ref).map(Some),
        Err(_) => Err(invalid(format!(
            "unknown seccomp profile type {}",
            profile.profile_type
        ))),
    }
}

/// A Localhost profile: an OCI `linux.seccomp` JSON file on the host.
fn localhost_seccomp(path: &str) -> Result<LinuxSeccomp, SpecError> {
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "seccomp localhost profile {path:?} is not an absolute path"
        )));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(invalid(format!("seccomp profile {path} does not exist")));
        }
        Err(source) => return Err(io_error(format!("reading seccomp profile {path}"))(source)),
    };
    serde_json::from_str(&text).map_err(|e| invalid(format!("seccomp profile {path}: {e}")))
}

// ---------------------------------------------------------------- linux

/// containers/common's (CRI-O's) default masked paths.
const MASKED_PATHS: [&str; 12] = [
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
];

/// containers/common's (CRI-O's) default read-only paths.
const READONLY_PATHS: [&str; 6] = [
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn linux(
    inputs: &SpecInputs,
    sc: Option<&cri::LinuxContainerSecurityContext>,
    caps: &BTreeSet<usize>,
) -> Result<Linux, SpecError> {
    let privileged = sc.is_some_and(|s| s.privileged);
    let masked = sc.map(|s| s.masked_paths.as_slice()).unwrap_or_default();
    let readonly = sc.map(|s| s.readonly_paths.as_slice()).unwrap_or_default();
    let mut linux = Linux::default();
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_resources(cgroup_resources(inputs.cgroup)?)
        .set_cgroups_path(inputs.cgroup.map(|c| PathBuf::from(&c.path)))
        .set_devices(None)
        .set_mount_label(None)
        .set_namespaces(Some(namespaces(inputs.pod)))
        .set_sysctl(sysctls(inputs.sandbox, inputs.pod)?)
        .set_seccomp(seccomp(sc, caps)?)
        .set_rootfs_propagation(rootfs_propagation(&inputs.config.mounts))
        .set_masked_paths(path_list(privileged, masked, &MASKED_PATHS))
        .set_readonly_paths(path_list(privileged, readonly, &READONLY_PATHS));
    Ok(linux)
}

/// None when privileged, the CRI list when given (kubelet sends it), else the defaults.
fn path_list(privileged: bool, requested: &[String], defaults: &[&str]) -> Option<Vec<String>> {
    if privileged {
        None
    } else if !requested.is_empty() {
        Some(requested.to_vec())
    } else {
        Some(defaults.iter().map(|p| p.to_string()).collect())
    }
}

fn namespace(typ: LinuxNamespaceType, path: Option<&PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(path.cloned());
    ns
}

/// A new mount namespace; the pod's pid (or a new one, or the host's), IPC,
/// UTS and network namespaces; never a user namespace: the daemon is in its own.
fn namespaces(pod: &PodContext) -> Vec<LinuxNamespace> {
    let mut list = vec![namespace(LinuxNamespaceType::Mount, None)];
    if let Some(userns) = &pod.userns {
        list.push(namespace(LinuxNamespaceType::User, Some(userns)));
    }
    if !pod.host_pid {
        list.push(namespace(LinuxNamespaceType::Pid, pod.pidns.as_ref()));
    }
    let joined = [
        (LinuxNamespaceType::Ipc, &pod.ipcns),
        (LinuxNamespaceType::Uts, &pod.utsns),
        (LinuxNamespaceType::Network, &pod.netns),
    ];
    for (typ, path) in joined {
        if let Some(path) = path {
            list.push(namespace(typ, Some(path)));
        }
    }
    list
}

/// rshared for a Bidirectional CRI mount, else rslave for a HostToContainer one.
fn rootfs_propagation(mounts: &[cri::Mount]) -> Option<String> {
    let modes: Vec<_> = mounts
        .iter()
        .filter_map(|m| cri::MountPropagation::try_from(m.propagation).ok())
        .collect();
    if modes.contains(&cri::MountPropagation::PropagationBidirectional) {
        Some("rshared".to_string())
    } else if modes.contains(&cri::MountPropagation::PropagationHostToContainer) {
        Some("rslave".to_string())
    } else {
        None
    }
}

// ---------------------------------------------------------------- sysctls

enum SysctlNamespace {
    Net,
    Ipc,
}

/// Only namespaced sysctls, and only in a namespace the pod owns.
fn sysctls(
    sandbox: &cri::PodSandboxConfig,
    pod: &PodContext,
) -> Result<Option<HashMap<String, String>>, SpecError> {
    let Some(requested) = sandbox.linux.as_ref().map(|l| &l.sysctls) else {
        return Ok(None);
    };
    let mut out = HashMap::new();
    for (key, value) in requested {
        let name = normalize_sysctl(key);
        match sysctl_namespace(&name) {
            None => {
                return Err(invalid(format!(
                    "sysctl {name:?} is not namespaced: it cannot be set for a pod"
                )))
            }
            Some(SysctlNamespace::Net) if pod.netns.is_none() => {
                return Err(invalid(format!(
                    "sysctl {name:?} cannot be set with host network"
                )));
            }
            Some(SysctlNamespace::Ipc) if pod.ipcns.is_none() => {
                return Err(invalid(format!(
                    "sysctl {name:?} cannot be set with host IPC"
                )));
            }
            Some(_) => out.insert(name, value.clone()),
        };
    }
    Ok((!out.is_empty()).then_some(out))
}

/// kubelet's slash form ("net/ipv4/ip_forward") to the dotted one.
fn normalize_sysctl(name: &str) -> String {
    match name.find(['.', '/']) {
        Some(i) if name.as_bytes()[i] == b'/' => name
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => name.to_string(),
    }
}

fn sysctl_namespace(name: &str) -> Option<SysctlNamespace> {
    const IPC: [&str; 4] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
    ];
    if name.starts_with("net.") {
        Some(SysctlNamespace::Net)
    } else if name.starts_with("kernel.shm")
        || name.starts_with("fs.mqueue.")
        || IPC.contains(&name)
    {
        Some(SysctlNamespace::Ipc)
    } else {
        None
    }
}

// ---------------------------------------------------------------- mounts

fn mount(
    destination: impl Into<PathBuf>,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Mount {
    let mut m = Mount::default();
    m.set_destination(destination.into())
        .set_typ(Some(typ.to_string()))
        .set_source(Some(source.into()))
        .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// The runtime's mounts, then the pod's files, then the CRI mounts (parents
/// first), then the devices; a CRI mount or device replaces a default one at
/// the same place (and a CRI /dev everything under /dev).
fn mounts(inputs: &SpecInputs, privileged: bool, readonly: bool) -> Result<Vec<Mount>, SpecError> {
    let cri_mounts = cri_mounts(&inputs.config.mounts)?;
    let devices = inputs
        .config
        .devices
        .iter()
        .map(device_mount)
        .collect::<Result<Vec<_>, _>>()?;
    let taken: Vec<PathBuf> = cri_mounts
        .iter()
        .chain(&devices)
        .map(|m| clean(m.destination()))
        .collect();
    let mut all: Vec<Mount> = runtime_mounts(inputs.pod, privileged)
        .into_iter()
        .chain(pod_file_mounts(inputs, readonly))
        .filter(|m| !shadowed(m, &taken))
        .collect();
    all.extend(cri_mounts);
    all.extend(devices);
    Ok(all)
}

fn clean(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

fn shadowed(m: &Mount, taken: &[PathBuf]) -> bool {
    let dest = clean(m.destination());
    taken
        .iter()
        .any(|t| *t == dest || (t == Path::new("/dev") && dest.starts_with("/dev")))
}

const NO_SUID_EXEC_DEV: [&str; 3] = ["nosuid", "noexec", "nodev"];

/// /proc, /dev, /dev/pts, /dev/mqueue, /sys and /dev/shm; host namespaces get
/// binds where a fresh mount is denied in a user namespace.
fn runtime_mounts(pod: &PodContext, privileged: bool) -> Vec<Mount> {
    let mut list = vec![
        proc_mount(pod),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        // No gid=5: gid 5 may be unmapped in the user namespace.
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        ),
    ];
    list.extend(mqueue_mount(pod));
    list.push(sys_mount(pod, privileged));
    list.push(shm_mount(pod));
    list
}

fn proc_mount(pod: &PodContext) -> Mount {
    if pod.host_pid {
        mount(
            "/proc",
            "bind",
            "/proc",
            &["rbind", "nosuid", "noexec", "nodev"],
        )
    } else {
        mount("/proc", "proc", "proc", &NO_SUID_EXEC_DEV)
    }
}

fn mqueue_mount(pod: &PodContext) -> Option<Mount> {
    if pod.ipcns.is_some() {
        Some(mount("/dev/mqueue", "mqueue", "mqueue", &NO_SUID_EXEC_DEV))
    } else if Path::new("/dev/mqueue").is_dir() {
        Some(mount(
            "/dev/mqueue",
            "bind",
            "/dev/mqueue",
            &["rbind", "nosuid", "noexec", "nodev"],
        ))
    } else {
        None
    }
}

fn sys_mount(pod: &PodContext, privileged: bool) -> Mount {
    let access = if privileged { "rw" } else { "ro" };
    if pod.netns.is_some() {
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", access],
        )
    } else {
        mount(
            "/sys",
            "bind",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", access],
        )
    }
}

fn shm_mount(pod: &PodContext) -> Mount {
    let bind = ["rbind", "nosuid", "noexec", "nodev"];
    match (&pod.shm, &pod.ipcns) {
        (Some(dir), _) => mount("/dev/shm", "bind", dir, &bind),
        (None, None) => mount("/dev/shm", "bind", "/dev/shm", &bind),
        (None, Some(_)) => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
    }
}

/// resolv.conf, hosts and hostname (read-only with a read-only rootfs, as
/// CRI-O), and the termination message file.
fn pod_file_mounts(inputs: &SpecInputs, readonly: bool) -> Vec<Mount> {
    let access = if readonly { "ro" } else { "rw" };
    let pod = inputs.pod;
    let files = [
        ("/etc/resolv.conf", &pod.resolv_conf),
        ("/etc/hosts", &pod.hosts),
        ("/etc/hostname", &pod.hostname_file),
    ];
    let mut list: Vec<Mount> = files
        .into_iter()
        .filter(|(_, source)| !source.as_os_str().is_empty())
        .map(|(dest, source)| {
            mount(
                dest,
                "bind",
                source,
                &["bind", access, "nosuid", "noexec", "nodev"],
            )
        })
        .collect();
    if let Some(log) = inputs.termination_log {
        list.push(mount(
            termination_message_path(inputs.config),
            "bind",
            log,
            &["bind", "rw", "nosuid", "noexec", "nodev"],
        ));
    }
    list
}

/// Where kubelet wants the termination message (its annotation), else its default.
fn termination_message_path(config: &cri::ContainerConfig) -> String {
    config
        .annotations
        .get("io.kubernetes.container.terminationMessagePath")
        .filter(|p| p.starts_with('/'))
        .cloned()
        .unwrap_or_else(|| "/dev/termination-log".to_string())
}

/// An absolute container path, or an error naming what it belongs to.
fn container_path(what: &str, path: &str) -> Result<PathBuf, SpecError> {
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "{what} container path {path:?} is not absolute"
        )));
    }
    Ok(PathBuf::from(path))
}

/// A host path that must exist.
fn existing_host_path(what: &str, path: &str) -> Result<PathBuf, SpecError> {
    if path.is_empty() {
        return Err(invalid(format!("{what} has no host path")));
    }
    match std::fs::metadata(path) {
        Ok(_) => Ok(PathBuf::from(path)),
        Err(e) => Err(invalid(format!(
            "{what} host path {path} cannot be used: {e}"
        ))),
    }
}

/// The CRI mounts as rbinds, sorted so that a parent is mounted before what is below it.
fn cri_mounts(list: &[cri::Mount]) -> Result<Vec<Mount>, SpecError> {
    let mut mounts = list.iter().map(cri_mount).collect::<Result<Vec<_>, _>>()?;
    mounts.sort_by_key(|m| clean(m.destination()).components().count());
    Ok(mounts)
}

fn cri_mount(m: &cri::Mount) -> Result<Mount, SpecError> {
    let dest = container_path("mount", &m.container_path)?;
    if m.host_path.is_empty() && m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
        // The lifecycle resolves image volumes to read-only host paths first.
        return Err(invalid(format!(
            "mount {}: an image volume reached the spec unresolved",
            dest.display()
        )));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(invalid(format!(
            "mount {}: id-mapped mounts are not supported",
            dest.display()
        )));
    }
    let what = format!("mount {}", dest.display());
    let source = existing_host_path(&what, &m.host_path)?;
    let propagation = propagation(m.propagation)?;
    if m.recursive_read_only && (!m.readonly || propagation != "rprivate") {
        return Err(invalid(format!(
            "{what}: recursive_read_only needs readonly and private propagation"
        )));
    }
    let mut options = vec!["rbind", if m.readonly { "ro" } else { "rw" }, propagation];
    if m.recursive_read_only {
        options.push("rro");
    }
    Ok(mount(dest, "bind", source, &options))
}

fn propagation(value: i32) -> Result<&'static str, SpecError> {
    match cri::MountPropagation::try_from(value) {
        Ok(cri::MountPropagation::PropagationPrivate) => Ok("rprivate"),
        Ok(cri::MountPropagation::PropagationHostToContainer) => Ok("rslave"),
        Ok(cri::MountPropagation::PropagationBidirectional) => Ok("rshared"),
        Err(_) => Err(invalid(format!("unknown mount propagation {value}"))),
    }
}

/// A CRI device as a bind mount (mknod is denied in a user namespace),
/// read-only unless its permissions include "w".
fn device_mount(d: &cri::Device) -> Result<Mount, SpecError> {
    let dest = container_path("device", &d.container_path)?;
    let source = existing_host_path(&format!("device {}", dest.display()), &d.host_path)?;
    let permissions = if d.permissions.is_empty() {
        "rwm"
    } else {
        d.permissions.as_str()
    };
    if !permissions.chars().all(|c| "rwm".contains(c)) {
        return Err(invalid(format!(
            "device {}: invalid permissions {permissions:?}",
            dest.display()
        )));
    }
    let access = if permissions.contains('w') {
        "rw"
    } else {
        "ro"
    };
    Ok(mount(
        dest,
        "bind",
        source,
        &["rbind", "nosuid", "noexec", access],
    ))
}

// ---------------------------------------------------------------- annotations

/// The CRI annotations, the CRI names containerd adds, and the image's stop signal.
fn annotations(inputs: &SpecInputs, image: &ImageProcess) -> HashMap<String, String> {
    let mut out = inputs.config.annotations.clone();
    let name = inputs
        .config
        .metadata
        .as_ref()
        .map_or("", |m| m.name.as_str());
    out.insert(
        "io.kubernetes.cri.container-type".into(),
        "container".into(),
    );
    out.insert("io.kubernetes.cri.container-name".into(), name.into());
    if let Some(pod) = &inputs.sandbox.metadata {
        out.insert("io.kubernetes.cri.sandbox-name".into(), pod.name.clone());
        out.insert(
            "io.kubernetes.cri.sandbox-namespace".into(),
            pod.namespace.clone(),
        );
        out.insert("io.kubernetes.cri.sandbox-uid".into(), pod.uid.clone());
    }
    if let Some(signal) = image.stop_signal.as_ref().filter(|s| !s.is_empty()) {
        out.insert("org.opencontainers.image.stopSignal".into(), signal.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::process::Command;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        www:x:33:33:www:/var/www:/bin/false\n\
        alice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nalice:x:1000:\n\
        staff:x:50:alice,bob\naudio:x:29:alice\nvideo:x:44:bob\n";

    /// A container in a pod with its own namespaces, a fixture rootfs and pod files.
    struct Fixture {
        dir: tempfile::TempDir,
        config: cri::ContainerConfig,
        sandbox: cri::PodSandboxConfig,
        image: serde_json::Value,
        pod: PodContext,
        termination_log: Option<PathBuf>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().expect("tempdir");
            let etc = dir.path().join("rootfs/etc");
            std::fs::create_dir_all(&etc).expect("mkdir etc");
            std::fs::write(etc.join("passwd"), PASSWD).expect("passwd");
            std::fs::write(etc.join("group"), GROUP).expect("group");
            let pod = pod_context(dir.path());
            Fixture {
                dir,
                config: container_config(),
                sandbox: sandbox_config(),
                image: json!({"config": {
                    "Entrypoint": ["/entry"], "Cmd": ["--serve"],
                    "Env": ["PATH=/usr/bin:/bin", "LANG=C"], "WorkingDir": "/srv",
                    "StopSignal": "SIGQUIT"
                }}),
                pod,
                termination_log: None,
            }
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn sc(&mut self) -> &mut cri::LinuxContainerSecurityContext {
            let linux = self.config.linux.get_or_insert_with(Default::default);
            linux.security_context.get_or_insert_with(Default::default)
        }

        fn set_privileged(&mut self) {
            self.sc().privileged = true;
            let linux = self.sandbox.linux.get_or_insert_with(Default::default);
            linux
                .security_context
                .get_or_insert_with(Default::default)
                .privileged = true;
        }

        /// hostNetwork + hostIPC: no pinned namespaces, no pod shm.
        fn host_namespaces(&mut self) {
            self.pod.netns = None;
            self.pod.ipcns = None;
            self.pod.utsns = None;
            self.pod.shm = None;
        }

        fn generate(&self) -> Result<Spec, SpecError> {
            let rootfs = self.path("rootfs");
            generate(&SpecInputs {
                config: &self.config,
                sandbox: &self.sandbox,
                image_config: &self.image,
                rootfs: &rootfs,
                pod: &self.pod,
                termination_log: self.termination_log.as_deref(),
                cgroup: None,
            })
        }

        fn spec(&self) -> Spec {
            self.generate().expect("generate")
        }

        fn error(&self) -> String {
            match self.generate() {
                Err(SpecError::InvalidArgument(message)) => message,
                other => panic!("expected InvalidArgument, got {other:?}"),
            }
        }
    }

    fn pod_context(dir: &Path) -> PodContext {
        let pod = dir.join("pod");
        std::fs::create_dir_all(pod.join("shm")).expect("mkdir pod");
        for file in ["resolv.conf", "hosts", "hostname"] {
            std::fs::write(pod.join(file), "").expect("pod file");
        }
        PodContext {
            hostname: "web-0".into(),
            netns: Some(pod.join("ns/net")),
            ipcns: Some(pod.join("ns/ipc")),
            utsns: Some(pod.join("ns/uts")),
            pidns: None,
            host_pid: false,
            userns: None,
            shm: Some(pod.join("shm")),
            resolv_conf: pod.join("resolv.conf"),
            hosts: pod.join("hosts"),
            hostname_file: pod.join("hostname"),
            bypass_receiver: None,
        }
    }

    fn container_config() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(Default::default()),
                resources: None,
            }),
            ..Default::default()
        }
    }

    fn sandbox_config() -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web-0".into(),
                namespace: "default".into(),
                uid: "uid-1".into(),
                attempt: 0,
            }),
            hostname: "web-0".into(),
            linux: Some(Default::default()),
            ..Default::default()
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn process_of(spec: &Spec) -> &Process {
        spec.process().as_ref().expect("process")
    }

    fn linux_of(spec: &Spec) -> &Linux {
        spec.linux().as_ref().expect("linux")
    }

    fn args_of(spec: &Spec) -> Vec<String> {
        process_of(spec).args().clone().expect("args")
    }

    fn env_of(spec: &Spec) -> Vec<String> {
        process_of(spec).env().clone().expect("env")
    }

    fn ids_of(spec: &Spec) -> (u32, u32, Vec<u32>) {
        let user = process_of(spec).user();
        let extra = user.additional_gids().clone().unwrap_or_default();
        (user.uid(), user.gid(), extra)
    }

    fn caps_of(spec: &Spec) -> BTreeSet<String> {
        let caps = process_of(spec)
            .capabilities()
            .clone()
            .expect("capabilities");
        let bounding = caps.bounding().clone().expect("bounding");
        assert_eq!(caps.effective().as_ref(), Some(&bounding));
        assert_eq!(caps.permitted().as_ref(), Some(&bounding));
        bounding.iter().map(|c| c.to_string()).collect()
    }

    fn destinations(spec: &Spec) -> Vec<String> {
        let mounts = spec.mounts().as_ref().expect("mounts");
        mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    fn mount_at<'a>(spec: &'a Spec, dest: &str) -> &'a Mount {
        let mounts = spec.mounts().as_ref().expect("mounts");
        let found = mounts
            .iter()
            .rev()
            .find(|m| m.destination() == Path::new(dest));
        found.unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    fn options_of(m: &Mount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn blocked_syscalls(spec: &Spec) -> Vec<String> {
        let seccomp = linux_of(spec).seccomp().clone().expect("seccomp");
        let rules = seccomp.syscalls().clone().unwrap_or_default();
        rules.iter().flat_map(|r| r.names().clone()).collect()
    }

    fn namespaces_of(spec: &Spec) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        let list = linux_of(spec).namespaces().clone().expect("namespaces");
        list.iter()
            .map(|ns| (ns.typ(), ns.path().clone()))
            .collect()
    }

    // ------------------------------------------------------------ args, env, cwd

    #[test]
    fn args_follow_kubelet_command_and_args_semantics() {
        let mut f = Fixture::new();
        assert_eq!(args_of(&f.spec()), strings(&["/entry", "--serve"]));
        f.config.args = strings(&["--debug"]);
        assert_eq!(args_of(&f.spec()), strings(&["/entry", "--debug"]));
        f.config.command = strings(&["/bin/sh", "-c"]);
        assert_eq!(args_of(&f.spec()), strings(&["/bin/sh", "-c", "--debug"]));
        f.config.args.clear();
        assert_eq!(
            args_of(&f.spec()),
            strings(&["/bin/sh", "-c"]),
            "command drops the image Cmd"
        );
        f.config.command.clear();
        f.image = json!({"config": {"Cmd": null, "Entrypoint": null}});
        assert!(f.error().contains("no command"));
    }

    #[test]
    fn env_merges_image_then_cri_with_defaults() {
        let mut f = Fixture::new();
        f.config.envs = vec![
            cri::KeyValue {
                key: "LANG".into(),
                value: "C.UTF-8".into(),
            },
            cri::KeyValue {
                key: "APP".into(),
                value: "a=b".into(),
            },
        ];
        let expected = [
            "HOSTNAME=web-0",
            "PATH=/usr/bin:/bin",
            "LANG=C.UTF-8",
            "APP=a=b",
        ];
        assert_eq!(env_of(&f.spec()), strings(&expected));

        f.image = json!({"config": {"Cmd": ["/x"]}});
        f.config.tty = true;
        let env = env_of(&f.spec());
        assert!(env.contains(&format!("PATH={DEFAULT_PATH}")), "{env:?}");
        assert!(env.contains(&"TERM=xterm".to_string()), "{env:?}");
        assert_eq!(process_of(&f.spec()).terminal(), Some(true));

        f.config.envs.push(cri::KeyValue {
            key: String::new(),
            value: "x".into(),
        });
        assert!(f.error().contains("environment variable"));
    }

    #[test]
    fn cwd_is_cri_then_image_then_root() {
        let mut f = Fixture::new();
        assert_eq!(process_of(&f.spec()).cwd(), Path::new("/srv"));
        f.config.working_dir = "/work".into();
        assert_eq!(process_of(&f.spec()).cwd(), Path::new("/work"));
        f.config.working_dir.clear();
        f.image = json!({"config": {"Cmd": ["/x"], "WorkingDir": ""}});
        assert_eq!(process_of(&f.spec()).cwd(), Path::new("/"));
        f.config.working_dir = "relative".into();
        assert!(f.error().contains("not an absolute path"));
    }

    // ------------------------------------------------------------ user

    #[test]
    fn user_defaults_to_root() {
        let f = Fixture::new();
        assert_eq!(ids_of(&f.spec()), (0, 0, vec![0]));
    }

    #[test]
    fn user_by_uid_takes_gid_and_groups_from_the_image() {
        let mut f = Fixture::new();
        f.sc().run_as_user = Some(cri::Int64Value { value: 1000 });
        assert_eq!(ids_of(&f.spec()), (1000, 1000, vec![1000, 50, 29]));
        f.sc().run_as_user = Some(cri::Int64Value { value: 4242 });
        assert_eq!(ids_of(&f.spec()), (4242, 0, vec![0]), "unknown uid: gid 0");
        f.sc().run_as_user = Some(cri::Int64Value { value: -1 });
        assert!(f.error().contains("run_as_user"));
    }

    #[test]
    fn user_by_name_and_uid_gid_forms_of_the_image_user() {
        let mut f = Fixture::new();
        let cases = [
            ("www", (33, 33, vec![33])),
            ("1000:44", (1000, 44, vec![44, 50, 29])),
            ("alice:video", (1000, 44, vec![44, 50, 29])),
            ("33:staff", (33, 50, vec![50])),
        ];
        for (user, expected) in cases {
            f.image["config"]["User"] = json!(user);
            assert_eq!(ids_of(&f.spec()), expected, "User {user:?}");
        }
    }

    #[test]
    fn security_context_user_overrides_the_image() {
        let mut f = Fixture::new();
        f.image["config"]["User"] = json!("www:www");
        f.sc().run_as_username = "alice".into();
        assert_eq!(ids_of(&f.spec()), (1000, 1000, vec![1000, 50, 29]));
        f.sc().run_as_group = Some(cri::Int64Value { value: 7 });
        assert_eq!(ids_of(&f.spec()), (1000, 7, vec![7, 50, 29]));
        f.sc().run_as_group = Some(cri::Int64Value { value: -7 });
        assert!(f.error().contains("run_as_group"));
    }

    #[test]
    #[allow(deprecated)]
    fn named_apparmor_profiles_are_refused_and_the_default_accepted() {
        let mut f = Fixture::new();
        f.sc().apparmor = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        let _ = f.spec();
        f.sc().apparmor = Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "my-profile".into(),
        });
        assert!(f.error().contains("AppArmor"), "{}", f.error());
        f.sc().apparmor = None;
        f.sc().apparmor_profile = "localhost/my-profile".into();
        assert!(f.error().contains("AppArmor"), "{}", f.error());
    }

    #[test]
    fn run_as_group_without_a_user_is_rejected() {
        let mut f = Fixture::new();
        f.sc().run_as_group = Some(cri::Int64Value { value: 7 });
        assert!(f.error().contains("needs run_as_user"), "{}", f.error());
    }

    #[test]
    fn supplemental_groups_merge_by_default_and_strict_keeps_only_cri_groups() {
        let mut f = Fixture::new();
        f.sc().run_as_user = Some(cri::Int64Value { value: 1000 });
        f.sc().supplemental_groups = vec![2000, 50];
        assert_eq!(ids_of(&f.spec()), (1000, 1000, vec![1000, 50, 29, 2000]));
        f.sc().supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(ids_of(&f.spec()), (1000, 1000, vec![1000, 2000, 50]));
        f.sc().supplemental_groups = vec![-3];
        assert!(f.error().contains("supplemental_groups"));
    }

    #[test]
    fn unknown_user_or_group_is_an_invalid_argument_naming_it() {
        let mut f = Fixture::new();
        f.image["config"]["User"] = json!("nobody");
        assert!(f.error().contains("\"nobody\""), "{}", f.error());
        f.image["config"]["User"] = json!("alice:nogroup");
        assert!(f.error().contains("\"nogroup\""), "{}", f.error());
        f.image["config"]["User"] = json!("root");
        f.sc().run_as_username = "mallory".into();
        assert!(f.error().contains("\"mallory\""));
    }

    #[test]
    fn symlinked_passwd_or_etc_is_not_followed_out_of_the_rootfs() {
        let mut f = Fixture::new();
        let outside = f.path("host-etc");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("passwd"), "evil:x:4242:4242::/:/bin/sh\n").expect("write");
        std::fs::write(outside.join("group"), "evil:x:4242:\n").expect("write");
        let etc = f.path("rootfs/etc");
        std::fs::remove_file(etc.join("passwd")).expect("rm");
        std::os::unix::fs::symlink(outside.join("passwd"), etc.join("passwd")).expect("symlink");
        f.image["config"]["User"] = json!("evil");
        assert!(f.error().contains("\"evil\""));

        std::fs::remove_dir_all(&etc).expect("rm etc");
        std::os::unix::fs::symlink(&outside, &etc).expect("symlink etc");
        assert!(f.error().contains("\"evil\""));
        f.image["config"]["User"] = json!("4242");
        assert_eq!(
            ids_of(&f.spec()),
            (4242, 0, vec![0]),
            "group file not read either"
        );
    }

    // ------------------------------------------------------------ capabilities

    fn cap_names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn request_caps(f: &mut Fixture, add: &[&str], drop: &[&str]) {
        f.sc().capabilities = Some(cri::Capability {
            add_capabilities: strings(add),
            drop_capabilities: strings(drop),
            add_ambient_capabilities: Vec::new(),
        });
    }

    #[test]
    fn capabilities_default_add_and_drop() {
        let mut f = Fixture::new();
        let defaults = cap_names(&[
            "CHOWN",
            "DAC_OVERRIDE",
            "FSETID",
            "FOWNER",
            "SETGID",
            "SETUID",
            "SETPCAP",
            "NET_BIND_SERVICE",
            "KILL",
        ]);
        assert_eq!(caps_of(&f.spec()), defaults);
        let caps = process_of(&f.spec()).capabilities().clone().expect("caps");
        assert_eq!(caps.inheritable().as_ref().map(|c| c.len()), Some(0));
        assert_eq!(caps.ambient().as_ref().map(|c| c.len()), Some(0));

        request_caps(&mut f, &["NET_ADMIN", "cap_sys_time"], &["CHOWN", "Kill"]);
        let mut expected = defaults.clone();
        expected.extend(cap_names(&["NET_ADMIN", "SYS_TIME"]));
        expected.remove("CHOWN");
        expected.remove("KILL");
        assert_eq!(caps_of(&f.spec()), expected);

        request_caps(&mut f, &["NOT_A_CAP"], &[]);
        assert!(f.error().contains("NOT_A_CAP"));
    }

    #[test]
    fn capabilities_all_in_add_or_drop() {
        let mut f = Fixture::new();
        let all: BTreeSet<String> = all_capabilities()
            .iter()
            .map(|&i| ALL_CAPABILITIES[i].1.to_string())
            .collect();
        assert!(all.len() >= 38, "{all:?}");
        request_caps(&mut f, &["ALL"], &["CHOWN"]);
        let mut expected = all.clone();
        expected.remove("CHOWN");
        assert_eq!(caps_of(&f.spec()), expected);
        request_caps(&mut f, &["KILL"], &["all"]);
        assert_eq!(caps_of(&f.spec()), cap_names(&["KILL"]));
        f.set_privileged();
        assert_eq!(caps_of(&f.spec()), all);
    }

    // ------------------------------------------------------------ privileged, paths, flags

    #[test]
    fn privileged_gets_everything_and_needs_a_privileged_pod() {
        let mut f = Fixture::new();
        f.sc().privileged = true;
        assert!(f.error().contains("privileged"));
        f.set_privileged();
        let spec = f.spec();
        let linux = linux_of(&spec);
        assert_eq!(linux.masked_paths(), &None);
        assert_eq!(linux.readonly_paths(), &None);
        assert_eq!(linux.seccomp(), &None);
        assert!(options_of(mount_at(&spec, "/sys")).contains(&"rw".to_string()));
    }

    #[test]
    fn masked_and_readonly_paths_default_or_come_from_cri() {
        let mut f = Fixture::new();
        let spec = f.spec();
        let masked = linux_of(&spec).masked_paths().clone().expect("masked");
        assert!(
            masked.contains(&"/proc/kcore".to_string())
                && masked.contains(&"/sys/firmware".to_string())
        );
        let readonly = linux_of(&spec).readonly_paths().clone().expect("readonly");
        assert_eq!(readonly, strings(&READONLY_PATHS));
        assert!(options_of(mount_at(&spec, "/sys")).contains(&"ro".to_string()));

        f.sc().masked_paths = strings(&["/proc/only"]);
        f.sc().readonly_paths = strings(&["/proc/ro"]);
        let spec = f.spec();
        assert_eq!(
            linux_of(&spec).masked_paths(),
            &Some(strings(&["/proc/only"]))
        );
        assert_eq!(
            linux_of(&spec).readonly_paths(),
            &Some(strings(&["/proc/ro"]))
        );
    }

    #[test]
    fn no_new_privileges_and_readonly_rootfs() {
        let mut f = Fixture::new();
        let spec = f.spec();
        assert_eq!(process_of(&spec).no_new_privileges(), Some(false));
        assert_eq!(spec.root().as_ref().and_then(|r| r.readonly()), Some(false));
        assert!(options_of(mount_at(&spec, "/etc/resolv.conf")).contains(&"rw".to_string()));
        f.sc().no_new_privs = true;
        f.sc().readonly_rootfs = true;
        let spec = f.spec();
        assert_eq!(process_of(&spec).no_new_privileges(), Some(true));
        let root = spec.root().clone().expect("root");
        assert_eq!(
            (root.path().as_path(), root.readonly()),
            (f.path("rootfs").as_path(), Some(true))
        );
        for dest in ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"] {
            assert!(
                options_of(mount_at(&spec, dest)).contains(&"ro".to_string()),
                "{dest}"
            );
        }
    }

    // ------------------------------------------------------------ seccomp

    #[test]
    fn seccomp_runtime_default_and_unconfined() {
        let mut f = Fixture::new();
        assert_eq!(
            linux_of(&f.spec()).seccomp(),
            &None,
            "no profile means unconfined"
        );
        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        let spec = f.spec();
        let blocked = blocked_syscalls(&spec);
        assert_eq!(blocked, strings(&BLOCKED_SYSCALLS), "RuntimeDefault");
        let seccomp = linux_of(&spec).seccomp().clone().expect("seccomp");
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        let rule = &seccomp.syscalls().clone().expect("rules")[0];
        assert_eq!(
            (rule.action(), rule.errno_ret()),
            (LinuxSeccompAction::ScmpActErrno, Some(1))
        );
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                seccomp.architectures().as_deref(),
                Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
            );
        }

        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        request_caps(&mut f, &["SYS_ADMIN"], &[]);
        let blocked = blocked_syscalls(&f.spec());
        assert!(!blocked.contains(&"mount".to_string()) && blocked.contains(&"ptrace".to_string()));

        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        });
        assert_eq!(linux_of(&f.spec()).seccomp(), &None);
    }

    #[test]
    fn seccomp_localhost_profile_file() {
        let mut f = Fixture::new();
        let profile = f.path("profile.json");
        std::fs::write(
            &profile,
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
               "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
        )
        .expect("write profile");
        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: profile.display().to_string(),
        });
        let seccomp = linux_of(&f.spec()).seccomp().clone().expect("seccomp");
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(blocked_syscalls(&f.spec()), strings(&["read", "write"]));

        std::fs::write(&profile, "{not json").expect("write");
        assert!(f.error().contains("profile.json"));
        let missing = f.path("missing.json").display().to_string();
        f.sc().seccomp.as_mut().expect("profile").localhost_ref = missing.clone();
        assert!(f.error().contains(&missing));
        f.sc().seccomp.as_mut().expect("profile").localhost_ref = "relative.json".into();
        assert!(f.error().contains("absolute"));
    }

    // ------------------------------------------------------------ sysctls

    fn set_sysctls(f: &mut Fixture, list: &[(&str, &str)]) {
        let linux = f.sandbox.linux.get_or_insert_with(Default::default);
        linux.sysctls = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    #[test]
    fn sysctls_only_namespaced_ones() {
        let mut f = Fixture::new();
        assert_eq!(linux_of(&f.spec()).sysctl(), &None);
        set_sysctls(
            &mut f,
            &[
                ("net.ipv4.ip_unprivileged_port_start", "0"),
                ("net/ipv4/conf/eth0.100/forwarding", "1"),
                ("kernel.shm_rmid_forced", "1"),
                ("fs.mqueue.msg_max", "20"),
                ("kernel.sem", "250 32000 32 128"),
            ],
        );
        let sysctl = linux_of(&f.spec()).sysctl().clone().expect("sysctl");
        assert_eq!(sysctl.len(), 5);
        assert_eq!(
            sysctl
                .get("net.ipv4.conf.eth0/100.forwarding")
                .map(String::as_str),
            Some("1")
        );

        set_sysctls(&mut f, &[("kernel.panic", "1")]);
        assert!(f.error().contains("kernel.panic"));
        set_sysctls(&mut f, &[("vm.swappiness", "1")]);
        assert!(f.error().contains("not namespaced"));
    }

    #[test]
    fn sysctls_conflicting_with_host_namespaces_are_rejected() {
        let mut f = Fixture::new();
        f.host_namespaces();
        set_sysctls(&mut f, &[("net.core.somaxconn", "1024")]);
        assert!(f.error().contains("host network"));
        set_sysctls(&mut f, &[("kernel.shmmax", "1")]);
        assert!(f.error().contains("host IPC"));
        f.pod.ipcns = Some(f.path("pod/ns/ipc"));
        assert_eq!(
            linux_of(&f.spec()).sysctl().as_ref().map(|s| s.len()),
            Some(1)
        );
    }

    // ------------------------------------------------------------ mounts

    fn cri_mount(
        container: &str,
        host: &Path,
        readonly: bool,
        propagation: cri::MountPropagation,
    ) -> cri::Mount {
        cri::Mount {
            container_path: container.into(),
            host_path: host.display().to_string(),
            readonly,
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    #[test]
    fn runtime_and_pod_mounts_come_first_in_order() {
        let f = Fixture::new();
        let spec = f.spec();
        let expected = [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/dev/shm",
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/hostname",
        ];
        assert_eq!(destinations(&spec), strings(&expected));
        assert_eq!(mount_at(&spec, "/proc").typ().as_deref(), Some("proc"));
        assert_eq!(mount_at(&spec, "/sys").typ().as_deref(), Some("sysfs"));
        assert_eq!(
            mount_at(&spec, "/dev/mqueue").typ().as_deref(),
            Some("mqueue")
        );
        let pts = options_of(mount_at(&spec, "/dev/pts"));
        assert!(
            pts.contains(&"newinstance".to_string()) && !pts.iter().any(|o| o.starts_with("gid="))
        );
        let shm = mount_at(&spec, "/dev/shm");
        assert_eq!(shm.source().as_deref(), Some(f.path("pod/shm").as_path()));
        let hosts = mount_at(&spec, "/etc/hosts");
        assert_eq!(
            hosts.source().as_deref(),
            Some(f.path("pod/hosts").as_path())
        );
    }

    #[test]
    fn cri_mounts_are_sorted_rbinds_with_access_and_propagation() {
        let mut f = Fixture::new();
        let data = f.path("data");
        std::fs::create_dir_all(data.join("sub")).expect("mkdir");
        f.config.mounts = vec![
            cri_mount(
                "/data/sub",
                &data.join("sub"),
                true,
                cri::MountPropagation::PropagationPrivate,
            ),
            cri_mount(
                "/data",
                &data,
                false,
                cri::MountPropagation::PropagationHostToContainer,
            ),
        ];
        f.config.mounts[0].recursive_read_only = true;
        let spec = f.spec();
        let dests = destinations(&spec);
        assert_eq!(
            &dests[dests.len() - 2..],
            &strings(&["/data", "/data/sub"])[..]
        );
        assert_eq!(
            options_of(mount_at(&spec, "/data")),
            strings(&["rbind", "rw", "rslave"])
        );
        assert_eq!(
            options_of(mount_at(&spec, "/data/sub")),
            strings(&["rbind", "ro", "rprivate", "rro"])
        );
        assert_eq!(
            linux_of(&spec).rootfs_propagation().as_deref(),
            Some("rslave")
        );

        f.config.mounts[1].propagation = cri::MountPropagation::PropagationBidirectional as i32;
        let spec = f.spec();
        assert!(options_of(mount_at(&spec, "/data")).contains(&"rshared".to_string()));
        assert_eq!(
            linux_of(&spec).rootfs_propagation().as_deref(),
            Some("rshared")
        );
    }

    #[test]
    fn cri_mount_errors_name_the_mount() {
        let mut f = Fixture::new();
        let missing = f.path("missing");
        f.config.mounts = vec![cri_mount(
            "/m",
            &missing,
            false,
            cri::MountPropagation::PropagationPrivate,
        )];
        assert!(f.error().contains(&missing.display().to_string()));
        let data = f.path("pod");
        f.config.mounts = vec![cri_mount(
            "relative/m",
            &data,
            false,
            cri::MountPropagation::PropagationPrivate,
        )];
        assert!(f.error().contains("\"relative/m\""));
        f.config.mounts = vec![cri_mount(
            "/m",
            &data,
            false,
            cri::MountPropagation::PropagationPrivate,
        )];
        f.config.mounts[0].recursive_read_only = true;
        assert!(f.error().contains("recursive_read_only"));
        f.config.mounts[0].recursive_read_only = false;
        f.config.mounts[0].propagation = 7;
        assert!(f.error().contains("propagation"));
    }

    #[test]
    fn cri_mounts_replace_default_ones_at_the_same_place() {
        let mut f = Fixture::new();
        let hosts = f.path("kubelet-hosts");
        std::fs::write(&hosts, "").expect("write");
        f.config.mounts = vec![cri_mount(
            "/etc/hosts",
            &hosts,
            false,
            cri::MountPropagation::PropagationPrivate,
        )];
        let spec = f.spec();
        assert_eq!(
            destinations(&spec)
                .iter()
                .filter(|d| *d == "/etc/hosts")
                .count(),
            1
        );
        assert_eq!(
            mount_at(&spec, "/etc/hosts").source().as_deref(),
            Some(hosts.as_path())
        );

        let dev = f.path("pod");
        f.config.mounts = vec![cri_mount(
            "/dev",
            &dev,
            false,
            cri::MountPropagation::PropagationPrivate,
        )];
        let dests = destinations(&f.spec());
        assert!(!dests.iter().any(|d| d.starts_with("/dev/")), "{dests:?}");
    }

    #[test]
    fn termination_log_is_bound_where_kubelet_asks() {
        let mut f = Fixture::new();
        let log = f.path("termination-log");
        std::fs::write(&log, "").expect("write");
        f.termination_log = Some(log.clone());
        assert_eq!(
            mount_at(&f.spec(), "/dev/termination-log")
                .source()
                .as_deref(),
            Some(log.as_path())
        );
        f.config.annotations.insert(
            "io.kubernetes.container.terminationMessagePath".into(),
            "/tmp/done".into(),
        );
        assert_eq!(
            mount_at(&f.spec(), "/tmp/done").source().as_deref(),
            Some(log.as_path())
        );
    }

    #[test]
    fn devices_are_bind_mounts_with_their_access() {
        let mut f = Fixture::new();
        f.config.devices = vec![
            cri::Device {
                container_path: "/dev/rnull".into(),
                host_path: "/dev/null".into(),
                permissions: "r".into(),
            },
            cri::Device {
                container_path: "/dev/wzero".into(),
                host_path: "/dev/zero".into(),
                permissions: "rwm".into(),
            },
        ];
        let spec = f.spec();
        let rnull = mount_at(&spec, "/dev/rnull");
        assert_eq!(
            (rnull.typ().as_deref(), rnull.source().as_deref()),
            (Some("bind"), Some(Path::new("/dev/null")))
        );
        assert!(options_of(rnull).contains(&"ro".to_string()));
        assert!(options_of(mount_at(&spec, "/dev/wzero")).contains(&"rw".to_string()));
        assert_eq!(linux_of(&spec).devices(), &None);

        f.config.devices[0].permissions = "rx".into();
        assert!(f.error().contains("permissions"));
        f.config.devices[0].permissions = "r".into();
        f.config.devices[0].host_path = "/dev/no-such-device".into();
        assert!(f.error().contains("/dev/no-such-device"));
    }

    // ------------------------------------------------------------ namespaces

    #[test]
    fn namespaces_of_a_normal_pod() {
        let mut f = Fixture::new();
        let spec = f.spec();
        let expected = vec![
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::Ipc, Some(f.path("pod/ns/ipc"))),
            (LinuxNamespaceType::Uts, Some(f.path("pod/ns/uts"))),
            (LinuxNamespaceType::Network, Some(f.path("pod/ns/net"))),
        ];
        assert_eq!(namespaces_of(&spec), expected);
        assert_eq!(spec.hostname().as_deref(), Some("web-0"));
        let linux = linux_of(&spec);
        assert_eq!((linux.uid_mappings(), linux.gid_mappings()), (&None, &None));

        f.pod.pidns = Some(f.path("pod/ns/pid"));
        let pid = namespaces_of(&f.spec())[1].clone();
        assert_eq!(pid, (LinuxNamespaceType::Pid, Some(f.path("pod/ns/pid"))));
    }

    #[test]
    fn host_namespaces_bind_sys_proc_shm_and_set_no_hostname() {
        let mut f = Fixture::new();
        f.host_namespaces();
        f.pod.host_pid = true;
        let spec = f.spec();
        assert_eq!(
            namespaces_of(&spec),
            vec![(LinuxNamespaceType::Mount, None)]
        );
        assert_eq!(spec.hostname(), &None);
        for (dest, source) in [
            ("/sys", "/sys"),
            ("/proc", "/proc"),
            ("/dev/shm", "/dev/shm"),
        ] {
            let m = mount_at(&spec, dest);
            assert_eq!(
                (m.typ().as_deref(), m.source().as_deref()),
                (Some("bind"), Some(Path::new(source)))
            );
            assert!(options_of(m).contains(&"rbind".to_string()), "{dest}");
        }
        assert!(options_of(mount_at(&spec, "/sys")).contains(&"ro".to_string()));
        let has_mqueue = destinations(&spec).contains(&"/dev/mqueue".to_string());
        assert_eq!(has_mqueue, Path::new("/dev/mqueue").is_dir());
        assert!(!env_of(&spec).is_empty());
    }

    // ------------------------------------------------------------ rootless, validation

    #[test]
    fn rootless_spec_has_no_cgroups_and_keeps_only_a_raisable_oom_score() {
        let mut f = Fixture::new();
        f.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 1000,
            ..Default::default()
        });
        f.sandbox
            .linux
            .get_or_insert_with(Default::default)
            .cgroup_parent = "kubepods.slice".into();
        let spec = f.spec();
        let linux = linux_of(&spec);
        assert_eq!((linux.resources(), linux.cgroups_path()), (&None, &None));
        assert_eq!(process_of(&spec).oom_score_adj(), Some(1000));
        assert_eq!(process_of(&spec).rlimits(), &None);

        f.config
            .linux
            .as_mut()
            .and_then(|l| l.resources.as_mut())
            .expect("resources")
            .oom_score_adj = -1000;
        let expected = (current_oom_score_adj() <= -1000).then_some(-1000);
        assert_eq!(process_of(&f.spec()).oom_score_adj(), expected);
    }

    #[test]
    fn invalid_requests_are_rejected() {
        let mut f = Fixture::new();
        f.config.metadata = None;
        assert!(f.error().contains("metadata"));
        f.config.metadata = Some(cri::ContainerMetadata {
            name: String::new(),
            attempt: 0,
        });
        assert!(f.error().contains("metadata"));
        f.config.metadata = Some(cri::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        });
        let resources = cri::LinuxContainerResources {
            cpu_period: -5,
            ..Default::default()
        };
        f.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(resources);
        assert!(f.error().contains("cpu_period"));
        let resources = cri::LinuxContainerResources {
            oom_score_adj: 1001,
            ..Default::default()
        };
        f.config
            .linux
            .get_or_insert_with(Default::default)
            .resources = Some(resources);
        assert!(f.error().contains("oom_score_adj"));
        f.config.linux = None;
        std::fs::remove_dir_all(f.path("rootfs")).expect("rm rootfs");
        assert!(matches!(f.generate(), Err(SpecError::NotFound(_))));
    }

    #[test]
    fn annotations_carry_cri_names_and_the_stop_signal() {
        let mut f = Fixture::new();
        f.config.annotations.insert("team".into(), "a".into());
        let annotations = f.spec().annotations().clone().expect("annotations");
        let get = |k: &str| annotations.get(k).map(String::as_str);
        assert_eq!(get("team"), Some("a"));
        assert_eq!(get("io.kubernetes.cri.container-name"), Some("app"));
        assert_eq!(get("io.kubernetes.cri.sandbox-namespace"), Some("default"));
        assert_eq!(get("org.opencontainers.image.stopSignal"), Some("SIGQUIT"));
    }

    // ------------------------------------------------------------ crun

    fn require_crun_prerequisites() {
        for tool in ["crun", "unshare", "mountpoint"] {
            let found = Command::new("sh")
                .arg("-c")
                .arg("command -v \"$0\"")
                .arg(tool)
                .output();
            let found = found.is_ok_and(|o| o.status.success());
            assert!(found, "prerequisite missing: {tool}");
        }
        let busybox = Path::new("/bin/busybox").is_file();
        assert!(
            busybox,
            "prerequisite missing: /bin/busybox (busybox-static)"
        );
    }

    /// A busybox rootfs whose container runs `check` with `sh -c`.
    fn crun_fixture(check: &str) -> Fixture {
        let mut f = Fixture::new();
        let rootfs = f.path("rootfs");
        for dir in ["bin", "proc", "dev", "sys", "tmp", "mnt/vol"] {
            std::fs::create_dir_all(rootfs.join(dir)).expect("mkdir");
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy busybox");
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
        std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").expect("group");
        for file in ["resolv.conf", "hosts", "hostname"] {
            std::fs::write(rootfs.join("etc").join(file), "").expect("mount point");
        }
        f.image = json!({"config": {"Cmd": ["/bin/busybox", "sh", "-c", check]}});
        f
    }

    /// Runs the fixture's spec with crun inside a fresh user (root mapped to
    /// the caller) and mount namespace, after `setup` there; returns stdout.
    fn run_with_crun(f: &Fixture, setup: &str) -> String {
        require_crun_prerequisites();
        let bundle = f.path("bundle");
        std::fs::create_dir_all(&bundle).expect("mkdir bundle");
        let json = serde_json::to_string_pretty(&f.spec()).expect("serialize");
        std::fs::write(bundle.join("config.json"), &json).expect("write config.json");
        // crun refuses cgroup v1 "hybrid" hosts until the cgroup2 mount is covered.
        let script = format!(
            "if mountpoint -q /sys/fs/cgroup/unified; then \
               mount -t tmpfs -o ro tmpfs /sys/fs/cgroup/unified || exit 97; fi; \
             {setup} \
             exec crun --root \"$1\" run --bundle \"$2\" \"$3\""
        );
        let output = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--", "sh", "-c"])
            .args([script.as_str(), "sh"])
            .arg(f.path("crun-root"))
            .arg(&bundle)
            .arg(format!("spec-test-{}", std::process::id()))
            .arg(f.path("pod/ns"))
            .output()
            .expect("run unshare");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let status = output.status;
        assert!(
            status.success(),
            "crun failed ({status}): {stderr}\nconfig.json:\n{json}"
        );
        assert!(!stderr.contains("unknown seccomp syscall"), "{stderr}");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// Host namespaces (no pinned files needed): the rro volume and the
    /// rootfs are read-only, the device is there, the seccomp filter loaded.
    #[test]
    fn crun_runs_the_spec_of_a_host_namespace_container() {
        let check = "/bin/busybox touch /mnt/vol/x 2>/dev/null && exit 3; \
            test -c /dev/xnull || exit 4; \
            /bin/busybox touch /x 2>/dev/null && exit 6; \
            /bin/busybox grep -q '^Seccomp:[[:space:]]*2' /proc/self/status || exit 5; \
            echo spec-ok";
        let mut f = crun_fixture(check);
        f.host_namespaces();
        f.sc().readonly_rootfs = true;
        f.sc().seccomp = Some(cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        });
        let vol = f.path("vol");
        std::fs::create_dir_all(&vol).expect("mkdir vol");
        let private = cri::MountPropagation::PropagationPrivate;
        let mut volume = cri_mount("/mnt/vol", &vol, true, private);
        volume.recursive_read_only = true;
        f.config.mounts = vec![volume];
        f.config.devices = vec![cri::Device {
            container_path: "/dev/xnull".into(),
            host_path: "/dev/null".into(),
            permissions: "r".into(),
        }];
        assert_eq!(run_with_crun(&f, ""), "spec-ok");
    }

    /// Pinned pod namespaces: fresh sysfs and mqueue, the pod hostname, the
    /// pod's /dev/shm, and namespaced sysctls applied.
    #[test]
    fn crun_runs_the_spec_of_a_pod_container() {
        let check = "test \"$(/bin/busybox hostname)\" = web-0 || exit 3; \
            /bin/busybox grep -q ' /sys sysfs ' /proc/mounts || exit 4; \
            /bin/busybox grep -q ' /dev/mqueue mqueue ' /proc/mounts || exit 5; \
            test -e /dev/shm/pod-marker || exit 6; \
            port=$(/bin/busybox cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
            test \"$port\" = 0 || exit 7; \
            echo pod-ok";
        let mut f = crun_fixture(check);
        std::fs::write(f.path("pod/shm/pod-marker"), "").expect("marker");
        std::fs::create_dir_all(f.path("pod/ns")).expect("mkdir ns");
        for ns in ["net", "ipc", "uts"] {
            std::fs::write(f.path("pod/ns").join(ns), "").expect("ns file");
        }
        set_sysctls(&mut f, &[("net.ipv4.ip_unprivileged_port_start", "0")]);
        let pin = "unshare --net=\"$4/net\" --ipc=\"$4/ipc\" --uts=\"$4/uts\" true || exit 98;";
        assert_eq!(run_with_crun(&f, pin), "pod-ok");
    }
}
