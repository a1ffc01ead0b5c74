//! The socket bypass of pods (see `ucri_net::bypass`): which pods get it
//! and what it changes in a container's spec. The lifecycle of a pod's
//! agent is in `pod.rs`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSyscall, Spec};
use ucri_cri_api::v1::security_profile::ProfileType;
use ucri_cri_api::v1::{ContainerConfig, PodSandboxConfig};
use ucri_net::bypass;

use super::error::LifecycleError;

/// The pod annotation that turns the bypass off for one pod (`"false"`).
pub const POD_ANNOTATION: &str = "ucri.io/socket-bypass";

/// Where a pod's containers send their seccomp listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// The agent's socket.
    pub socket: PathBuf,
    /// The pod asked for the bypass explicitly (annotation `"true"`), so
    /// its Unconfined containers get it too, with a filter of their own.
    pub unconfined_too: bool,
}

/// The system call the bypass intercepts.
const CONNECT: &str = "connect";

/// Whether this daemon runs the bypass, decided once at start: `Err` says
/// why not (pods then use the uplink's path, and `Status` says so).
pub fn support(config: &crate::config::Config) -> Result<(), String> {
    let net = &config.network;
    if !net.socket_bypass {
        return Err("turned off (network.socket_bypass = false)".into());
    }
    if net.uplink == crate::config::Uplink::None {
        return Err("there is no uplink (network.uplink = \"none\")".into());
    }
    bypass::kernel_support()
}

/// Whether the container gets a seccomp filter the bypass's rule can join
/// (RuntimeDefault or Localhost, not privileged), as the spec builds it.
pub(super) fn has_seccomp_profile(container: &ContainerConfig) -> bool {
    let Some(sc) = container
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return false;
    };
    !sc.privileged
        && sc.seccomp.as_ref().is_some_and(|p| {
            matches!(
                ProfileType::try_from(p.profile_type),
                Ok(ProfileType::RuntimeDefault | ProfileType::Localhost)
            )
        })
}

/// What the pod's [`POD_ANNOTATION`] says: absent or `"true"` allows the
/// bypass, `"false"` turns it off; anything else is refused.
pub fn annotation_allows(config: &PodSandboxConfig) -> Result<bool, LifecycleError> {
    match config.annotations.get(POD_ANNOTATION).map(String::as_str) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(LifecycleError::InvalidArgument(format!(
            "annotation {POD_ANNOTATION} must be \"true\" or \"false\", not {other:?}"
        ))),
    }
}

/// The agent's socket of pod `id`: short, as Unix socket paths must be.
pub fn agent_socket(runtime_root: &Path, id: &str) -> PathBuf {
    runtime_root
        .join("bypass")
        .join(format!("{}.sock", &id[..id.len().min(16)]))
}

/// Sends the container's `connect` calls to the pod's agent at `receiver`:
/// crun's receiver annotation and a `SCMP_ACT_NOTIFY` rule for `connect`
/// in the container's seccomp profile. A profile that denies `connect` or
/// filters it on its arguments is left alone: that container does without.
/// So is an Unconfined container (no filter at all, as the CRI validation
/// suite and Kubernetes' e2e check) unless the pod asked for the bypass.
pub fn apply(spec: &mut Spec, receiver: &Receiver) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    if linux.seccomp().is_none() && !receiver.unconfined_too {
        return;
    }
    let Some(seccomp) = with_connect_notified(linux.seccomp().clone()) else {
        tracing::info!("the seccomp profile decides connect itself: no socket bypass");
        return;
    };
    linux.set_seccomp(Some(seccomp));
    let mut annotations = spec.annotations().clone().unwrap_or_default();
    annotations.insert(
        bypass::RECEIVER_ANNOTATION.to_owned(),
        receiver.socket.display().to_string(),
    );
    spec.set_annotations(Some(annotations));
}

