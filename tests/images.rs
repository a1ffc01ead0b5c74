//! The CRI ImageService against a real registry (Debian's docker-registry)
//! and the project's test images, with the daemon running rootless.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::registry::{image_info, TestRegistry};
use common::*;
use tonic::Code;
use ucri_cri_api::v1::image_service_client::ImageServiceClient;
use ucri_cri_api::v1::{
    AuthConfig, Image, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest,
};

fn spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn images(sb: &Sandbox) -> ImageServiceClient<tonic::transport::Channel> {
    ImageServiceClient::new(connect(&sb.socket()).await.expect("connect"))
}

fn pull_with(sb: &Sandbox, image: &str, auth: Option<AuthConfig>) -> Result<String, tonic::Status> {
    block_on(async {
        let request = PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        };
        images(sb)
            .await
            .pull_image(request)
            .await
            .map(|r| r.into_inner().image_ref)
    })
}

fn pull(sb: &Sandbox, image: &str) -> Result<String, tonic::Status> {
    pull_with(sb, image, None)
}

fn status(sb: &Sandbox, image: &str) -> Option<Image> {
    block_on(async {
        let request = ImageStatusRequest {
            image: spec(image),
            verbose: false,
        };
        images(sb)
            .await
            .image_status(request)
            .await
            .expect("ImageStatus")
            .into_inner()
            .image
    })
}

fn list(sb: &Sandbox) -> Vec<Image> {
    block_on(async {
        images(sb)
            .await
            .list_images(ListImagesRequest { filter: None })
            .await
            .expect("ListImages")
            .into_inner()
            .images
    })
}

fn remove(sb: &Sandbox, image: &str) -> Result<(), tonic::Status> {
    block_on(async {
        images(sb)
            .await
            .remove_image(RemoveImageRequest { image: spec(image) })
            .await
            .map(|_| ())
    })
}

fn store(sb: &Sandbox) -> PathBuf {
    sb.data_dir().join("storage")
}

fn entries(dir: &Path) -> Vec<String> {
    dir_entries(dir).into_iter().collect()
}

fn assert_store_empty(sb: &Sandbox) {
    for dir in ["images", "layers", "blobs/sha256", "tmp"] {
        let left = entries(&store(sb).join(dir));
        assert!(left.is_empty(), "{dir} should be empty, has {left:?}");
    }
}

fn write_registries_conf(sb: &Sandbox, text: &str) {
    sb.write_user_file(&sb.home().join(".config/containers/registries.conf"), text);
}

fn daemon_with_registry(name: &str, auth: Option<(&str, &str)>) -> (Sandbox, Daemon, TestRegistry) {
    let registry = TestRegistry::start(auth);
    let mut sb = Sandbox::new(name);
    let daemon = sb.start_daemon();
    (sb, daemon, registry)
}

#[test]
fn pull_by_tag_and_digest_then_status_list_and_fs_info() {
    let (sb, _d, reg) = daemon_with_registry("pull", None);
    reg.push_test_image("busybox", "latest", "test/busybox:latest");
    let info = image_info("busybox", "latest");
    let id = pull(&sb, &reg.image("test/busybox:latest")).expect("pull by tag");
    assert_eq!(id, info["config"].as_str().expect("config digest"));

    let image = status(&sb, &reg.image("test/busybox:latest")).expect("status by tag");
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, vec![reg.image("test/busybox:latest")]);
    let manifest = info["digest"].as_str().expect("manifest digest");
    assert_eq!(
        image.repo_digests,
        vec![format!("{}@{manifest}", reg.image("test/busybox"))]
    );
    assert!(image.size > 1_000_000, "unpacked size {}", image.size);
    assert_eq!(image.uid.map(|u| u.value), Some(0));
    assert_eq!(status(&sb, &id).expect("status by id").id, id);
    assert_eq!(status(&sb, &id[7..19]).expect("status by id prefix").id, id);
    assert!(
        status(&sb, &reg.image("test/other:latest")).is_none(),
        "unknown image is None, not an error"
    );

    let by_digest = format!("{}@{manifest}", reg.image("test/busybox"));
    assert_eq!(pull(&sb, &by_digest).expect("pull by digest"), id);
    assert_eq!(status(&sb, &by_digest).expect("status by digest").id, id);
    assert_eq!(list(&sb).len(), 1);

    let fs = block_on(async {
        images(&sb)
            .await
            .image_fs_info(ImageFsInfoRequest {})
            .await
            .expect("fs info")
            .into_inner()
    });
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().expect("bytes").value > 1_000_000);
    assert!(usage.inodes_used.as_ref().expect("inodes").value > 20);
    assert_eq!(
        usage.fs_id.as_ref().expect("fs id").mountpoint,
        store(&sb).display().to_string()
    );
}

