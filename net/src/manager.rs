//! Pod networking as the lifecycle sees it: attach a pod (CNI ADD in the
//! uplink, then its host ports), detach it, say whether networking is ready.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::cni::{self, Attachment, Cni};
use crate::hostport::{self, HostPorts, PortMapping};
use crate::uplink::{Uplink, UplinkKind, UplinkOptions, UPLINK_DNS};
use crate::NetError;

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
        Network {
            options,
            uplink,
            cni,
            ports,
        }
    }

    /// The uplink namespace's pin.
    pub fn uplink_netns(&self) -> PathBuf {
        self.uplink.netns()
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
        let attachment = self.cni_attachment(pod);
        let result = self.cni.add(&list, &attachment)?;
        let done = PodAttachment {
            network: list.name.clone(),
            ips: cni::result_ips(&result),
            port_mappings: pod.port_mappings.clone(),
            node: false,
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
        };
        let target = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        if let Err(e) = self.ports.expose(pod_id, target, &done.port_mappings) {
            self.ports.unexpose(pod_id);
            return Err(e);
        }
        Ok(Some(done))
    }

    fn cni_attachment(&self, pod: &PodNetwork) -> Attachment {
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
        self.cni.del(pod_id)
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

    /// Pods with a cached CNI attachment.
    pub fn attached_pods(&self) -> Vec<String> {
        self.cni.cached_pods()
    }

    /// Stops the uplink helper and unpins the namespace: for daemons with no
    /// holder to keep them (nested or host root), at shutdown.
    pub fn shut_down(&self) {
        self.uplink.shut_down();
    }

    /// Periodic upkeep: restarts a dead uplink helper.
    pub fn supervise(&self) {
        self.uplink.supervise();
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
            "cniConfigDir": self.options.cni_config_dir,
            "cniPluginDirs": self.options.cni_plugin_dirs,
            "network": network,
        })
    }
}
