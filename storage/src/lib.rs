//! Image and container storage for ucri. Today: the probe that decides
//! whether kernel overlayfs works inside a user namespace.

pub mod probe;
