//! Container resources through delegated cgroups: where each container's
//! cgroup goes, its limits at create time, UpdateContainerResources, OOM
//! kills and the pod cgroup's removal. Without delegated cgroups, limits
//! are dropped with a warning and nothing fails.

use ucri_cri_api::v1::{ContainerConfig, LinuxContainerResources};

use super::spec::CgroupPlacement;
use super::state::ContainerState;
use super::{Lifecycle, LifecycleError};
use crate::cgroups::{self, CgroupSupport};

impl Lifecycle {
    /// What the user may control.
    pub fn cgroups(&self) -> &CgroupSupport {
        &self.cgroups
    }

    /// The cgroup and limits of a new container, when cgroups are delegated.
    pub(super) fn cgroup_placement(
        &self,
        pod_id: &str,
        container_id: &str,
        config: &ContainerConfig,
    ) -> Option<CgroupPlacement> {
        let path = self.cgroups.container_path(pod_id, container_id)?;
        if let Err(e) = self.cgroups.prepare_container(&path) {
            tracing::warn!(%e, %path, "preparing the container's cgroup parent");
        }
        let requested = config.linux.as_ref().and_then(|l| l.resources.as_ref());
        Some(CgroupPlacement {
            path,
            resources: cgroups::oci_resources(
                requested,
                self.config.runtime.pids_limit,
                self.cgroups.controllers(),
            ),
        })
    }

    /// Whether the OOM killer ended the container.
    pub(super) fn was_oom_killed(&self, c: &ContainerState) -> bool {
        self.cgroups
            .container_path(&c.pod_id, &c.id)
            .is_some_and(|path| self.cgroups.oom_killed(&path))
    }

    /// Usage from the container's cgroup, when it has one.
    pub(super) fn cgroup_usage(&self, c: &ContainerState) -> Option<cgroups::CgroupUsage> {
        let path = self.cgroups.container_path(&c.pod_id, &c.id)?;
        self.cgroups.usage(&path)
    }

    /// Removes the pod's parent cgroup.
    pub(super) fn remove_pod_cgroup(&self, pod_id: &str) {
        self.cgroups.remove_pod(pod_id);
    }

    /// UpdateContainerResources: new limits on a live container (`crun
    /// update`). Without delegated cgroups the request is logged and
    /// dropped; it never fails the container.
    pub fn update_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), LifecycleError> {
        let state = self.container(id)?;
        if !self.cgroups.delegated() {
            tracing::warn!(container = %state.id, cgroups = %self.cgroups.describe(), "UpdateContainerResources: limits are not applied");
            return self.remember_resources(&state.id, resources);
        }
        let json = cgroups::oci_resources(
            resources.as_ref(),
            self.config.runtime.pids_limit,
            self.cgroups.controllers(),
        );
        if state.deferred {
            self.rewrite_spec_resources(&state.id, json)?;
            return self.remember_resources(&state.id, resources);
        }
        let file = self
            .runtime_root
            .join("containers")
            .join(&state.id)
            .join("resources-update.json");
        std::fs::write(&file, json.to_string()).map_err(|source| LifecycleError::Io {
            context: "writing the resources update".into(),
            source,
        })?;
        let arg = format!("--resources={}", file.display());
        self.oci.runtime(
            &state.runtime,
            &["update", &arg, &state.id],
            "updating the container's resources",
        )?;
        let _ = std::fs::remove_file(&file);
        self.remember_resources(&state.id, resources)
    }

    /// New limits for a container the OCI runtime has not created yet: its
    /// bundle's spec gets them, and StartContainer creates it with them.
    fn rewrite_spec_resources(
        &self,
        id: &str,
        resources: serde_json::Value,
    ) -> Result<(), LifecycleError> {
        let path = self.bundle(id).join("config.json");
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| LifecycleError::Io { context, source }
        };
        let bytes = std::fs::read(&path).map_err(io("reading config.json"))?;
        let mut spec: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| LifecycleError::Internal(format!("container {id}: config.json: {e}")))?;
        let linux = spec
            .as_object_mut()
            .map(|o| o.entry("linux").or_insert_with(|| serde_json::json!({})))
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(|| {
                LifecycleError::Internal(format!("container {id}: config.json is not an object"))
            })?;
        linux.insert("resources".into(), resources);
        let json =
            serde_json::to_vec(&spec).map_err(|e| LifecycleError::Internal(e.to_string()))?;
        ucri_rootless::rundir::write_atomic_volatile(&path, &json)
            .map_err(io("writing config.json"))
    }

    /// UpdatePodSandboxResources: the pod's cgroup gets the sum of its
    /// containers' resources and its overhead (kubelet calls it after it
    /// resized the pod). Without delegated cgroups the answer says why.
    pub fn update_pod_resources(
        &self,
        id: &str,
        overhead: Option<LinuxContainerResources>,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), LifecycleError> {
        let pod = self.pod(id)?;
        if !self.cgroups.delegated() {
            return Err(LifecycleError::FailedPrecondition(format!(
                "pod {}: resource limits cannot apply: {}",
                pod.id,
                self.cgroups.describe()
            )));
        }
        let limits = cgroups::PodLimits::sum([overhead.as_ref(), resources.as_ref()]);
        self.cgroups
            .apply_pod_limits(&pod.id, &limits)
            .map_err(|source| LifecycleError::Io {
                context: format!("applying pod {} limits", pod.id),
                source,
            })?;
        tracing::info!(pod = %pod.id, ?limits, "pod resources updated");
        Ok(())
    }

    fn remember_resources(
        &self,
        id: &str,
        resources: Option<LinuxContainerResources>,
    ) -> Result<(), LifecycleError> {
        self.update(id, |c| {
            c.config
                .linux
                .get_or_insert_with(Default::default)
                .resources = resources;
        })
    }
}
