//! The daemon configuration: built-in defaults, then `ucri.toml`, then the
//! `ucri.toml.d/*.toml` drop-ins in name order, then command-line flags
//! (each with an environment variable).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is not valid TOML or has unknown keys or wrong types.
    #[error("{path}: {message}")]
    Invalid {
        /// The file (or "merged configuration").
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No home directory could be determined for the default paths.
    #[error("cannot determine the home directory for default paths; set HOME")]
    NoHome,
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the daemon listens and keeps its files.
    pub daemon: DaemonConfig,
    /// OCI runtimes and the container monitor.
    pub runtime: RuntimeConfig,
    /// Image and container storage.
    pub storage: StorageConfig,
    /// Pod networking.
    pub network: NetworkConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The streaming server (Exec, Attach, PortForward).
    pub streaming: StreamingConfig,
    /// What a kubelet in the daemon's namespaces needs of the node.
    #[serde(default)]
    pub node: NodeConfig,
    /// Limits on what registries and image archives send.
    #[serde(default)]
    pub image: ImageLimits,
}

/// `[image]`: limits on images, which are untrusted input. A pull that
/// exceeds one fails with RESOURCE_EXHAUSTED naming the key.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ImageLimits {
    /// Largest manifest or index, in bytes (containers/image: 4 MiB).
    pub manifest_max: u64,
    /// Largest image config, in bytes (containers/image: 4 MiB).
    pub config_max: u64,
    /// Most layers in one image. Kernel overlayfs takes its lower layers
    /// in one page of mount options, about 170 of ucri's layer links.
    pub layers_max: u64,
    /// Largest layer once uncompressed, in bytes.
    pub layer_size_max: u64,
    /// Most entries (files, directories, links) in one layer.
    pub layer_entries_max: u64,
}

impl Default for ImageLimits {
    fn default() -> ImageLimits {
        ImageLimits {
            manifest_max: 4 << 20,
            config_max: 4 << 20,
            layers_max: 128,
            layer_size_max: 64 << 30,
            layer_entries_max: 4_000_000,
        }
    }
}

/// `[node]`: the node directories a rootless kubelet writes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Paths made writable in the daemon's mount namespace (where `ucri
    /// nsenter` runs kubelet), each backed by `DATA_DIR/node/<path>`, e.g.
    /// `["/var/lib/kubelet", "/var/log/pods", "/var/log/containers"]`.
    #[serde(default)]
    pub writable: Vec<PathBuf>,
    /// The node's address (its InternalIP), assigned inside the node
    /// namespace so kubelet takes it as `--node-ip`: `"auto"` (the host's
    /// own address, that of its default route), an IP address, or `"none"`.
    #[serde(default = "default_node_address")]
    pub address: String,
    /// TCP ports published on the host and forwarded to the node
    /// namespace's loopback: the ports the control plane dials, e.g.
    /// kubelet's `[10250]`.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// TCP ports of the host's loopback that also answer on the node
    /// namespace's 127.0.0.1, e.g. an API server's `[6443]`.
    #[serde(default)]
    pub host_loopback_ports: Vec<u16>,
}

impl Default for NodeConfig {
    fn default() -> NodeConfig {
        NodeConfig {
            writable: Vec::new(),
            address: default_node_address(),
            ports: Vec::new(),
            host_loopback_ports: Vec::new(),
        }
    }
}

fn default_node_address() -> String {
    "auto".into()
}

impl NodeConfig {
    /// The node's address as configured: `Ok(None)` for `"none"` (or
    /// `"auto"` on a host without a default route).
    pub fn resolved_address(&self) -> Result<Option<std::net::IpAddr>, String> {
        match self.address.as_str() {
            "auto" => Ok(ucri_net::node::host_address()),
            "none" => Ok(None),
            other => other.parse().map(Some).map_err(|_| {
                format!("[node] address {other:?} is not \"auto\", \"none\" or an IP address")
            }),
        }
    }
}

