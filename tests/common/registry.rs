//! A real registry for image-service tests: Debian's `docker-registry` on a
//! free loopback port, the OCI layouts of `packaging/test-images/build.sh`
//! (built once and cached), and `skopeo` to push them.
//!
//! The registry keeps its data with the filesystem storage driver under
//! [`TestRegistry::storage_dir`]: the blob (layer, config or manifest) with
//! digest `sha256:HEX` is the file
//! `docker/registry/v2/blobs/sha256/HEX[0..2]/HEX/data`, and repositories
//! only link to it (`docker/registry/v2/repositories/REPO/_layers/sha256/HEX/link`),
//! so one corrupted blob breaks every repository that shares it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

/// Debian's registry binary (package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// Where built test images are cached across test runs, unless
/// `UCRI_TEST_IMAGES_DIR` says otherwise.
pub const IMAGES_CACHE_ROOT: &str = "/var/tmp/ucri-test-images";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

/// A running `docker-registry serve` with its own storage, stopped and
/// removed on drop.
pub struct TestRegistry {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: String,
    creds: Option<(String, String)>,
}

impl TestRegistry {
    /// Starts a registry on a free 127.0.0.1 port; with `auth`, it requires
    /// that user and password (htpasswd, bcrypt). Returns once `GET /v2/`
    /// answers.
    pub fn start(auth: Option<(&str, &str)>) -> TestRegistry {
        require_tool(REGISTRY_BIN, "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("ucri-registry-")
            .tempdir()
            .expect("registry temp dir");
        let mut registry = TestRegistry {
            child: None,
            dir,
            addr: String::new(),
            creds: auth.map(|(u, p)| (u.to_owned(), p.to_owned())),
        };
        if let Some((user, password)) = auth {
            registry.write_htpasswd(user, password);
        }
        registry.launch();
        registry
    }

    /// Spawns the registry, retrying on a new port when the one picked was
    /// taken in the meantime.
    fn launch(&mut self) {
        for _ in 0..START_ATTEMPTS {
            self.addr = format!("127.0.0.1:{}", free_port());
            std::fs::write(self.config_path(), self.config_yaml()).expect("write registry config");
            self.spawn();
            match self.wait_ready() {
                Ok(()) => return,
                Err(log) if log.contains("address already in use") => self.stop(),
                Err(log) => panic!(
                    "docker-registry did not start on {}; log:\n{log}",
                    self.addr
                ),
            }
        }
        panic!("docker-registry found no free port in {START_ATTEMPTS} attempts");
    }

    fn spawn(&mut self) {
        let log = File::create(self.log_path()).expect("registry log file");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(self.config_path())
            // REGISTRY_* variables override the config file: keep them out.
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {REGISTRY_BIN}: {e}"));
        self.child = Some(child);
    }

    /// Polls `GET /v2/` until it answers 200 (401 with auth); on an early
    /// exit or a timeout, returns the log.
    fn wait_ready(&mut self) -> Result<(), String> {
        let expected = if self.creds.is_some() { 401 } else { 200 };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("exited with {status}\n{}", self.log_text()));
            }
            match http_status(&self.addr, "/v2/") {
                Some(code) if code == expected => return Ok(()),
                Some(code) => {
                    return Err(format!(
                        "GET /v2/ answered {code}, expected {expected}\n{}",
                        self.log_text()
                    ))
                }
                None => std::thread::sleep(Duration::from_millis(25)),
            }
        }
        Err(format!(
            "no answer within {READY_TIMEOUT:?}\n{}",
            self.log_text()
        ))
    }

    fn write_htpasswd(&self, user: &str, password: &str) {
        require_tool("htpasswd", "apache2-utils");
        let out = run_checked(
            Command::new("htpasswd").args(["-Bbn", user, password]),
            "htpasswd -Bbn",
        );
        std::fs::write(self.htpasswd_path(), &out.stdout).expect("write htpasswd");
    }

    fn config_yaml(&self) -> String {
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: {}\n  secret: ucri-test-registry\n",
            self.storage_dir().display(),
            self.addr
        );
        if self.creds.is_some() {
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: ucri-test\n    path: {}\n",
                self.htpasswd_path().display()
            ));
        }
        yaml
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// `ADDR/REPO:TAG` (or `ADDR/REPO@DIGEST`), the image name a CRI client
    /// pulls.
    pub fn image(&self, repo_and_tag: &str) -> String {
        format!("{}/{repo_and_tag}", self.addr)
    }

    /// `docker://ADDR/REPO:TAG`, for skopeo.
    pub fn docker_ref(&self, repo_and_tag: &str) -> String {
        format!("docker://{}", self.image(repo_and_tag))
    }

    /// `user:password` when the registry requires auth.
    pub fn creds(&self) -> Option<String> {
        self.creds.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    /// Root of the filesystem storage driver.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's combined stdout/stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    fn htpasswd_path(&self) -> PathBuf {
        self.dir.path().join("htpasswd")
    }

    /// Copies tag `tag` of the OCI layout `layout_dir` to `ADDR/REPO:TAG`
    /// with every platform of an index and the digests unchanged.
    pub fn push(&self, layout_dir: &Path, tag: &str, repo_and_tag: &str) {
        let src = format!("oci:{}:{tag}", layout_dir.display());
        let dest = self.docker_ref(repo_and_tag);
        let mut args = vec![
            "copy".to_owned(),
            "--quiet".to_owned(),
            "--all".to_owned(),
            "--preserve-digests".to_owned(),
            "--dest-tls-verify=false".to_owned(),
        ];
        if let Some(creds) = self.creds() {
            args.extend(["--dest-creds".to_owned(), creds]);
        }
        args.extend([src, dest]);
        run_checked(
            &mut skopeo(&args),
            &format!("skopeo copy to {repo_and_tag}"),
        );
    }

    /// [`push`](Self::push) of a layout from [`test_images`] by name
    /// (`busybox`, `multiarch`, `big`, `crafted`).
    pub fn push_test_image(&self, layout: &str, tag: &str, repo_and_tag: &str) {
        self.push(&test_images().join(layout), tag, repo_and_tag);
    }

    /// The storage file holding blob `digest` (`sha256:HEX`).
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Inverts the first (up to 16) bytes of blob `digest` in the storage,
    /// keeping its size, so the registry serves content that no longer
    /// matches its digest.
    pub fn corrupt_blob(&self, digest: &str) {
        let path = self.blob_path(digest);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| {
                panic!(
                    "blob {digest} not in registry storage ({}): {e}",
                    path.display()
                )
            });
        let mut head = vec![0u8; 16];
        let n = file.read(&mut head).expect("read blob");
        assert!(n > 0, "blob {digest} is empty");
        head.truncate(n);
        head.iter_mut().for_each(|b| *b = !*b);
        std::io::Seek::rewind(&mut file).expect("seek blob");
        file.write_all(&head).expect("corrupt blob");
    }

    /// Kills the registry and waits for it (the storage stays until drop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The status code of `GET PATH` on `addr`, or None when nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let sock: SocketAddr = addr.parse().expect("socket address");
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

