//! Pulls from a hostile registry (a crafted one on 127.0.0.1,
//! `common::hostile`) against the real daemon: every limit of `[image]`
//! holds, the daemon stops reading where the limit is, its memory stays
//! bounded, and a refused pull leaves nothing in the store.

mod common;

use std::path::Path;

use common::hostile::{Body, CraftedImage, HostileRegistry};
use common::*;
use tonic::Code;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::{ImageSpec, PullImageRequest};

/// What a cut-off body may still have sent: socket buffers on both sides
/// and the chunk in flight, far below what the routes offer (GiBs).
const SENT_BOUND: u64 = 64 << 20;

/// The limits the daemon runs with here: small, so the tests stay small.
const LIMITS: &str =
    "[image]\nlayer_size_max = 16777216\nlayer_entries_max = 100\nlayers_max = 8\n";

fn pull(sb: &Sandbox, image: &str) -> Result<String, tonic::Status> {
    block_on(async {
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        };
        ImageServiceClient::new(connect(&sb.socket()).await.expect("connect"))
            .pull_image(request)
            .await
            .map(|r| r.into_inner().image_ref)
    })
}

fn daemon(name: &str) -> (Sandbox, Daemon) {
    let mut sb = Sandbox::new(name);
    sb.write_user_file(&sb.config_dir().join("ucri.toml"), LIMITS);
    let daemon = sb.start_daemon();
    (sb, daemon)
}

/// The refusal's code and message, checked against what was wanted.
fn assert_refused(result: Result<String, tonic::Status>, code: Code, says: &str) {
    let status = result.expect_err("the pull must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(says),
        "the message should say {says:?}: {}",
        status.message()
    );
}

/// Nothing of a refused pull stays: no image, layer, blob or temp file.
fn assert_store_empty(sb: &Sandbox) {
    let store = sb.data_dir().join("storage");
    for dir in ["images", "layers", "blobs/sha256", "tmp"] {
        let left: Vec<_> = std::fs::read_dir(store.join(dir))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} should be empty, has {left:?}");
    }
}

/// A directory of `files` small files (one layer's worth).
fn layer_dir(root: &Path, name: &str, files: usize) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("layer dir");
    for i in 0..files {
        std::fs::write(dir.join(format!("f{i}")), format!("{name} {i}\n")).expect("file");
    }
    dir
}

