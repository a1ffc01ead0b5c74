//! The individual prerequisite checks of `ucri info`.

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use ucri_rootless::launch::{detect_mode, Mode};
use ucri_rootless::subid;
use ucri_rootless::which;

use super::check::{Check, Verdict};
use crate::config::{Config, Uplink};

/// Every check, in report order.
pub fn all(config: &Config) -> Vec<Check> {
    let mut checks = vec![kernel(), mode(config), user_namespaces()];
    checks.extend(subids());
    checks.extend(["newuidmap", "newgidmap"].map(id_map_helper));
    checks.push(device("dev_fuse", "/dev/fuse", "fuse-overlayfs"));
    checks.push(device(
        "dev_net_tun",
        "/dev/net/tun",
        "slirp4netns and pasta",
    ));
    let overlay = overlay_in_userns(config);
    let fuse = fuse_overlayfs();
    checks.push(storage_driver(config, &overlay, &fuse));
    checks.push(overlay);
    checks.push(fuse);
    checks.extend(oci_runtimes(config));
    checks.push(conmon(config));
    checks.push(binary_check(
        "catatonit",
        Path::new("catatonit"),
        Verdict::Warning,
        "catatonit",
    ));
    checks.extend(uplinks(config));
    checks.push(cni_plugins(config));
    checks.push(cni_network(config));
    checks.push(uplink_state(config));
    checks.push(iptables());
    checks.push(cgroups(config));
    checks.push(node(config));
    checks.push(runtime_dir(config));
    checks.push(quarantine(config));
    checks.push(socket_bypass(config));
    checks
}

/// Whether pod egress takes the socket bypass or the uplink helper's path.
fn socket_bypass(config: &Config) -> Check {
    match crate::runtime::bypass::support(config) {
        Ok(()) => Check::ok(
            "socket_bypass",
            "pod connections to the outside get host sockets (containers with a seccomp \
             profile, and Unconfined ones of pods annotated ucri.io/socket-bypass: \"true\"; \
             crun only)",
        ),
        Err(why) => Check::bad(
            "socket_bypass",
            Verdict::Warning,
            format!("pod traffic to the outside goes through the uplink helper: {why}"),
            "set network.socket_bypass = true with an uplink, on Linux 5.9+ with seccomp user \
             notification (docs/networking.md)",
        ),
    }
}

/// State records the daemon could not read and set aside.
fn quarantine(config: &Config) -> Check {
    let dir = config.daemon.data_dir.join("state/quarantine");
    let records: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if records.is_empty() {
        return Check::ok("state_records", "every record was readable");
    }
    Check::bad(
        "state_records",
        Verdict::Warning,
        format!(
            "{} unreadable state records set aside in {}: {}",
            records.len(),
            dir.display(),
            records.join(", ")
        ),
        "the daemon log says why each was unreadable; what they describe (processes, \
         writable layers) was left alone: stop it with `ucri system reset`, or repair a record, \
         move it back to state/pods or state/containers as <id>.json and restart",
    )
}

/// The node namespace's address (kubelet's --node-ip) and its links to the host.
fn node(config: &Config) -> Check {
    let node = &config.node;
    let links = format!(
        "published on the host: {:?}; host loopback ports inside: {:?}",
        node.ports, node.host_loopback_ports
    );
    match node.resolved_address() {
        Ok(Some(address)) => Check::ok(
            "node",
            format!(
                "address {address} (kubelet --node-ip; UCRI_NODE_IP under ucri nsenter); {links}"
            ),
        ),
        Ok(None) if node.address == "none" => Check::ok(
            "node",
            format!("no address (node.address = \"none\"); {links}"),
        ),
        Ok(None) => Check::bad(
            "node",
            Verdict::Warning,
            format!("no default route, so no address for the node; {links}"),
            "set [node] address to an address of this host that the control plane reaches",
        ),
        Err(why) => Check::bad(
            "node",
            Verdict::Error,
            why,
            "fix [node] address in ucri.toml",
        ),
    }
}

