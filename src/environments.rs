//! Environments (FORMATS.md section 8): one directory per environment with
//! its `config.yml`, attributes, unit template fragments and services.
//! Loaded and validated strictly, with includes of `common-attributes/`
//! resolved, and merged env -> service -> node for each unit.

use crate::attributes::{AttributeFile, MergedAttributes};
use crate::error::InputError;
use crate::names::ImageName;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

mod machines;
pub use machines::{Machine, SshDestination, parse_destination};

pub const CONFIG_FILE: &str = "config.yml";
pub const SERVICE_MANIFEST: &str = "service-manifest.yml";
pub const UNIT_TEMPLATE: &str = "unit.tmpl";
pub const TIMER_TEMPLATE: &str = "unit.timer.tmpl";

/// The keys fleet understood in a unit's `[X-Fleet]` section.
pub const FLEET_KEYS: [&str; 5] = [
    "MachineID",
    "MachineOf",
    "MachineMetadata",
    "Conflicts",
    "Global",
];

/// Seconds the app gets to stop on its own when the manifest does not say.
const DEFAULT_STOP_TIMEOUT: u32 = 30;

/// Where a mount point's host directory is when the manifest gives no `from`.
const VOLUMES_ROOT: &str = "/var/lib/herd/volumes";

/// `config.yml` of an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvConfig {
    /// Prefixes every unit name: `<envName>_<service>_<hostname>`.
    pub env_name: String,
    #[serde(default)]
    pub registry: Registry,
    /// What `herd gen` writes when `--target` is not given.
    #[serde(default)]
    pub target: Target,
    /// The hosts `herd deploy` places units on.
    #[serde(default)]
    pub machines: Vec<Machine>,
}

/// How units reach the registry their images come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Registry {
    /// Domain given to container names written without one
    /// (`pod-mysql:1` -> `aci.example.com/pod-mysql:1`).
    pub domain: Option<String>,
    /// `false` lets podman pull over plain HTTP or from a registry whose
    /// certificate it cannot verify (a lab registry).
    #[serde(default = "yes")]
    pub tls_verify: bool,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            domain: None,
            tls_verify: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// What units are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// systemd units (with fleet's `[X-Fleet]` placement) running podman.
    #[default]
    Systemd,
    /// One Kubernetes Pod document per node.
    Kubernetes,
}

/// A template file of the environment: a service's `unit.tmpl` or
/// `unit.timer.tmpl`, or a `templates/*.partial`.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// The name templates use to include it (partials: the path below
    /// `templates/`) or, for unit templates, the path below the
    /// environment directory.
    pub name: String,
    pub path: PathBuf,
    pub text: String,
}

/// A host directory mounted into the service's containers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountPoint {
    /// The image's mount point name (`mysql-data`).
    pub name: String,
    /// Where it is mounted in the containers.
    pub path: String,
    /// The host directory; `/var/lib/herd/volumes/<envName>/<service>/<name>`
    /// when not given.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub read_only: bool,
}

/// One host a service runs on.
#[derive(Debug, Clone)]
pub struct Node {
    pub hostname: String,
    /// `Key=Value` lines for `[X-Fleet]`, keys checked against `FLEET_KEYS`.
    pub fleet: Vec<String>,
    /// The node's whole map as written (hostname and fleet included): the
    /// top attribute layer.
    pub attributes: Map<String, Value>,
}

/// One service of an environment.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub dir: PathBuf,
    pub manifest_path: PathBuf,
    /// How many units a rollout may restart at once.
    pub concurrent_updater: u32,
    /// Image or pod names, with the registry domain filled in.
    pub containers: Vec<ImageName>,
    pub nodes: Vec<Node>,
    pub mount_points: Vec<MountPoint>,
    /// Seconds the app gets to stop before it is killed.
    pub stop_timeout: u32,
    pub unit_template: Option<TemplateFile>,
    pub timer_template: Option<TemplateFile>,
    /// The environment's attributes with the service's merged on top.
    attributes: MergedAttributes,
}

/// A loaded, validated environment.
#[derive(Debug, Clone)]
pub struct Environment {
    pub dir: PathBuf,
    pub config: EnvConfig,
    /// `templates/**/*.partial`, which unit templates may include.
    pub partials: Vec<TemplateFile>,
    /// The services loaded, in name order.
    pub services: Vec<Service>,
}

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

