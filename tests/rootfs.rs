//! Container root filesystems with each driver, for real: the test pulls the
//! busybox test image into a rootless daemon's store, then re-runs itself
//! through `ucri nsenter` (root in the daemon's user namespace, in its mount
//! namespace) to mount, write, remount and remove root filesystems.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::registry::{image_info, TestRegistry};
use common::*;
use ucri_storage::digest::Digest;
use ucri_storage::rootfs::{DriverKind, Rootfs};

const INSIDE: &str = "UCRI_ROOTFS_INSIDE";

#[test]
fn overlay_driver() {
    suite("overlay_driver", DriverKind::Overlay);
}

#[test]
fn fuse_overlayfs_driver() {
    suite("fuse_overlayfs_driver", DriverKind::FuseOverlayfs);
}

#[test]
fn vfs_driver() {
    suite("vfs_driver", DriverKind::Vfs);
}

fn suite(test: &str, driver: DriverKind) {
    match std::env::var(INSIDE) {
        Ok(store) => inside(Path::new(&store), driver),
        Err(_) => drop(outside(test)),
    }
}

#[test]
fn a_restarted_daemon_removes_root_filesystems_left_behind() {
    const TEST: &str = "a_restarted_daemon_removes_root_filesystems_left_behind";
    if let Ok(store) = std::env::var(INSIDE) {
        for driver in [
            DriverKind::Overlay,
            DriverKind::FuseOverlayfs,
            DriverKind::Vfs,
        ] {
            let rootfs = Rootfs::new(Path::new(&store), driver).expect("rootfs");
            rootfs
                .create(&format!("left-{driver}"), &image_layers(), false)
                .expect("create");
        }
        println!("INSIDE-OK");
        return;
    }
    let (mut sb, daemon, _registry) = outside(TEST);
    let store = sb.data_dir().join("storage");
    let mountinfo =
        |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let before = mountinfo(sb.daemon_pid());
    assert!(
        before.contains("left-overlay") && before.contains("left-fuse-overlayfs"),
        "{before}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sb.daemon_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill -9");
    drop(daemon);
    let _daemon = sb.start_daemon();
    let after = mountinfo(sb.daemon_pid());
    assert!(
        !after.contains(&store.display().to_string()),
        "stale mounts removed:\n{after}"
    );
    let left: Vec<_> = std::fs::read_dir(store.join("containers"))
        .expect("list")
        .flatten()
        .collect();
    assert!(left.is_empty(), "stale root filesystems removed: {left:?}");
}

/// Pulls the image with a real daemon, then runs this test again inside the
/// daemon's namespaces. Returns the sandbox, daemon and registry, still up.
fn outside(test: &str) -> (Sandbox, Daemon, TestRegistry) {
    let registry = TestRegistry::start(None);
    registry.push_test_image("busybox", "latest", "test/busybox:latest");
    let mut sb = Sandbox::new(&format!("rootfs-{}", &test[..test.len().min(24)]));
    let daemon = sb.start_daemon();
    let image = registry.image("test/busybox:latest");
    sb.pull(&image);
    let binary = test_binary_copy();
    let layers = chain_hexes(image_info("busybox", "latest")).join(",");
    let out = sb
        .ucri(&["nsenter", "--"])
        .arg(binary)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, sb.data_dir().join("storage"))
        .env("UCRI_ROOTFS_LAYERS", layers)
        .output()
        .expect("nsenter");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("INSIDE-OK"),
        "inner run failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (sb, daemon, registry)
}

/// This test binary, copied (once per process) where the unprivileged user
/// can run it.
fn test_binary_copy() -> &'static Path {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let dir = ucri_binary().parent().expect("bin dir").to_owned();
        let exe = std::env::current_exe().expect("test binary");
        let copy = dir.join(exe.file_name().expect("name"));
        std::fs::copy(&exe, &copy).expect("copy test binary");
        copy
    })
}

fn image_layers() -> Vec<Digest> {
    std::env::var("UCRI_ROOTFS_LAYERS")
        .expect("layers")
        .split(',')
        .map(|h| format!("sha256:{h}").parse().expect("digest"))
        .collect()
}

fn inside(store: &Path, driver: DriverKind) {
    let rootfs = Rootfs::new(store, driver).expect("rootfs");
    let layers = image_layers();
    layers_read_back_with_whiteouts(&rootfs, &layers);
    writes_go_to_the_upper_layer_only(&rootfs, store, &layers);
    read_only_rootfs_rejects_writes(&rootfs, &layers);
    many_layers_mount(&rootfs, store);
    recovery_remounts_live_and_removes_stale(&rootfs, &layers);
    assert!(
        rootfs.mounts_under_store().is_empty(),
        "mounts left: {:?}",
        rootfs.mounts_under_store()
    );
    let left: Vec<_> = std::fs::read_dir(store.join("containers"))
        .expect("list")
        .flatten()
        .collect();
    assert!(left.is_empty(), "container dirs left: {left:?}");
    println!("INSIDE-OK");
}

