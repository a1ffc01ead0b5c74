//! Proves the image-service test fixtures with real tools only: the OCI
//! layouts of `packaging/test-images/build.sh` are what `images.json` says,
//! and `common::registry::TestRegistry` serves them (auth and corruption
//! included) through Debian's `docker-registry` and `skopeo`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::registry::{
    image_info, images_json, layout_blob, run_checked, sha256_digest, skopeo, test_images,
    TestRegistry,
};
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn digest_of(info: &Value) -> &str {
    info["digest"].as_str().expect("digest")
}

fn layer_digests(info: &Value) -> Vec<String> {
    info["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("layer digest").to_owned())
        .collect()
}

/// Every (layout, tag) in images.json.
fn all_tags() -> Vec<(String, String)> {
    let layouts = images_json()["layouts"].as_object().expect("layouts");
    layouts
        .iter()
        .flat_map(|(layout, tags)| {
            let tags = tags.as_object().expect("tags");
            tags.keys().map(move |tag| (layout.clone(), tag.clone()))
        })
        .collect()
}

/// `skopeo inspect --raw` of `reference` (extra args before it), checked.
fn inspect_raw(extra: &[&str], reference: &str) -> Vec<u8> {
    let mut args = vec!["inspect", "--raw"];
    args.extend_from_slice(extra);
    args.push(reference);
    run_checked(&mut skopeo(&args), &format!("skopeo inspect {reference}")).stdout
}

/// The digest of the manifest the registry serves for `repo_and_tag`.
fn registry_digest(registry: &TestRegistry, repo_and_tag: &str) -> String {
    let mut extra = vec!["--tls-verify=false".to_owned()];
    if let Some(creds) = registry.creds() {
        extra.push(format!("--creds={creds}"));
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    sha256_digest(&inspect_raw(&extra, &registry.docker_ref(repo_and_tag)))
}

/// The layer blob uncompressed, by its media type.
fn uncompressed_layer(layout: &str, layer: &Value) -> Vec<u8> {
    let blob = layout_blob(layout, layer["digest"].as_str().expect("digest"));
    let media_type = layer["mediaType"].as_str().expect("mediaType");
    let mut cmd = match media_type.rsplit_once('+').map(|(_, c)| c) {
        Some("gzip") => Command::new("gzip"),
        Some("zstd") => Command::new("zstd"),
        None => return std::fs::read(&blob).expect("read layer"),
        Some(other) => panic!("unexpected layer compression {other}"),
    };
    cmd.arg("-dc").arg(&blob);
    run_checked(&mut cmd, "decompress layer").stdout
}

/// `tar -tv` of a layer blob, numeric owners, names exactly as stored.
fn list_layer(layout: &str, digest: &str) -> String {
    let mut cmd = Command::new("tar");
    cmd.args(["--numeric-owner", "-P", "-tvzf"])
        .arg(layout_blob(layout, digest));
    text(&run_checked(&mut cmd, "tar -tv layer").stdout)
}

/// A `tar -tv` entry: mode, numeric owner, name (with ` -> TARGET` or
/// ` link to TARGET`).
type Entry<'a> = (&'a str, &'a str, &'a str);

/// Each `tar -tv` line as (mode, owner, name and link part).
fn entries(listing: &str) -> Vec<(String, String, String)> {
    listing
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "odd tar line {line:?}");
            (
                fields[0].to_owned(),
                fields[1].to_owned(),
                fields[5..].join(" "),
            )
        })
        .collect()
}

/// Asserts that the listing has each (mode, owner, name) entry.
fn assert_entries(listing: &str, wanted: &[Entry]) {
    let have = entries(listing);
    for (mode, owner, name) in wanted {
        assert!(
            have.iter()
                .any(|(m, o, n)| m == mode && o == owner && n == name),
            "no entry {mode} {owner} {name:?} in:\n{listing}"
        );
    }
}

fn config_of(layout: &str, info: &Value) -> Value {
    let blob = layout_blob(layout, info["config"].as_str().expect("config"));
    serde_json::from_slice(&std::fs::read(blob).expect("read config")).expect("config JSON")
}