#[test]
fn layers_keep_owners_links_whiteouts_and_opaque_dirs() {
    let (sb, _d, reg) = daemon_with_registry("layers", None);
    reg.push_test_image("busybox", "latest", "test/busybox:latest");
    pull(&sb, &reg.image("test/busybox:latest")).expect("pull");
    let info = image_info("busybox", "latest");
    let diffs: Vec<PathBuf> = chain_hexes(info)
        .into_iter()
        .map(|c| store(&sb).join("layers").join(c).join("diff"))
        .collect();
    let owned = std::fs::metadata(diffs[1].join("home/app/owned.txt")).expect("owned.txt");
    let base = subuid_base(&sb.user.name);
    // Inside, 0 is the user and 1.. the subordinate range: uid 1000 is base + 999.
    assert_eq!(
        (owned.uid(), owned.gid()),
        (base + 999, base + 999),
        "uid 1000 maps into the subuid range"
    );
    assert_eq!(owned.mode() & 0o7777, 0o640);
    let keep = std::fs::metadata(diffs[1].join("data/keep.txt")).expect("keep");
    let hard = std::fs::metadata(diffs[1].join("data/hard")).expect("hard");
    assert_eq!(keep.ino(), hard.ino(), "hard link kept");
    assert_eq!(
        std::fs::read_link(diffs[1].join("data/link")).expect("symlink"),
        Path::new("keep.txt")
    );
    assert_eq!(
        std::fs::metadata(diffs[1].join("tmpdir"))
            .expect("tmpdir")
            .mode()
            & 0o7777,
        0o1777
    );
    let whiteout =
        std::fs::symlink_metadata(diffs[2].join("data/remove-me.txt")).expect("whiteout");
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "whiteout is a 0:0 char device"
    );
    let opaque = xattr::get(diffs[2].join("opaque"), "user.overlay.opaque").expect("xattr");
    assert_eq!(
        opaque.as_deref(),
        Some(&b"y"[..]),
        "opaque dir marked for overlay"
    );
    assert!(!diffs[2].join("opaque/.wh..wh..opq").exists());
    assert!(diffs[2].join("opaque/new.txt").exists());
}

fn subuid_base(user: &str) -> u32 {
    let text = std::fs::read_to_string("/etc/subuid").expect("/etc/subuid");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|r| r.split(':').next())
        .and_then(|s| s.parse::<u32>().ok())
        .expect("subuid range")
}

#[test]
fn zstd_uncompressed_and_multiarch_images() {
    let (sb, _d, reg) = daemon_with_registry("formats", None);
    for tag in ["zstd", "uncompressed"] {
        reg.push_test_image("busybox", tag, &format!("test/busybox:{tag}"));
        let id = pull(&sb, &reg.image(&format!("test/busybox:{tag}")))
            .unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(
            id,
            image_info("busybox", tag)["config"]
                .as_str()
                .expect("config")
        );
    }
    reg.push_test_image("multiarch", "latest", "test/multiarch:latest");
    let id = pull(&sb, &reg.image("test/multiarch:latest")).expect("pull index");
    let config =
        std::fs::read(store(&sb).join("blobs/sha256").join(&id[7..])).expect("config blob");
    let config: serde_json::Value = serde_json::from_slice(&config).expect("json");
    assert_eq!(
        config["architecture"], "amd64",
        "the host's platform was chosen"
    );
}