fn kernel() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let version: Vec<u32> = release
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    if version.as_slice() >= [5, 11].as_slice() {
        Check::ok("kernel", release)
    } else {
        Check::bad(
            "kernel",
            Verdict::Warning,
            format!("{release}: older than 5.11, no overlayfs in user namespaces"),
            "upgrade the kernel to 5.11 or newer (fuse-overlayfs is used meanwhile)",
        )
    }
}

fn mode(config: &Config) -> Check {
    match detect_mode() {
        Mode::Rootless => Check::ok("mode", "rootless: ucri enters its own user namespace"),
        Mode::NestedRoot => Check::ok("mode", "root inside a user namespace: no bootstrap needed"),
        Mode::HostRoot if config.daemon.allow_root => Check::ok("mode", "real root (--allow-root)"),
        Mode::HostRoot => Check::bad(
            "mode",
            Verdict::Error,
            "running as real root on the host",
            "run ucri as an ordinary user (or pass --allow-root)",
        ),
    }
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn user_namespaces() -> Check {
    let max = read_sysctl("/proc/sys/user/max_user_namespaces").unwrap_or(0);
    let clone = read_sysctl("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    if max == 0 {
        Check::bad(
            "user_namespaces",
            Verdict::Error,
            "user.max_user_namespaces is 0",
            "sudo sysctl -w user.max_user_namespaces=28633",
        )
    } else if clone == Some(0) {
        Check::bad(
            "user_namespaces",
            Verdict::Error,
            "kernel.unprivileged_userns_clone is 0",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1",
        )
    } else if apparmor == Some(1) {
        Check::bad(
            "user_namespaces",
            Verdict::Error,
            "AppArmor restricts unprivileged user namespaces",
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0",
        )
    } else {
        Check::ok("user_namespaces", format!("enabled (max {max})"))
    }
}

fn current_user() -> (String, u32, u32) {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    (name, uid.as_raw(), nix::unistd::getgid().as_raw())
}

fn subids() -> Vec<Check> {
    let (name, uid, gid) = current_user();
    [
        ("subuid", subid::SUBUID_FILE, uid),
        ("subgid", subid::SUBGID_FILE, gid),
    ]
    .into_iter()
    .map(|(check, file, id)| subid_check(check, file, &name, id))
    .collect()
}

fn subid_check(check: &str, file: &str, name: &str, id: u32) -> Check {
    if detect_mode() != Mode::Rootless {
        return Check::ok(check, "not needed: already root");
    }
    match subid::ranges_for(Path::new(file), name, id) {
        Ok(ranges) if !ranges.is_empty() => {
            let list: Vec<String> = ranges
                .iter()
                .map(|r| format!("{}:{}", r.start, r.count))
                .collect();
            let total = subid::total(&ranges);
            if total < 65536 {
                Check::bad(
                    check,
                    Verdict::Warning,
                    format!("{} ({total} ids; images may need 65536)", list.join(", ")),
                    format!("sudo usermod --add-{check}s 100000-165535 {name}"),
                )
            } else {
                // U maps the user and its range; the first 65,536 ids are the
                // daemon's containers', each pod with a user namespace of its
                // own (hostUsers: false) takes 65,536 more.
                let pods = ((total + 1) / crate::runtime::userns::IDS_PER_POD).saturating_sub(1);
                Check::ok(
                    check,
                    format!(
                        "{} ({total} ids; room for {pods} pods with their own user namespace)",
                        list.join(", ")
                    ),
                )
            }
        }
        Ok(_) => Check::bad(
            check,
            Verdict::Error,
            format!("no range for {name} in {file}: only a single-id user namespace is possible"),
            format!("sudo usermod --add-{check}s 100000-165535 {name}"),
        ),
        Err(e) => Check::bad(
            check,
            Verdict::Error,
            e.to_string(),
            format!("make {file} readable"),
        ),
    }
}

fn id_map_helper(program: &'static str) -> Check {
    let Some(path) = which(program) else {
        return Check::bad(
            program,
            Verdict::Error,
            "not installed",
            "sudo apt-get install uidmap",
        );
    };
    let meta = std::fs::metadata(&path);
    let setuid = meta
        .as_ref()
        .map(|m| m.uid() == 0 && m.permissions().mode() & 0o4000 != 0)
        .unwrap_or(false);
    let caps = ucri_rootless::syscall::has_xattr(&path, "security.capability");
    match (setuid, caps) {
        (true, _) => Check::ok(program, format!("{} (setuid root)", path.display())),
        (_, true) => Check::ok(program, format!("{} (file capabilities)", path.display())),
        _ => Check::bad(
            program,
            Verdict::Error,
            format!(
                "{} is neither setuid root nor has file capabilities",
                path.display()
            ),
            format!("sudo chmod u+s {}", path.display()),
        ),
    }
}

fn device(name: &str, path: &str, used_by: &str) -> Check {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(_) => Check::ok(name, format!("{path} is read-write for this user")),
        Err(e) => Check::bad(
            name,
            Verdict::Error,
            format!("cannot open {path} read-write ({e}); {used_by} cannot work"),
            format!("sudo chmod 0666 {path}"),
        ),
    }
}

