//! Writable node directories (`/var/lib/kubelet`, `/var/log/pods`, …) for a
//! kubelet that runs in the daemon's namespaces without root on the host.
//!
//! Each wanted path is bound, in the daemon's mount namespace, to a
//! directory of the user's. A path whose parent does not exist on the host
//! (an ordinary user cannot create `/var/lib/kubelet`) gets its nearest
//! existing ancestor "copied up", as rootlesskit does: the ancestor is kept
//! at a hidden place, a tmpfs covers it, and every entry of the original is
//! bound (directories) or linked (the rest) back into the tmpfs, where the
//! missing directories can then be made. Idempotent: a path already bound
//! to its backing directory is left alone, so daemon restarts add nothing.

use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};

/// Why a node directory could not be made writable.
#[derive(Debug, thiserror::Error)]
pub enum NodeDirError {
    /// A path is not absolute or has `..` in it.
    #[error("node directory {0} must be an absolute path without '..'")]
    BadPath(PathBuf),
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A mount failed.
    #[error("{context}: {source}")]
    Mount {
        /// What was being mounted.
        context: String,
        /// The errno.
        source: nix::Error,
    },
}

/// Where the backing directories and the hidden originals go.
#[derive(Debug, Clone)]
pub struct NodeDirs {
    /// The user's directories that back the paths (`DATA/node`).
    pub backing: PathBuf,
    /// Where copied-up originals are kept (`RUNTIME/node-orig`).
    pub originals: PathBuf,
}

impl NodeDirs {
    /// Makes every path of `paths` writable, bound to `backing/<path>`.
    pub fn make_writable(&self, paths: &[PathBuf]) -> Result<(), NodeDirError> {
        for path in paths {
            self.make_one_writable(path)?;
        }
        Ok(())
    }

    fn make_one_writable(&self, path: &Path) -> Result<(), NodeDirError> {
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Err(NodeDirError::BadPath(path.to_owned()));
        }
        let backing = self.backing.join(path.strip_prefix("/").unwrap_or(path));
        create_dir(&backing)?;
        if is_bound_to(path, &backing) {
            return Ok(());
        }
        if !path.is_dir() {
            let ancestor = nearest_existing(path);
            if !self.is_copied_up(&ancestor) {
                self.copy_up(&ancestor)?;
            }
            create_dir(path)?;
        }
        bind(&backing, path)
    }

    fn hidden(&self, dir: &Path) -> PathBuf {
        self.originals.join(dir.strip_prefix("/").unwrap_or(dir))
    }

    fn is_copied_up(&self, dir: &Path) -> bool {
        self.hidden(dir).join(".").is_dir() && mountinfo_has(&self.hidden(dir))
    }

    /// Covers `dir` with a tmpfs that shows the original's entries again.
    fn copy_up(&self, dir: &Path) -> Result<(), NodeDirError> {
        let hidden = self.hidden(dir);
        create_dir(&hidden)?;
        bind(dir, &hidden)?;
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|source| NodeDirError::Mount {
            context: format!("covering {} with a tmpfs", dir.display()),
            source,
        })?;
        let entries = fs::read_dir(&hidden).map_err(io(format!("listing {}", hidden.display())))?;
        for entry in entries.flatten() {
            let (original, copy) = (entry.path(), dir.join(entry.file_name()));
            let kind = entry
                .file_type()
                .map_err(io(format!("reading {}", original.display())))?;
            if kind.is_dir() {
                create_dir(&copy)?;
                bind(&original, &copy)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&original)
                    .map_err(io(format!("reading {}", original.display())))?;
                std::os::unix::fs::symlink(target, &copy)
                    .map_err(io(format!("linking {}", copy.display())))?;
            } else {
                std::os::unix::fs::symlink(&original, &copy)
                    .map_err(io(format!("linking {}", copy.display())))?;
            }
        }
        Ok(())
    }
}

/// The deepest ancestor of `path` that exists.
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .skip(1)
        .find(|a| a.is_dir())
        .unwrap_or(Path::new("/"))
        .to_owned()
}

fn create_dir(dir: &Path) -> Result<(), NodeDirError> {
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))
}

fn bind(source: &Path, target: &Path) -> Result<(), NodeDirError> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source_err| NodeDirError::Mount {
        context: format!("binding {} at {}", source.display(), target.display()),
        source: source_err,
    })
}

/// True when `target` is a mountpoint whose root is `backing`'s.
fn is_bound_to(target: &Path, backing: &Path) -> bool {
    let (Ok(a), Ok(b)) = (fs::metadata(target), fs::metadata(backing)) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino() && mountinfo_has(target)
}

/// True when `/proc/self/mountinfo` lists `path` as a mountpoint.
fn mountinfo_has(path: &Path) -> bool {
    let wanted = path.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .map(|text| {
            text.lines()
                .any(|l| l.split(' ').nth(4) == Some(wanted.as_str()))
        })
        .unwrap_or(false)
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> NodeDirError {
    move |source| NodeDirError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_existing_ancestor_is_found_and_bad_paths_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let deep = dir.path().join("a/b/c");
        assert_eq!(nearest_existing(&deep), dir.path());
        let dirs = NodeDirs {
            backing: dir.path().join("backing"),
            originals: dir.path().join("orig"),
        };
        for bad in ["relative/kubelet", "/var/lib/../etc"] {
            assert!(matches!(
                dirs.make_writable(&[PathBuf::from(bad)]),
                Err(NodeDirError::BadPath(_))
            ));
        }
    }
}