#[test]
fn short_names_resolve_through_aliases_and_search_registries() {
    let (sb, _d, reg) = daemon_with_registry("shortnames", None);
    reg.push_test_image("busybox", "latest", "ucri-short-box:latest");
    reg.push_test_image("busybox", "latest", "team/aliased-box:latest");
    write_registries_conf(
        &sb,
        &format!(
            "unqualified-search-registries = [\"{addr}\"]\n[aliases]\n\"ucri-alias\" = \"{addr}/team/aliased-box\"\n",
            addr = reg.addr()
        ),
    );
    pull(&sb, "ucri-short-box").expect("short name through the search registry");
    assert!(status(&sb, &reg.image("ucri-short-box:latest")).is_some());
    assert!(
        status(&sb, "ucri-short-box").is_some(),
        "local lookup resolves short names too"
    );
    pull(&sb, "ucri-alias:latest").expect("alias");
    assert!(status(&sb, &reg.image("team/aliased-box:latest")).is_some());
    let err = pull(&sb, "ucri-nonexistent").expect_err("unresolvable");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .contains(&format!("{}/ucri-nonexistent", reg.addr())),
        "names the candidates: {}",
        err.message()
    );
}

#[test]
fn mirrors_are_tried_before_a_location_that_is_down() {
    let (sb, _d, reg) = daemon_with_registry("mirror", None);
    reg.push_test_image("busybox", "latest", "mirror/busybox:latest");
    let dead = free_port();
    write_registries_conf(
        &sb,
        &format!(
            "[[registry]]\nprefix = \"registry.ucri.invalid/team\"\nlocation = \"127.0.0.1:{dead}/team\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"127.0.0.1:{dead2}/nothing\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{addr}/mirror\"\ninsecure = true\n",
            dead2 = free_port(),
            addr = reg.addr()
        ),
    );
    let id =
        pull(&sb, "registry.ucri.invalid/team/busybox:latest").expect("through the second mirror");
    let image = status(&sb, "registry.ucri.invalid/team/busybox:latest")
        .expect("status under the original name");
    assert_eq!(image.id, id);
    let err = pull(&sb, "registry.ucri.invalid/team/absent:latest").expect_err("nowhere");
    assert_ne!(err.code(), Code::Ok);
}

#[test]
fn blocked_registries_are_refused() {
    let (sb, _d, reg) = daemon_with_registry("blocked", None);
    write_registries_conf(
        &sb,
        &format!(
            "[[registry]]\nlocation = \"{}\"\nblocked = true\n",
            reg.addr()
        ),
    );
    let err = pull(&sb, &reg.image("test/busybox:latest")).expect_err("blocked");
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
}

#[test]
fn auth_from_the_request_or_auth_json_and_clear_errors() {
    let (sb, _d, reg) = daemon_with_registry("auth", Some(("ucri", "s3cret")));
    reg.push_test_image("busybox", "latest", "private/busybox:latest");
    let image = reg.image("private/busybox:latest");
    let err = pull(&sb, &image).expect_err("anonymous");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    let wrong = AuthConfig {
        username: "ucri".into(),
        password: "wrong".into(),
        ..Default::default()
    };
    let err = pull_with(&sb, &image, Some(wrong)).expect_err("wrong password");
    assert!(
        matches!(err.code(), Code::Unauthenticated | Code::PermissionDenied),
        "{err}"
    );
    let right = AuthConfig {
        username: "ucri".into(),
        password: "s3cret".into(),
        ..Default::default()
    };
    pull_with(&sb, &image, Some(right)).expect("request credentials");
    remove(&sb, &image).expect("remove");
    // Registry clients are kept from pull to pull: never one that holds
    // another pull's credentials or tokens.
    let err = pull(&sb, &image).expect_err("anonymous, after a pull with credentials");
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");

    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("ucri:s3cret");
    let json = serde_json::json!({"auths": {reg.addr(): {"auth": auth}}});
    sb.write_user_file(
        &sb.home().join(".config/containers/auth.json"),
        &json.to_string(),
    );
    pull(&sb, &image).expect("credentials from auth.json");
}

