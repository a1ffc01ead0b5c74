//! Pod networking for ucri. Today: finding the CNI plugins and uplink helpers
//! that `ucri info` reports on.

pub mod discover;
