//! The OCI runtime under conmon, driven the way CRI-O drives them: conmon
//! creates the container and stays as its monitor (logs in the CRI format,
//! exit file on exit); crun (or runc) starts, signals and deletes it.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::sandbox::run_checked;
use super::LifecycleError;

/// Paths shared by every container.
#[derive(Debug, Clone)]
pub struct OciPaths {
    /// conmon.
    pub conmon: PathBuf,
    /// `--root` of the OCI runtime.
    pub runtime_root: PathBuf,
    /// Where conmon writes exit files.
    pub exits: PathBuf,
    /// Where conmon puts attach sockets.
    pub attach: PathBuf,
}

/// What conmon needs to create one container.
#[derive(Debug)]
pub struct CreateArgs<'a> {
    /// Container ID.
    pub id: &'a str,
    /// The OCI runtime binary.
    pub runtime: &'a Path,
    /// Bundle dir with config.json.
    pub bundle: &'a Path,
    /// CRI log file.
    pub log_path: &'a Path,
    /// Allocate a terminal.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Name for conmon's logs.
    pub name: &'a str,
}

/// The container's and conmon's pids after create.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    /// Container init pid.
    pub pid: i32,
    /// conmon's pid.
    pub conmon_pid: i32,
}

#[derive(Debug, Deserialize)]
struct SyncMessage {
    data: i32,
    #[serde(default)]
    message: String,
}

/// How long conmon may take to create a container.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads conmon's one JSON message: conmon keeps the pipe open after it, so
/// reading stops at the first complete line (or end of file, or timeout).
fn read_sync_message(pipe: &mut std::os::unix::net::UnixStream) -> std::io::Result<String> {
    pipe.set_read_timeout(Some(CREATE_TIMEOUT))?;
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte)? {
            0 => break,
            _ if byte[0] == b'\n' => break,
            _ => out.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl OciPaths {
    /// Creates the shared directories.
    pub fn prepare(&self) -> Result<(), LifecycleError> {
        for dir in [&self.runtime_root, &self.exits, &self.attach] {
            std::fs::create_dir_all(dir).map_err(|source| LifecycleError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// Has conmon create the container; blocks until it reports the pid.
    pub fn create(&self, args: &CreateArgs<'_>) -> Result<Created, LifecycleError> {
        let (mut sync_read, sync_write) =
            std::os::unix::net::UnixStream::pair().map_err(|source| LifecycleError::Io {
                context: "sync pipe".into(),
                source,
            })?;
        let mut cmd = self.conmon_command(args);
        let fd = sync_write.as_raw_fd();
        cmd.env("_OCI_SYNCPIPE", fd.to_string());
        ucri_rootless::syscall::before_exec(&mut cmd, move || {
            ucri_rootless::syscall::keep_across_exec(fd)
        });
        let stderr_path = args.bundle.join("conmon.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|source| LifecycleError::Io {
            context: "creating conmon's stderr file".into(),
            source,
        })?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|source| LifecycleError::Io {
                context: format!("starting {}", self.conmon.display()),
                source,
            })?;
        drop(sync_write);
        drop(cmd);
        let read = read_sync_message(&mut sync_read);
        let _ = child.wait();
        let reply = read.map_err(|source| LifecycleError::Io {
            context: "reading conmon's sync pipe".into(),
            source,
        })?;
        self.parse_sync(&reply, args)
    }

    fn parse_sync(&self, reply: &str, args: &CreateArgs<'_>) -> Result<Created, LifecycleError> {
        let stderr = std::fs::read_to_string(args.bundle.join("conmon.stderr")).unwrap_or_default();
        let message: SyncMessage = reply
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                LifecycleError::Runtime(format!(
                    "conmon reported nothing for {}: {}",
                    args.id,
                    stderr.trim()
                ))
            })?;
        if message.data <= 0 {
            return Err(LifecycleError::Runtime(format!(
                "creating container {}: {}",
                args.id,
                message.message.trim()
            )));
        }
        let conmon_pid = std::fs::read_to_string(args.bundle.join("conmon.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Ok(Created {
            pid: message.data,
            conmon_pid,
        })
    }

    fn conmon_command(&self, args: &CreateArgs<'_>) -> Command {
        let mut cmd = Command::new(&self.conmon);
        cmd.args([
            "--api-version",
            "1",
            "-c",
            args.id,
            "-u",
            args.id,
            "-n",
            args.name,
        ])
        .arg("-r")
        .arg(args.runtime)
        .arg("-b")
        .arg(args.bundle)
        .arg("-p")
        .arg(args.bundle.join("pidfile"))
        .arg("-P")
        .arg(args.bundle.join("conmon.pid"))
        .arg("-l")
        .arg(format!("k8s-file:{}", args.log_path.display()))
        .arg("--exit-dir")
        .arg(&self.exits)
        .arg("--socket-dir-path")
        .arg(&self.attach)
        .arg("--runtime-arg")
        .arg(format!("--root={}", self.runtime_root.display()))
        .args(["--log-level", "info", "--full-attach"]);
        if args.tty {
            cmd.arg("-t");
        }
        if args.stdin {
            cmd.arg("-i");
        }
        if args.stdin_once {
            cmd.arg("--stdin-once");
        }
        cmd
    }

    /// `RUNTIME --root … ARGS`, status and stderr checked.
    pub fn runtime(&self, runtime: &Path, args: &[&str], what: &str) -> Result<(), LifecycleError> {
        let mut cmd = Command::new(runtime);
        cmd.arg("--root")
            .arg(&self.runtime_root)
            .args(args)
            .stdin(Stdio::null());
        run_checked(&mut cmd, what)
    }

    /// The exit code and time conmon recorded, once the container exited.
    pub fn exit_status(&self, id: &str) -> Option<(i32, SystemTime)> {
        let path = self.exits.join(id);
        let text = std::fs::read_to_string(&path).ok()?;
        let code = text.trim().parse().ok()?;
        let when = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Some((code, when))
    }

    /// Waits up to `limit` for the exit file.
    pub fn wait_exit(&self, id: &str, limit: Duration) -> Option<(i32, SystemTime)> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(exit) = self.exit_status(id) {
                return Some(exit);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asks conmon to reopen the container's log file (kubelet's rotation):
    /// message type 2 on the `ctl` FIFO in the bundle.
    pub fn reopen_log(&self, bundle: &Path) -> Result<(), LifecycleError> {
        let ctl = bundle.join("ctl");
        let io = |source| LifecycleError::Io {
            context: format!("writing {}", ctl.display()),
            source,
        };
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&ctl)
            .map_err(io)?;
        std::io::Write::write_all(&mut fifo, b"2 0 0\n").map_err(io)
    }

    /// Removes the exit file of a deleted container.
    pub fn forget(&self, id: &str) {
        let _ = std::fs::remove_file(self.exits.join(id));
        let _ = std::fs::remove_dir_all(self.attach.join(id));
    }
}
