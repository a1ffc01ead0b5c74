//! CNI, following the spec (results of versions 0.3.x, 0.4.0 and 1.x): the
//! default network is the first valid config file of the config dir;
//! plugins run inside the uplink namespace; every ADD is cached on disk (as
//! libcni does) so DEL works after a daemon restart.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use ucri_rootless::rundir::{remove_if_exists, write_atomic, write_atomic_volatile};

use crate::error::{io, NetError};

/// Result versions ucri understands (they all carry `ips`).
const SUPPORTED_VERSIONS: [&str; 6] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "1.1"];

/// How long one plugin may run (libcni has no limit; a hung plugin would
/// hang RunPodSandbox for ever).
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The interface name pods get.
pub const POD_IFNAME: &str = "eth0";

/// The name of the config file written into an empty config dir.
pub const DEFAULT_CONFIG_FILE: &str = "10-ucri-bridge.conflist";

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// The network's name.
    pub name: String,
    /// Its `cniVersion`.
    pub cni_version: String,
    /// The plugin configurations, in order.
    pub plugins: Vec<Value>,
    /// The file it came from.
    pub source: PathBuf,
}

impl NetworkList {
    /// Parses a `.conflist`, or a single-plugin `.conf`/`.json`.
    pub fn parse(source: &Path, bytes: &[u8]) -> Result<NetworkList, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let str_field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let name = str_field(&value, "name").ok_or("no \"name\"")?;
        let cni_version = str_field(&value, "cniVersion").ok_or("no \"cniVersion\"")?;
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(format!(
                "cniVersion {cni_version} is not supported (use one of {})",
                SUPPORTED_VERSIONS.join(", ")
            ));
        }
        let plugins = match value.get("plugins") {
            Some(Value::Array(list)) => list.clone(),
            Some(_) => return Err("\"plugins\" is not a list".into()),
            None if value.get("type").is_some() => vec![value.clone()],
            None => return Err("neither \"plugins\" nor \"type\"".into()),
        };
        if plugins.is_empty() {
            return Err("\"plugins\" is empty".into());
        }
        for (i, plugin) in plugins.iter().enumerate() {
            if str_field(plugin, "type").is_none() {
                return Err(format!("plugin {i} has no \"type\""));
            }
        }
        Ok(NetworkList {
            name,
            cni_version,
            plugins,
            source: source.to_owned(),
        })
    }

    /// The plugin binaries it needs (each plugin's type and IPAM type).
    pub fn plugin_types(&self) -> Vec<String> {
        let mut types = Vec::new();
        for plugin in &self.plugins {
            for t in [plugin.get("type"), plugin.pointer("/ipam/type")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !types.iter().any(|known| known == t) {
                    types.push(t.to_owned());
                }
            }
        }
        types
    }

    /// Whether DEL run without the pod's namespace still releases all the
    /// chain holds: each plugin keeps its state outside the namespace
    /// (leases, iptables rules, ifb devices) or only inside it, where it
    /// dies with the namespace. True for the plugins of
    /// containernetworking/plugins listed here (bridge only without
    /// `ipMasq`: its masquerade rules are found through the veth); false
    /// for anything else, which then gets DEL with the namespace alive.
    pub fn releases_without_netns(&self) -> bool {
        self.plugins.iter().all(|plugin| {
            let ipam_local = plugin
                .pointer("/ipam/type")
                .and_then(Value::as_str)
                .is_none_or(|t| matches!(t, "host-local" | "static"));
            let masquerades = plugin.get("ipMasq").and_then(Value::as_bool) == Some(true);
            ipam_local
                && match plugin_type(plugin) {
                    "bridge" => !masquerades,
                    "portmap" | "bandwidth" | "loopback" => true,
                    _ => false,
                }
        })
    }

    fn to_value(&self) -> Value {
        json!({"cniVersion": self.cni_version, "name": self.name, "plugins": self.plugins})
    }

    fn from_value(value: &Value) -> Result<NetworkList, String> {
        NetworkList::parse(Path::new("(cache)"), value.to_string().as_bytes())
    }
}

