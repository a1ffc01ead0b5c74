//! Image and container storage for ucri: a content-addressed blob store,
//! layers unpacked once per chain ID, image records, and the probe that
//! decides whether kernel overlayfs works inside a user namespace.

pub mod digest;
pub mod fsutil;
pub mod probe;
pub mod rootfs;
pub mod stop;
pub mod store;
pub mod unpack;

/// Sets the permission bits of `path`.
pub(crate) fn set_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