#[test]
fn a_corrupted_blob_is_rejected_and_leaves_nothing() {
    let (sb, _d, reg) = daemon_with_registry("corrupt", None);
    reg.push_test_image("busybox", "latest", "test/busybox:latest");
    let layer = image_info("busybox", "latest")["layers"][1]["digest"]
        .as_str()
        .expect("layer")
        .to_owned();
    reg.corrupt_blob(&layer);
    let err = pull(&sb, &reg.image("test/busybox:latest")).expect_err("corrupt");
    assert_eq!(err.code(), Code::DataLoss, "{err}");
    assert!(
        err.message().contains(&layer[..20]) || err.message().contains("digest"),
        "{err}"
    );
    assert!(status(&sb, &reg.image("test/busybox:latest")).is_none());
    assert_store_empty(&sb);
}

#[test]
fn crafted_layers_write_nothing_outside_the_store() {
    let (sb, _d, reg) = daemon_with_registry("crafted", None);
    for tag in ["dotdot", "abs-symlink", "abs-path", "hardlink-out"] {
        reg.push_test_image("crafted", tag, &format!("crafted/x:{tag}"));
        let err = pull(&sb, &reg.image(&format!("crafted/x:{tag}"))).expect_err(tag);
        assert_eq!(err.code(), Code::InvalidArgument, "{tag}: {err}");
        assert!(err.message().contains("layer rejected"), "{tag}: {err}");
        assert_store_empty(&sb);
    }
    for escaped in ["escape-dotdot.txt", "escape-symlink.txt", "escape-abs.txt"] {
        assert!(
            !Path::new("/tmp").join(escaped).exists(),
            "{escaped} in /tmp"
        );
        let found = find_named(&sb.root, escaped);
        assert!(found.is_empty(), "{escaped} written at {found:?}");
    }
}

fn find_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name() == name {
                out.push(path.clone());
            }
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(path);
            }
        }
    }
    out
}

#[test]
fn remove_untags_then_deletes_and_is_idempotent() {
    let (sb, _d, reg) = daemon_with_registry("remove", None);
    reg.push_test_image("busybox", "latest", "test/busybox:latest");
    reg.push_test_image("busybox", "latest", "test/busybox:second");
    let id = pull(&sb, &reg.image("test/busybox:latest")).expect("pull");
    pull(&sb, &reg.image("test/busybox:second")).expect("pull second tag");
    assert_eq!(status(&sb, &id).expect("status").repo_tags.len(), 2);
    remove(&sb, &reg.image("test/busybox:second")).expect("untag");
    let image = status(&sb, &id).expect("still there");
    assert_eq!(image.repo_tags, vec![reg.image("test/busybox:latest")]);
    remove(&sb, &id).expect("remove by id");
    assert!(status(&sb, &id).is_none());
    assert_store_empty(&sb);
    remove(&sb, &id).expect("removing again is fine");
    let err = remove(&sb, "").expect_err("empty spec");
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[test]
fn the_store_survives_a_restart() {
    let (mut sb, daemon, reg) = daemon_with_registry("restart", None);
    reg.push_test_image("busybox", "latest", "test/busybox:latest");
    let id = pull(&sb, &reg.image("test/busybox:latest")).expect("pull");
    drop(daemon);
    let _daemon = sb.start_daemon();
    assert_eq!(
        status(&sb, &reg.image("test/busybox:latest"))
            .expect("after restart")
            .id,
        id
    );
    assert_eq!(list(&sb).len(), 1);
}

#[test]
fn concurrent_pulls_fetch_each_blob_once() {
    let (sb, _d, reg) = daemon_with_registry("concurrent", None);
    reg.push_test_image("busybox", "latest", "test/busybox:latest");
    let image = reg.image("test/busybox:latest");
    std::thread::scope(|s| {
        let pulls: Vec<_> = (0..3).map(|_| s.spawn(|| pull(&sb, &image))).collect();
        for p in pulls {
            p.join().expect("thread").expect("pull");
        }
    });
    let log = reg.log_text();
    for layer in image_info("busybox", "latest")["layers"]
        .as_array()
        .expect("layers")
    {
        let digest = layer["digest"].as_str().expect("digest");
        let gets = log
            .lines()
            .filter(|l| l.contains(&format!("GET /v2/test/busybox/blobs/{digest}")))
            .count();
        assert_eq!(gets, 1, "blob {digest} fetched {gets} times");
    }
}

#[test]
fn an_interrupted_pull_leaves_nothing_after_the_next_start() {
    let (mut sb, daemon, reg) = daemon_with_registry("interrupt", None);
    reg.push_test_image("big", "latest", "test/big:latest");
    let image = reg.image("test/big:latest");
    let socket = sb.socket();
    let puller = std::thread::spawn(move || {
        block_on(async {
            let channel = connect(&socket).await.expect("connect");
            let request = PullImageRequest {
                image: spec(&image),
                auth: None,
                sandbox_config: None,
            };
            ImageServiceClient::new(channel)
                .pull_image(request)
                .await
                .map(|_| ())
        })
    });
    let tmp = store(&sb).join("tmp");
    let started = std::time::Instant::now();
    while entries(&tmp).is_empty() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!entries(&tmp).is_empty(), "the pull never started writing");
    let pid = sb.daemon_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    assert!(
        puller.join().expect("thread").is_err(),
        "the pull was interrupted"
    );
    drop(daemon);
    let _daemon = sb.start_daemon();
    assert!(list(&sb).is_empty(), "no partial image is visible");
    assert_store_empty(&sb);
}