/// `[streaming]`: where `kubectl exec`/`attach`/`port-forward` streams go.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamingConfig {
    /// The address to listen on (a loopback address: the URLs carry no TLS).
    pub address: std::net::IpAddr,
    /// The port (0 picks a free one at start).
    pub port: u16,
    /// Also listen on the same address and port inside the uplink network
    /// namespace, where a rootless kubelet runs (usernetes).
    pub in_uplink: bool,
    /// How long a streaming URL stays valid, in seconds (it works once).
    pub url_ttl_seconds: u64,
    /// Most streaming connections served at once, on all its listeners;
    /// never more than an eighth of the open-file limit (any local user can
    /// connect to the port).
    #[serde(default = "default_streaming_connections")]
    pub max_connections: u64,
}

fn default_streaming_connections() -> u64 {
    256
}

/// `[metrics]`: an optional Prometheus endpoint (off by default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`.
    pub enabled: bool,
    /// Where (`HOST:PORT`; port 0 picks one and logs it).
    pub address: String,
}

/// `[daemon]`: socket, directories, logging.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// The CRI socket (kubelet's `--container-runtime-endpoint`).
    pub socket: PathBuf,
    /// Run-time files: lock, pid files, holder record.
    pub runtime_dir: PathBuf,
    /// Persistent data: images, containers, state.
    pub data_dir: PathBuf,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    pub log_level: String,
    /// Allow running as real root on the host (no user namespace).
    pub allow_root: bool,
    /// Seconds in-flight RPCs get to finish after SIGTERM.
    pub shutdown_grace_seconds: u64,
    /// Most CRI connections served at once; more wait in the socket's
    /// backlog. Never more than a quarter of the open-file limit, so that
    /// clients cannot take the descriptors pods and monitors need.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
}

fn default_max_connections() -> u64 {
    512
}

/// `[runtime]`: the OCI runtimes (runtime handlers) and conmon.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The handler used when a pod names none.
    pub default_runtime: String,
    /// The conmon binary (name looked up in PATH, or a path).
    pub conmon: PathBuf,
    /// The cgroup driver reported to kubelet.
    pub cgroup_driver: CgroupDriver,
    /// Largest container log file in bytes before conmon truncates it
    /// (-1: no limit; kubelet's rotation usually keeps logs smaller).
    pub log_size_max: i64,
    /// Named OCI runtimes, like crio.conf's `[crio.runtime.runtimes]`.
    pub runtimes: BTreeMap<String, RuntimeHandler>,
    /// The delegated cgroup v1 subtree's name in each hierarchy
    /// ("": `ucri-$USER`, as `setup-host.sh --delegate-cgroups` makes it).
    pub cgroup_parent: String,
    /// Most processes per container when cgroups are delegated (0: no limit),
    /// like crio.conf's `pids_limit`.
    pub pids_limit: i64,
    /// Most bytes of stdout and of stderr an ExecSync returns; what a
    /// command prints beyond is dropped, and stderr says so. Both together
    /// stay under kubelet's 16 MiB message limit.
    #[serde(default = "default_exec_sync_output_max")]
    pub exec_sync_output_max: u64,
}

fn default_exec_sync_output_max() -> u64 {
    4 << 20
}

/// One named OCI runtime.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeHandler {
    /// The runtime binary (name looked up in PATH, or a path).
    pub path: PathBuf,
}

/// Which cgroup driver kubelet must use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Cgroups managed directly through cgroupfs.
    Cgroupfs,
    /// Cgroups managed through systemd.
    Systemd,
}

/// `[storage]`: where and how container root filesystems are made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `auto`, `overlay`, `fuse-overlayfs` or `vfs`.
    pub driver: StorageDriver,
}

/// The container root filesystem driver.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StorageDriver {
    /// Kernel overlay when a probe mount works, else fuse-overlayfs, else vfs.
    Auto,
    /// Kernel overlayfs with `userxattr`.
    Overlay,
    /// fuse-overlayfs.
    FuseOverlayfs,
    /// Full copies.
    Vfs,
}