/// A manifest that never ends (and one that claims 1 GiB) is refused at
/// `[image] manifest_max` (4 MiB): the daemon stops reading there, and its
/// peak memory grows by less than 64 MiB while the registry offers GiBs.
#[test]
fn an_endless_manifest_is_cut_at_manifest_max_and_memory_stays_bounded() {
    let (sb, _daemon) = daemon("endless-manifest");
    let registry = HostileRegistry::start();
    registry.manifest(
        "endless",
        "latest",
        Body::Endless(br#"{"schemaVersion":2,"layers":["#.to_vec()),
    );
    registry.manifest("claims", "latest", Body::Claims(1 << 30));
    let before = peak_rss_kib(sb.daemon_pid());
    for repo in ["endless", "claims"] {
        assert_refused(
            pull(&sb, &registry.image(repo, "latest")),
            Code::ResourceExhausted,
            "manifest_max (4194304 bytes)",
        );
        let sent = registry.sent(&format!("/v2/{repo}/manifests/latest"));
        assert!(sent < SENT_BOUND, "{repo}: the registry sent {sent} bytes");
    }
    let after = peak_rss_kib(sb.daemon_pid());
    eprintln!("daemon peak RSS: {before} KiB before, {after} KiB after the endless manifests");
    assert!(
        after < before + 64 * 1024,
        "the daemon's peak RSS grew from {before} to {after} KiB"
    );
    assert_store_empty(&sb);
}

/// A layer blob or config that goes on past its declared size is cut at
/// the first extra byte (DATA_LOSS), not read to the end and then found
/// wrong; a config declared bigger than `[image] config_max` is not fetched.
#[test]
fn blobs_longer_than_declared_are_cut_and_oversized_configs_refused() {
    let (sb, _daemon) = daemon("long-blobs");
    let registry = HostileRegistry::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let image = CraftedImage::from_dirs(&[&layer_dir(tmp.path(), "one", 3)]);
    let (layer_digest, layer_blob) = image.layers[0].clone();
    registry.serve_image(
        "long-layer",
        "latest",
        &image,
        &[(layer_digest.as_str(), Body::Endless(layer_blob.clone()))],
    );
    assert_refused(
        pull(&sb, &registry.image("long-layer", "latest")),
        Code::DataLoss,
        &format!("its manifest declares {}", layer_blob.len()),
    );
    let sent = registry.sent(&format!("/v2/long-layer/blobs/{layer_digest}"));
    assert!(sent < SENT_BOUND, "the layer route sent {sent} bytes");
    assert_store_empty(&sb);

    // A Content-Length over the declared size is refused before the body
    // is read: the message has the length the registry claimed.
    registry.serve_image(
        "claimed-layer",
        "latest",
        &image,
        &[(layer_digest.as_str(), Body::Claims(1 << 30))],
    );
    assert_refused(
        pull(&sb, &registry.image("claimed-layer", "latest")),
        Code::DataLoss,
        &format!("sent {} bytes or more", 1u64 << 30),
    );
    let sent = registry.sent(&format!("/v2/claimed-layer/blobs/{layer_digest}"));
    assert!(
        sent < SENT_BOUND,
        "the claimed layer route sent {sent} bytes"
    );
    assert_store_empty(&sb);

    let config = image.config.clone();
    registry.serve_image(
        "long-config",
        "latest",
        &image,
        &[(image.config_digest.as_str(), Body::Endless(config))],
    );
    assert_refused(
        pull(&sb, &registry.image("long-config", "latest")),
        Code::DataLoss,
        "more than its declared",
    );
    assert_store_empty(&sb);

    let mut manifest: serde_json::Value =
        serde_json::from_slice(&image.manifest).expect("manifest");
    manifest["config"]["size"] = serde_json::json!(100u64 << 20);
    registry.manifest(
        "huge-config",
        "latest",
        Body::Exact(serde_json::to_vec(&manifest).expect("JSON")),
    );
    assert_refused(
        pull(&sb, &registry.image("huge-config", "latest")),
        Code::ResourceExhausted,
        "config_max (4194304 bytes)",
    );
    assert_store_empty(&sb);
}

/// A gzip bomb (64 MiB of zeros in 64 KiB) is refused at `[image]
/// layer_size_max`, a layer of too many files at `layer_entries_max`, an
/// image of too many layers at `layers_max` before any blob is fetched;
/// the same registry's well-formed image then pulls.
#[test]
fn layer_bombs_and_images_of_too_many_files_or_layers_are_refused() {
    let (sb, _daemon) = daemon("layer-limits");
    let registry = HostileRegistry::start();
    let tmp = tempfile::tempdir().expect("tmp");

    let bomb_dir = tmp.path().join("bomb");
    std::fs::create_dir_all(&bomb_dir).expect("bomb dir");
    let zeros = std::fs::File::create(bomb_dir.join("zeros")).expect("zeros");
    zeros.set_len(64 << 20).expect("64 MiB of zeros");
    let bomb = CraftedImage::from_dirs(&[&bomb_dir]);
    assert!(bomb.layers[0].1.len() < 1 << 20, "the bomb is small");
    registry.serve_image("bomb", "latest", &bomb, &[]);
    assert_refused(
        pull(&sb, &registry.image("bomb", "latest")),
        Code::ResourceExhausted,
        "more than 16777216 bytes uncompressed ([image] layer_size_max)",
    );
    assert_store_empty(&sb);

    let crowded = CraftedImage::from_dirs(&[&layer_dir(tmp.path(), "crowded", 300)]);
    registry.serve_image("crowded", "latest", &crowded, &[]);
    assert_refused(
        pull(&sb, &registry.image("crowded", "latest")),
        Code::ResourceExhausted,
        "more than 100 entries ([image] layer_entries_max)",
    );
    assert_store_empty(&sb);

    let deep_dirs: Vec<_> = (0..9)
        .map(|i| layer_dir(tmp.path(), &format!("deep{i}"), 1))
        .collect();
    let deep_refs: Vec<&Path> = deep_dirs.iter().map(|d| d.as_path()).collect();
    let deep = CraftedImage::from_dirs(&deep_refs);
    registry.serve_image("deep", "latest", &deep, &[]);
    assert_refused(
        pull(&sb, &registry.image("deep", "latest")),
        Code::ResourceExhausted,
        "has 9 layers, more than [image] layers_max (8)",
    );
    assert!(
        !registry.requested(&format!("/v2/deep/blobs/{}", deep.config_digest)),
        "nothing is fetched past the manifest"
    );
    assert_store_empty(&sb);

    // 99 files and "./": exactly the limit.
    let fine = CraftedImage::from_dirs(&[&layer_dir(tmp.path(), "fine", 99)]);
    registry.serve_image("fine", "latest", &fine, &[]);
    let id = pull(&sb, &registry.image("fine", "latest")).expect("a well-formed image pulls");
    assert_eq!(
        id, fine.config_digest,
        "the image id is its config's digest"
    );
}

/// A pull the client gives up on stops downloading: its layer stream from
/// a slow registry ends within moments, not when the layer is complete, and
/// nothing of it stays in the store.
#[test]
fn a_cancelled_pull_stops_downloading() {
    let (sb, _daemon) = daemon("cancelled-pull");
    let registry = HostileRegistry::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("noise");
    std::fs::create_dir_all(&dir).expect("dir");
    // Incompressible, so the blob is as big as the file.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(dir.join("noise"), &noise).expect("noise");
    let image = CraftedImage::from_dirs(&[&dir]);
    let (layer_digest, layer_blob) = image.layers[0].clone();
    let total = layer_blob.len() as u64;
    registry.serve_image(
        "slow",
        "latest",
        &image,
        &[(
            layer_digest.as_str(),
            Body::Trickle {
                data: layer_blob,
                chunk: 64 << 10,
                pause: std::time::Duration::from_millis(100),
            },
        )],
    );
    let route = format!("/v2/slow/blobs/{layer_digest}");
    let reference = registry.image("slow", "latest");
    let finished = block_on(async {
        let mut images = ImageServiceClient::new(connect(&sb.socket()).await.expect("connect"));
        let request = PullImageRequest {
            image: Some(ImageSpec {
                image: reference,
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        };
        // Dropping the call at the timeout resets its HTTP/2 stream.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            images.pull_image(request),
        )
        .await
        .is_ok()
    });
    assert!(!finished, "the slow pull cannot finish in a second");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let after_cancel = registry.sent(&route);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let later = registry.sent(&route);
    eprintln!("{after_cancel} then {later} of {total} bytes sent");
    assert!(later < total, "the whole layer was downloaded");
    assert_eq!(
        later, after_cancel,
        "the download went on after the client gave up"
    );
    assert_store_empty(&sb);
}

/// A whiteout of no file (`.wh.`, `.wh..`, `.wh...`, at the layer's root or
/// in a directory) names the directory itself or its parent: the pull is
/// an invalid argument, and nothing is removed, neither of the layer being
/// unpacked nor of the images already stored. (These used to remove the
/// directory they named and fail with INTERNAL and store paths.)
#[test]
fn whiteouts_of_no_file_are_invalid_and_remove_nothing() {
    let (sb, _daemon) = daemon("odd-whiteouts");
    let registry = HostileRegistry::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let stored = CraftedImage::from_dirs(&[&layer_dir(tmp.path(), "stored", 3)]);
    registry.serve_image("stored", "latest", &stored, &[]);
    pull(&sb, &registry.image("stored", "latest")).expect("a well-formed image pulls");
    let store = sb.data_dir().join("storage");
    let listing = |dir: &str| -> Vec<std::ffi::OsString> {
        let mut names: Vec<_> = std::fs::read_dir(store.join(dir))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        names.sort();
        names
    };
    let layers = listing("layers");
    let images = listing("images");
    assert_eq!(layers.len(), 1, "one layer stored");

    for (i, whiteout) in [".wh.", ".wh..", ".wh...", "sub/.wh..", "sub/.wh..."]
        .iter()
        .enumerate()
    {
        let dir = layer_dir(tmp.path(), &format!("odd{i}"), 2);
        std::fs::create_dir_all(dir.join("sub")).expect("sub");
        std::fs::write(dir.join("sub/kept"), "x").expect("kept");
        std::fs::write(dir.join(whiteout), "").expect("the whiteout file");
        let image = CraftedImage::from_dirs(&[&dir]);
        let name = format!("odd{i}");
        registry.serve_image(&name, "latest", &image, &[]);
        assert_refused(
            pull(&sb, &registry.image(&name, "latest")),
            Code::InvalidArgument,
            "is a whiteout of no file",
        );
        assert_eq!(
            listing("layers"),
            layers,
            "{whiteout}: the stored layer stays"
        );
        assert_eq!(
            listing("images"),
            images,
            "{whiteout}: the stored image stays"
        );
        assert!(listing("tmp").is_empty(), "{whiteout}: nothing left in tmp");
    }
    let layer = store.join("layers").join(&layers[0]);
    let files = std::fs::read_dir(layer.join("diff"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 3, "the stored layer's files are all there");
}

/// A layer's device nodes cannot be made without root: the pull succeeds
/// without them, and the daemon log says which entries were left out (they
/// used to be dropped without a word).
#[test]
fn device_nodes_are_left_out_and_the_log_names_them() {
    let (sb, daemon) = daemon("device-nodes");
    let registry = HostileRegistry::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = layer_dir(tmp.path(), "devices", 2);
    nix::sys::stat::mknod(
        &dir.join("null-device"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .expect("mknod (the tests run as root)");
    let image = CraftedImage::from_dirs(&[&dir]);
    registry.serve_image("devices", "latest", &image, &[]);
    pull(&sb, &registry.image("devices", "latest")).expect("the image pulls without its device");
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("were left out"))
        .unwrap_or_else(|| panic!("no line names the left-out entries:\n{log}"));
    assert!(line.contains("null-device"), "{line}");
}
