//! Environments (FORMATS.md section 8): one directory per environment with
//! its `config.yml`, attributes, unit template fragments and services.
//! Loaded and validated strictly, with includes of `common-attributes/`
//! resolved, and merged env -> service -> node for each unit.

use crate::attributes::MergedAttributes;
use crate::error::InputError;
use crate::names::ImageName;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

mod includes;
mod machines;
mod services;
use includes::with_includes;
pub use machines::{Machine, SshDestination, parse_destination};
use services::{ServiceContext, select_services};

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

/// The attribute `exposeNodesInUnitEnv: true` gives the containers the
/// service's nodes in (ggn's name).
pub const EXPOSED_NODES: &str = "service_nodes";

/// Seconds the app gets to stop on its own when the manifest does not say.
const DEFAULT_STOP_TIMEOUT: u32 = 30;

/// Where a mount point's host directory is when the manifest gives no `from`.
const VOLUMES_ROOT: &str = "/var/lib/herd/volumes";

/// `config.yml` of an environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvConfig {
    /// Prefixes every unit name: `<envName>_<service>_<hostname>`; the
    /// environment's directory name when not given (as ggn did).
    #[serde(default)]
    pub env_name: String,
    #[serde(default)]
    pub registry: Registry,
    /// What `herd gen` writes when `--target` is not given.
    #[serde(default)]
    pub target: Target,
    /// The hosts `herd deploy` places units on.
    #[serde(default)]
    pub machines: Vec<Machine>,
    /// ggn's fleet connection (endpoint, driver, ...): accepted so ggn
    /// environments load, with a warning; herd does not talk to fleet.
    #[serde(default, skip_serializing)]
    fleet: Option<Value>,
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
    /// Whether the service's attributes hold a secret (see
    /// `attributes::secrets`); a node's own map may add one.
    pub has_secrets: bool,
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

impl Environment {
    /// Loads the environment at `dir` with every service.
    pub fn load(dir: &Path) -> Result<Environment, InputError> {
        Self::load_services(dir, &[])
    }

    /// Loads the environment at `dir` with only the services named in
    /// `only` (every service when it is empty). An unknown name is an error
    /// with the closest existing one.
    pub fn load_services(dir: &Path, only: &[String]) -> Result<Environment, InputError> {
        Self::load_with(dir, only, None)
    }

    /// `load_services`, rendering the service manifests (which are
    /// templates) with `extra` merged on top of each service's attributes:
    /// `herd gen --attributes`.
    pub fn load_with(
        dir: &Path,
        only: &[String],
        extra: Option<&Value>,
    ) -> Result<Environment, InputError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.is_file() {
            return Err(InputError::new(
                dir,
                format!("not an environment: {CONFIG_FILE} is missing"),
            ));
        }
        let config_text = read_text(&config_path);
        let mut config: EnvConfig = crate::yaml::parse(&config_path, &config_text)?;
        if config.env_name.is_empty() && line_of(&config_text, "envName").is_none() {
            config.env_name = dir_name(dir);
        }
        check_name(&config.env_name).map_err(|e| InputError {
            line: line_of(&config_text, "envName"),
            ..InputError::new(&config_path, format!("envName {:?}: {e}", config.env_name))
        })?;
        if config.fleet.is_some() {
            tracing::warn!(
                "{}:{}: `fleet:` is ignored: herd does not talk to fleet (herd deploy reaches the `machines:` over SSH)",
                config_path.display(),
                line_of(&config_text, "fleet").unwrap_or(1)
            );
        }
        if let Some(domain) = &config.registry.domain {
            // The same check a name's domain gets, by building one.
            format!("{domain}/x")
                .parse::<ImageName>()
                .map_err(|e| InputError::new(&config_path, format!("registry.domain: {e}")))?;
        }
        machines::check(&config.machines, &config_path, &config_text)?;
        let mut attributes = MergedAttributes::new();
        attributes.apply_files(&with_includes(
            crate::attributes::read_dir(&dir.join("attributes"))?,
            dir,
        )?);
        let partials = read_partials(&dir.join("templates"))?;
        let names = select_services(dir, only)?;
        let context = ServiceContext {
            env_dir: dir,
            config: &config,
            attributes: &attributes,
            extra,
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

    /// Every node's map (hostname, ip, fleet, its attributes) in manifest
    /// order: unit templates' `nodes`, and `service_nodes` with
    /// `exposeNodesInUnitEnv`. Built on demand, once per service.
    pub fn node_list(&self) -> Value {
        Value::Array(
            self.nodes
                .iter()
                .map(|n| Value::Object(n.attributes.clone()))
                .collect(),
        )
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

/// The last component of `dir` (`env/prod-dc1/` -> `prod-dc1`), through
/// `.` and symbolic links.
fn dir_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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
