//! Pod networking as the lifecycle sees it: attach a pod (CNI ADD in the
//! uplink, then its host ports), detach it, say whether networking is ready.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni::{self, Attachment, Cni};
use crate::error::NetError;
use crate::hostport::{self, HostPorts, PortMapping};
use crate::node::NodeLinks;
use crate::uplink::{Uplink, UplinkKind, UplinkOptions, UPLINK_DNS};

/// Where and how pod networking is set up.
#[derive(Debug, Clone)]
pub struct NetworkOptions {
    /// The uplink.
    pub uplink: UplinkOptions,
    /// Directory of CNI network configs.
    pub cni_config_dir: PathBuf,
    /// Directories searched for CNI plugins.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// ucri's runtime dir (`uplink/` and `cni/` go below it).
    pub runtime_dir: PathBuf,
    /// How often every attached pod gets a CNI CHECK.
    pub cni_check_interval: std::time::Duration,
    /// The node namespace's address and its ports linked to the host.
    pub node: crate::node::NodeOptions,
}

/// One pod, as networking needs it.
#[derive(Debug, Clone, Default)]
pub struct PodNetwork {
    /// The sandbox ID.
    pub id: String,
    /// Pod name, namespace and UID (passed to plugins as K8S_POD_* args).
    pub name: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's UID.
    pub uid: String,
    /// The pod's pinned network namespace.
    pub netns: PathBuf,
    /// Its port mappings.
    pub port_mappings: Vec<PortMapping>,
    /// CNI `bandwidth` capability args, from the pod's annotations.
    pub bandwidth: Option<Value>,
}

/// What attaching a pod gave it; kept in the pod's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodAttachment {
    /// The CNI network.
    pub network: String,
    /// Its addresses, the primary first.
    pub ips: Vec<IpAddr>,
    /// Host ports forwarded to it.
    pub port_mappings: Vec<PortMapping>,
    /// A host-network pod: it has the node namespace's addresses, and its
    /// declared ports are forwarded to the node namespace's loopback.
    #[serde(default)]
    pub node: bool,
    /// The networks of its interfaces and its non-default routes, as CIDRs
    /// (traffic there stays on the pod network).
    #[serde(default)]
    pub subnets: Vec<String>,
}

impl PodAttachment {
    /// The address host ports forward to: the node namespace's loopback for a
    /// host-network pod, else the first IPv4, else the first address.
    pub fn forward_target(&self) -> Option<IpAddr> {
        if self.node {
            return Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        self.ips
            .iter()
            .find(|ip| ip.is_ipv4())
            .or(self.ips.first())
            .copied()
    }
}

/// Pod networking of one daemon.
#[derive(Debug)]
pub struct Network {
    options: NetworkOptions,
    uplink: Uplink,
    cni: Cni,
    ports: HostPorts,
    node: NodeLinks,
    /// The node's pod CIDRs from kubelet (UpdateRuntimeConfig), as CNI
    /// `ipRanges`; empty until kubelet sends them.
    pod_cidrs: std::sync::RwLock<Vec<String>>,
    /// The latest CNI CHECK of each attached pod, and when the last round of
    /// checks ran: the status path reads this and runs no plugin.
    checks: std::sync::Mutex<Checks>,
}

/// Results of the background CNI CHECKs.
#[derive(Debug, Default)]
struct Checks {
    by_pod: std::collections::HashMap<String, CheckResult>,
    last_round: Option<std::time::Instant>,
}

/// What the latest CNI CHECK of a pod (or its ADD) said, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// "ok", or the plugin's error.
    pub result: String,
    /// Unix seconds.
    pub at: u64,
}