#[test]
fn every_layout_tag_inspects_and_copies_with_skopeo() {
    let scratch = tempfile::tempdir().expect("tempdir");
    for (layout, tag) in all_tags() {
        let src = format!("oci:{}:{tag}", test_images().join(&layout).display());
        let raw = inspect_raw(&[], &src);
        assert_eq!(
            sha256_digest(&raw),
            digest_of(image_info(&layout, &tag)),
            "{src}"
        );
        let dest = scratch.path().join(format!("{layout}-{tag}"));
        let dest = format!("dir:{}", dest.display());
        run_checked(
            &mut skopeo(&["copy", "--quiet", "--all", &src, &dest]),
            &format!("skopeo copy {src}"),
        );
    }
}

#[test]
fn diff_ids_are_the_uncompressed_layer_digests() {
    for tag in ["latest", "zstd", "uncompressed", "user"] {
        let info = image_info("busybox", tag);
        let config = config_of("busybox", info);
        let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
        let layers = info["layers"].as_array().expect("layers");
        assert_eq!(diff_ids.len(), layers.len(), "busybox:{tag}");
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            assert_eq!(&layer["diffId"], diff_id, "busybox:{tag}");
            let tar = uncompressed_layer("busybox", layer);
            assert_eq!(sha256_digest(&tar), diff_id.as_str().expect("diff_id"));
        }
    }
    let media: Vec<&str> = ["latest", "zstd", "uncompressed"]
        .iter()
        .map(|t| {
            image_info("busybox", t)["layers"][1]["mediaType"]
                .as_str()
                .expect("mt")
        })
        .collect();
    assert_eq!(
        media,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.v1.tar",
        ]
    );
}

#[test]
fn busybox_config_is_as_specified() {
    let config = config_of("busybox", image_info("busybox", "latest"));
    let c = &config["config"];
    assert_eq!(c["User"], "0");
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "UCRI_TEST=1"
        ])
    );
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], serde_json::json!(["echo hello"]));
    assert_eq!(c["WorkingDir"], "/work");
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Labels"]["org.ucri.test"], "busybox");
    assert_eq!(config["architecture"], images_json()["arch"]);
    let user = config_of("busybox", image_info("busybox", "user"));
    assert_eq!(user["config"]["User"], "app");
}

#[test]
fn busybox_layers_hold_the_specified_entries() {
    let layers = layer_digests(image_info("busybox", "latest"));
    let base = list_layer("busybox", &layers[0]);
    assert_entries(
        &base,
        &[
            ("-rwxr-xr-x", "0/0", "bin/busybox"),
            ("hrwxr-xr-x", "0/0", "bin/sh link to bin/busybox"),
            ("hrwxr-xr-x", "0/0", "bin/ls link to bin/busybox"),
            ("-rw-r--r--", "0/0", "etc/passwd"),
            ("-rw-r--r--", "0/0", "etc/group"),
            ("drwxr-xr-x", "0/0", "work/"),
        ],
    );
    assert!(
        base.contains("libc.so.6") && base.contains("ld-linux"),
        "{base}"
    );
    assert_entries(
        &list_layer("busybox", &layers[1]),
        &[
            ("-rw-r--r--", "0/0", "data/keep.txt"),
            ("hrw-r--r--", "0/0", "data/hard link to data/keep.txt"),
            ("lrwxrwxrwx", "0/0", "data/link -> keep.txt"),
            ("-rw-r--r--", "0/0", "data/remove-me.txt"),
            ("-rw-r--r--", "0/0", "opaque/old-a.txt"),
            ("-rw-r--r--", "0/0", "opaque/old-b.txt"),
            ("drwxr-xr-x", "1000/1000", "home/app/"),
            ("-rw-r-----", "1000/1000", "home/app/owned.txt"),
            ("drwxrwxrwt", "0/0", "tmpdir/"),
        ],
    );
    assert_entries(
        &list_layer("busybox", &layers[2]),
        &[
            ("-rw-r--r--", "0/0", "data/.wh.remove-me.txt"),
            ("-rw-r--r--", "0/0", "opaque/.wh..wh..opq"),
            ("-rw-r--r--", "0/0", "opaque/new.txt"),
        ],
    );
}