fn layers_read_back_with_whiteouts(rootfs: &Rootfs, layers: &[Digest]) {
    let root = rootfs.create("c-whiteouts", layers, false).expect("create");
    assert!(root.join("bin/busybox").is_file());
    assert!(root.join("data/keep.txt").is_file(), "lower file visible");
    assert!(
        !root.join("data/remove-me.txt").exists(),
        "whiteout hides the file"
    );
    assert!(
        !root.join("opaque/old-a.txt").exists(),
        "opaque dir hides lower content"
    );
    assert!(
        root.join("opaque/new.txt").is_file(),
        "opaque dir keeps its own content"
    );
    let names: Vec<String> = std::fs::read_dir(root.join("opaque"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["new.txt"]);
    rootfs.remove("c-whiteouts").expect("remove");
    assert!(!root.exists(), "removal leaves no directory");
}

fn writes_go_to_the_upper_layer_only(rootfs: &Rootfs, store: &Path, layers: &[Digest]) {
    let a = rootfs.create("c-a", layers, false).expect("create a");
    let b = rootfs.create("c-b", layers, false).expect("create b");
    let mut f = std::fs::File::create(a.join("data/written.txt")).expect("write in a");
    f.write_all(&vec![7u8; 1 << 20]).expect("write");
    drop(f);
    std::fs::remove_file(a.join("data/keep.txt")).expect("delete a lower file in a");
    assert!(
        rootfs.upper("c-a").join("data/written.txt").exists(),
        "the write landed in the upper dir"
    );
    for layer in layers {
        let diff = store.join("layers").join(layer.hex()).join("diff");
        assert!(!diff.join("data/written.txt").exists(), "never in a layer");
        assert!(diff.join("data").exists() == diff.join("data").exists());
    }
    assert!(
        !b.join("data/written.txt").exists(),
        "b does not see a's write"
    );
    assert!(
        b.join("data/keep.txt").exists(),
        "b does not see a's delete"
    );
    std::fs::write(b.join("b.txt"), b"b").expect("write in b");
    assert!(!a.join("b.txt").exists(), "a does not see b's write");
    let usage = rootfs.usage("c-a");
    assert!(
        usage.bytes >= 1 << 20,
        "writable layer accounting: {usage:?}"
    );
    rootfs.remove("c-a").expect("remove a");
    rootfs.remove("c-b").expect("remove b");
    let keep = layers.iter().any(|l| {
        store
            .join("layers")
            .join(l.hex())
            .join("diff/data/keep.txt")
            .exists()
    });
    assert!(keep, "deleting in a container never touches the layer");
}

fn read_only_rootfs_rejects_writes(rootfs: &Rootfs, layers: &[Digest]) {
    let root = rootfs
        .create("c-ro", layers, true)
        .expect("create read-only");
    let err = std::fs::write(root.join("nope.txt"), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    assert!(root.join("bin/busybox").is_file());
    rootfs.remove("c-ro").expect("remove");
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

/// More layers than fit in one mount option string with full paths.
fn many_layers_mount(rootfs: &Rootfs, store: &Path) {
    let mut layers = Vec::new();
    for i in 0..150u32 {
        let chain = Digest::of(format!("synthetic-layer-{i}").as_bytes());
        let diff = store.join("layers").join(chain.hex()).join("diff");
        std::fs::create_dir_all(&diff).expect("layer dir");
        std::fs::write(diff.join(format!("f{i}")), i.to_string()).expect("layer file");
        layers.push(chain);
    }
    let full_paths: usize = layers
        .iter()
        .map(|l| {
            store
                .join("layers")
                .join(l.hex())
                .join("diff")
                .as_os_str()
                .len()
                + 1
        })
        .sum();
    assert!(
        full_paths > 4096,
        "the test must exceed a page with full paths ({full_paths})"
    );
    let root = rootfs.create("c-many", &layers, false).expect("150 layers");
    assert_eq!(
        std::fs::read_to_string(root.join("f0")).expect("bottom"),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("f149")).expect("top"),
        "149"
    );
    rootfs.remove("c-many").expect("remove");
    for l in &layers {
        std::fs::remove_dir_all(store.join("layers").join(l.hex())).expect("clean synthetic layer");
    }
}

fn recovery_remounts_live_and_removes_stale(rootfs: &Rootfs, layers: &[Digest]) {
    let live = rootfs.create("c-live", layers, false).expect("live");
    std::fs::write(live.join("kept.txt"), b"survives").expect("write");
    rootfs.create("c-stale", layers, false).expect("stale");
    if rootfs.driver() != DriverKind::Vfs {
        nix::mount::umount2(&live, nix::mount::MntFlags::MNT_DETACH)
            .expect("simulate a lost mount");
        assert!(!rootfs.is_mounted("c-live"));
    }
    let report = rootfs
        .recover(&HashSet::from(["c-live".to_owned()]))
        .expect("recover");
    assert_eq!(report.removed, vec!["c-stale".to_owned()]);
    if rootfs.driver() != DriverKind::Vfs {
        assert_eq!(report.remounted, vec!["c-live".to_owned()]);
    }
    assert!(rootfs.is_mounted("c-live"));
    assert_eq!(
        std::fs::read(live.join("kept.txt")).expect("after recovery"),
        b"survives"
    );
    assert!(!rootfs.mountpoint("c-stale").exists());
    rootfs.remove("c-live").expect("remove");
}

#[test]
fn the_daemon_reports_its_driver_and_why() {
    use ucri_cri_api::v1::StatusRequest;
    for (setting, expected) in [
        (None, "overlay"),
        (Some("vfs"), "vfs"),
        (Some("fuse-overlayfs"), "fuse-overlayfs"),
    ] {
        let mut sb = Sandbox::new("driver-choice");
        if let Some(driver) = setting {
            sb.write_user_file(
                &sb.config_dir().join("ucri.toml"),
                &format!("[storage]\ndriver = \"{driver}\"\n"),
            );
        }
        let _daemon = sb.start_daemon();
        let info = block_on(async {
            let mut c = sb.runtime_client().await;
            c.status(StatusRequest { verbose: true })
                .await
                .expect("Status")
                .into_inner()
                .info
        });
        assert_eq!(info["storageDriver"], expected, "{setting:?}: {info:?}");
        assert!(!info["storageDriverReason"].is_empty());
        if setting.is_none() {
            assert!(
                info["storageDriverReason"].contains("userxattr"),
                "auto explains itself: {info:?}"
            );
        }
    }
}