fn overlay_in_userns(config: &Config) -> Check {
    if detect_mode() == Mode::HostRoot {
        return Check::ok("overlay_userns", "not needed: real root");
    }
    let exe = PathBuf::from("/proc/self/exe");
    match ucri_storage::probe::probe_overlay_in_userns(&exe, &config.daemon.data_dir) {
        Ok(()) => Check::ok(
            "overlay_userns",
            "kernel overlayfs mounts in a user namespace (userxattr)",
        ),
        Err(e) => Check::bad(
            "overlay_userns",
            Verdict::Warning,
            format!("kernel overlayfs unusable in a user namespace: {e}"),
            "use kernel 5.11+ (fuse-overlayfs or vfs is used meanwhile)",
        ),
    }
}

/// Which root filesystem driver the daemon will use, and why.
fn storage_driver(config: &Config, overlay: &Check, fuse: &Check) -> Check {
    use crate::config::StorageDriver;
    let fuse_ok = fuse.status == Verdict::Ok
        && OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_ok();
    let auto = if overlay.status == Verdict::Ok {
        "overlay (kernel overlayfs works in a user namespace)"
    } else if fuse_ok {
        "fuse-overlayfs (kernel overlay unavailable)"
    } else {
        "vfs (neither kernel overlay nor fuse-overlayfs works: full copies, slow)"
    };
    match config.storage.driver {
        StorageDriver::Auto if auto.starts_with("vfs") => Check::bad(
            "storage_driver",
            Verdict::Warning,
            format!("auto: {auto}"),
            "use kernel 5.11+, or install fuse-overlayfs and make /dev/fuse 0666",
        ),
        StorageDriver::Auto => Check::ok("storage_driver", format!("auto: {auto}")),
        other => Check::ok(
            "storage_driver",
            format!("{other:?} (set in storage.driver)").to_lowercase(),
        ),
    }
}

fn fuse_overlayfs() -> Check {
    match which("fuse-overlayfs").map(|p| (version_of(&p, "--version"), p)) {
        Some((Ok(v), p)) => Check::ok("fuse_overlayfs", format!("{} ({v})", p.display())),
        Some((Err(e), p)) => Check::bad(
            "fuse_overlayfs",
            Verdict::Warning,
            format!("{} does not run: {e}", p.display()),
            "sudo apt-get install --reinstall fuse-overlayfs fuse3",
        ),
        None => Check::bad(
            "fuse_overlayfs",
            Verdict::Warning,
            "not installed (needed where kernel overlay in a user namespace is unavailable)",
            "sudo apt-get install fuse-overlayfs fuse3",
        ),
    }
}

