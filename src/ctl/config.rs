//! Reading crictl-style pod and container config files (JSON, snake_case
//! field names as crictl's examples use them). The CRI types' serde derives
//! require every field, so the file is merged over the defaults first,
//! including defaults for the nested messages such files use.

use std::collections::HashMap;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use ucri_cri_api::v1::*;

fn default_of<T: Default + Serialize>() -> Value {
    serde_json::to_value(T::default()).unwrap_or(Value::Null)
}

/// Defaults of the nested messages, by JSON path (`[]` = array element).
fn nested_defaults() -> HashMap<&'static str, Value> {
    HashMap::from([
        ("metadata", Value::Null),
        ("dns_config", default_of::<DnsConfig>()),
        ("port_mappings[]", default_of::<PortMapping>()),
        ("linux", Value::Null),
        ("linux.security_context", Value::Null),
        (
            "linux.security_context.namespace_options",
            default_of::<NamespaceOption>(),
        ),
        (
            "linux.security_context.run_as_user",
            default_of::<Int64Value>(),
        ),
        (
            "linux.security_context.run_as_group",
            default_of::<Int64Value>(),
        ),
        (
            "linux.security_context.capabilities",
            default_of::<Capability>(),
        ),
        (
            "linux.security_context.seccomp",
            default_of::<SecurityProfile>(),
        ),
        ("linux.resources", default_of::<LinuxContainerResources>()),
        ("image", default_of::<ImageSpec>()),
        ("envs[]", default_of::<KeyValue>()),
        ("mounts[]", default_of::<Mount>()),
        ("devices[]", default_of::<Device>()),
    ])
}

/// Parses a pod sandbox config file.
pub fn pod_config(text: &str) -> anyhow::Result<PodSandboxConfig> {
    let mut defaults = nested_defaults();
    defaults.insert("metadata", default_of::<PodSandboxMetadata>());
    defaults.insert("linux", default_of::<LinuxPodSandboxConfig>());
    defaults.insert(
        "linux.security_context",
        default_of::<LinuxSandboxSecurityContext>(),
    );
    parse(text, &defaults)
}

/// Parses a container config file.
pub fn container_config(text: &str) -> anyhow::Result<ContainerConfig> {
    let mut defaults = nested_defaults();
    defaults.insert("metadata", default_of::<ContainerMetadata>());
    defaults.insert("linux", default_of::<LinuxContainerConfig>());
    defaults.insert(
        "linux.security_context",
        default_of::<LinuxContainerSecurityContext>(),
    );
    parse(text, &defaults)
}

fn parse<T: Default + Serialize + DeserializeOwned>(
    text: &str,
    nested: &HashMap<&str, Value>,
) -> anyhow::Result<T> {
    // YAML is a superset of JSON: crictl accepts both.
    let given: Value =
        yaml_serde::from_str(text).map_err(|e| anyhow::anyhow!("not valid JSON or YAML: {e}"))?;
    let merged = merge(default_of::<T>(), given, "", nested);
    serde_json::from_value(merged).map_err(|e| anyhow::anyhow!("{e}"))
}

/// `given` over `base`; objects merge key by key, with the nested default of
/// the key's path when `base` has none.
fn merge(base: Value, given: Value, path: &str, nested: &HashMap<&str, Value>) -> Value {
    match (base, given) {
        (Value::Object(mut base), Value::Object(given)) => {
            for (key, value) in given {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let base_value = match base.remove(&key) {
                    Some(Value::Null) | None => {
                        nested.get(child.as_str()).cloned().unwrap_or(Value::Null)
                    }
                    Some(v) => v,
                };
                base.insert(key, merge(base_value, value, &child, nested));
            }
            Value::Object(base)
        }
        (_, Value::Array(items)) => {
            let element = nested
                .get(format!("{path}[]").as_str())
                .cloned()
                .unwrap_or(Value::Null);
            Value::Array(
                items
                    .into_iter()
                    .map(|i| merge(element.clone(), i, path, nested))
                    .collect(),
            )
        }
        (Value::Null, given) => given,
        (_, given) => given,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_config_files_parse_too() {
        let pod = pod_config(
            "metadata:\n  name: web\n  namespace: default\n  uid: u1\nport_mappings:\n  - container_port: 80\n    host_port: 8080\n",
        )
        .expect("yaml pod config");
        let metadata = pod.metadata.expect("metadata");
        assert_eq!((metadata.name.as_str(), metadata.attempt), ("web", 0));
        assert_eq!(pod.port_mappings[0].host_port, 8080);
        assert!(pod_config("metadata: [").is_err());
    }

    #[test]
    fn crictl_example_files_parse() {
        let pod = pod_config(
            r#"{"metadata": {"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "hdishd83"},
                "log_directory": "/tmp", "linux": {"security_context": {"namespace_options": {"network": 2}}}}"#,
        )
        .expect("pod");
        assert_eq!(pod.metadata.expect("metadata").name, "nginx-sandbox");
        let ns = pod
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .expect("ns");
        assert_eq!(ns.network, 2);
        let c = container_config(
            r#"{"metadata": {"name": "busybox"}, "image": {"image": "busybox"}, "command": ["top"],
                "envs": [{"key": "A", "value": "1"}], "mounts": [{"container_path": "/x", "host_path": "/tmp"}],
                "log_path": "busybox.0.log", "linux": {}}"#,
        )
        .expect("container");
        assert_eq!(c.image.expect("image").image, "busybox");
        assert_eq!(c.envs[0].key, "A");
        assert_eq!(c.mounts[0].container_path, "/x");
        assert!(container_config("{not json").is_err());
    }
}
