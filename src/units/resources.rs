//! An image's isolators and ports (FORMATS.md section 2) as the units use
//! them: `resource/memory` and `resource/cpu` become podman's `--memory`
//! and `--cpus` and a Kubernetes container's `resources`, the exposed
//! ports its `containerPort`s. Read from the image's config in the store
//! (the `io.herd.app.isolators` label and `ExposedPorts`); without a
//! store, an image has none.
//!
//! The values are appc's (which dgr took): Kubernetes quantities, as
//! `{limit: 4G, request: 1G}` (memory: `512Mi`, `4G`, bytes; cpu: `500m`,
//! `2`, `0.5`). An unknown isolator is a warning naming it, and ignored.

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

/// What a unit limits one container to, and the ports it exposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Memory limit in bytes (`--memory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_request: Option<u64>,
    /// CPU limit in thousandths of a CPU (`--cpus` is this / 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<u64>,
    /// `--cpus` as podman reads it, `0.5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<String>,
    /// Exposed ports: (number, `tcp`/`udp`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<(u16, String)>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// The image's resources, from its config in the store; `warn` is told
    /// of each isolator herd does not know.
    pub fn of_image(
        store: &crate::store::Store,
        descriptor: &oci_spec::image::Descriptor,
        image: &str,
        warn: &mut dyn FnMut(String),
    ) -> Result<Resources> {
        let manifest = store.read_manifest(descriptor)?;
        let bytes = store.read_blob(&crate::store::from_oci_digest(manifest.config().digest()))?;
        let config: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let isolators: Value = config["config"]["Labels"][crate::build::labels::ISOLATORS]
            .as_str()
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let mut resources = Resources::default();
        for isolator in isolators.as_array().into_iter().flatten() {
            let name = isolator["name"].as_str().unwrap_or("");
            let value = &isolator["value"];
            let read = |key: &str, parse: fn(&Value) -> Result<u64>| -> Result<Option<u64>> {
                match &value[key] {
                    Value::Null => Ok(None),
                    given => parse(given)
                        .map(Some)
                        .map_err(|e| anyhow::anyhow!("{image}: isolator {name} {key}: {e}")),
                }
            };
            match name {
                "resource/memory" => {
                    resources.memory_limit = read("limit", memory_bytes)?;
                    resources.memory_request = read("request", memory_bytes)?;
                }
                "resource/cpu" => {
                    resources.cpu_limit = read("limit", millicpus)?;
                    resources.cpu_request = read("request", millicpus)?;
                }
                other => warn(format!(
                    "{image}: isolator {other:?} is not used by herd's units (known: resource/memory, resource/cpu)"
                )),
            }
        }
        resources.cpus = resources
            .cpu_limit
            .map(|m| format!("{}.{:03}", m / 1000, m % 1000));
        if let Some(ports) = config["config"]["ExposedPorts"].as_object() {
            for key in ports.keys() {
                let (number, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
                if let Ok(number) = number.parse::<u16>() {
                    resources
                        .ports
                        .push((number, protocol.to_ascii_lowercase()));
                }
            }
        }
        Ok(resources)
    }

    /// The container's `resources` and `ports` keys of a Kubernetes Pod.
    pub fn kubernetes(&self, container: &mut Value) {
        let mut limits = serde_json::Map::new();
        let mut requests = serde_json::Map::new();
        if let Some(bytes) = self.memory_limit {
            limits.insert("memory".into(), json!(bytes.to_string()));
        }
        if let Some(bytes) = self.memory_request {
            requests.insert("memory".into(), json!(bytes.to_string()));
        }
        if let Some(milli) = self.cpu_limit {
            limits.insert("cpu".into(), json!(format!("{milli}m")));
        }
        if let Some(milli) = self.cpu_request {
            requests.insert("cpu".into(), json!(format!("{milli}m")));
        }
        if !limits.is_empty() || !requests.is_empty() {
            let mut resources = serde_json::Map::new();
            if !limits.is_empty() {
                resources.insert("limits".into(), Value::Object(limits));
            }
            if !requests.is_empty() {
                resources.insert("requests".into(), Value::Object(requests));
            }
            container["resources"] = Value::Object(resources);
        }
        if !self.ports.is_empty() {
            container["ports"] = self
                .ports
                .iter()
                .map(|(port, protocol)| {
                    json!({"containerPort": port, "protocol": protocol.to_ascii_uppercase()})
                })
                .collect();
        }
    }
}

/// A Kubernetes memory quantity in bytes: `4G`, `512Mi`, `1.5Gi`, `1e9`
/// or a number of bytes.
fn memory_bytes(value: &Value) -> Result<u64> {
    let text = quantity_text(value)?;
    let suffixes: [(&str, f64); 12] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("K", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    let (number, factor) = suffixes
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text.as_str(), 1.0));
    let bytes = number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n > 0.0)
        .map(|n| n * factor)
        .filter(|b| *b >= 1.0 && *b < 9.0e18);
    match bytes {
        Some(bytes) => Ok(bytes.round() as u64),
        None => bail!(
            "{text:?} is not a memory size (expected a Kubernetes quantity: 512Mi, 4G, or bytes)"
        ),
    }
}

/// A Kubernetes CPU quantity in thousandths: `500m`, `2`, `0.5`.
fn millicpus(value: &Value) -> Result<u64> {
    let text = quantity_text(value)?;
    let milli = match text.strip_suffix('m') {
        Some(number) => number.trim().parse::<u64>().ok(),
        None => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0 && *n < 1.0e6)
            .map(|n| (n * 1000.0).round() as u64),
    };
    match milli.filter(|m| *m > 0) {
        Some(milli) => Ok(milli),
        None => bail!("{text:?} is not a CPU amount (expected 500m, 2 or 0.5)"),
    }
}

fn quantity_text(value: &Value) -> Result<String> {
    match value {
        Value::String(text) => Ok(text.trim().to_string()),
        Value::Number(number) => Ok(number.to_string()),
        other => bail!("{other} is not a quantity"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(memory_bytes(&json!("4G")).unwrap(), 4_000_000_000);
        assert_eq!(memory_bytes(&json!("512Mi")).unwrap(), 512 << 20);
        assert_eq!(memory_bytes(&json!(1048576)).unwrap(), 1 << 20);
        assert!(memory_bytes(&json!("lots")).is_err());
        assert!(memory_bytes(&json!("-1G")).is_err());
        assert_eq!(millicpus(&json!("500m")).unwrap(), 500);
        assert_eq!(millicpus(&json!(2)).unwrap(), 2000);
        assert_eq!(millicpus(&json!("0.25")).unwrap(), 250);
        assert!(millicpus(&json!("0")).is_err());
    }
}