#[test]
fn crafted_layers_keep_their_hostile_names() {
    let cases: [(&str, &[Entry]); 4] = [
        (
            "dotdot",
            &[("-rw-r--r--", "0/0", "../../escape-dotdot.txt")],
        ),
        (
            "abs-symlink",
            &[
                ("lrwxrwxrwx", "0/0", "evil -> /tmp"),
                ("-rw-r--r--", "0/0", "evil/escape-symlink.txt"),
            ],
        ),
        ("abs-path", &[("-rw-r--r--", "0/0", "/tmp/escape-abs.txt")]),
        (
            "hardlink-out",
            &[("hrw-r--r--", "0/0", "passwd-link link to ../../etc/passwd")],
        ),
    ];
    for (tag, wanted) in cases {
        let layers = layer_digests(image_info("crafted", tag));
        assert_eq!(layers.len(), 1, "crafted:{tag}");
        assert_entries(&list_layer("crafted", &layers[0]), wanted);
    }
}

#[test]
fn multiarch_arch_files_name_their_platform() {
    let index = image_info("multiarch", "latest");
    for manifest in index["manifests"].as_array().expect("manifests") {
        let arch = manifest["platform"]["architecture"].as_str().expect("arch");
        let last = layer_digests(manifest).pop().expect("a layer");
        let mut cmd = Command::new("tar");
        cmd.arg("-xzOf")
            .arg(layout_blob("multiarch", &last))
            .arg("arch.txt");
        assert_eq!(
            text(&run_checked(&mut cmd, "tar -xO arch.txt").stdout),
            format!("{arch}\n")
        );
    }
}

/// Unpacks the base layer and runs its shell: busybox and its libraries work.
#[test]
fn busybox_base_layer_runs() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = layer_digests(image_info("busybox", "latest")).remove(0);
    let mut untar = Command::new("tar");
    untar
        .arg("-xzf")
        .arg(layout_blob("busybox", &base))
        .arg("-C")
        .arg(root.path());
    run_checked(&mut untar, "unpack base layer");
    let mut cmd = if common::running_as_root() {
        Command::new("/usr/sbin/chroot")
    } else {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "/usr/sbin/chroot"]);
        c
    };
    let script = "echo hello; id -un; ls -d /work";
    cmd.arg(root.path())
        .args(["/bin/env", "-i", "PATH=/bin", "/bin/sh", "-c", script]);
    let out = run_checked(&mut cmd, "busybox sh in chroot");
    assert_eq!(text(&out.stdout), "hello\nroot\n/work\n");
}

#[test]
fn registry_serves_pushed_images_with_their_digests() {
    test_images();
    let registry = TestRegistry::start(None);
    let pushes = [
        ("busybox", "latest"),
        ("busybox", "zstd"),
        ("busybox", "uncompressed"),
        ("busybox", "user"),
        ("crafted", "dotdot"),
        ("crafted", "abs-symlink"),
        ("crafted", "abs-path"),
        ("crafted", "hardlink-out"),
    ];
    for (layout, tag) in pushes {
        let name = format!("{layout}:{tag}");
        registry.push_test_image(layout, tag, &name);
        let info = image_info(layout, tag);
        assert_eq!(registry_digest(&registry, &name), digest_of(info), "{name}");
        let config = inspect_raw(
            &["--tls-verify=false", "--config"],
            &registry.docker_ref(&name),
        );
        assert_eq!(
            sha256_digest(&config),
            info["config"].as_str().expect("config")
        );
    }
}

#[test]
fn multiarch_index_keeps_both_platforms() {
    test_images();
    let registry = TestRegistry::start(None);
    registry.push_test_image("multiarch", "latest", "multiarch:latest");
    let info = image_info("multiarch", "latest");
    assert_eq!(
        registry_digest(&registry, "multiarch:latest"),
        digest_of(info)
    );
    let raw = inspect_raw(
        &["--tls-verify=false"],
        &registry.docker_ref("multiarch:latest"),
    );
    let index: Value = serde_json::from_slice(&raw).expect("index JSON");
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: Vec<(String, String)> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let arch = m["platform"]["architecture"].as_str().expect("arch");
            (
                arch.to_owned(),
                m["digest"].as_str().expect("digest").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = info["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"]
                    .as_str()
                    .expect("arch")
                    .to_owned(),
                digest_of(m).to_owned(),
            )
        })
        .collect();
    assert_eq!(platforms, expected);
    let mut arches: Vec<&str> = platforms.iter().map(|(a, _)| a.as_str()).collect();
    arches.sort_unstable();
    assert_eq!(arches, ["amd64", "arm64"]);
    for (arch, digest) in &platforms {
        let by_digest = format!("multiarch@{digest}");
        assert_eq!(&registry_digest(&registry, &by_digest), digest, "{arch}");
        let config = inspect_raw(
            &["--tls-verify=false", "--config"],
            &registry.docker_ref(&by_digest),
        );
        let config: Value = serde_json::from_slice(&config).expect("config JSON");
        assert_eq!(config["architecture"], arch.as_str());
    }
}

