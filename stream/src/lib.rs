//! Streaming protocols for ucri: SPDY/3.1 as Kubernetes' exec, attach and
//! port-forward speak it (kubelet / CRI-O streaming server, `kubectl exec`).

pub mod remote;
pub mod spdy;
