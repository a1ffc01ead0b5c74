//! Image volumes (Kubernetes `volumes[].image`, GA in 1.36): a CRI mount
//! that names an image instead of a host path. Each gets a read-only root
//! filesystem of that image (`<container>-imgvol-<n>` in the rootfs store),
//! and the container sees it, or its `image_sub_path`, bound read-only at
//! the mount's path. They live and go with their container.

use std::path::{Component, Path, PathBuf};

use ucri_cri_api::v1::{ContainerConfig, Mount};

use ucri_storage::rootfs::Rootfs;

use super::error::LifecycleError;
use crate::image::lease::ImageLease;
use crate::image::Images;

/// The rootfs id of mount `index` of container `id`.
pub fn rootfs_id(container: &str, index: usize) -> String {
    format!("{container}-imgvol-{index}")
}

/// True for a mount that names an image and no host path.
pub fn is_image_mount(m: &Mount) -> bool {
    m.host_path.is_empty() && m.image.as_ref().is_some_and(|i| !i.image.is_empty())
}

/// The rootfs ids of every image volume of a container with `config`.
pub fn rootfs_ids<'a>(
    container: &'a str,
    config: &'a ContainerConfig,
) -> impl Iterator<Item = String> + 'a {
    config
        .mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| is_image_mount(m))
        .map(move |(n, _)| rootfs_id(container, n))
}

/// Mounts the image volumes of container `id` (a root filesystem in
/// `rootfs` for each, its image leased from `images`; each lease goes to
/// `hold` at once, so that a failure half-way still ends it with the
/// container) and returns its config with each of them as a read-only bind
/// of the image's root (or sub-path), and the ids of the images they use.
/// On failure the caller's [`remove`] undoes what was mounted.
pub(super) fn mount(
    images: &Images,
    rootfs: &Rootfs,
    id: &str,
    config: &ContainerConfig,
    mut hold: impl FnMut(ImageLease),
) -> Result<(ContainerConfig, Vec<String>), LifecycleError> {
    let mut resolved = config.clone();
    let mut used = Vec::new();
    for (n, mount) in resolved.mounts.iter_mut().enumerate() {
        if !is_image_mount(mount) {
            continue;
        }
        let spec = mount
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let (image, lease) = images.lease(&spec).ok_or_else(|| {
            LifecycleError::NotFound(format!(
                "image volume {}: image {spec:?} not found; pull it first",
                mount.container_path
            ))
        })?;
        hold(lease);
        let layers: Vec<_> = image.layers.iter().map(|l| l.chain_id.clone()).collect();
        let root = rootfs
            .create(&rootfs_id(id, n), &layers, true)
            .map_err(|e| LifecycleError::Internal(format!("image volume {spec}: {e}")))?;
        let source = sub_path(&root, &mount.image_sub_path).map_err(|why| {
            LifecycleError::InvalidArgument(format!("image volume {}: {why}", mount.container_path))
        })?;
        mount.host_path = source.display().to_string();
        mount.readonly = true;
        mount.image = None;
        mount.image_sub_path = String::new();
        used.push(image.id.to_string());
    }
    Ok((resolved, used))
}

/// Unmounts and removes the image volumes of container `id` from `rootfs`.
pub(super) fn remove(rootfs: &Rootfs, id: &str, config: &ContainerConfig) {
    for root in rootfs_ids(id, config) {
        if let Err(e) = rootfs.remove(&root) {
            tracing::warn!(container = %id, rootfs = %root, %e, "cannot remove an image volume");
        }
    }
}

/// `sub` below `root`: relative, without `..`, existing, and (symlinks
/// resolved) still inside `root`.
fn sub_path(root: &Path, sub: &str) -> Result<PathBuf, String> {
    if sub.is_empty() {
        return Ok(root.to_owned());
    }
    let relative = Path::new(sub);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("sub-path {sub:?} must be relative, without '..'"));
    }
    let base = root
        .canonicalize()
        .map_err(|e| format!("resolving the image root: {e}"))?;
    let full = base
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("sub-path {sub:?} is not in the image: {e}"))?;
    if !full.starts_with(&base) {
        return Err(format!("sub-path {sub:?} leads out of the image"));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path();
        std::fs::create_dir_all(root.join("data/conf")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", root.join("escape")).expect("symlink");
        std::os::unix::fs::symlink("data", root.join("inside")).expect("symlink");
        let base = root.canonicalize().expect("canon");
        assert_eq!(sub_path(root, "").expect("root"), root);
        assert_eq!(
            sub_path(root, "data/conf").expect("dir"),
            base.join("data/conf")
        );
        assert_eq!(
            sub_path(root, "inside/conf").expect("link inside"),
            base.join("data/conf")
        );
        for bad in ["../x", "/etc", "data/../../x", "escape", "missing"] {
            assert!(sub_path(root, bad).is_err(), "{bad}");
        }
    }
}