impl Environment {
    /// Loads the environment at `dir` with every service.
    pub fn load(dir: &Path) -> Result<Environment, InputError> {
        Self::load_services(dir, &[])
    }

    /// Loads the environment at `dir` with only the services named in
    /// `only` (every service when it is empty). An unknown name is an error
    /// with the closest existing one.
    pub fn load_services(dir: &Path, only: &[String]) -> Result<Environment, InputError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(InputError::new(
                dir,
                format!("not an environment: {CONFIG_FILE} is missing"),
            ));
        }
        let config: EnvConfig = crate::yaml::read(&config_path)?;
        check_name(&config.env_name).map_err(|e| InputError {
            line: line_of(&read_text(&config_path), "envName"),
            ..InputError::new(&config_path, format!("envName: {e}"))
        })?;
        if let Some(domain) = &config.registry.domain {
            // The same check a name's domain gets, by building one.
            format!("{domain}/x")
                .parse::<ImageName>()
                .map_err(|e| InputError::new(&config_path, format!("registry.domain: {e}")))?;
        }
        machines::check(&config.machines, &config_path, &read_text(&config_path))?;
        let common = common_attributes_dir(dir);
        let mut attributes = MergedAttributes::new();
        attributes.apply_files(&with_includes(
            crate::attributes::read_dir(&dir.join("attributes"))?,
            &common,
        )?);
        let partials = read_partials(&dir.join("templates"))?;
        let names = select_services(dir, only)?;
        let context = ServiceContext {
            env_dir: dir,
            config: &config,
            common: &common,
            attributes: &attributes,
        };
        // Services are independent: read and validate them in parallel, then
        // report the first error in name order so output is deterministic.
        let loaded: Vec<Result<Service, InputError>> =
            names.par_iter().map(|name| context.load(name)).collect();
        let services = loaded.into_iter().collect::<Result<Vec<_>, _>>()?;
        Ok(Environment {
            dir: dir.to_path_buf(),
            config,
            partials,
            services,
        })
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

impl Service {
    /// The attributes a unit of this service on `node` is rendered with:
    /// environment, then service, then the node's own map on top.
    pub fn node_attributes(&self, node: &Node) -> MergedAttributes {
        let mut merged = self.attributes.clone();
        merged.apply(
            &Value::Object(node.attributes.clone()),
            &format!("{} (node {})", self.manifest_path.display(), node.hostname),
        );
        merged
    }

    /// The same values as `node_attributes`, without recording where each
    /// came from: what rendering thousands of units needs.
    pub fn node_value(&self, node: &Node) -> Value {
        let mut value = self.attributes.value().clone();
        crate::attributes::merge_value(&mut value, &Value::Object(node.attributes.clone()));
        value
    }

    pub fn node(&self, hostname: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.hostname == hostname)
    }
}

/// The merged attributes of `service` on `hostname` in the environment at
/// `env_dir`, with the file that set each value (`MergedAttributes::explain`).
/// Only that service is read, so a broken neighbour does not get in the way.
pub fn node_attributes(
    env_dir: &Path,
    service: &str,
    hostname: &str,
) -> Result<MergedAttributes, InputError> {
    let env = Environment::load_services(env_dir, &[service.to_string()])?;
    let service = &env.services[0];
    match service.node(hostname) {
        Some(node) => Ok(service.node_attributes(node)),
        None => {
            let known: Vec<&str> = service.nodes.iter().map(|n| n.hostname.as_str()).collect();
            let hint = crate::yaml::closest(hostname, &known)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            Err(InputError::new(
                &service.manifest_path,
                format!(
                    "service `{}` has no node `{hostname}`{hint}; its nodes are {}",
                    service.name,
                    known.join(", ")
                ),
            ))
        }
    }
}

/// Service names under `services/`, all or the selected ones, sorted.
fn select_services(env_dir: &Path, only: &[String]) -> Result<Vec<String>, InputError> {
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
struct ServiceContext<'a> {
    env_dir: &'a Path,
    config: &'a EnvConfig,
    common: &'a Path,
    attributes: &'a MergedAttributes,
}

