//! The metrics kubelet can ask the runtime for (ListMetricDescriptors,
//! ListPodSandboxMetrics, cAdvisor names and labels), and the pod and
//! container gauges of the Prometheus endpoint. All come from the stats.

use ucri_cri_api::v1::{
    ContainerMetrics, ContainerStats, Metric, MetricDescriptor, MetricType, PodSandboxMetrics,
    UInt64Value,
};

use super::state::{ContainerPhase, PodPhase};
use super::{now_nanos, Lifecycle};
use crate::metrics::Gauge;

/// (name, help, type) of the metrics ListPodSandboxMetrics returns.
const DESCRIPTORS: [(&str, &str, MetricType); 6] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        MetricType::Counter,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        MetricType::Gauge,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes.",
        MetricType::Gauge,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        MetricType::Gauge,
    ),
    (
        "container_network_receive_bytes_total",
        "Cumulative count of bytes received.",
        MetricType::Counter,
    ),
    (
        "container_network_transmit_bytes_total",
        "Cumulative count of bytes transmitted.",
        MetricType::Counter,
    ),
];

/// The label keys of every metric (cAdvisor's).
const LABELS: [&str; 4] = ["container", "pod", "namespace", "interface"];

/// The descriptors of the metrics ucri reports.
pub fn descriptors() -> Vec<MetricDescriptor> {
    DESCRIPTORS
        .iter()
        .map(|(name, help, _)| MetricDescriptor {
            name: (*name).to_owned(),
            help: (*help).to_owned(),
            label_keys: LABELS.iter().map(|l| (*l).to_owned()).collect(),
        })
        .collect()
}

fn metric(name: &str, labels: [&str; 4], value: u64) -> Metric {
    let kind = DESCRIPTORS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map_or(MetricType::Gauge, |(_, _, t)| *t);
    Metric {
        name: name.to_owned(),
        timestamp: now_nanos(),
        metric_type: kind as i32,
        label_values: labels.iter().map(|l| (*l).to_owned()).collect(),
        value: Some(UInt64Value { value }),
    }
}

fn container_metrics(s: &ContainerStats, pod: &str, namespace: &str) -> ContainerMetrics {
    let attributes = s.attributes.clone().unwrap_or_default();
    let name = attributes.metadata.map(|m| m.name).unwrap_or_default();
    let labels = [name.as_str(), pod, namespace, ""];
    let value = |v: Option<&UInt64Value>| v.map_or(0, |v| v.value);
    let cpu = s.cpu.as_ref();
    let memory = s.memory.as_ref();
    let cpu_seconds = value(cpu.and_then(|c| c.usage_core_nano_seconds.as_ref())) / 1_000_000_000;
    ContainerMetrics {
        container_id: attributes.id,
        metrics: vec![
            metric("container_cpu_usage_seconds_total", labels, cpu_seconds),
            metric(
                "container_memory_working_set_bytes",
                labels,
                value(memory.and_then(|m| m.working_set_bytes.as_ref())),
            ),
            metric(
                "container_memory_usage_bytes",
                labels,
                value(memory.and_then(|m| m.usage_bytes.as_ref())),
            ),
            metric(
                "container_memory_rss",
                labels,
                value(memory.and_then(|m| m.rss_bytes.as_ref())),
            ),
        ],
    }
}

impl Lifecycle {
    /// Metrics of every pod and its containers.
    pub fn pod_metrics(&self) -> Vec<PodSandboxMetrics> {
        self.list_pod_stats(None)
            .into_iter()
            .map(|stats| {
                let attributes = stats.attributes.clone().unwrap_or_default();
                let metadata = attributes.metadata.unwrap_or_default();
                let (pod, namespace) = (metadata.name.as_str(), metadata.namespace.as_str());
                let linux = stats.linux.unwrap_or_default();
                let mut metrics = Vec::new();
                for iface in linux.network.map(|n| n.interfaces).unwrap_or_default() {
                    let labels = ["POD", pod, namespace, iface.name.as_str()];
                    let v = |x: Option<UInt64Value>| x.map_or(0, |v| v.value);
                    metrics.push(metric(
                        "container_network_receive_bytes_total",
                        labels,
                        v(iface.rx_bytes),
                    ));
                    metrics.push(metric(
                        "container_network_transmit_bytes_total",
                        labels,
                        v(iface.tx_bytes),
                    ));
                }
                PodSandboxMetrics {
                    pod_sandbox_id: attributes.id,
                    metrics,
                    container_metrics: linux
                        .containers
                        .iter()
                        .map(|c| container_metrics(c, pod, namespace))
                        .collect(),
                }
            })
            .collect()
    }

    /// Pods and containers by state, for the Prometheus endpoint.
    pub fn gauges(&self) -> Vec<Gauge> {
        let mut pods = [("ready", 0u64), ("notready", 0)];
        for p in self.pods_mut().values().filter(|p| p.created_at != 0) {
            pods[usize::from(p.phase == PodPhase::NotReady)].1 += 1;
        }
        let mut containers = [("created", 0u64), ("running", 0), ("exited", 0)];
        for c in self.containers_mut().values().filter(|c| c.created_at != 0) {
            let i = match c.phase {
                ContainerPhase::Created => 0,
                ContainerPhase::Running => 1,
                ContainerPhase::Exited => 2,
            };
            containers[i].1 += 1;
        }
        let values =
            |list: &[(&str, u64)]| list.iter().map(|(s, n)| ((*s).to_owned(), *n)).collect();
        vec![
            Gauge {
                name: "ucri_pods",
                help: "Pod sandboxes by state.",
                values: values(&pods),
            },
            Gauge {
                name: "ucri_containers",
                help: "Containers by state.",
                values: values(&containers),
            },
        ]
    }
}
