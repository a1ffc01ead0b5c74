//! GetContainerEvents: created/started/stopped/deleted events for
//! containers and pod sandboxes, with the pod's status and its containers'
//! statuses attached, as kubelet's evented PLEG expects. Events go to a
//! broadcast channel: any number of subscribers, and one that falls behind
//! loses old events instead of slowing the runtime down.

use tokio::sync::broadcast;
use ucri_cri_api::v1::{ContainerEventResponse, ContainerEventType};

use super::{now_nanos, Lifecycle};

/// Events a subscriber may fall behind by before it loses the oldest.
pub(super) const BACKLOG: usize = 1024;

impl Lifecycle {
    /// A new subscription to lifecycle events.
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.events.subscribe()
    }

    /// Announces a change of container `id`.
    pub(super) fn emit_container(&self, id: &str, kind: ContainerEventType) {
        let pod = self
            .containers_mut()
            .get(id)
            .map(|c| c.pod_id.clone())
            .unwrap_or_default();
        self.emit(id, &pod, kind);
    }

    /// Announces a change of pod sandbox `id`.
    pub(super) fn emit_pod(&self, id: &str, kind: ContainerEventType) {
        self.emit(id, id, kind);
    }

    /// Announces a change of `id` (a container of `pod_id`, or the pod).
    pub(super) fn emit(&self, id: &str, pod_id: &str, kind: ContainerEventType) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let pod_sandbox_status = self
            .pods_mut()
            .get(pod_id)
            .filter(|p| p.created_at != 0)
            .map(super::pod::cri_pod_status);
        let containers_statuses = self
            .containers_of(pod_id)
            .iter()
            .filter_map(|c| self.containers_mut().get(c).cloned())
            .filter(|c| c.created_at != 0)
            .map(|c| super::container::cri_container_status(&c))
            .collect();
        let event = ContainerEventResponse {
            container_id: id.to_owned(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        };
        let _ = self.events.send(event);
    }
}