fn oci_runtimes(config: &Config) -> Vec<Check> {
    let runtime = &config.runtime;
    runtime
        .runtimes
        .iter()
        .map(|(name, handler)| {
            let severity = if *name == runtime.default_runtime {
                Verdict::Error
            } else {
                Verdict::Warning
            };
            binary_check(
                &format!("oci_runtime.{name}"),
                &handler.path,
                severity,
                name,
            )
        })
        .collect()
}

fn conmon(config: &Config) -> Check {
    binary_check("conmon", &config.runtime.conmon, Verdict::Error, "conmon")
}

fn uplinks(config: &Config) -> Vec<Check> {
    [
        (Uplink::Slirp4netns, "slirp4netns", "slirp4netns"),
        (Uplink::Pasta, "pasta", "passt"),
    ]
    .into_iter()
    .map(|(kind, program, package)| {
        let severity = if config.network.uplink == kind {
            Verdict::Error
        } else {
            Verdict::Warning
        };
        binary_check(
            &format!("uplink.{program}"),
            Path::new(program),
            severity,
            package,
        )
    })
    .collect()
}

fn binary_check(name: &str, program: &Path, missing: Verdict, package: &str) -> Check {
    let Some(path) = which(&program.to_string_lossy()) else {
        return Check::bad(
            name,
            missing,
            format!("{} not found", program.display()),
            format!("sudo apt-get install {package}"),
        );
    };
    match version_of(&path, "--version") {
        Ok(v) => Check::ok(name, format!("{} ({v})", path.display())),
        Err(e) => Check::bad(
            name,
            missing,
            format!("{} does not run: {e}", path.display()),
            format!("sudo apt-get install --reinstall {package}"),
        ),
    }
}

/// The version line of `program ARG` (tools print it on stdout or stderr,
/// sometimes among other lines), or its error with stderr.
fn version_of(program: &Path, arg: &str) -> Result<String, String> {
    let out = Command::new(program)
        .arg(arg)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{}: {}", out.status, stderr.trim()));
    }
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(pick_version_line(&text, program))
}

