//! A crafted registry on 127.0.0.1 for the tests that pull from a hostile
//! one: it speaks just enough of the distribution API (`GET /v2/`,
//! manifests and blobs by path, no auth) for `ucri` to pull, and each route
//! can lie: bodies that never end, blobs longer than their manifest says.
//!
//! Each connection gets a thread; every body is bounded on this side too
//! ([`ENDLESS_CAP`]), so a daemon that does not stop reading cannot make the
//! test itself run away. [`HostileRegistry::sent`] tells how many body
//! bytes a route actually sent, which is how tests see that the daemon
//! stopped reading early.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::registry::sha256_digest;

/// The most bytes an endless body sends before this side gives up.
pub const ENDLESS_CAP: u64 = 2 << 30;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What one route answers.
#[derive(Clone)]
pub enum Body {
    /// These bytes, with a correct Content-Length.
    Exact(Vec<u8>),
    /// These bytes, then filler until the client hangs up (no length).
    Endless(Vec<u8>),
    /// A Content-Length header of this many bytes, then endless filler.
    Claims(u64),
    /// These bytes with a correct Content-Length, `chunk` bytes at a time
    /// with a pause of `pause` between chunks (a slow registry).
    Trickle {
        /// The body.
        data: Vec<u8>,
        /// Bytes per write.
        chunk: usize,
        /// Between writes.
        pause: Duration,
    },
}

#[derive(Default)]
struct Routes {
    bodies: HashMap<String, (String, Body)>,
    sent: HashMap<String, Arc<AtomicU64>>,
}

/// The crafted registry; stops on drop.
pub struct HostileRegistry {
    addr: String,
    routes: Arc<Mutex<Routes>>,
    stop: Arc<AtomicBool>,
}

impl HostileRegistry {
    /// Listens on a free 127.0.0.1 port.
    pub fn start() -> HostileRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the crafted registry");
        let addr = listener.local_addr().expect("address").to_string();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (routes.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let r = r.clone();
                    std::thread::spawn(move || serve(stream, &r));
                }
            }
        });
        HostileRegistry { addr, routes, stop }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `127.0.0.1:PORT/REPO:TAG`, to pull.
    pub fn image(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// Serves `body` at `path` (e.g. `/v2/x/manifests/latest`).
    pub fn route(&self, path: &str, content_type: &str, body: Body) {
        let mut routes = self.routes.lock().expect("routes");
        routes
            .bodies
            .insert(path.to_owned(), (content_type.to_owned(), body));
        routes
            .sent
            .insert(path.to_owned(), Arc::new(AtomicU64::new(0)));
    }

    /// The manifest of `repo:tag`.
    pub fn manifest(&self, repo: &str, tag: &str, body: Body) {
        self.route(&format!("/v2/{repo}/manifests/{tag}"), MANIFEST_TYPE, body);
    }

    /// The blob `digest` of `repo`.
    pub fn blob(&self, repo: &str, digest: &str, body: Body) {
        self.route(
            &format!("/v2/{repo}/blobs/{digest}"),
            "application/octet-stream",
            body,
        );
    }

    /// Serves `image` as `repo:tag`: its manifest, config and layer blobs,
    /// each exact unless `overrides` (by digest) says otherwise.
    pub fn serve_image(
        &self,
        repo: &str,
        tag: &str,
        image: &CraftedImage,
        overrides: &[(&str, Body)],
    ) {
        let body_of = |digest: &str, bytes: &[u8]| {
            overrides
                .iter()
                .find(|(d, _)| *d == digest)
                .map(|(_, b)| b.clone())
                .unwrap_or_else(|| Body::Exact(bytes.to_vec()))
        };
        self.manifest(repo, tag, Body::Exact(image.manifest.clone()));
        self.blob(
            repo,
            &image.config_digest,
            body_of(&image.config_digest, &image.config),
        );
        for (digest, bytes) in &image.layers {
            self.blob(repo, digest, body_of(digest, bytes));
        }
    }

    /// Body bytes sent so far on `path`.
    pub fn sent(&self, path: &str) -> u64 {
        let routes = self.routes.lock().expect("routes");
        routes
            .sent
            .get(path)
            .map(|n| n.load(Ordering::SeqCst))
            .unwrap_or(0)
    }

    /// Whether any request asked for `path`.
    pub fn requested(&self, path: &str) -> bool {
        self.sent(path) > 0
    }
}