/// `skopeo --insecure-policy ARGS` (the host's policy.json does not matter).
pub fn skopeo<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    require_tool("skopeo", "skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("--insecure-policy").args(args).stdin(Stdio::null());
    cmd
}

/// Runs `cmd`, panicking with `what` and its stderr unless it succeeds.
pub fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}): {:?}\nstderr:\n{}",
        out.status,
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `sha256:HEX` of `bytes` (computed by `sha256sum`).
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sha256sum");
    child
        .stdin
        .take()
        .expect("sha256sum stdin")
        .write_all(bytes)
        .expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum");
    assert!(
        out.status.success(),
        "sha256sum: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    format!(
        "sha256:{}",
        text.split_whitespace().next().expect("sha256sum output")
    )
}

/// Fails the test unless `program` (a path, or a name on PATH) is an
/// executable, naming the Debian `package` that brings it.
pub fn require_tool(program: &str, package: &str) {
    let found = if program.contains('/') {
        is_executable(Path::new(program))
    } else {
        std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| is_executable(&d.join(program))))
            .unwrap_or(false)
    };
    assert!(
        found,
        "missing test prerequisite: {program} (apt-get install {package}, or packaging/setup-host.sh --test)"
    );
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The directory of built test images (`busybox/`, `multiarch/`, `big/`,
/// `crafted/` OCI layouts and `images.json`). Built once per version of
/// build.sh into `/var/tmp/ucri-test-images/HASH` (or
/// `$UCRI_TEST_IMAGES_DIR/HASH`), shared by test processes under a flock.
pub fn test_images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        for (tool, package) in [
            (REGISTRY_BIN, "docker-registry"),
            ("skopeo", "skopeo"),
            ("htpasswd", "apache2-utils"),
            ("zstd", "zstd"),
            ("jq", "jq"),
            ("openssl", "openssl"),
            ("apt-get", "apt"),
        ] {
            require_tool(tool, package);
        }
        build_images_cached()
    })
}

