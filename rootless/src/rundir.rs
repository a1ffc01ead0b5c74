//! The per-user runtime directory (`$XDG_RUNTIME_DIR/ucri`) and what lives in it.

use std::fs::{DirBuilder, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The runtime directory of one user's ucri.
#[derive(Debug, Clone)]
pub struct RuntimeDir {
    root: PathBuf,
}

impl RuntimeDir {
    /// Wraps `root` (not created yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RuntimeDir { root: root.into() }
    }

    /// Creates the directory, private to the user (0700).
    pub fn create(&self) -> std::io::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.root)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The daemon lock, held for as long as a daemon runs.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("ucri.lock")
    }

    /// The pid of the serving daemon process.
    pub fn daemon_pid_file(&self) -> PathBuf {
        self.root.join("daemon.pid")
    }

    /// The holder's pid and namespace identities.
    pub fn holder_file(&self) -> PathBuf {
        self.root.join("holder.json")
    }

    /// Where the holder's stderr goes.
    pub fn holder_log(&self) -> PathBuf {
        self.root.join("holder.log")
    }
}

/// Writes `data` to `path` atomically: a temp file in the same directory,
/// fsync, rename. For state that must survive a power loss.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_via_temp(path, data, true)
}

/// Writes `data` to `path` atomically against a killed writer (a temp file,
/// then rename), without fsync: for files under the runtime dir, which a
/// reboot empties anyway (and ucri's epoch then reads as lost), so that
/// what a power loss would drop is dropped with it.
pub fn write_atomic_volatile(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_via_temp(path, data, false)
}

fn write_via_temp(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    // The pid names the writer for `remove_stale_temps`; the sequence number
    // keeps two threads writing one file (an RPC and the exit reaper saving
    // one container) off each other's temp file.
    static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let result = (|| {
        // Private: state can hold a container's environment (secrets).
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temp files [`write_atomic`] leaves in `dir` when its writer
/// is killed mid-write (`.NAME.tmp-PID`); returns how many. For start-up,
/// when no writer of this daemon runs yet.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.contains(".tmp-") {
            remove_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes `path`, treating "already gone" as success.
pub fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_writing_one_file_at_once_each_replace_it_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("record.json");
        let writes: Vec<Vec<u8>> = (0..8u8).map(|t| vec![b'a' + t; 64 * 1024]).collect();
        std::thread::scope(|scope| {
            for data in &writes {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_atomic_volatile(path, data).expect("every write succeeds");
                    }
                });
            }
        });
        let last = std::fs::read(&path).expect("read");
        assert!(writes.contains(&last), "one writer's bytes, whole");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != "record.json")
            .collect();
        assert!(left.is_empty(), "no temp file left: {left:?}");
    }

    #[test]
    fn stale_temps_of_killed_writers_are_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(".pod.json.tmp-4242"), b"half").expect("temp");
        std::fs::write(dir.path().join("pod.json"), b"{}").expect("file");
        assert_eq!(remove_stale_temps(dir.path()).expect("sweep"), 1);
        assert!(dir.path().join("pod.json").exists());
        assert_eq!(
            remove_stale_temps(&dir.path().join("missing")).expect("none"),
            0
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("state.json");
        write_atomic(&target, b"one").expect("write");
        write_atomic(&target, b"two").expect("rewrite");
        assert_eq!(std::fs::read(&target).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn runtime_dir_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rd = RuntimeDir::new(dir.path().join("a/ucri"));
        rd.create().expect("create");
        let mode = std::fs::metadata(rd.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
