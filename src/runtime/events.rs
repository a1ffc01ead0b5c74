//! GetContainerEvents: created/started/stopped/deleted events for
//! containers and pod sandboxes, with the pod's status and its containers'
//! statuses attached, as kubelet's evented PLEG expects. Events go to a
//! broadcast channel: any number of subscribers, and one that falls behind
//! loses old events instead of slowing the runtime down.

use tokio::sync::broadcast;
use ucri_cri_api::v1::ContainerEventResponse;

/// Events a subscriber may fall behind by before it loses the oldest.
const BACKLOG: usize = 1024;

/// The lifecycle's event stream: what changed, to every subscriber.
#[derive(Debug)]
pub(super) struct EventBus {
    sender: broadcast::Sender<ContainerEventResponse>,
}

impl EventBus {
    /// A stream with no subscriber yet.
    pub(super) fn new() -> EventBus {
        EventBus {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// A new subscription.
    pub(super) fn subscribe(&self) -> broadcast::Receiver<ContainerEventResponse> {
        self.sender.subscribe()
    }

    /// Whether anyone listens (an event nobody hears need not be built).
    pub(super) fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Sends `event` to every subscriber.
    pub(super) fn publish(&self, event: ContainerEventResponse) {
        let _ = self.sender.send(event);
    }
}
