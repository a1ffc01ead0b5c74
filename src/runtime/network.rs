//! The lifecycle's side of pod networking: CRI port mappings and bandwidth
//! annotations in, CNI attachment on RunPodSandbox, detachment on stop and
//! remove, host ports re-opened after a restart.

use serde_json::{json, Value};
use ucri_cri_api::v1::{PodIp, PodSandboxConfig, PodSandboxNetworkStatus, Protocol as CriProtocol};
use ucri_net::hostport::{PortMapping, Protocol};
use ucri_net::PodNetwork;

use super::sandbox::PodDir;
use super::state::{PodPhase, PodState};
use super::{Lifecycle, LifecycleError};

/// The pod's hostPort mappings, checked for range.
pub fn port_mappings(config: &PodSandboxConfig) -> Result<Vec<PortMapping>, LifecycleError> {
    config
        .port_mappings
        .iter()
        .map(|m| {
            let port = |value: i32, what: &str| {
                u16::try_from(value).map_err(|_| {
                    LifecycleError::InvalidArgument(format!("{what} {value} is out of range"))
                })
            };
            let protocol = match CriProtocol::try_from(m.protocol) {
                Ok(CriProtocol::Tcp) => Protocol::Tcp,
                Ok(CriProtocol::Udp) => Protocol::Udp,
                Ok(CriProtocol::Sctp) => Protocol::Sctp,
                Err(_) => {
                    return Err(LifecycleError::InvalidArgument(format!(
                        "unknown port protocol {}",
                        m.protocol
                    )))
                }
            };
            Ok(PortMapping {
                protocol,
                container_port: port(m.container_port, "containerPort")?,
                host_port: port(m.host_port, "hostPort")?,
                host_ip: m.host_ip.clone(),
            })
        })
        .collect()
}

/// CNI `bandwidth` args from the `kubernetes.io/{ingress,egress}-bandwidth`
/// annotations (bits per second), as containerd and CRI-O pass them.
pub fn bandwidth(config: &PodSandboxConfig) -> Result<Option<Value>, LifecycleError> {
    let rate = |key: &str| -> Result<Option<u64>, LifecycleError> {
        config
            .annotations
            .get(key)
            .map(|v| {
                parse_quantity(v).ok_or_else(|| {
                    LifecycleError::InvalidArgument(format!(
                        "annotation {key}={v:?} is not a quantity"
                    ))
                })
            })
            .transpose()
    };
    let ingress = rate("kubernetes.io/ingress-bandwidth")?;
    let egress = rate("kubernetes.io/egress-bandwidth")?;
    if ingress.is_none() && egress.is_none() {
        return Ok(None);
    }
    let mut args = serde_json::Map::new();
    if let Some(r) = ingress {
        args.insert("ingressRate".into(), json!(r));
        args.insert("ingressBurst".into(), json!(i32::MAX));
    }
    if let Some(r) = egress {
        args.insert("egressRate".into(), json!(r));
        args.insert("egressBurst".into(), json!(i32::MAX));
    }
    Ok(Some(Value::Object(args)))
}

/// A Kubernetes quantity ("10M", "1Gi", "500k") as a number.
fn parse_quantity(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor) as u64)
}

/// The CRI view of a pod's addresses.
pub fn network_status(pod: &PodState) -> PodSandboxNetworkStatus {
    let ips: Vec<String> = pod
        .network
        .as_ref()
        .map(|n| n.ips.iter().map(|ip| ip.to_string()).collect())
        .unwrap_or_default();
    PodSandboxNetworkStatus {
        ip: ips.first().cloned().unwrap_or_default(),
        additional_ips: ips
            .iter()
            .skip(1)
            .map(|ip| PodIp { ip: ip.clone() })
            .collect(),
    }
}

impl Lifecycle {
    /// CNI ADD into the pod's network namespace and its host ports; the
    /// attachment is kept in `state`.
    pub(super) fn attach_network(
        &self,
        dir: &PodDir,
        state: &mut PodState,
        port_mappings: Vec<PortMapping>,
    ) -> Result<(), LifecycleError> {
        if !state.namespaces.network {
            let attachment = self.network.attach_node(&state.id, port_mappings)?;
            state.network = attachment;
            return Ok(());
        }
        let metadata = state.config.metadata.clone().unwrap_or_default();
        let pod = PodNetwork {
            id: state.id.clone(),
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            netns: dir.ns("net"),
            port_mappings,
            bandwidth: bandwidth(&state.config)?,
        };
        let attachment = self.network.attach(&pod)?;
        tracing::info!(pod = %state.id, ips = ?attachment.ips, network = %attachment.network, "pod attached");
        state.network = Some(attachment);
        Ok(())
    }

    /// Host ports closed, CNI DEL run. The pod's status keeps the addresses
    /// it had (kubelet and `crictl inspectp` show a stopped pod's IP, as with
    /// CRI-O and containerd); nothing else uses them once it is not Ready.
    pub(super) fn detach_network(&self, id: &str) -> Result<(), LifecycleError> {
        self.network.detach(id)?;
        Ok(())
    }

    /// After a restart: re-open the host ports of ready pods, and undo the
    /// CNI attachments of pods that were never finished.
    pub(super) fn recover_networks(&self) {
        let pods: Vec<PodState> = self.pods_mut().values().cloned().collect();
        for pod in &pods {
            if let (PodPhase::Ready, Some(attachment)) = (pod.phase, &pod.network) {
                self.network.restore(&pod.id, attachment);
            }
        }
        let quarantined = self.states.quarantined();
        let set_aside = |id: &str| quarantined.iter().any(|q| q.kind == "pods" && q.id == id);
        for id in self.network.attached_pods() {
            if !pods.iter().any(|p| p.id == id) && !set_aside(&id) {
                tracing::info!(pod = %id, "releasing the network of a pod that was never finished");
                if let Err(e) = self.network.detach(&id) {
                    tracing::warn!(pod = %id, %e, "cannot release a half-created pod's network");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn quantities_and_bandwidth_annotations_are_read() {
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("fast"), None);
        let mut config = PodSandboxConfig {
            annotations: HashMap::from([(
                "kubernetes.io/ingress-bandwidth".to_owned(),
                "10M".to_owned(),
            )]),
            ..Default::default()
        };
        let args = bandwidth(&config).expect("ok").expect("some");
        assert_eq!(args["ingressRate"], 10_000_000);
        assert!(args.get("egressRate").is_none());
        config
            .annotations
            .insert("kubernetes.io/egress-bandwidth".into(), "lots".into());
        assert!(bandwidth(&config).is_err());
    }

    #[test]
    fn port_mappings_are_converted_and_out_of_range_ports_refused() {
        let mut config = PodSandboxConfig::default();
        config.port_mappings.push(ucri_cri_api::v1::PortMapping {
            protocol: CriProtocol::Udp as i32,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        });
        let got = port_mappings(&config).expect("convert");
        assert_eq!(got[0].protocol, Protocol::Udp);
        assert_eq!(got[0].host_port, 5353);
        config.port_mappings[0].host_port = 70000;
        assert!(port_mappings(&config).is_err());
    }
}
