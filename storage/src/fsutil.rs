//! File-system helpers the store and the root filesystems share: atomic
//! writes and disk usage.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes and inodes used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of disk blocks used.
    pub bytes: u64,
    /// Distinct inodes.
    pub inodes: u64,
}

/// Writes `data` to `path` atomically: temp file, fsync, rename.
pub fn write_file_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Bytes (by allocated blocks) and distinct inodes under `root`, not
/// following symlinks or crossing into other filesystems.
pub fn disk_usage(root: &Path) -> Usage {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let Ok(top) = fs::symlink_metadata(root) else {
        return usage;
    };
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != top.dev() || !seen.insert(meta.ino()) {
            continue;
        }
        usage.bytes += meta.blocks() * 512;
        usage.inodes += 1;
        if meta.is_dir() {
            if let Ok(entries) = fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        }
    }
    usage
}