/// Loads the default network: the first file (by name) in `dir` that
/// parses. The error says why there is none, naming every broken file.
pub fn load_default_network(dir: &Path) -> Result<NetworkList, String> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("cannot read the CNI config dir {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let parsed = fs::read(file)
            .map_err(|e| e.to_string())
            .and_then(|bytes| NetworkList::parse(file, &bytes));
        match parsed {
            Ok(list) => return Ok(list),
            Err(why) => problems.push(format!("{}: {why}", file.display())),
        }
    }
    if problems.is_empty() {
        Err(format!("no CNI network config in {}", dir.display()))
    } else {
        Err(format!(
            "no valid CNI network config in {}: {}",
            dir.display(),
            problems.join("; ")
        ))
    }
}

/// The network ucri writes into an empty config dir: a bridge with
/// host-local IPAM on 10.88.0.0/16 and a gateway, and portmap for hostPort
/// semantics between pods. Masquerade is one rule of the uplink for all
/// traffic leaving through its helper, so the bridge's per-pod `ipMasq`
/// rules (several iptables runs per pod start and stop) are off.
pub fn default_config(mtu: u32) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "ucri",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "mtu": mtu,
                // The node's pod CIDR (UpdateRuntimeConfig) replaces the
                // ranges below when kubelet sends one.
                "capabilities": {"ipRanges": true},
                "ipam": {
                    "type": "host-local",
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
}

/// Writes [`default_config`] into `dir` when it has no config file.
/// Returns true when it wrote one.
pub fn write_default_config_if_empty(dir: &Path, mtu: u32) -> Result<bool, NetError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let has_config = fs::read_dir(dir)
        .map_err(io(format!("reading {}", dir.display())))?
        .flatten()
        .any(|e| {
            matches!(
                e.path().extension().and_then(|x| x.to_str()),
                Some("conflist" | "conf" | "json")
            )
        });
    if has_config {
        return Ok(false);
    }
    let text =
        serde_json::to_vec_pretty(&default_config(mtu)).map_err(|e| io("encoding")(e.into()))?;
    write_atomic(&dir.join(DEFAULT_CONFIG_FILE), &text)
        .map_err(io("writing the default CNI config"))?;
    Ok(true)
}

/// One pod's attachment request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Attachment {
    /// The sandbox ID (CNI_CONTAINERID).
    pub container_id: String,
    /// Path of the pod's pinned network namespace.
    pub netns: PathBuf,
    /// CNI_ARGS pairs (K8S_POD_NAMESPACE, K8S_POD_NAME, …).
    pub args: Vec<(String, String)>,
    /// `runtimeConfig` values by capability (portMappings, bandwidth, ipRanges).
    pub capabilities: BTreeMap<String, Value>,
}

/// What is cached per attachment, like libcni's `cniCacheV1`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    kind: String,
    #[serde(rename = "networkName")]
    network_name: String,
    config: Value,
    attachment: Attachment,
    /// The ADD result; null while ADD runs (so a crash mid-ADD is undone).
    result: Value,
}

/// Runs CNI plugins for pods.
#[derive(Debug, Clone)]
pub struct Cni {
    /// Where plugins are looked up, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Runtime state: the result cache, IPAM leases, the xtables lock.
    pub state_dir: PathBuf,
    /// The namespace plugins run in (the uplink); None = the caller's.
    pub run_in: Option<PathBuf>,
}

impl Cni {
    fn cache_path(&self, container_id: &str) -> PathBuf {
        self.state_dir
            .join("results")
            .join(format!("{container_id}.json"))
    }