impl ServiceContext<'_> {
    fn load(&self, name: &str) -> Result<Service, InputError> {
        let dir = self.env_dir.join("services").join(name);
        check_name(name)
            .map_err(|e| InputError::new(&dir, format!("service directory name: {e}")))?;
        let manifest_path = dir.join(SERVICE_MANIFEST);
        if !manifest_path.is_file() {
            return Err(InputError::new(
                &dir,
                format!("a service needs a {SERVICE_MANIFEST}"),
            ));
        }
        let text = read_text(&manifest_path);
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
        let mut attributes = self.attributes.clone();
        attributes.apply_files(&with_includes(
            crate::attributes::read_dir(&dir.join("attributes"))?,
            self.common,
        )?);
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

/// Where `include: [a.b]` looks: `common-attributes/` of the environment,
/// or, when it has none, the one beside the `env/` directory holding it.
fn common_attributes_dir(env_dir: &Path) -> PathBuf {
    let own = env_dir.join("common-attributes");
    if own.is_dir() {
        own
    } else {
        env_dir.join("../../common-attributes")
    }
}

/// `files` with the common files they include placed before each of them,
/// so that an including file's own values win over what it includes (the
/// reverse of ggn, see FORMATS.md section 8). Includes nest; a common file
/// included several times in one layer is merged once, at its first
/// include, so a later include does not undo values set in between.
fn with_includes(
    files: Vec<AttributeFile>,
    common: &Path,
) -> Result<Vec<AttributeFile>, InputError> {
    let mut out = vec![];
    let mut seen = HashSet::new();
    for file in files {
        push_with_includes(file, common, &mut out, &mut seen, &mut vec![])?;
    }
    Ok(out)
}

fn push_with_includes(
    file: AttributeFile,
    common: &Path,
    out: &mut Vec<AttributeFile>,
    seen: &mut HashSet<PathBuf>,
    stack: &mut Vec<PathBuf>,
) -> Result<(), InputError> {
    for include in &file.includes {
        let path = include_path(&file, include, common)?;
        if stack.contains(&path) || path == file.path {
            let line = line_of(&read_text(&file.path), include);
            return Err(InputError {
                line,
                ..InputError::new(
                    &file.path,
                    format!(
                        "include `{include}` includes itself through {}",
                        path.display()
                    ),
                )
            });
        }
        if !seen.insert(path.clone()) {
            continue;
        }
        let included = AttributeFile::read(&path)?;
        stack.push(file.path.clone());
        push_with_includes(included, common, out, seen, stack)?;
        stack.pop();
    }
    out.push(file);
    Ok(())
}

/// `nerve.base` -> `<common>/nerve/base.yml` (or `.yaml`).
fn include_path(file: &AttributeFile, include: &str, common: &Path) -> Result<PathBuf, InputError> {
    let error = |message: String| InputError {
        line: line_of(&read_text(&file.path), include),
        ..InputError::new(&file.path, message)
    };
    let parts: Vec<&str> = include.split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains(['/', '\\']))
    {
        return Err(error(format!(
            "include `{include}`: expected dotted names like `nerve.base` (for common-attributes/nerve/base.yml)"
        )));
    }
    let stem = common.join(parts.join("/"));
    for extension in ["yml", "yaml"] {
        let candidate = stem.with_extension(extension);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(error(format!(
        "include `{include}`: there is no {}.yml",
        stem.display()
    )))
}

/// `templates/**/*.partial`, named by their path below `templates/`.
fn read_partials(dir: &Path) -> Result<Vec<TemplateFile>, InputError> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut partials = vec![];
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| InputError::new(dir, format!("cannot list: {e}")))?;
        let path = entry.path();
        if entry.file_type().is_file() && path.extension().is_some_and(|e| e == "partial") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
            let name = path
                .strip_prefix(dir)
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned();
            partials.push(TemplateFile {
                name,
                path: path.to_path_buf(),
                text,
            });
        }
    }
    Ok(partials)
}

/// Names that end up in unit, container and file names: a letter or digit
/// first and last, then letters, digits, `_`, `.`, `-`.
fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.chars().all(ok_char)
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().next_back())
    {
        Ok(())
    } else {
        Err("expected letters, digits, `_`, `.` and `-`, starting and ending with a letter or digit".into())
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

/// A file's text for locating an error; an unreadable file has no lines.
fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first line holding `needle`, for values serde does not locate.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    nth_line_with(text, &[needle], 1)
}