/// `[network]`: the uplink and CNI.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `slirp4netns`, `pasta` or `none`.
    pub uplink: Uplink,
    /// Directory of CNI `.conflist` files.
    pub cni_config_dir: PathBuf,
    /// Directories searched for CNI plugins.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// MTU of the uplink's TAP device (and of the default CNI bridge).
    pub mtu: u32,
    /// Let pods reach the host's loopback through the uplink's gateway
    /// (slirp4netns: 10.0.2.2; pasta: the host's default gateway address).
    pub allow_host_loopback: bool,
    /// How often every attached pod gets a CNI CHECK in the background
    /// (verbose PodSandboxStatus shows the latest result), in seconds.
    #[serde(default = "default_cni_check_seconds")]
    pub cni_check_seconds: u64,
    /// Pod connections to destinations off the node get a socket made in
    /// the host's network namespace (seccomp user notification) instead of
    /// going through the uplink helper. A pod opts out with the annotation
    /// `ucri.io/socket-bypass: "false"`.
    #[serde(default = "default_socket_bypass")]
    pub socket_bypass: bool,
    /// Networks that never take the bypass besides loopback, link-local,
    /// the pod network and the uplink's own addresses: the cluster's
    /// service network and pod networks of other nodes.
    #[serde(default = "default_bypass_keep")]
    pub bypass_keep: Vec<ucri_net::bypass::Cidr>,
}

fn default_socket_bypass() -> bool {
    true
}