    /// Where host-local keeps its leases unless the config says otherwise.
    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("networks")
    }

    /// Finds a plugin binary.
    pub fn find_plugin(&self, name: &str) -> Option<PathBuf> {
        crate::discover::find_plugins(&self.plugin_dirs, &[name])
            .remove(name)
            .flatten()
    }

    /// Checks that every plugin `list` needs is installed.
    pub fn check_plugins(&self, list: &NetworkList) -> Result<(), String> {
        let missing: Vec<String> = list
            .plugin_types()
            .into_iter()
            .filter(|t| self.find_plugin(t).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(format!(
            "CNI plugin(s) {} of network {:?} ({}) not found in {}",
            missing.join(", "),
            list.name,
            list.source.display(),
            join_paths(&self.plugin_dirs)
        ))
    }

    /// ADD: runs every plugin of `list` in order and returns the final
    /// result. On failure, DEL undoes what the plugins did, and nothing is
    /// cached.
    pub fn add(&self, list: &NetworkList, attachment: &Attachment) -> Result<Value, NetError> {
        let mut entry = CacheEntry {
            kind: "cniCacheV1".into(),
            network_name: list.name.clone(),
            config: list.to_value(),
            attachment: attachment.clone(),
            result: Value::Null,
        };
        self.save_cache(&entry)?;
        match self.add_chain(list, attachment) {
            Ok(result) => {
                entry.result = result.clone();
                self.save_cache(&entry)?;
                Ok(result)
            }
            Err(e) => {
                if let Err(undo) = self.del_chain(list, attachment, &Value::Null) {
                    tracing::warn!(pod = %attachment.container_id, %undo, "undoing a failed CNI ADD");
                }
                let _ = remove_if_exists(&self.cache_path(&attachment.container_id));
                Err(e)
            }
        }
    }

    fn add_chain(&self, list: &NetworkList, attachment: &Attachment) -> Result<Value, NetError> {
        let mut prev = Value::Null;
        for plugin in &list.plugins {
            let conf = self.plugin_config(list, plugin, attachment, &prev);
            prev = self.exec(plugin_type(plugin), "ADD", &conf, attachment)?;
            if prev.is_null() {
                return Err(NetError::Plugin {
                    plugin: plugin_type(plugin).to_owned(),
                    command: "ADD".into(),
                    message: "printed no result".into(),
                });
            }
        }
        Ok(prev)
    }

    /// DEL for the pod: uses the cached config and result, so it works
    /// after the config changed or the daemon restarted. Without a cache
    /// entry there is nothing to undo.
    pub fn del(&self, container_id: &str) -> Result<(), NetError> {
        let path = self.cache_path(container_id);
        let Some(entry) = self.load_cache(&path)? else {
            return Ok(());
        };
        let list = NetworkList::from_value(&entry.config)
            .map_err(|e| NetError::NotReady(format!("cached CNI config of {container_id}: {e}")))?;
        let mut attachment = entry.attachment.clone();
        if !is_pinned_netns(&attachment.netns) {
            // The namespace is gone (unpinned first, or after a reboot):
            // plugins still release what they hold outside it.
            attachment.netns = PathBuf::new();
        }
        self.del_chain(&list, &attachment, &entry.result)?;
        remove_if_exists(&path).map_err(io("removing the CNI cache entry"))
    }

    fn del_chain(
        &self,
        list: &NetworkList,
        attachment: &Attachment,
        result: &Value,
    ) -> Result<(), NetError> {
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            let conf = self.plugin_config(list, plugin, attachment, result);
            if let Err(e) = self.exec(plugin_type(plugin), "DEL", &conf, attachment) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether the pod's cached chain releases everything without its
    /// namespace ([`NetworkList::releases_without_netns`]); false when the
    /// pod is not attached or its cache cannot be read.
    pub fn releases_without_netns(&self, container_id: &str) -> bool {
        let Ok(Some(entry)) = self.load_cache(&self.cache_path(container_id)) else {
            return false;
        };
        NetworkList::from_value(&entry.config).is_ok_and(|list| list.releases_without_netns())
    }

    /// CHECK against the cached result (CNI 0.4.0 and later).
    pub fn check(&self, container_id: &str) -> Result<(), NetError> {
        let path = self.cache_path(container_id);
        let Some(entry) = self.load_cache(&path)? else {
            return Err(NetError::NotReady(format!(
                "pod {container_id} has no CNI attachment"
            )));
        };
        let list = NetworkList::from_value(&entry.config)
            .map_err(|e| NetError::NotReady(format!("cached CNI config: {e}")))?;
        if list.cni_version.starts_with("0.3") {
            return Ok(());
        }
        for plugin in &list.plugins {
            let conf = self.plugin_config(&list, plugin, &entry.attachment, &entry.result);
            self.exec(plugin_type(plugin), "CHECK", &conf, &entry.attachment)?;
        }
        Ok(())
    }

    /// Pods with a cached attachment.
    pub fn cached_pods(&self) -> Vec<String> {
        fs::read_dir(self.state_dir.join("results"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The cached ADD result of a pod.
    pub fn cached_result(&self, container_id: &str) -> Option<Value> {
        let entry = self.load_cache(&self.cache_path(container_id)).ok()??;
        (!entry.result.is_null()).then_some(entry.result)
    }

    fn save_cache(&self, entry: &CacheEntry) -> Result<(), NetError> {
        let path = self.cache_path(&entry.attachment.container_id);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io("creating the CNI cache dir"))?;
        }
        let bytes = serde_json::to_vec(entry).map_err(|e| io("encoding")(e.into()))?;
        // The cache lives in the runtime dir, which a reboot empties.
        write_atomic_volatile(&path, &bytes).map_err(io("writing the CNI cache"))
    }

    fn load_cache(&self, path: &Path) -> Result<Option<CacheEntry>, NetError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                NetError::NotReady(format!("corrupt CNI cache {}: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    /// The config one plugin sees: the plugin's object plus the list's name
    /// and version, the capability args it declares, the previous result,
    /// and a default lease dir for host-local.
    fn plugin_config(
        &self,
        list: &NetworkList,
        plugin: &Value,
        attachment: &Attachment,
        prev: &Value,
    ) -> Value {
        let mut conf = plugin.clone();
        let Some(obj) = conf.as_object_mut() else {
            return conf;
        };
        obj.insert("name".into(), json!(list.name));
        obj.insert("cniVersion".into(), json!(list.cni_version));
        let runtime: serde_json::Map<String, Value> = plugin
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .filter_map(|(cap, _)| {
                attachment
                    .capabilities
                    .get(cap)
                    .map(|v| (cap.clone(), v.clone()))
            })
            .collect();
        let mut runtime = runtime;
        if let Some(ipam) = obj.get_mut("ipam").and_then(Value::as_object_mut) {
            if ipam.get("type").and_then(Value::as_str) == Some("host-local") {
                if !ipam.contains_key("dataDir") {
                    ipam.insert("dataDir".into(), json!(self.ipam_dir()));
                }
                // host-local adds runtime ipRanges to its configured ranges
                // (one address from each); the convention is that they
                // replace them, so they do here.
                let ranges = runtime.remove("ipRanges");
                if let Some(ranges) = ranges.filter(|r| r.as_array().is_some_and(|a| !a.is_empty()))
                {
                    ipam.insert("ranges".into(), ranges);
                }
            }
        }
        if !runtime.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if !prev.is_null() {
            obj.insert("prevResult".into(), prev.clone());
        }
        conf
    }

    /// Runs one plugin; returns its parsed stdout (null when empty).
    fn exec(
        &self,
        plugin: &str,
        command: &str,
        conf: &Value,
        attachment: &Attachment,
    ) -> Result<Value, NetError> {
        let failed = |message: String| NetError::Plugin {
            plugin: plugin.to_owned(),
            command: command.to_owned(),
            message,
        };
        let binary = self.find_plugin(plugin).ok_or_else(|| {
            NetError::NotReady(format!(
                "CNI plugin {plugin} not found in {}",
                join_paths(&self.plugin_dirs)
            ))
        })?;
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &attachment.container_id)
            .env("CNI_NETNS", &attachment.netns)
            .env("CNI_IFNAME", POD_IFNAME)
            .env("CNI_ARGS", cni_args(&attachment.args))
            .env(
                "CNI_PATH",
                std::env::join_paths(&self.plugin_dirs).unwrap_or_default(),
            )
            .env("XTABLES_LOCKFILE", self.state_dir.join("xtables.lock"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let _ns = match &self.run_in {
            Some(netns) => Some(
                ucri_rootless::enter::command_in_netns(&mut cmd, netns)
                    .map_err(io("opening the uplink namespace"))?,
            ),
            None => None,
        };
        let started = std::time::Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(io(format!("running CNI plugin {}", binary.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(conf.to_string().as_bytes())
                .map_err(io(format!("writing the config to CNI plugin {plugin}")))?;
        }
        let out = wait_with_timeout(child, PLUGIN_TIMEOUT)
            .map_err(io(format!("waiting for CNI plugin {plugin}")))?
            .ok_or_else(|| failed(format!("did not finish within {PLUGIN_TIMEOUT:?}; killed")))?;
        tracing::debug!(pod = %attachment.container_id, plugin, command,
            elapsed_us = started.elapsed().as_micros() as u64, "CNI plugin finished");
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            return Err(failed(plugin_error_message(parsed.as_ref(), &out)));
        }
        match parsed {
            Some(v) if v.get("code").is_some() && v.get("msg").is_some() => {
                Err(failed(plugin_error_message(Some(&v), &out)))
            }
            Some(v) => Ok(v),
            None if out.stdout.iter().all(u8::is_ascii_whitespace) => Ok(Value::Null),
            None => Err(failed(format!(
                "printed something that is not JSON: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ))),
        }
    }
}

/// Waits for `child` and its output; kills it after `limit` (None then).
fn wait_with_timeout(
    child: std::process::Child,
    limit: std::time::Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.map(Some),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            // The waiting thread reaps it.
            let _ = rx.recv_timeout(std::time::Duration::from_secs(5));
            Ok(None)
        }
    }
}

/// Whether `path` is a bind-mounted network namespace (its pin), not the
/// empty file left when the pin was unmounted or a path that is gone.
fn is_pinned_netns(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The message of a CNI error (`msg` and `details`), else the exit status
/// and stderr.
fn plugin_error_message(error: Option<&Value>, out: &std::process::Output) -> String {
    let field = |k: &str| error.and_then(|v| v.get(k)).and_then(Value::as_str);
    match (field("msg"), field("details")) {
        (Some(msg), Some(details)) if !details.is_empty() => format!("{msg}: {details}"),
        (Some(msg), _) => msg.to_owned(),
        _ => format!(
            "{} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

fn cni_args(args: &[(String, String)]) -> String {
    std::iter::once("IgnoreUnknown=1".to_owned())
        .chain(args.iter().map(|(k, v)| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(";")
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The addresses in a CNI result (`ips[].address`, CIDR notation).
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect()
}

/// The networks of a CNI result's addresses and of its routes other than
/// the default ones, as `network/prefix`.
pub fn result_subnets(result: &Value) -> Vec<String> {
    let list = |key: &str, field: &'static str| {
        result
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(move |entry| entry.get(field).and_then(Value::as_str))
    };
    let mut out: Vec<String> = Vec::new();
    for cidr in list("ips", "address").chain(list("routes", "dst")) {
        let Some(network) = network_of(cidr) else {
            continue;
        };
        if !network.ends_with("/0") && !out.contains(&network) {
            out.push(network);
        }
    }
    out
}

/// `10.88.0.5/16` -> `10.88.0.0/16`.
fn network_of(cidr: &str) -> Option<String> {
    let (addr, prefix) = cidr.split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            Some(format!(
                "{}/{prefix}",
                std::net::Ipv4Addr::from(u32::from(v4) & mask)
            ))
        }
        IpAddr::V6(v6) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            Some(format!(
                "{}/{prefix}",
                std::net::Ipv6Addr::from(u128::from(v6) & mask)
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_plugin_configs_become_lists_and_bad_ones_say_why() {
        let conf =
            br#"{"cniVersion":"0.4.0","name":"n","type":"bridge","ipam":{"type":"host-local"}}"#;
        let list = NetworkList::parse(Path::new("a.conf"), conf).expect("parse");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugin_types(), ["bridge", "host-local"]);
        let old = br#"{"cniVersion":"0.2.0","name":"n","type":"bridge"}"#;
        assert!(NetworkList::parse(Path::new("b"), old)
            .expect_err("an error")
            .contains("0.2.0"));
        let untyped = br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"x":1}]}"#;
        assert!(NetworkList::parse(Path::new("c"), untyped)
            .expect_err("an error")
            .contains("no \"type\""));
        assert!(NetworkList::parse(Path::new("d"), b"{")
            .expect_err("an error")
            .contains("JSON"));
    }

    fn chain(plugins: Value) -> NetworkList {
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "plugins": plugins});
        NetworkList::parse(Path::new("n.conflist"), conf.to_string().as_bytes()).expect("parse")
    }

    #[test]
    fn only_chains_that_keep_nothing_behind_the_veth_may_lose_the_namespace_first() {
        let default = NetworkList::from_value(&default_config(1500)).expect("parse");
        assert!(default.releases_without_netns());
        let shaped = json!([{"type": "bridge", "ipam": {"type": "static"}}, {"type": "bandwidth"}]);
        assert!(chain(shaped).releases_without_netns());
        let masq = json!([{"type": "bridge", "ipMasq": true, "ipam": {"type": "host-local"}}]);
        assert!(
            !chain(masq).releases_without_netns(),
            "masquerade rules are found through the veth"
        );
        let dhcp = json!([{"type": "bridge", "ipam": {"type": "dhcp"}}]);
        assert!(
            !chain(dhcp).releases_without_netns(),
            "dhcp releases from inside"
        );
        let foreign =
            json!([{"type": "bridge", "ipam": {"type": "host-local"}}, {"type": "cilium-cni"}]);
        assert!(
            !chain(foreign).releases_without_netns(),
            "an unknown plugin keeps its DEL as is"
        );
    }

    #[test]
    fn the_first_valid_file_wins_and_broken_ones_are_named() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(load_default_network(dir.path())
            .expect_err("an error")
            .contains("no CNI network config"));
        fs::write(dir.path().join("05-broken.conflist"), "{").expect("write");
        let err = load_default_network(dir.path()).expect_err("an error");
        assert!(
            err.contains("05-broken.conflist") && err.contains("JSON"),
            "{err}"
        );
        assert!(write_default_config_if_empty(dir.path(), 1500).is_ok_and(|wrote| !wrote));
        fs::write(
            dir.path().join(DEFAULT_CONFIG_FILE),
            default_config(65520).to_string(),
        )
        .expect("write");
        let list = load_default_network(dir.path()).expect("load");
        assert_eq!(list.name, "ucri");
        assert_eq!(list.plugin_types(), ["bridge", "host-local", "portmap"]);
    }

    #[test]
    fn an_empty_dir_gets_the_default_network() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("net.d");
        assert!(write_default_config_if_empty(&target, 65520).expect("write"));
        assert!(!write_default_config_if_empty(&target, 65520).expect("again"));
        let list = load_default_network(&target).expect("load");
        assert_eq!(list.plugins[0]["mtu"], 65520);
    }

    #[test]
    fn plugins_see_name_version_their_capabilities_prev_result_and_a_lease_dir() {
        let cni = Cni {
            plugin_dirs: vec![],
            state_dir: PathBuf::from("/run/x/cni"),
            run_in: None,
        };
        let list = NetworkList::parse(Path::new("x"), default_config(1500).to_string().as_bytes())
            .expect("parse");
        let mut attachment = Attachment::default();
        attachment
            .capabilities
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        let bridge = cni.plugin_config(&list, &list.plugins[0], &attachment, &Value::Null);
        assert_eq!(bridge["name"], "ucri");
        assert_eq!(bridge["ipam"]["dataDir"], "/run/x/cni/networks");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
        assert!(bridge.get("runtimeConfig").is_none());
        let pod_cidr = json!([[{"subnet": "10.77.3.0/24"}]]);
        attachment
            .capabilities
            .insert("ipRanges".into(), pod_cidr.clone());
        let bridge = cni.plugin_config(&list, &list.plugins[0], &attachment, &Value::Null);
        assert_eq!(
            bridge["ipam"]["ranges"], pod_cidr,
            "ipRanges replace host-local's ranges"
        );
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());
        let prev = json!({"ips": [{"address": "10.88.0.2/16"}]});
        let portmap = cni.plugin_config(&list, &list.plugins[1], &attachment, &prev);
        assert_eq!(
            portmap["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080}]})
        );
        assert_eq!(portmap["prevResult"], prev);
    }

    #[test]
    fn a_hung_plugin_is_killed_after_the_timeout() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .spawn()
            .expect("sleep");
        let started = std::time::Instant::now();
        let out = wait_with_timeout(child, std::time::Duration::from_millis(200)).expect("wait");
        assert!(out.is_none());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let quick = std::process::Command::new("echo")
            .arg("{}")
            .stdout(Stdio::piped())
            .spawn()
            .expect("echo");
        let out = wait_with_timeout(quick, std::time::Duration::from_secs(5))
            .expect("wait")
            .expect("finished");
        assert_eq!(out.stdout, b"{}\n");
    }

    #[test]
    fn result_addresses_and_error_messages_are_read() {
        let result = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "10.88.0.7/16", "gateway": "10.88.0.1"},
            {"address": "fd00::7/64"}]});
        assert_eq!(
            result_ips(&result),
            vec![
                "10.88.0.7".parse::<IpAddr>().expect("ok"),
                "fd00::7".parse().expect("ok")
            ]
        );
        let out = std::process::Command::new("false").output().expect("false");
        let err = json!({"code": 7, "msg": "failed to allocate", "details": "range full"});
        assert_eq!(
            plugin_error_message(Some(&err), &out),
            "failed to allocate: range full"
        );
        assert!(plugin_error_message(None, &out).contains("exit status: 1"));
        assert_eq!(
            cni_args(&[("K8S_POD_NAME".into(), "web".into())]),
            "IgnoreUnknown=1;K8S_POD_NAME=web"
        );
    }
}