#[test]
fn import_oci_layouts_and_docker_save_archives() {
    let mut sb = Sandbox::new("import");
    let _daemon = sb.start_daemon();
    let layout = common::registry::test_images().join("busybox");
    let work = sb.root.join("archives");
    sb.mkdir_as_user(&work);
    let docker_tar = work.join("box.tar");
    let status_ok = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!(
            "docker-archive:{}:example.com/team/box:v1",
            docker_tar.display()
        ))
        .status()
        .expect("skopeo");
    assert!(status_ok.success(), "skopeo docker-archive");
    let layout_tar = work.join("busybox.tar");
    let tarred = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&layout_tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(tarred.success());
    sb.give_to_user();

    let import = |path: &Path| sb.run_ucri(&["ctl", "import", &path.display().to_string()]);
    let out = import(&docker_tar);
    assert!(
        out.status.success(),
        "docker save archive: {}",
        describe(&out)
    );
    let id = image_info("busybox", "latest")["config"]
        .as_str()
        .expect("config")
        .to_owned();
    assert_eq!(
        status(&sb, "example.com/team/box:v1")
            .expect("named by RepoTags")
            .id,
        id
    );

    let out = import(&layout_tar);
    assert!(out.status.success(), "OCI layout tar: {}", describe(&out));
    assert_eq!(
        status(&sb, "localhost/busybox:latest")
            .expect("tag under the file's name")
            .id,
        id
    );
    let user = status(&sb, "localhost/busybox:user").expect("the user tag");
    assert_eq!(user.username, "app", "User by name in the image config");

    let out = import(&layout);
    assert!(
        out.status.success(),
        "OCI layout directory: {}",
        describe(&out)
    );

    let out = sb.run_ucri(&["ctl", "import", "/etc/hostname"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("InvalidArgument"),
        "{}",
        describe(&out)
    );
    assert!(
        entries(&store(&sb).join("tmp")).is_empty(),
        "import leaves no temp files"
    );
}