impl Drop for HostileRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Answers requests on one connection until it closes.
fn serve(stream: TcpStream, routes: &Mutex<Routes>) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" || header == "\n" {
                break;
            }
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        if path == "/v2/" || path == "/v2" {
            let _ = out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            );
            continue;
        }
        let found = {
            let routes = routes.lock().expect("routes");
            routes
                .bodies
                .get(&path)
                .cloned()
                .map(|(t, b)| (t, b, routes.sent[&path].clone()))
        };
        let Some((content_type, body, sent)) = found else {
            let _ = out.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            );
            continue;
        };
        let head_only = method == "HEAD";
        if !respond(&mut out, &content_type, &body, head_only, &sent) {
            return;
        }
    }
}

/// Writes one response; false when the connection is done with.
fn respond(
    out: &mut TcpStream,
    content_type: &str,
    body: &Body,
    head_only: bool,
    sent: &AtomicU64,
) -> bool {
    let (length, prefix, endless) = match body {
        Body::Exact(bytes) => (Some(bytes.len() as u64), bytes.as_slice(), false),
        Body::Endless(prefix) => (None, prefix.as_slice(), true),
        Body::Claims(n) => (Some(*n), &[][..], true),
        Body::Trickle { data, .. } => (Some(data.len() as u64), &[][..], false),
    };
    let mut head = format!("HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n");
    match length {
        Some(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
        None => head.push_str("Connection: close\r\n"),
    }
    head.push_str("\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return false;
    }
    if head_only {
        return true;
    }
    if let Body::Trickle { data, chunk, pause } = body {
        for piece in data.chunks((*chunk).max(1)) {
            if out.write_all(piece).is_err() {
                return false;
            }
            sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
            std::thread::sleep(*pause);
        }
        return true;
    }
    if out.write_all(prefix).is_err() {
        return false;
    }
    sent.fetch_add(prefix.len() as u64, Ordering::SeqCst);
    if !endless {
        return true;
    }
    let filler = vec![b' '; 64 << 10];
    while sent.load(Ordering::SeqCst) < ENDLESS_CAP {
        if out.write_all(&filler).is_err() {
            break;
        }
        sent.fetch_add(filler.len() as u64, Ordering::SeqCst);
    }
    false
}

/// A small image, made in the test: a gzip layer per entry of `layers`.
pub struct CraftedImage {
    /// The OCI manifest.
    pub manifest: Vec<u8>,
    /// The config and its digest.
    pub config: Vec<u8>,
    /// `sha256:…` of the config.
    pub config_digest: String,
    /// Each layer's digest and gzip blob.
    pub layers: Vec<(String, Vec<u8>)>,
}

impl CraftedImage {
    /// An image of the layers made by `tar -cz` of each directory in
    /// `layer_dirs` (numeric owner 0).
    pub fn from_dirs(layer_dirs: &[&Path]) -> CraftedImage {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for dir in layer_dirs {
            let tar = tar_dir(dir);
            diff_ids.push(sha256_digest(&tar));
            let gz = gzip(&tar);
            layers.push((sha256_digest(&gz), gz));
        }
        CraftedImage::assemble(layers, diff_ids)
    }

    /// An image whose layers are `(gzip blob, diff id)` pairs as given.
    pub fn assemble(layers: Vec<(String, Vec<u8>)>, diff_ids: Vec<String>) -> CraftedImage {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": host_arch(),
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("config JSON");
        let config_digest = sha256_digest(&config);
        let layer_descs: Vec<serde_json::Value> = layers
            .iter()
            .map(|(digest, blob)| {
                serde_json::json!({"mediaType": LAYER_TYPE, "digest": digest, "size": blob.len()})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        }))
        .expect("manifest JSON");
        CraftedImage {
            manifest,
            config,
            config_digest,
            layers,
        }
    }
}

/// The OCI name of this machine's architecture.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `tar -c` of `dir`'s contents, owned by 0:0.
pub fn tar_dir(dir: &Path) -> Vec<u8> {
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(dir)
        .args(["-cf", "-", "."]))
}

/// `gzip -c` of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn gzip");
    let mut stdin = child.stdin.take().expect("gzip stdin");
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip");
    feeder.join().expect("feeder").expect("feed gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
