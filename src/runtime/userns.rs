//! Pods with a user namespace of their own (`hostUsers: false`, CRI
//! `userns_options` with mode POD).
//!
//! The daemon is root in its own user namespace U, which maps the user and
//! its subordinate ids. A pod's user namespace maps the container ids of the
//! request onto ids of U, so the ids kubelet (or critest) picks must lie in
//! U's range: a user needs 65,536 ids per such pod on top of the 65,536 the
//! daemon's own containers use (`setup-host.sh` grants ranges that size).
//! The pod's network, IPC and UTS namespaces are made inside it, so that its
//! containers, which join it first, may join them too.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use ucri_cri_api::v1::{IdMapping, NamespaceMode, PodSandboxConfig, UserNamespace};

use super::command::{run_checked, CommandError};
use super::pod_dir::PodDir;

/// Errors of the pod user-namespace driver.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The pod's id mappings are malformed or outside the daemon's.
    #[error("{0}")]
    InvalidArgument(String),
    /// `unshare` did not behave as expected.
    #[error("{0}")]
    Internal(String),
    /// A helper program failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A file, mount or namespace operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> UsernsError {
    let context = context.into();
    move |source| UsernsError::Io { context, source }
}

/// The ids one pod with its own user namespace takes (kubelet's default).
pub const IDS_PER_POD: u64 = 65_536;

/// The user namespace options of a pod config; `None` = the node's.
fn options(config: &PodSandboxConfig) -> Option<&UserNamespace> {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .and_then(|o| o.userns_options.as_ref())
}

/// The pod's uid and gid maps (`/proc/PID/uid_map` lines) when it asks for a
/// user namespace of its own, `None` when it keeps the node's; an error for
/// what cannot be (CONTAINER/TARGET modes, several or partial mappings, ids
/// outside the daemon's range, host network or a shared PID namespace).
pub fn requested_maps(
    config: &PodSandboxConfig,
    available: u64,
) -> Result<Option<(String, String)>, UsernsError> {
    let Some(userns) = options(config) else {
        return Ok(None);
    };
    let invalid = |why: String| Err(UsernsError::InvalidArgument(why));
    match NamespaceMode::try_from(userns.mode) {
        Ok(NamespaceMode::Node) => return Ok(None),
        Ok(NamespaceMode::Pod) => {}
        _ => {
            return invalid(format!(
                "user namespace mode {} is not supported: only POD and NODE",
                userns.mode
            ))
        }
    }
    let uids = single_mapping("uid", &userns.uids, available)?;
    let gids = single_mapping("gid", &userns.gids, available)?;
    let namespaces = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    if namespaces.is_some_and(|o| o.network == NamespaceMode::Node as i32) {
        return invalid("a pod with its own user namespace cannot use the host network".into());
    }
    if namespaces.is_some_and(|o| o.pid == NamespaceMode::Pod as i32) {
        return invalid(
            "a pod with its own user namespace cannot share one PID namespace yet".into(),
        );
    }
    Ok(Some((uids, gids)))
}

/// One mapping of container id 0 onto ids 1.. of the daemon's namespace.
fn single_mapping(what: &str, maps: &[IdMapping], available: u64) -> Result<String, UsernsError> {
    let invalid = |why: String| Err(UsernsError::InvalidArgument(why));
    let [m] = maps else {
        return invalid(format!(
            "a pod user namespace needs exactly one {what} mapping, got {}",
            maps.len()
        ));
    };
    if m.container_id != 0 {
        return invalid(format!("the {what} mapping must map container id 0"));
    }
    let end = u64::from(m.host_id) + u64::from(m.length);
    if m.length == 0 || m.host_id == 0 || end > available {
        return invalid(format!(
            "{what} mapping {}+{} is outside the ids this daemon has (1..{available}); \
             grant the user a larger subordinate range (packaging/setup-host.sh)",
            m.host_id, m.length
        ));
    }
    Ok(format!("0 {} {}\n", m.host_id, m.length))
}

/// How a pod's root filesystems show their ids: container 0 at the pod's
/// mapped ids (`None` for a pod in the daemon's user namespace).
pub fn id_shift(config: &PodSandboxConfig) -> Option<ucri_storage::rootfs::IdShift> {
    let userns = options(config).filter(|u| u.mode == NamespaceMode::Pod as i32)?;
    let (uid, gid) = (userns.uids.first()?, userns.gids.first()?);
    Some(ucri_storage::rootfs::IdShift {
        uid: uid.host_id,
        gid: gid.host_id,
        length: uid.length.min(gid.length),
    })
}

