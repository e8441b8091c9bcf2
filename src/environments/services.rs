//! One service of an environment: the directories under `services/`
//! and each one's `service-manifest.yml`, rendered as a template over the
//! service's attributes, read strictly and checked.

use super::includes::with_includes;
use super::{
    CONFIG_FILE, DEFAULT_STOP_TIMEOUT, EXPOSED_NODES, EnvConfig, FLEET_KEYS, MountPoint, Node,
    SERVICE_MANIFEST, Service, TIMER_TEMPLATE, TemplateFile, UNIT_TEMPLATE, VOLUMES_ROOT,
    check_name, line_of, nth_line_with,
};
use crate::attributes::MergedAttributes;
use crate::error::InputError;
use crate::names::ImageName;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManifest {
    #[serde(default = "one")]
    concurrent_updater: u32,
    containers: Vec<String>,
    nodes: Vec<RawNode>,
    #[serde(default)]
    mount_points: Vec<MountPoint>,
    #[serde(default = "default_stop_timeout")]
    stop_timeout: u32,
    /// ggn's switch: the containers also get every node of the service, as
    /// the attribute `service_nodes`.
    #[serde(default)]
    expose_nodes_in_unit_env: bool,
}

fn one() -> u32 {
    1
}

fn default_stop_timeout() -> u32 {
    DEFAULT_STOP_TIMEOUT
}

/// A node: `hostname` is required, `fleet` typed, any other key is an
/// attribute of the node.
#[derive(Deserialize)]
struct RawNode {
    hostname: String,
    fleet: Option<Vec<String>>,
    #[serde(flatten)]
    properties: Map<String, Value>,
}