/// Prefers a line naming the program and a version, then any version line.
fn pick_version_line(text: &str, program: &Path) -> String {
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let has_version = |l: &&&str| l.to_lowercase().contains("version");
    lines
        .iter()
        .filter(has_version)
        .find(|l| l.contains(name.as_ref()))
        .or_else(|| lines.iter().find(has_version))
        .or_else(|| lines.first())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

fn cni_plugins(config: &Config) -> Check {
    let dirs = &config.network.cni_plugin_dirs;
    let found = ucri_net::discover::find_plugins(dirs, &ucri_net::discover::REQUIRED_CNI_PLUGINS);
    let missing: Vec<&str> = found
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    let dir_list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    if missing.is_empty() {
        Check::ok(
            "cni_plugins",
            format!("{} in {}", found.len(), dir_list.join(":")),
        )
    } else {
        Check::bad(
            "cni_plugins",
            Verdict::Error,
            format!("missing {} in {}", missing.join(", "), dir_list.join(":")),
            "sudo apt-get install containernetworking-plugins",
        )
    }
}

/// Whether container limits can apply (a delegated cgroup subtree).
fn cgroups(config: &Config) -> Check {
    let support = crate::cgroups::probe(&config.runtime);
    match support {
        crate::cgroups::CgroupSupport::None { reason, fix } => Check::bad(
            "cgroups",
            Verdict::Warning,
            format!("{reason}: resource limits are not applied, stats come from /proc"),
            fix,
        ),
        other => Check::ok("cgroups", other.describe()),
    }
}

/// The default CNI network the daemon will use (or writes on first start).
fn cni_network(config: &Config) -> Check {
    let dir = &config.network.cni_config_dir;
    let has_files = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
    if !has_files {
        return Check::ok(
            "cni_network",
            format!(
                "{} is empty: the daemon writes the default network (bridge, 10.88.0.0/16) on start",
                dir.display()
            ),
        );
    }
    let cni = ucri_net::cni::Cni {
        plugin_dirs: config.network.cni_plugin_dirs.clone(),
        state_dir: config.daemon.runtime_dir.join("cni"),
        run_in: None,
    };
    let checked = ucri_net::cni::load_default_network(dir)
        .and_then(|list| cni.check_plugins(&list).map(|()| list));
    match checked {
        Ok(list) => Check::ok(
            "cni_network",
            format!(
                "{} from {} (plugins: {})",
                list.name,
                list.source.display(),
                list.plugin_types().join(", ")
            ),
        ),
        Err(why) => Check::bad(
            "cni_network",
            Verdict::Error,
            why,
            format!(
                "fix or remove the file in {}; pods cannot get a network",
                dir.display()
            ),
        ),
    }
}

/// The uplink the configuration asks for, and whether its helper runs.
fn uplink_state(config: &Config) -> Check {
    let net = &config.network;
    let kind = serde_json::to_value(net.uplink)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let record = std::fs::read(config.daemon.runtime_dir.join("uplink/helper.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok());
    let pid = record
        .and_then(|r| r["pid"].as_i64())
        .filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
    let state = match (net.uplink, pid) {
        (Uplink::None, _) => "no way out (offline)".to_owned(),
        (_, Some(pid)) => format!("running (pid {pid})"),
        (_, None) => "not running (the daemon starts it)".to_owned(),
    };
    let loopback = if net.allow_host_loopback {
        "host loopback reachable"
    } else {
        "host loopback blocked"
    };
    Check::ok(
        "uplink",
        format!("{kind}, MTU {}, {loopback}, {state}", net.mtu),
    )
}

fn iptables() -> Check {
    match which("iptables").map(|p| version_of(&p, "--version")) {
        Some(Ok(v)) if v.contains("nf_tables") => Check::ok("iptables", v),
        Some(Ok(v)) => Check::ok(
            "iptables",
            format!("{v} (legacy backend: ucri points XTABLES_LOCKFILE at a writable path)"),
        ),
        Some(Err(e)) => Check::bad(
            "iptables",
            Verdict::Warning,
            e,
            "sudo apt-get install --reinstall iptables",
        ),
        None => Check::bad(
            "iptables",
            Verdict::Warning,
            "not installed: CNI masquerade and portmap cannot work",
            "sudo apt-get install iptables",
        ),
    }
}

fn runtime_dir(config: &Config) -> Check {
    let dir = &config.daemon.runtime_dir;
    let parent = dir.parent().unwrap_or(dir);
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").is_some();
    if nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK).is_err() {
        return Check::bad(
            "runtime_dir",
            Verdict::Error,
            format!("{} is not writable", parent.display()),
            "set XDG_RUNTIME_DIR to a directory you own (e.g. `loginctl enable-linger $USER`)",
        );
    }
    if xdg {
        Check::ok("runtime_dir", dir.display().to_string())
    } else {
        Check::bad(
            "runtime_dir",
            Verdict::Warning,
            format!("XDG_RUNTIME_DIR is not set; using {}", dir.display()),
            "log in through a session manager, or export XDG_RUNTIME_DIR=/run/user/$(id -u)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_prefers_the_program_own_line() {
        let text = "fusermount3 version: 3.14.0\nfuse-overlayfs: version 1.10\nFUSE library version 3.14.0\n";
        let line = pick_version_line(text, Path::new("/usr/bin/fuse-overlayfs"));
        assert_eq!(line, "fuse-overlayfs: version 1.10");
        assert_eq!(
            pick_version_line("\ncrun version 1.8.1\ncommit: x", Path::new("crun")),
            "crun version 1.8.1"
        );
        assert_eq!(pick_version_line("v2.1\n", Path::new("x")), "v2.1");
    }
}