/// How many ids the daemon's user namespace has for `kind` ("uid"/"gid"):
/// the end of its mapped range, from `/proc/self/{uid,gid}_map`.
pub fn available_ids(kind: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/self/{kind}_map"))
        .map(|text| {
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
                    let inside = f.next()??;
                    let _outside = f.next()??;
                    Some(inside + f.next()??)
                })
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Pods with their own user namespace that the daemon's range holds, with
/// the first 65,536 ids left to the daemon's own containers.
pub fn pod_capacity() -> u64 {
    let ids = available_ids("uid").min(available_ids("gid"));
    (ids / IDS_PER_POD).saturating_sub(1)
}

/// Makes the pod's user namespace with `maps`, and its network, IPC and UTS
/// namespaces inside it, pinned in the pod dir; sets the hostname and
/// brings loopback up as root of the new namespace.
pub fn pin_namespaces(
    dir: &PodDir,
    maps: &(String, String),
    hostname: &str,
) -> Result<(), UsernsError> {
    let mut child = Command::new("unshare")
        .args([
            "--user",
            "--net",
            "--ipc",
            "--uts",
            "--",
            "sh",
            "-c",
            "echo ready && read _",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting unshare for the pod's user namespace"))?;
    let pinned = pin_from(&mut child, dir, maps);
    drop(child.stdin.take());
    let _ = child.wait();
    pinned?;
    let mut setup = Command::new("nsenter");
    setup
        .arg(format!("--user={}", dir.ns("user").display()))
        .arg(format!("--net={}", dir.ns("net").display()))
        .arg(format!("--uts={}", dir.ns("uts").display()))
        .args(["--setuid", "0", "--setgid", "0", "--", "sh", "-c"])
        .args(["hostname \"$1\" && ip link set lo up", "sh", hostname]);
    Ok(run_checked(&mut setup, "setting up the pod's namespaces")?)
}

/// Waits until `child` has unshared, writes its id maps and pins its
/// namespaces.
fn pin_from(
    child: &mut std::process::Child,
    dir: &PodDir,
    (uids, gids): &(String, String),
) -> Result<(), UsernsError> {
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| UsernsError::Internal("unshare has no stdout".into()))?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(io("waiting for the pod's user namespace"))?;
    if line.trim() != "ready" {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        return Err(UsernsError::Command(CommandError::Failed {
            what: "creating the pod's user namespace".into(),
            program: "unshare".into(),
            status: "no namespace".into(),
            stderr: stderr.trim().to_owned(),
        }));
    }
    let proc = Path::new("/proc").join(child.id().to_string());
    write_map(&proc.join("uid_map"), uids)?;
    write_map(&proc.join("gid_map"), gids)?;
    for kind in ["user", "net", "ipc", "uts"] {
        let pin = dir.ns(kind);
        std::fs::write(&pin, b"").map_err(io("creating a namespace pin"))?;
        nix::mount::mount(
            Some(&proc.join("ns").join(kind)),
            &pin,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io(format!("pinning the pod's {kind} namespace"))(e.into()))?;
    }
    Ok(())
}

fn write_map(path: &Path, map: &str) -> Result<(), UsernsError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(map.as_bytes()))
        .map_err(io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucri_cri_api::v1::{LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceOption};

    fn config(mode: NamespaceMode, uids: Vec<IdMapping>) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        userns_options: Some(UserNamespace {
                            mode: mode as i32,
                            gids: uids.clone(),
                            uids,
                        }),
                        pid: NamespaceMode::Container as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn map(container_id: u32, host_id: u32, length: u32) -> IdMapping {
        IdMapping {
            host_id,
            container_id,
            length,
        }
    }

    #[test]
    fn pod_user_namespaces_are_checked_against_the_daemons_range() {
        let ok = config(NamespaceMode::Pod, vec![map(0, 1000, 100_000)]);
        let maps = requested_maps(&ok, 200_000)
            .expect("valid")
            .expect("own userns");
        assert_eq!(maps.0, "0 1000 100000\n");
        assert!(
            requested_maps(&ok, 65_537).is_err(),
            "outside the daemon's ids"
        );
        let node = config(NamespaceMode::Node, vec![]);
        assert_eq!(requested_maps(&node, 200_000).expect("node"), None);
        assert_eq!(
            requested_maps(&PodSandboxConfig::default(), 0).expect("none"),
            None
        );
        for bad in [
            config(NamespaceMode::Container, vec![]),
            config(NamespaceMode::Target, vec![]),
            config(NamespaceMode::Pod, vec![map(0, 1000, 10), map(0, 2000, 10)]),
            config(NamespaceMode::Pod, vec![map(1, 1000, 100_000)]),
            config(NamespaceMode::Pod, vec![]),
            config(NamespaceMode::Pod, vec![map(0, 0, 10)]),
            {
                let mut shared = ok.clone();
                let options = shared
                    .linux
                    .as_mut()
                    .and_then(|l| l.security_context.as_mut());
                let options = options
                    .and_then(|s| s.namespace_options.as_mut())
                    .expect("options");
                options.pid = NamespaceMode::Pod as i32;
                shared
            },
        ] {
            assert!(requested_maps(&bad, 200_000).is_err(), "{bad:?}");
        }
    }
}
