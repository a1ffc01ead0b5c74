//! The Kubernetes Pod manifest `ucri play` accepts: parsed from YAML or
//! JSON, every field checked against what play supports, so that an
//! unsupported field is an error that names it rather than something quietly
//! ignored.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::Value;

/// A Pod manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    /// The pod's metadata.
    pub metadata: Metadata,
    /// The pod's spec.
    pub spec: Spec,
}

/// `metadata`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    /// The pod's name.
    pub name: String,
    /// Its namespace (default `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// `spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// The containers.
    pub containers: Vec<Container>,
    /// The volumes.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// `Always` (the default), `OnFailure` or `Never`.
    #[serde(default)]
    pub restart_policy: Option<String>,
    /// Run in the host's network namespace.
    #[serde(default)]
    pub host_network: bool,
    /// The pod's hostname.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// One container.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default)]
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Ports (a `hostPort` publishes one on the host).
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Volume mounts.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    /// The working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// `env[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvVar {
    /// Name.
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// `ports[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// The port in the container.
    pub container_port: i32,
    /// The port on the host (0: none).
    #[serde(default)]
    pub host_port: i32,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The host address to listen on.
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// `volumeMounts[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where it appears in the container.
    pub mount_path: String,
    /// Mount it read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// `volumes[]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// A scratch directory for the pod's life.
    #[serde(default)]
    pub empty_dir: Option<Value>,
    /// A directory of the host.
    #[serde(default)]
    pub host_path: Option<HostPath>,
}

/// `hostPath`.
#[derive(Debug, Clone, Deserialize)]
pub struct HostPath {
    /// The host path.
    pub path: String,
    /// `""`, `Directory`, `DirectoryOrCreate`, `File`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Fields play understands, by position in the manifest.
fn allowed(path: &str) -> &'static [&'static str] {
    match path {
        "" => &["apiVersion", "kind", "metadata", "spec"],
        "metadata" => &["name", "namespace", "labels", "annotations"],
        "spec" => &[
            "containers",
            "volumes",
            "restartPolicy",
            "hostNetwork",
            "hostname",
        ],
        "spec.containers[]" => &[
            "name",
            "image",
            "command",
            "args",
            "env",
            "ports",
            "volumeMounts",
            "workingDir",
            "imagePullPolicy",
        ],
        "spec.containers[].env[]" => &["name", "value"],
        "spec.containers[].ports[]" => &["name", "containerPort", "hostPort", "protocol", "hostIP"],
        "spec.containers[].volumeMounts[]" => &["name", "mountPath", "readOnly"],
        "spec.volumes[]" => &["name", "emptyDir", "hostPath"],
        "spec.volumes[].emptyDir" => &[],
        "spec.volumes[].hostPath" => &["path", "type"],
        _ => &[],
    }
}

/// Object-valued fields whose contents are checked too (others are leaves).
fn nested(path: &str) -> bool {
    matches!(
        path,
        "metadata"
            | "spec"
            | "spec.containers[]"
            | "spec.containers[].env[]"
            | "spec.containers[].ports[]"
            | "spec.containers[].volumeMounts[]"
            | "spec.volumes[]"
            | "spec.volumes[].emptyDir"
            | "spec.volumes[].hostPath"
    )
}

/// Every field of `value` that play does not support, as a JSON path.
pub fn unsupported_fields(value: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(value, "", "", &mut found);
    found
}

fn walk(value: &Value, schema: &str, shown: &str, found: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        return;
    };
    let keys = allowed(schema);
    for (key, child) in object {
        let child_schema = if schema.is_empty() {
            key.clone()
        } else {
            format!("{schema}.{key}")
        };
        let child_shown = if shown.is_empty() {
            key.clone()
        } else {
            format!("{shown}.{key}")
        };
        if !keys.contains(&key.as_str()) {
            found.push(child_shown);
            continue;
        }
        match child {
            Value::Array(items) if nested(&format!("{child_schema}[]")) => {
                for (i, item) in items.iter().enumerate() {
                    walk(
                        item,
                        &format!("{child_schema}[]"),
                        &format!("{child_shown}[{i}]"),
                        found,
                    );
                }
            }
            Value::Object(_) if nested(&child_schema) => {
                walk(child, &child_schema, &child_shown, found)
            }
            _ => {}
        }
    }
}

/// Parses a manifest (YAML, or JSON which is YAML too) and refuses what
/// play cannot run, naming every unsupported field.
pub fn parse(text: &str) -> anyhow::Result<Pod> {
    let value: Value = yaml_serde::from_str(text).context("not a YAML or JSON document")?;
    match value.get("kind").and_then(Value::as_str) {
        Some("Pod") => {}
        other => bail!("ucri play runs a Pod manifest, not kind {other:?}"),
    }
    let unsupported = unsupported_fields(&value);
    if !unsupported.is_empty() {
        bail!(
            "unsupported fields in the manifest (ucri play does not run them): {}",
            unsupported.join(", ")
        );
    }
    let pod: Pod = serde_json::from_value(value).context("reading the Pod manifest")?;
    if pod.spec.containers.is_empty() {
        bail!("spec.containers is empty");
    }
    match pod.spec.restart_policy.as_deref() {
        None | Some("Always" | "OnFailure" | "Never") => {}
        Some(other) => bail!("spec.restartPolicy {other:?} is not Always, OnFailure or Never"),
    }
    for c in &pod.spec.containers {
        for m in &c.volume_mounts {
            if !pod.spec.volumes.iter().any(|v| v.name == m.name) {
                bail!(
                    "container {}: volume {:?} is not in spec.volumes",
                    c.name,
                    m.name
                );
            }
        }
    }
    for v in &pod.spec.volumes {
        if v.empty_dir.is_some() == v.host_path.is_some() {
            bail!(
                "volume {:?} needs exactly one of emptyDir and hostPath",
                v.name
            );
        }
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  restartPolicy: OnFailure
  volumes:
  - {name: data, emptyDir: {}}
  containers:
  - name: server
    image: busybox
    command: [httpd, -f]
    env: [{name: A, value: "1"}]
    ports: [{containerPort: 8080, hostPort: 18080}]
    volumeMounts: [{name: data, mountPath: /data}]
"#;

    #[test]
    fn a_supported_manifest_parses() {
        let pod = parse(GOOD).expect("parse");
        assert_eq!(pod.metadata.name, "web");
        assert_eq!(pod.spec.containers[0].ports[0].host_port, 18080);
        assert_eq!(pod.spec.restart_policy.as_deref(), Some("OnFailure"));
    }

    #[test]
    fn every_unsupported_field_is_named() {
        let bad = GOOD.replace(
            "  containers:\n",
            "  initContainers: []\n  containers:\n",
        ) + "    livenessProbe: {exec: {command: [true]}}\n    resources: {limits: {memory: 1Gi}}\n";
        let err = parse(&bad).expect_err("unsupported").to_string();
        for field in [
            "spec.initContainers",
            "spec.containers[0].livenessProbe",
            "spec.containers[0].resources",
        ] {
            assert!(err.contains(field), "{field} in {err}");
        }
        let medium = GOOD.replace("emptyDir: {}", "emptyDir: {medium: Memory}");
        assert!(parse(&medium)
            .expect_err("medium")
            .to_string()
            .contains("spec.volumes[0].emptyDir.medium"));
        assert!(parse("kind: Deployment").is_err());
        let missing = GOOD.replace("name: data, emptyDir", "name: other, emptyDir");
        assert!(parse(&missing)
            .expect_err("volume")
            .to_string()
            .contains("data"));
    }
}