/// Sends one unary gRPC call with the raw `grpc-timeout` header value
/// `timeout` (tonic's and grpcio's clients enforce deadlines themselves, so
/// the server's answer is only seen with a plain HTTP/2 client); returns
/// the grpc-status code and message.
fn call_with_grpc_timeout(
    sb: &Sandbox,
    path: &str,
    message: &[u8],
    timeout: &str,
) -> (i32, String) {
    block_on(async {
        let io = tokio::net::UnixStream::connect(sb.socket())
            .await
            .expect("connect");
        let (mut client, connection) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
        tokio::spawn(connection);
        let request = http::Request::post(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", timeout)
            .body(())
            .expect("request");
        let (response, mut body) = client.send_request(request, false).expect("send");
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
        framed.extend_from_slice(message);
        body.send_data(framed.into(), true).expect("body");
        let response = response.await.expect("response");
        let header = |headers: &http::HeaderMap, name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (head, mut received) = response.into_parts();
        let mut status = header(&head.headers, "grpc-status");
        let mut text = header(&head.headers, "grpc-message");
        if status.is_none() {
            while let Some(chunk) = received.data().await {
                chunk.expect("data");
            }
            let trailers = received
                .trailers()
                .await
                .expect("trailers")
                .unwrap_or_default();
            status = header(&trailers, "grpc-status");
            text = header(&trailers, "grpc-message");
        }
        let code = status.and_then(|s| s.parse().ok()).expect("a grpc-status");
        (code, text.unwrap_or_default())
    })
}

/// A client's `grpc-timeout` (kubelet and critest set deadlines) ends the
/// RPC with DEADLINE_EXCEEDED, as gRPC servers answer, and leaves no
/// half-pulled image behind.
#[test]
fn a_pull_past_the_clients_deadline_ends_with_deadline_exceeded() {
    let (sb, _d, reg) = daemon_with_registry("deadline", None);
    reg.push_test_image("big", "latest", "test/big:latest");
    let image = reg.image("test/big:latest");
    let request = prost::Message::encode_to_vec(&PullImageRequest {
        image: spec(&image),
        auth: None,
        sandbox_config: None,
    });
    let pull_path = "/runtime.v1.ImageService/PullImage";
    let (code, message) = call_with_grpc_timeout(&sb, pull_path, &request, "1m");
    assert_eq!(code, Code::DeadlineExceeded as i32, "{message}");
    assert!(
        status(&sb, &image).is_none(),
        "no image from a cancelled pull"
    );
    let list = "/runtime.v1.ImageService/ListImages";
    let (code, message) = call_with_grpc_timeout(&sb, list, &[], "soon");
    assert_eq!(
        code,
        Code::InvalidArgument as i32,
        "a malformed grpc-timeout: {message}"
    );
    let (code, message) = call_with_grpc_timeout(&sb, list, &[], "10S");
    assert_eq!(code, 0, "in time: {message}");
    pull(&sb, &image).expect("without a deadline the pull completes");
}

/// A layer whose tar has a root-level `.wh..wh..opq` replaces every layer
/// below it (overlayfs reads the opaque mark only on directories under a
/// layer's root, so ucri drops the hidden layers itself): a file of the
/// hidden layer is gone in the container, the opaque layer's and those
/// above it are there.
#[test]
fn a_root_level_opaque_whiteout_hides_the_layers_below() {
    use common::cri::{container_config, env, pod_config, remove_pod, run_pod, run_to_exit};
    use common::hostile::{gzip, tar_dir, CraftedImage, HostileRegistry};
    let tmp = tempfile::tempdir().expect("tmp");
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (name, files) in [
        ("hidden", vec!["hidden-file"]),
        ("opaque", vec!["kept-file", ".wh..wh..opq"]),
    ] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).expect("dir");
        for f in files {
            std::fs::write(dir.join(f), b"").expect("file");
        }
        let tar = tar_dir(&dir);
        diff_ids.push(common::registry::sha256_digest(&tar));
        let blob = gzip(&tar);
        layers.push((common::registry::sha256_digest(&blob), blob));
    }
    // busybox on top, for a shell.
    for layer in image_info("busybox", "latest")["layers"]
        .as_array()
        .expect("layers")
    {
        let digest = layer["digest"].as_str().expect("digest");
        let blob = std::fs::read(common::registry::layout_blob("busybox", digest)).expect("blob");
        layers.push((digest.to_owned(), blob));
        diff_ids.push(layer["diffId"].as_str().expect("diffId").to_owned());
    }
    let image = CraftedImage::assemble(layers, diff_ids);
    let crafted = HostileRegistry::start();
    crafted.serve_image("opaque", "latest", &image, &[]);
    let e = env("opaque-root");
    let reference = crafted.image("opaque", "latest");
    pull(&e.sb, &reference).expect("pull");
    let pod_cfg = pod_config(&e.sb, "opaque");
    let pod = run_pod(&e.sb, &pod_cfg).expect("pod");
    let (code, out) = run_to_exit(
        &e,
        &pod,
        &pod_cfg,
        container_config(&reference, "look", "ls -a /"),
    );
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out.lines().map(str::trim).collect();
    assert!(names.contains(&"kept-file"), "{names:?}");
    assert!(names.contains(&"bin"), "{names:?}");
    assert!(
        !names.contains(&"hidden-file"),
        "the hidden layer shows: {names:?}"
    );
    remove_pod(&e.sb, &pod);
}