/// Service names under `services/`, all or the selected ones, sorted.
pub(super) fn select_services(env_dir: &Path, only: &[String]) -> Result<Vec<String>, InputError> {
    let services_dir = env_dir.join("services");
    let mut all = vec![];
    if services_dir.is_dir() {
        let entries = std::fs::read_dir(&services_dir)
            .map_err(|e| InputError::new(&services_dir, format!("cannot list: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| InputError::new(&services_dir, format!("cannot list: {e}")))?;
            if entry.path().is_dir() {
                all.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    all.sort();
    // As ggn did, a directory without a manifest is not a service (a
    // service being written, or one put aside): skipped, with a warning.
    let (all, skipped): (Vec<String>, Vec<String>) = all
        .into_iter()
        .partition(|name| services_dir.join(name).join(SERVICE_MANIFEST).is_file());
    for name in &skipped {
        if only.is_empty() {
            tracing::warn!(
                "{}: skipped, it has no {SERVICE_MANIFEST}",
                services_dir.join(name).display()
            );
        } else if only.contains(name) {
            return Err(InputError::new(
                &services_dir.join(name),
                format!("service `{name}` has no {SERVICE_MANIFEST}"),
            ));
        }
    }
    if only.is_empty() {
        return Ok(all);
    }
    let known: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut selected = vec![];
    for name in only {
        if !known.contains(&name.as_str()) {
            let hint = crate::yaml::closest(name, &known)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            return Err(InputError::new(
                &services_dir,
                format!("no service `{name}`{hint}"),
            ));
        }
        if !selected.contains(name) {
            selected.push(name.clone());
        }
    }
    selected.sort();
    Ok(selected)
}

/// What loading one service needs from its environment.
pub(super) struct ServiceContext<'a> {
    pub(super) env_dir: &'a Path,
    pub(super) config: &'a EnvConfig,
    pub(super) attributes: &'a MergedAttributes,
    /// `herd gen --attributes`, for rendering service manifests.
    pub(super) extra: Option<&'a Value>,
}

impl ServiceContext<'_> {
    pub(super) fn load(&self, name: &str) -> Result<Service, InputError> {
        let dir = self.env_dir.join("services").join(name);
        check_name(name)
            .map_err(|e| InputError::new(&dir, format!("service directory name: {e}")))?;
        let manifest_path = dir.join(SERVICE_MANIFEST);
        // The manifest is a template over the service's attributes (ggn
        // pinned versions this way), so those are read first.
        let mut attributes = self.attributes.clone();
        attributes.apply_files(&with_includes(
            crate::attributes::read_dir(&dir.join("attributes"))?,
            self.env_dir,
        )?);
        let source = std::fs::read_to_string(&manifest_path)
            .map_err(|e| InputError::new(&manifest_path, format!("cannot read: {e}")))?;
        let text = self.render_manifest(&manifest_path, source, &attributes)?;
        let raw: RawManifest = crate::yaml::parse(&manifest_path, &text)?;
        let at = |needle: &str, message: String| InputError {
            line: line_of(&text, needle),
            ..InputError::new(&manifest_path, message)
        };
        if raw.concurrent_updater == 0 {
            return Err(at(
                "concurrentUpdater",
                "concurrentUpdater must be at least 1".into(),
            ));
        }
        if raw.containers.is_empty() {
            return Err(at(
                "containers",
                "`containers` needs at least one image or pod name".into(),
            ));
        }
        let containers = raw
            .containers
            .iter()
            .map(|c| self.image_name(c).map_err(|e| at(c, e)))
            .collect::<Result<Vec<_>, _>>()?;
        if raw.nodes.is_empty() {
            return Err(at(
                "nodes",
                "`nodes` needs at least one node with a `hostname`".into(),
            ));
        }
        let mut nodes: Vec<Node> = vec![];
        for raw_node in raw.nodes {
            let hostname = raw_node.hostname;
            check_name(&hostname)
                .map_err(|e| at(&hostname, format!("hostname {hostname:?}: {e}")))?;
            if nodes.iter().any(|n| n.hostname == hostname) {
                let line = nth_line_with(&text, &["hostname", &hostname], 2);
                return Err(InputError {
                    line,
                    ..InputError::new(
                        &manifest_path,
                        format!("hostname `{hostname}` is used by two nodes"),
                    )
                });
            }
            for line in raw_node.fleet.iter().flatten() {
                // A line holding a newline is found by its first part.
                let first = line.lines().next().unwrap_or(line);
                check_fleet_line(line).map_err(|e| at(first, e))?;
            }
            let mut attributes = raw_node.properties;
            attributes.insert("hostname".into(), Value::from(hostname.clone()));
            if let Some(fleet) = &raw_node.fleet {
                attributes.insert("fleet".into(), Value::from(fleet.clone()));
            }
            nodes.push(Node {
                hostname,
                fleet: raw_node.fleet.unwrap_or_default(),
                attributes,
            });
        }
        let mut mount_points = raw.mount_points;
        let mut seen = HashSet::new();
        for mount in &mut mount_points {
            check_name(&mount.name).map_err(|e| {
                at(
                    &mount.name,
                    format!("mount point name {:?}: {e}", mount.name),
                )
            })?;
            if !seen.insert(mount.name.clone()) {
                return Err(at(
                    &mount.name,
                    format!("mount point `{}` is listed twice", mount.name),
                ));
            }
            let from = mount
                .from
                .get_or_insert_with(|| {
                    format!(
                        "{VOLUMES_ROOT}/{}/{name}/{}",
                        self.config.env_name, mount.name
                    )
                })
                .clone();
            check_mount_path(&mount.path).map_err(|e| {
                at(
                    &mount.path,
                    format!("mount point `{}` path: {e}", mount.name),
                )
            })?;
            check_mount_path(&from)
                .map_err(|e| at(&from, format!("mount point `{}` from: {e}", mount.name)))?;
        }
        if raw.expose_nodes_in_unit_env {
            attributes.apply(
                &serde_json::json!({ EXPOSED_NODES: nodes.iter().map(|n| &n.attributes).collect::<Vec<_>>() }),
                &format!("{} (exposeNodesInUnitEnv)", manifest_path.display()),
            );
        }
        let has_secrets = crate::attributes::secrets::has_secrets(attributes.value());
        let template = |file: &str| -> Result<Option<TemplateFile>, InputError> {
            let path = dir.join(file);
            if !path.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| InputError::new(&path, format!("cannot read: {e}")))?;
            Ok(Some(TemplateFile {
                name: format!("services/{name}/{file}"),
                path,
                text,
            }))
        };
        Ok(Service {
            name: name.to_string(),
            unit_template: template(UNIT_TEMPLATE)?,
            timer_template: template(TIMER_TEMPLATE)?,
            dir,
            manifest_path,
            concurrent_updater: raw.concurrent_updater,
            containers,
            nodes,
            mount_points,
            stop_timeout: raw.stop_timeout,
            attributes,
            has_secrets,
        })
    }

    /// The manifest's text with its template syntax rendered over the
    /// service's attributes and `--attributes` on top. A text without any
    /// is taken as it is (and costs nothing).
    fn render_manifest(
        &self,
        path: &Path,
        source: String,
        attributes: &MergedAttributes,
    ) -> Result<String, InputError> {
        if !crate::templates::has_template_syntax(&source) {
            return Ok(source);
        }
        let merged;
        let value = match self.extra {
            Some(extra) => {
                let mut value = attributes.value().clone();
                crate::attributes::merge_value(&mut value, extra);
                merged = value;
                &merged
            }
            None => attributes.value(),
        };
        crate::templates::render_str(&path.display().to_string(), &source, value).map_err(|e| {
            let missing = matches!(e, crate::templates::RenderError::Missing { .. });
            let mut error = e.into_input_error(path);
            if missing {
                error.message.push_str(
                    " (the service manifest is rendered with the environment's and the service's attributes, and `herd gen --attributes`)",
                );
            }
            error
        })
    }

    /// Parses a container name, giving it the registry domain when it has
    /// none.
    fn image_name(&self, text: &str) -> Result<ImageName, String> {
        let name: ImageName = text.parse()?;
        match (name.domain(), &self.config.registry.domain) {
            (Some(_), _) => Ok(name),
            (None, Some(domain)) => name.with_domain(domain),
            (None, None) => Err(format!(
                "container {text:?} has no registry domain; write it as aci.example.com/{text} or set registry.domain in {CONFIG_FILE}"
            )),
        }
    }
}

/// Mount paths go unquoted into podman's `--volume from:path` and a
/// systemd command line, so they are kept to characters neither treats
/// specially.
fn check_mount_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must be absolute"));
    }
    if !path.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-' | '+' | '@' | ',' | '=')
    }) {
        return Err(format!(
            "{path:?} may only hold letters, digits and / _ . - + @ , ="
        ));
    }
    Ok(())
}

/// `Key=Value` with one of fleet's keys.
fn check_fleet_line(line: &str) -> Result<(), String> {
    let expected = FLEET_KEYS.join(", ");
    // A newline would end the line in the unit and start another one
    // (`[Service]`, `ExecStartPre=`...).
    if line.chars().any(char::is_control) {
        return Err(format!(
            "fleet line {line:?} holds a newline or another control character; a unit line cannot"
        ));
    }
    let Some((key, value)) = line.split_once('=') else {
        return Err(format!(
            "fleet line {line:?}: expected `Key=Value` with a key among {expected}"
        ));
    };
    let key = key.trim();
    if !FLEET_KEYS.contains(&key) {
        let hint = crate::yaml::closest(key, &FLEET_KEYS)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        return Err(format!(
            "fleet line {line:?}: unknown key `{key}`{hint}; fleet knows {expected}"
        ));
    }
    if value.trim().is_empty() {
        return Err(format!("fleet line {line:?}: `{key}` needs a value"));
    }
    if key == "MachineMetadata" && !value.contains('=') {
        return Err(format!(
            "fleet line {line:?}: MachineMetadata takes `name=value` pairs"
        ));
    }
    Ok(())
}