/// The `n`th (1-based) line holding every one of `needles`.
fn nth_line_with(text: &str, needles: &[&str], n: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| needles.iter().all(|needle| line.contains(needle)))
        .nth(n - 1)
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Writes `files` (path, content) below a fresh directory.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    const CONFIG: (&str, &str) = ("env/prod/config.yml", "envName: prod\n");

    fn manifest(text: &str) -> (&'static str, String) {
        (
            "env/prod/services/db/service-manifest.yml",
            text.to_string(),
        )
    }

    fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Environment, InputError>) {
        let dir = tree(files);
        let env = Environment::load(&dir.path().join("env/prod"));
        (dir, env)
    }

    fn load_manifest(text: &str) -> Result<Environment, InputError> {
        let (path, text) = manifest(text);
        load(&[CONFIG, (path, &text)]).1
    }

    #[test]
    fn unknown_manifest_key_names_line_and_closest_key() {
        let err = load_manifest(
            "containers: [aci.example.com/a:1]\nnodes:\n  - hostname: h1\nconcurentUpdater: 2\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(
            err.message.contains("did you mean `concurrentUpdater`?"),
            "{err}"
        );
        assert!(
            err.file.ends_with("services/db/service-manifest.yml"),
            "{err}"
        );
    }

    #[test]
    fn node_without_hostname_names_its_line() {
        let err = load_manifest(
            "containers: [aci.example.com/a:1]\nnodes:\n  - hostname: h1\n  - ip: 10.0.0.2\n",
        )
        .unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
        assert!(err.message.contains("missing field `hostname`"), "{err}");
    }

    #[test]
    fn duplicate_hostname_names_the_second_line() {
        let err = load_manifest("containers: [aci.example.com/a:1]\nnodes:\n  - hostname: h1\n  - hostname: h2\n  - hostname: h1\n").unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.message.contains("`h1` is used by two nodes"), "{err}");
    }

    #[test]
    fn bad_fleet_key_is_rejected_with_hint() {
        let err = load_manifest("containers: [aci.example.com/a:1]\nnodes:\n  - hostname: h1\n    fleet:\n      - MachineMetdata=name=r1\n").unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(
            err.message.contains("did you mean `MachineMetadata`?"),
            "{err}"
        );
        let err = load_manifest("containers: [aci.example.com/a:1]\nnodes:\n  - hostname: h1\n    fleet: [Priority=3]\n").unwrap_err();
        assert!(
            err.message
                .contains("MachineID, MachineOf, MachineMetadata, Conflicts, Global"),
            "{err}"
        );
    }

    #[test]
    fn container_without_domain_needs_registry_domain() {
        let err =
            load_manifest("containers: [pod-mysql:1]\nnodes: [{hostname: h1}]\n").unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
        assert!(err.message.contains("registry.domain"), "{err}");
        let (path, text) = manifest("containers: [pod-mysql:1]\nnodes: [{hostname: h1}]\n");
        let (_dir, env) = load(&[
            (
                "env/prod/config.yml",
                "envName: prod\nregistry: {domain: r.example.com}\n",
            ),
            (path, &text),
        ]);
        assert_eq!(
            env.unwrap().services[0].containers[0].to_string(),
            "r.example.com/pod-mysql:1"
        );
    }

    #[test]
    fn missing_include_names_file_and_line() {
        let (path, text) = manifest("containers: [aci.example.com/a:1]\nnodes: [{hostname: h1}]\n");
        let (_dir, env) = load(&[
            CONFIG,
            (path, &text),
            (
                "env/prod/services/db/attributes/nerve.yml",
                "include:\n  - nerve.base\noverride: {a: 1}\n",
            ),
        ]);
        let err = env.unwrap_err();
        assert!(
            err.file.ends_with("services/db/attributes/nerve.yml"),
            "{err}"
        );
        assert_eq!(err.line, Some(2), "{err}");
        assert!(
            err.message.contains("include `nerve.base`") && err.message.contains("nerve/base.yml"),
            "{err}"
        );
    }

    #[test]
    fn including_file_wins_over_include_and_env_loses_to_service_and_node() {
        let (path, text) = manifest(
            "containers: [aci.example.com/a:1]\nnodes:\n  - hostname: h1\n    port: 3\n  - hostname: h2\n",
        );
        // No common-attributes/ in the environment: the one beside env/ is used.
        let (dir, env) = load(&[
            CONFIG,
            (path, &text),
            (
                "common-attributes/nerve/base.yml",
                "default: {nerve: {check: sql, weight: 1}}\noverride: {port: 0, base: yes}\n",
            ),
            (
                "env/prod/attributes/env.yml",
                "default: {port: 1, region: eu}\n",
            ),
            (
                "env/prod/services/db/attributes/nerve.yml",
                "include: [nerve.base]\ndefault: {nerve: {weight: 255}}\noverride: {port: 2}\n",
            ),
        ]);
        let env = env.unwrap();
        let service = &env.services[0];
        let h1 = service.node_attributes(&service.nodes[0]);
        let h2 = service.node_attributes(&service.nodes[1]);
        assert_eq!(h1.value()["nerve"], json!({"check": "sql", "weight": 255}));
        assert_eq!(h1.value()["port"], json!(3));
        assert_eq!(h2.value()["port"], json!(2));
        assert_eq!(h2.value()["region"], json!("eu"));
        assert_eq!(h2.value()["base"], json!("yes"));
        assert_eq!(h1.value()["hostname"], json!("h1"));
        let origins = h2.explain();
        let origin = |key: &str| {
            origins
                .iter()
                .find(|(p, _, _)| p == key)
                .map(|(_, _, s)| s.clone())
                .unwrap()
        };
        assert!(
            origin("nerve.check").ends_with("common-attributes/nerve/base.yml"),
            "{}",
            origin("nerve.check")
        );
        assert!(
            origin("port").ends_with("services/db/attributes/nerve.yml (override)"),
            "{}",
            origin("port")
        );
        assert_eq!(&service.node_value(&service.nodes[0]), h1.value());
        let via_api = node_attributes(&dir.path().join("env/prod"), "db", "h1").unwrap();
        assert_eq!(via_api.value(), h1.value());
        assert!(
            origins
                .iter()
                .any(|(p, _, s)| p == "hostname" && s.contains("(node h2)"))
        );
    }

    #[test]
    fn unknown_service_and_host_get_hints() {
        let (path, text) =
            manifest("containers: [aci.example.com/a:1]\nnodes: [{hostname: mysql-main1}]\n");
        let dir = tree(&[CONFIG, (path, &text)]);
        let env_dir = dir.path().join("env/prod");
        let err = node_attributes(&env_dir, "dbb", "h").unwrap_err();
        assert!(err.message.contains("did you mean `db`?"), "{err}");
        let err = node_attributes(&env_dir, "db", "mysql-main2").unwrap_err();
        assert!(err.message.contains("did you mean `mysql-main1`?"), "{err}");
    }

    #[test]
    fn include_cycles_are_errors() {
        let (path, text) = manifest("containers: [aci.example.com/a:1]\nnodes: [{hostname: h1}]\n");
        let (_dir, env) = load(&[
            CONFIG,
            (path, &text),
            ("env/prod/common-attributes/a.yml", "include: [b]\n"),
            ("env/prod/common-attributes/b.yml", "include: [a]\n"),
            ("env/prod/attributes/x.yml", "include: [a]\n"),
        ]);
        let err = env.unwrap_err();
        assert!(err.message.contains("includes itself"), "{err}");
    }

    #[test]
    fn mount_points_get_a_default_source_and_must_be_safe() {
        let env = load_manifest("containers: [aci.example.com/a:1]\nnodes: [{hostname: h1}]\nmountPoints: [{name: data, path: /var/lib/mysql}]\n").unwrap();
        assert_eq!(
            env.services[0].mount_points[0].from.as_deref(),
            Some("/var/lib/herd/volumes/prod/db/data")
        );
        let err = load_manifest("containers: [aci.example.com/a:1]\nnodes: [{hostname: h1}]\nmountPoints:\n  - {name: data, path: 'var lib'}\n").unwrap_err();
        assert_eq!(err.line, Some(4), "{err}");
    }
}