/// The profile with `connect` sent to the listener, or `None` when the
/// profile itself decides `connect` (denies it, filters its arguments,
/// already has a listener).
pub fn with_connect_notified(profile: Option<LinuxSeccomp>) -> Option<LinuxSeccomp> {
    let mut profile = match profile {
        Some(p) => p,
        None => {
            let mut allow_all = LinuxSeccomp::default();
            allow_all.set_default_action(LinuxSeccompAction::ScmpActAllow);
            allow_all
        }
    };
    if profile.listener_path().is_some() {
        return None;
    }
    let mut rules = profile.syscalls().clone().unwrap_or_default();
    let mut allowed = matches!(
        profile.default_action(),
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
    );
    for rule in rules
        .iter()
        .filter(|r| r.names().iter().any(|n| n == CONNECT))
    {
        let unconditional = rule.args().as_ref().is_none_or(|a| a.is_empty());
        let allows = matches!(
            rule.action(),
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        );
        if !unconditional || !allows {
            return None;
        }
        allowed = true;
    }
    if !allowed {
        return None;
    }
    for rule in rules.iter_mut() {
        let names: Vec<String> = rule
            .names()
            .iter()
            .filter(|n| *n != CONNECT)
            .cloned()
            .collect();
        rule.set_names(names);
    }
    rules.retain(|r| !r.names().is_empty());
    let mut notify = LinuxSyscall::default();
    notify
        .set_names(vec![CONNECT.to_owned()])
        .set_action(LinuxSeccompAction::ScmpActNotify);
    rules.push(notify);
    profile.set_syscalls(Some(rules));
    Some(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(names: &[&str], action: LinuxSeccompAction) -> LinuxSyscall {
        let mut r = LinuxSyscall::default();
        r.set_names(names.iter().map(|s| s.to_string()).collect())
            .set_action(action);
        r
    }

    fn notified(profile: &LinuxSeccomp) -> Vec<String> {
        profile
            .syscalls()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
            .flat_map(|r| r.names().clone())
            .collect()
    }

    #[test]
    fn an_unconfined_container_gets_a_profile_that_only_notifies_connect() {
        let p = with_connect_notified(None).expect("a profile");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(notified(&p), ["connect"]);
        assert_eq!(p.syscalls().as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn the_runtime_default_profile_keeps_its_denials_and_notifies_connect() {
        let p =
            with_connect_notified(Some(super::super::spec::default_seccomp())).expect("profile");
        assert_eq!(notified(&p), ["connect"]);
        let denied: Vec<String> = p
            .syscalls()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.action() == LinuxSeccompAction::ScmpActErrno)
            .flat_map(|r| r.names().clone())
            .collect();
        assert!(denied.iter().any(|n| n == "kexec_load"), "{denied:?}");
    }

    #[test]
    fn an_allow_list_that_allows_connect_has_it_moved_to_the_notify_rule() {
        let mut p = LinuxSeccomp::default();
        p.set_default_action(LinuxSeccompAction::ScmpActErrno)
            .set_syscalls(Some(vec![
                rule(
                    &["read", "connect", "write"],
                    LinuxSeccompAction::ScmpActAllow,
                ),
                rule(&["connect"], LinuxSeccompAction::ScmpActAllow),
            ]));
        let p = with_connect_notified(Some(p)).expect("profile");
        let rules = p.syscalls().clone().unwrap_or_default();
        assert_eq!(rules.len(), 2, "the connect-only rule is gone: {rules:?}");
        assert_eq!(rules[0].names(), &["read".to_string(), "write".to_string()]);
        assert_eq!(notified(&p), ["connect"]);
    }

    #[test]
    fn profiles_that_decide_connect_themselves_are_left_alone() {
        let mut denies = LinuxSeccomp::default();
        denies
            .set_default_action(LinuxSeccompAction::ScmpActAllow)
            .set_syscalls(Some(vec![rule(
                &["connect"],
                LinuxSeccompAction::ScmpActErrno,
            )]));
        assert!(
            with_connect_notified(Some(denies)).is_none(),
            "connect denied"
        );
        let mut not_listed = LinuxSeccomp::default();
        not_listed
            .set_default_action(LinuxSeccompAction::ScmpActErrno)
            .set_syscalls(Some(vec![rule(
                &["read"],
                LinuxSeccompAction::ScmpActAllow,
            )]));
        assert!(
            with_connect_notified(Some(not_listed)).is_none(),
            "connect not allowed"
        );
        let mut by_args = LinuxSeccomp::default();
        let mut conditional = rule(&["connect"], LinuxSeccompAction::ScmpActAllow);
        let arg = oci_spec::runtime::LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(3u64)
            .op(oci_spec::runtime::LinuxSeccompOperator::ScmpCmpEq)
            .build()
            .expect("arg");
        conditional.set_args(Some(vec![arg]));
        by_args
            .set_default_action(LinuxSeccompAction::ScmpActAllow)
            .set_syscalls(Some(vec![conditional]));
        assert!(
            with_connect_notified(Some(by_args)).is_none(),
            "filtered on arguments"
        );
    }

    #[test]
    fn agent_sockets_fit_a_unix_socket_path() {
        let root = Path::new("/run/user/1000/ucri");
        let id = "a".repeat(64);
        let socket = agent_socket(root, &id);
        assert_eq!(
            socket,
            Path::new("/run/user/1000/ucri/bypass/aaaaaaaaaaaaaaaa.sock")
        );
    }
}