fn default_bypass_keep() -> Vec<ucri_net::bypass::Cidr> {
    ["10.96.0.0/12", "10.244.0.0/16"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

fn default_cni_check_seconds() -> u64 {
    60
}

/// How the uplink namespace reaches the outside (`slirp4netns`, `pasta`, `none`).
pub use ucri_net::uplink::UplinkKind as Uplink;

/// The user's standard directories.
#[derive(Debug, Clone)]
pub struct UserDirs {
    /// `~/.config/ucri`.
    pub config_dir: PathBuf,
    /// `~/.local/share/ucri`.
    pub data_dir: PathBuf,
    /// `$XDG_RUNTIME_DIR/ucri`.
    pub runtime_dir: PathBuf,
}

impl UserDirs {
    /// Resolves the XDG directories of the current user. Without
    /// `XDG_RUNTIME_DIR`, `/run/user/UID` is used when it is the user's,
    /// else `/tmp/ucri-run-UID`.
    pub fn discover() -> Result<UserDirs, ConfigError> {
        let base = directories::BaseDirs::new().ok_or(ConfigError::NoHome)?;
        let runtime_base = base
            .runtime_dir()
            .map(Path::to_path_buf)
            .unwrap_or_else(fallback_runtime_base);
        Ok(UserDirs {
            config_dir: base.config_dir().join("ucri"),
            data_dir: base.data_dir().join("ucri"),
            runtime_dir: runtime_base.join("ucri"),
        })
    }
}

fn fallback_runtime_base() -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::getuid().as_raw();
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    match std::fs::metadata(&run_user) {
        Ok(m) if m.uid() == uid => run_user,
        _ => PathBuf::from(format!("/tmp/ucri-run-{uid}")),
    }
}

impl Config {
    /// The built-in defaults for `dirs`.
    pub fn defaults(dirs: &UserDirs) -> Config {
        let runtimes = [("crun", "crun"), ("runc", "runc")]
            .into_iter()
            .map(|(name, bin)| (name.to_owned(), RuntimeHandler { path: bin.into() }))
            .collect();
        Config {
            daemon: DaemonConfig {
                socket: dirs.runtime_dir.join("ucri.sock"),
                runtime_dir: dirs.runtime_dir.clone(),
                data_dir: dirs.data_dir.clone(),
                log_level: "info".into(),
                allow_root: false,
                shutdown_grace_seconds: 10,
                max_connections: default_max_connections(),
            },
            runtime: RuntimeConfig {
                default_runtime: "crun".into(),
                conmon: "conmon".into(),
                cgroup_driver: CgroupDriver::Cgroupfs,
                log_size_max: -1,
                exec_sync_output_max: default_exec_sync_output_max(),
                cgroup_parent: String::new(),
                pids_limit: 0,
                runtimes,
            },
            storage: StorageConfig {
                driver: StorageDriver::Auto,
            },
            network: NetworkConfig {
                uplink: Uplink::Slirp4netns,
                cni_config_dir: dirs.config_dir.join("cni/net.d"),
                cni_plugin_dirs: vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
                mtu: 65520,
                allow_host_loopback: false,
                cni_check_seconds: default_cni_check_seconds(),
                socket_bypass: default_socket_bypass(),
                bypass_keep: default_bypass_keep(),
            },
            metrics: MetricsConfig {
                enabled: false,
                address: "127.0.0.1:9090".into(),
            },
            streaming: StreamingConfig {
                address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                port: 0,
                in_uplink: true,
                url_ttl_seconds: 60,
                max_connections: default_streaming_connections(),
            },
            node: NodeConfig::default(),
            image: ImageLimits::default(),
        }
    }

    /// Loads defaults, then `main_file` (when it exists), then its drop-in
    /// directory `<main_file>.d/*.toml` in name order.
    pub fn load(dirs: &UserDirs, main_file: &Path) -> Result<Config, ConfigError> {
        let mut merged = to_table(&Config::defaults(dirs))?;
        let mut config = Config::defaults(dirs);
        for file in config_files(main_file)? {
            merge_tables(&mut merged, read_table(&file)?);
            // Deserializing after each file blames the file that broke it.
            config = toml::Value::Table(merged.clone())
                .try_into()
                .map_err(|e: toml::de::Error| invalid(&file, e.message()))?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks cross-field rules that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self
            .runtime
            .runtimes
            .contains_key(&self.runtime.default_runtime)
        {
            let known: Vec<_> = self.runtime.runtimes.keys().cloned().collect();
            return Err(invalid(
                "merged configuration",
                &format!(
                    "runtime.default_runtime {:?} is not one of runtime.runtimes {known:?}",
                    self.runtime.default_runtime
                ),
            ));
        }
        if self.runtime.cgroup_driver == CgroupDriver::Systemd {
            // Refused rather than reported: containers are placed with
            // cgroupfs paths in a delegated subtree whatever this says.
            return Err(invalid(
                "merged configuration",
                "runtime.cgroup_driver = \"systemd\" is not supported: ucri places containers \
                 in a delegated subtree with cgroupfs paths; use \"cgroupfs\" (kubelet's \
                 cgroupDriver must match)",
            ));
        }
        if !matches!(self.node.address.as_str(), "auto" | "none")
            && self.node.address.parse::<std::net::IpAddr>().is_err()
        {
            return Err(invalid(
                "merged configuration",
                &format!(
                    "node.address {:?} is not \"auto\", \"none\" or an IP address",
                    self.node.address
                ),
            ));
        }
        if self.node.ports.contains(&0) || self.node.host_loopback_ports.contains(&0) {
            return Err(invalid(
                "merged configuration",
                "node.ports and node.host_loopback_ports take port numbers from 1 to 65535",
            ));
        }
        Ok(())
    }

    /// The configuration as TOML, every default included.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn invalid(path: impl Into<PathBuf>, message: &str) -> ConfigError {
    ConfigError::Invalid {
        path: path.into(),
        message: message.trim().to_owned(),
    }
}

fn to_table(config: &Config) -> Result<toml::Table, ConfigError> {
    toml::Table::try_from(config).map_err(|e| invalid("defaults", &e.to_string()))
}

/// The main file (if present) followed by its drop-ins in name order.
pub fn config_files(main_file: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let mut files = Vec::new();
    if main_file.exists() {
        files.push(main_file.to_owned());
    }
    let dropin_dir = PathBuf::from(format!("{}.d", main_file.display()));
    let entries = match std::fs::read_dir(&dropin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(source) => {
            return Err(ConfigError::Read {
                path: dropin_dir,
                source,
            })
        }
    };
    let mut dropins: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    dropins.sort();
    files.extend(dropins);
    Ok(files)
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| invalid(path, &e.to_string()))
}

/// Deep-merges `overlay` into `base`: tables merge key by key, anything else
/// (including arrays) replaces.
pub fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(root: &Path) -> UserDirs {
        UserDirs {
            config_dir: root.join("config/ucri"),
            data_dir: root.join("data/ucri"),
            runtime_dir: root.join("run/ucri"),
        }
    }

    #[test]
    fn the_systemd_cgroup_driver_is_refused_not_just_reported() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let main = d.config_dir.join("ucri.toml");
        std::fs::create_dir_all(&d.config_dir).expect("mkdir");
        std::fs::write(&main, "[runtime]\ncgroup_driver = \"systemd\"\n").expect("write");
        let err = Config::load(&d, &main).expect_err("systemd");
        assert!(err.to_string().contains("cgroup_driver"), "{err}");
    }

    #[test]
    fn a_bad_node_address_or_port_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let main = d.config_dir.join("ucri.toml");
        std::fs::create_dir_all(&d.config_dir).expect("mkdir");
        std::fs::write(&main, "[node]\naddress = \"my-host\"\n").expect("write");
        let err = Config::load(&d, &main).expect_err("a name is not an address");
        assert!(err.to_string().contains("node.address"), "{err}");
        std::fs::write(&main, "[node]\nports = [0]\n").expect("write");
        let err = Config::load(&d, &main).expect_err("port 0");
        assert!(err.to_string().contains("node.ports"), "{err}");
        std::fs::write(&main, "[node]\naddress = \"192.0.2.7\"\nports = [10250]\n").expect("write");
        let c = Config::load(&d, &main).expect("an address and a port");
        assert_eq!(
            c.node.resolved_address().expect("address"),
            Some("192.0.2.7".parse().expect("ip"))
        );
    }

    #[test]
    fn defaults_alone_when_no_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let c = Config::load(&d, &d.config_dir.join("ucri.toml")).expect("load");
        assert_eq!(c, Config::defaults(&d));
        assert_eq!(c.daemon.socket, tmp.path().join("run/ucri/ucri.sock"));
    }

    #[test]
    fn file_then_dropins_in_name_order_override_deeply() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let main = d.config_dir.join("ucri.toml");
        std::fs::create_dir_all(d.config_dir.join("ucri.toml.d")).expect("mkdir");
        std::fs::write(
            &main,
            "[daemon]\nlog_level = \"debug\"\n[network]\nuplink = \"pasta\"\n",
        )
        .expect("write");
        std::fs::write(
            d.config_dir.join("ucri.toml.d/20-b.toml"),
            "[daemon]\nlog_level = \"trace\"\n",
        )
        .expect("write");
        std::fs::write(
            d.config_dir.join("ucri.toml.d/10-a.toml"),
            "[daemon]\nlog_level = \"warn\"\nallow_root = true\n[runtime.runtimes.youki]\npath = \"/usr/bin/youki\"\n",
        )
        .expect("write");
        std::fs::write(d.config_dir.join("ucri.toml.d/ignored.conf"), "junk").expect("write");
        let c = Config::load(&d, &main).expect("load");
        assert_eq!(c.daemon.log_level, "trace");
        assert!(c.daemon.allow_root);
        assert_eq!(c.network.uplink, Uplink::Pasta);
        assert_eq!(
            c.runtime.runtimes.len(),
            3,
            "drop-in adds a handler, keeps defaults"
        );
        assert_eq!(
            c.daemon.data_dir, d.data_dir,
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let main = tmp.path().join("ucri.toml");
        std::fs::write(&main, "[daemon]\nlog_levle = \"debug\"\n").expect("write");
        let err = Config::load(&d, &main)
            .expect_err("typo must fail")
            .to_string();
        assert!(err.contains("log_levle"), "{err}");
        std::fs::write(&main, "[storage]\ndriver = \"zfs\"\n").expect("write");
        let err = Config::load(&d, &main).expect_err("bad enum").to_string();
        assert!(err.contains("zfs"), "{err}");
        std::fs::write(&main, "not toml [").expect("write");
        let err = Config::load(&d, &main).expect_err("syntax").to_string();
        assert!(err.contains("ucri.toml"), "{err}");
    }

    #[test]
    fn default_runtime_must_exist() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let main = tmp.path().join("ucri.toml");
        std::fs::write(&main, "[runtime]\ndefault_runtime = \"kata\"\n").expect("write");
        let err = Config::load(&d, &main)
            .expect_err("unknown runtime")
            .to_string();
        assert!(err.contains("kata"), "{err}");
    }

    #[test]
    fn rendered_config_loads_back_identically() {
        let tmp = tempfile::tempdir().expect("tmp");
        let d = dirs(tmp.path());
        let c = Config::defaults(&d);
        let main = tmp.path().join("ucri.toml");
        std::fs::write(&main, c.to_toml()).expect("write");
        assert_eq!(Config::load(&d, &main).expect("load"), c);
    }
}