#[test]
fn big_image_pushes() {
    test_images();
    let registry = TestRegistry::start(None);
    let info = image_info("big", "latest");
    let size = info["compressedSize"].as_u64().expect("compressedSize");
    assert!(size > 100_000_000, "big is {size} bytes");
    assert_eq!(info["layers"].as_array().expect("layers").len(), 6);
    let started = Instant::now();
    registry.push_test_image("big", "latest", "big:latest");
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "pushed {size} bytes in {secs:.2} s ({:.0} MB/s)",
        size as f64 / secs / 1e6
    );
    assert_eq!(registry_digest(&registry, "big:latest"), digest_of(info));
}

#[test]
fn auth_rejects_anonymous_and_accepts_credentials() {
    test_images();
    let registry = TestRegistry::start(Some(("ucri", "s3cret pass")));
    registry.push_test_image("busybox", "latest", "busybox:latest");
    let reference = registry.docker_ref("busybox:latest");
    let anonymous = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--no-creds",
        &reference,
    ])
    .output()
    .expect("run skopeo");
    assert!(!anonymous.status.success(), "anonymous inspect succeeded");
    let err = text(&anonymous.stderr).to_lowercase();
    assert!(
        err.contains("unauthorized") || err.contains("authentication required"),
        "{err}"
    );
    let wrong = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds=ucri:wrong",
        &reference,
    ])
    .output()
    .expect("run skopeo");
    assert!(
        !wrong.status.success(),
        "inspect with a wrong password succeeded"
    );
    let info = image_info("busybox", "latest");
    assert_eq!(
        registry_digest(&registry, "busybox:latest"),
        digest_of(info)
    );
}

#[test]
fn corrupt_blob_fails_copy_with_a_digest_error() {
    test_images();
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "busybox:latest");
    registry.push_test_image("crafted", "dotdot", "crafted:dotdot");
    let layer = &layer_digests(image_info("busybox", "latest"))[1];
    let size = std::fs::metadata(registry.blob_path(layer))
        .expect("blob")
        .len();
    registry.corrupt_blob(layer);
    assert_eq!(
        std::fs::metadata(registry.blob_path(layer))
            .expect("blob")
            .len(),
        size
    );
    let scratch = tempfile::tempdir().expect("tempdir");
    let copy = |name: &str| {
        let dest = format!(
            "dir:{}",
            scratch.path().join(name.replace(':', "-")).display()
        );
        skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &registry.docker_ref(name),
            &dest,
        ])
        .output()
        .expect("run skopeo")
    };
    let broken = copy("busybox:latest");
    assert!(
        !broken.status.success(),
        "copy of a corrupted image succeeded"
    );
    let err = text(&broken.stderr);
    assert!(err.contains("Digest did not match"), "{err}");
    assert!(err.contains(layer.as_str()), "{err}");
    let intact = copy("crafted:dotdot");
    assert!(intact.status.success(), "{}", text(&intact.stderr));
}

#[test]
fn stop_ends_the_registry_and_drop_removes_its_storage() {
    let mut registry = TestRegistry::start(None);
    let addr = registry.addr();
    let storage = registry.storage_dir();
    assert_eq!(common::registry::http_status(&addr, "/v2/"), Some(200));
    assert!(Path::new(&storage).parent().expect("dir").exists());
    registry.stop();
    assert_eq!(common::registry::http_status(&addr, "/v2/"), None);
    drop(registry);
    assert!(!storage.parent().expect("dir").exists());
}
