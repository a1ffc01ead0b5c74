//! Pod networking for ucri: the uplink network namespace and its
//! slirp4netns/pasta helper, CNI plugins run inside it, and hostPort
//! forwarding from the host into pods.

pub mod bypass;
pub mod cni;
pub mod discover;
pub mod error;
pub mod hostport;
pub mod manager;
pub mod node;
mod splice;
pub mod uplink;

pub use error::NetError;
pub use manager::{Network, NetworkOptions, PodAttachment, PodNetwork};