/// The IPv4 default gateway of this process's network namespace, from
/// `/proc/net/route` (gateway in little-endian hex).
fn host_default_gateway() -> Option<std::net::Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000"))
            .then(|| u32::from_str_radix(fields.get(2)?, 16).ok())
            .flatten()
            .map(|gw| std::net::Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// Parses kubelet's pod CIDR ("10.244.0.0/24" or a comma-separated
/// dual-stack pair) into its ranges.
pub fn parse_pod_cidrs(text: &str) -> Result<Vec<String>, NetError> {
    text.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|cidr| {
            let valid = cidr.split_once('/').is_some_and(|(ip, len)| {
                let max = match ip.parse::<IpAddr>() {
                    Ok(IpAddr::V4(_)) => 32,
                    Ok(IpAddr::V6(_)) => 128,
                    Err(_) => return false,
                };
                len.parse::<u8>().is_ok_and(|l| l <= max)
            });
            if valid {
                Ok(cidr.to_owned())
            } else {
                Err(NetError::InvalidArgument(format!(
                    "pod CIDR {cidr:?} is not an address/prefix"
                )))
            }
        })
        .collect()
}

impl Network {
    /// Writes the default CNI config into an empty config dir and brings up
    /// (or adopts) the uplink. Problems do not fail the daemon: they make
    /// [`Network::ready`] say why pods cannot get a network.
    pub fn open(options: NetworkOptions) -> Network {
        let uplink = Uplink::new(options.uplink.clone(), options.runtime_dir.join("uplink"));
        let cni = Cni {
            plugin_dirs: options.cni_plugin_dirs.clone(),
            state_dir: options.runtime_dir.join("cni"),
            run_in: Some(uplink.netns()),
        };
        let ports = HostPorts::new(&uplink.netns());
        // A daemon killed mid-write leaves its temp files (the cache is
        // written atomically); none of this daemon's writers runs yet.
        let results = options.runtime_dir.join("cni").join("results");
        match ucri_rootless::rundir::remove_stale_temps(&results) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                removed = n,
                "removed CNI cache temp files a killed daemon left"
            ),
            Err(e) => tracing::warn!(%e, "cannot sweep the CNI cache"),
        }
        match cni::write_default_config_if_empty(&options.cni_config_dir, options.uplink.mtu) {
            Ok(true) => {
                tracing::info!(dir = %options.cni_config_dir.display(), "wrote the default CNI network")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%e, "cannot write the default CNI network"),
        }
        if let Err(e) = uplink.ensure() {
            tracing::error!(%e, "the uplink namespace is not usable: pods cannot get a network");
        }
        match uplink.ensure_reply_routing() {
            Ok(()) => ports.show_client_addresses(),
            Err(e) => tracing::warn!(
                %e,
                "pods see host port clients as the uplink's address, not their own"
            ),
        }
        let node = NodeLinks::open(options.node.clone(), &uplink.netns(), &ports);
        let pod_cidrs = std::fs::read_to_string(pod_cidr_file(&options))
            .ok()
            .and_then(|t| parse_pod_cidrs(&t).ok())
            .unwrap_or_default();
        Network {
            options,
            uplink,
            cni,
            ports,
            node,
            pod_cidrs: std::sync::RwLock::new(pod_cidrs),
            checks: std::sync::Mutex::new(Checks::default()),
        }
    }

    /// Sets the node's pod CIDR: pods attached from now on get addresses
    /// from it (networks whose IPAM takes `ipRanges`, as the default one
    /// does). Kept in the runtime dir across daemon restarts.
    pub fn set_pod_cidrs(&self, text: &str) -> Result<(), NetError> {
        let cidrs = parse_pod_cidrs(text)?;
        if cidrs.is_empty() || *self.read_cidrs() == cidrs {
            return Ok(());
        }
        let file = pod_cidr_file(&self.options);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(crate::error::io("creating the CNI state dir"))?;
        }
        ucri_rootless::rundir::write_atomic(&file, cidrs.join(",").as_bytes())
            .map_err(crate::error::io("saving the pod CIDR"))?;
        tracing::info!(?cidrs, "pod CIDR from kubelet");
        *self.pod_cidrs.write().unwrap_or_else(|p| p.into_inner()) = cidrs;
        Ok(())
    }

    /// The node's pod CIDRs (empty until kubelet sends them).
    pub fn pod_cidrs(&self) -> Vec<String> {
        self.read_cidrs().clone()
    }

    /// The `ipRanges` the next pod gets. A bridge holds one IPv4 subnet, so
    /// a new pod CIDR takes over only when no pod is attached (the bridge is
    /// then recreated with the new gateway); until then pods keep the range
    /// the bridge has. Kubelet sends the CIDR before it starts pods.
    fn ranges_for_next_pod(&self, list: &cni::NetworkList) -> Vec<String> {
        let wanted = self.pod_cidrs();
        let active_file = self.options.runtime_dir.join("cni").join("pod-cidr.active");
        let active = std::fs::read_to_string(&active_file)
            .ok()
            .and_then(|t| parse_pod_cidrs(&t).ok())
            .unwrap_or_default();
        if wanted == active {
            return active;
        }
        if !self.cni.cached_pods().is_empty() {
            tracing::warn!(
                ?wanted,
                ?active,
                "the new pod CIDR applies once the pods on the current range are gone"
            );
            return active;
        }
        if let Err(e) = self.reset_bridge(list) {
            tracing::warn!(%e, "cannot reset the bridge for the new pod CIDR");
            return active;
        }
        if let Err(e) =
            ucri_rootless::rundir::write_atomic(&active_file, wanted.join(",").as_bytes())
        {
            tracing::warn!(%e, "cannot record the pod CIDR in use");
        }
        wanted
    }

    /// Deletes the network's bridge in the uplink (the bridge plugin makes it
    /// again with the gateway of the range it is given).
    fn reset_bridge(&self, list: &cni::NetworkList) -> Result<(), NetError> {
        let Some(bridge) = list
            .plugins
            .iter()
            .find(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
            .map(|p| {
                p.get("bridge")
                    .and_then(Value::as_str)
                    .unwrap_or("cni0")
                    .to_owned()
            })
        else {
            return Ok(());
        };
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["link", "delete", &bridge]);
        let _ns = ucri_rootless::enter::command_in_netns(&mut cmd, &self.uplink.netns())
            .map_err(crate::error::io("entering the uplink namespace"))?;
        let out = cmd
            .output()
            .map_err(crate::error::io("running ip link delete"))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("Cannot find device") {
            return Ok(());
        }
        Err(NetError::Plugin {
            plugin: "ip".into(),
            command: format!("link delete {bridge}"),
            message: format!("{}: {}", out.status, stderr.trim()),
        })
    }

    fn read_cidrs(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.pod_cidrs.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The node namespace's links to the host (its address, node ports).
    pub fn node(&self) -> &NodeLinks {
        &self.node
    }

    /// The uplink namespace's pin.
    pub fn uplink_netns(&self) -> PathBuf {
        self.uplink.netns()
    }

    /// The uplink's own addresses as pods see them (its gateway and
    /// resolver), as CIDRs: connections there stay on the uplink's path.
    pub fn uplink_networks(&self) -> Vec<String> {
        match self.options.uplink.kind {
            UplinkKind::None => Vec::new(),
            UplinkKind::Slirp4netns => vec!["10.0.2.0/24".into()],
            UplinkKind::Pasta => {
                let mut kept = vec![format!("{UPLINK_DNS}/32")];
                // pasta maps the host's gateway address to the host's loopback.
                if self.options.uplink.allow_host_loopback {
                    kept.extend(host_default_gateway().map(|gw| format!("{gw}/32")));
                }
                kept
            }
        }
    }

    /// The nameserver pods use when the CRI gives no DNS config.
    pub fn dns_server(&self) -> Option<&'static str> {
        (self.options.uplink.kind != UplinkKind::None).then_some(UPLINK_DNS)
    }

    /// Ok when pods can be attached, else why not.
    pub fn ready(&self) -> Result<cni::NetworkList, String> {
        if let Some(problem) = self.uplink.problem() {
            return Err(problem);
        }
        let list = cni::load_default_network(&self.options.cni_config_dir)?;
        self.cni.check_plugins(&list)?;
        Ok(list)
    }

    /// CNI ADD for the pod, then its host ports. On failure nothing of it
    /// is left: no interface, lease, rule or listening socket.
    pub fn attach(&self, pod: &PodNetwork) -> Result<PodAttachment, NetError> {
        hostport::validate(&pod.port_mappings)?;
        let list = self.ready().map_err(NetError::NotReady)?;
        let ranges = self.ranges_for_next_pod(&list);
        let attachment = self.cni_attachment(pod, &ranges);
        let result = self.cni.add(&list, &attachment)?;
        let done = PodAttachment {
            network: list.name.clone(),
            ips: cni::result_ips(&result),
            port_mappings: pod.port_mappings.clone(),
            node: false,
            subnets: cni::result_subnets(&result),
        };
        let exposed = match done.forward_target() {
            None => Err(NetError::Plugin {
                plugin: list.name.clone(),
                command: "ADD".into(),
                message: "the result has no IP address".into(),
            }),
            Some(ip) => self.ports.expose(&pod.id, ip, &pod.port_mappings),
        };
        if let Err(e) = exposed {
            self.ports.unexpose(&pod.id);
            if let Err(undo) = self.cni.del(&pod.id) {
                tracing::warn!(pod = %pod.id, %undo, "undoing CNI ADD");
            }
            return Err(e);
        }
        self.record_check(&pod.id, "ok".into());
        Ok(done)
    }

    /// A host-network pod: no CNI; its declared host ports are published on
    /// the host and forwarded to the node namespace's loopback, where the
    /// pod listens. `None` when it declares none.
    pub fn attach_node(
        &self,
        pod_id: &str,
        port_mappings: Vec<PortMapping>,
    ) -> Result<Option<PodAttachment>, NetError> {
        let published: Vec<PortMapping> = port_mappings
            .into_iter()
            .filter(|m| m.host_port != 0)
            .collect();
        if published.is_empty() {
            return Ok(None);
        }
        hostport::validate(&published)?;
        let done = PodAttachment {
            network: String::new(),
            ips: Vec::new(),
            port_mappings: published,
            node: true,
            subnets: Vec::new(),
        };
        let target = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        if let Err(e) = self.ports.expose(pod_id, target, &done.port_mappings) {
            self.ports.unexpose(pod_id);
            return Err(e);
        }
        Ok(Some(done))
    }

    fn cni_attachment(&self, pod: &PodNetwork, ranges: &[String]) -> Attachment {
        let mut capabilities = BTreeMap::new();
        let mappings: Vec<Value> = pod
            .port_mappings
            .iter()
            .filter(|m| m.host_port != 0)
            .map(|m| {
                json!({"hostPort": m.host_port, "containerPort": m.container_port,
                       "protocol": m.protocol.name(), "hostIP": m.host_ip})
            })
            .collect();
        if !mappings.is_empty() {
            capabilities.insert("portMappings".to_owned(), Value::Array(mappings));
        }
        if let Some(bandwidth) = &pod.bandwidth {
            capabilities.insert("bandwidth".to_owned(), bandwidth.clone());
        }
        if !ranges.is_empty() {
            let ranges: Vec<Value> = ranges.iter().map(|c| json!([{"subnet": c}])).collect();
            capabilities.insert("ipRanges".to_owned(), Value::Array(ranges));
        }
        Attachment {
            container_id: pod.id.clone(),
            netns: pod.netns.clone(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), pod.namespace.clone()),
                ("K8S_POD_NAME".into(), pod.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), pod.id.clone()),
                ("K8S_POD_UID".into(), pod.uid.clone()),
            ],
            capabilities,
        }
    }

    /// Closes the pod's host ports and runs CNI DEL from the cache.
    /// Detaching a pod that is not attached succeeds.
    pub fn detach(&self, pod_id: &str) -> Result<(), NetError> {
        self.ports.unexpose(pod_id);
        self.lock_checks().by_pod.remove(pod_id);
        self.cni.del(pod_id)
    }

    /// Whether the pod's CNI chain releases everything when DEL runs after
    /// its namespace is gone (see [`NetworkList::releases_without_netns`]).
    pub fn releases_without_netns(&self, pod_id: &str) -> bool {
        self.cni.releases_without_netns(pod_id)
    }

    /// Re-opens the host ports of a pod a previous daemon attached.
    pub fn restore(&self, pod_id: &str, attachment: &PodAttachment) {
        let Some(ip) = attachment.forward_target() else {
            return;
        };
        if let Err(e) = self.ports.expose(pod_id, ip, &attachment.port_mappings) {
            tracing::warn!(pod = %pod_id, %e, "cannot re-open the pod's host ports");
        }
    }

    /// CNI CHECK of an attached pod.
    pub fn check(&self, pod_id: &str) -> Result<(), NetError> {
        self.cni.check(pod_id)
    }

    /// The latest CNI CHECK of the pod (its ADD counts as the first); None
    /// when it is not attached.
    pub fn last_check(&self, pod_id: &str) -> Option<CheckResult> {
        self.lock_checks().by_pod.get(pod_id).cloned()
    }

    fn record_check(&self, pod_id: &str, result: String) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.lock_checks()
            .by_pod
            .insert(pod_id.to_owned(), CheckResult { result, at });
    }

    fn lock_checks(&self) -> std::sync::MutexGuard<'_, Checks> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// CNI CHECK of every attached pod, at most once per configured interval.
    fn check_attached(&self) {
        {
            let mut checks = self.lock_checks();
            let interval = self.options.cni_check_interval;
            if checks.last_round.is_some_and(|t| t.elapsed() < interval) {
                return;
            }
            checks.last_round = Some(std::time::Instant::now());
        }
        for pod in self.cni.cached_pods() {
            let result = match self.cni.check(&pod) {
                Ok(()) => "ok".to_owned(),
                Err(e) => {
                    tracing::warn!(pod = %pod, %e, "CNI CHECK failed");
                    e.to_string()
                }
            };
            self.record_check(&pod, result);
        }
    }

    /// Pods with a cached CNI attachment.
    pub fn attached_pods(&self) -> Vec<String> {
        self.cni.cached_pods()
    }

    /// Stops the uplink helper and unpins the namespace: for daemons with no
    /// holder to keep them (nested or host root), at shutdown.
    pub fn shut_down(&self) {
        self.uplink.shut_down();
    }

    /// Restarts the uplink helper if it died (see [`Uplink::supervise`]).
    pub fn supervise_uplink(&self) {
        self.uplink.supervise();
    }

    /// Whether there is an uplink helper to supervise at all.
    pub fn has_uplink_helper(&self) -> bool {
        self.uplink.options().kind.program().is_some()
    }

    /// Periodic upkeep: a CNI CHECK of every attached pod, at most once per
    /// configured interval.
    pub fn check_attachments(&self) {
        self.check_attached();
    }

    /// A pidfd of the running uplink helper (see [`Uplink::helper_pidfd`]).
    pub fn uplink_helper_pidfd(&self) -> Option<ucri_rootless::pidfd::Pidfd> {
        self.uplink.helper_pidfd()
    }

    /// What `ucri info` and verbose status show.
    pub fn describe(&self) -> Value {
        let network = match self.ready() {
            Ok(list) => {
                json!({"name": list.name, "file": list.source, "plugins": list.plugin_types()})
            }
            Err(why) => json!({"error": why}),
        };
        json!({
            "uplink": {
                "kind": self.options.uplink.kind,
                "mtu": self.options.uplink.mtu,
                "netns": self.uplink.netns(),
                "helperPid": self.uplink.helper_pid(),
                "log": self.uplink.log_path(),
                "problem": self.uplink.problem(),
            },
            "node": self.node.describe(),
            "cniConfigDir": self.options.cni_config_dir,
            "cniPluginDirs": self.options.cni_plugin_dirs,
            "network": network,
        })
    }
}

/// Where the pod CIDR kubelet sent is kept.
fn pod_cidr_file(options: &NetworkOptions) -> PathBuf {
    options.runtime_dir.join("cni").join("pod-cidr")
}

#[cfg(test)]
mod pod_cidr_tests {
    use super::parse_pod_cidrs;

    #[test]
    fn kubelets_pod_cidrs_are_parsed_single_or_dual_stack() {
        assert_eq!(
            parse_pod_cidrs("10.244.1.0/24").expect("v4"),
            ["10.244.1.0/24"]
        );
        assert_eq!(
            parse_pod_cidrs("10.244.1.0/24, fd00:1::/64").expect("dual"),
            ["10.244.1.0/24", "fd00:1::/64"]
        );
        assert!(parse_pod_cidrs("").expect("empty").is_empty());
        for bad in ["10.244.1.0", "10.244.1.0/33", "fd00::/129", "nonsense/8"] {
            assert!(parse_pod_cidrs(bad).is_err(), "{bad}");
        }
    }
}
