//! Image and container storage for ucri: a content-addressed blob store,
//! layers unpacked once per chain ID, image records, and the probe that
//! decides whether kernel overlayfs works inside a user namespace.

pub mod digest;
pub mod probe;
pub mod rootfs;
pub mod store;
pub mod unpack;