/// `images.json` of [`test_images`].
pub fn images_json() -> &'static serde_json::Value {
    static JSON: OnceLock<serde_json::Value> = OnceLock::new();
    JSON.get_or_init(|| {
        let text = std::fs::read(test_images().join("images.json")).expect("read images.json");
        serde_json::from_slice(&text).expect("images.json is JSON")
    })
}

/// The `images.json` entry of `layout`'s `tag`.
pub fn image_info(layout: &str, tag: &str) -> &'static serde_json::Value {
    let info = &images_json()["layouts"][layout][tag];
    assert!(info.is_object(), "images.json has no {layout}:{tag}");
    info
}

/// The file of blob `digest` in OCI layout `layout` of [`test_images`].
pub fn layout_blob(layout: &str, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    test_images().join(layout).join("blobs/sha256").join(hex)
}

fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/test-images/build.sh")
}

fn build_images_cached() -> PathBuf {
    let root = std::env::var_os("UCRI_TEST_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(IMAGES_CACHE_ROOT));
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("create {}: {e}", root.display()));
    // Shared by the root-run suite and developers' own accounts.
    let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777));
    let _lock = lock_file(&root.join(".lock"));
    let dir = root.join(script_hash());
    if !dir.join("images.json").exists() {
        build_images(&root, &dir);
    }
    dir
}

fn lock_file(path: &Path) -> Flock<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .or_else(|_| File::open(path))
        .unwrap_or_else(|e| panic!("open lock {}: {e}", path.display()));
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o666));
    Flock::lock(file, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()))
}

/// First 16 hex digits of build.sh's sha256.
fn script_hash() -> String {
    let script = std::fs::read(build_script()).expect("read build.sh");
    sha256_digest(&script)["sha256:".len()..][..16].to_owned()
}

/// Runs build.sh into a temporary sibling of `dir`, then renames it.
fn build_images(root: &Path, dir: &Path) {
    let tmp = root.join(format!(
        "{}.tmp-{}",
        dir.file_name().expect("name").to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let _ = std::fs::remove_dir_all(dir);
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(build_script())
        .arg(&tmp)
        .env("UCRI_IMAGES_CACHE", root.join(".cache"))
        .stdin(Stdio::null())
        .output()
        .expect("run build.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        let what = stderr
            .split_once("missing prerequisite: ")
            .map_or(stderr.trim(), |(_, what)| what.trim());
        panic!("missing test prerequisite: {what}");
    }
    assert!(
        out.status.success(),
        "build.sh {} failed ({}):\n{stderr}",
        tmp.display(),
        out.status
    );
    std::fs::rename(&tmp, dir).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
    eprintln!(
        "built test images in {:.1?} into {}",
        started.elapsed(),
        dir.display()
    );
}
