//! `aci-manifest.yml` and `pod-manifest.yml`: what an image or pod is, read
//! strictly (FORMATS.md sections 2 and 7).

use crate::error::InputError;
use crate::lifecycle;
use crate::names::ImageName;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const IMAGE_MANIFEST: &str = "aci-manifest.yml";
pub const POD_MANIFEST: &str = "pod-manifest.yml";

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageManifest {
    pub name: String,
    #[serde(default)]
    pub builder: Builder,
    #[serde(default)]
    pub build: BuildSection,
    #[serde(default)]
    pub tester: Tester,
    #[serde(default)]
    pub aci: Aci,
}

/// The root filesystem the `builder` runlevel runs in.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Builder {
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub environment: Vec<NameValue>,
    #[serde(default)]
    pub mount_points: Vec<HostMount>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildSection {
    #[serde(default)]
    pub mount_points: Vec<HostMount>,
    /// The network, limits and timeout of every build script.
    #[serde(default)]
    pub sandbox: crate::sandbox::ManifestChoices,
}

/// How `herd test` runs the image (FORMATS.md section 2): dgr's
/// `tester:` section, whose `aci` described the test image.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tester {
    /// Images stacked below the image under test (herd's short form of
    /// `aci.dependencies`).
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub aci: TesterAci,
    /// dgr's builder of the test image. herd builds no test image: only
    /// `environment` is used (the environment of `tests/wait.sh` and
    /// bats); dependencies and mount points are refused when parsed.
    #[serde(default)]
    pub builder: Builder,
}

impl Tester {
    /// The images stacked below the image under test, in order:
    /// `tester.aci.dependencies`, then `tester.dependencies`.
    pub fn all_dependencies(&self) -> impl Iterator<Item = &String> {
        self.aci.dependencies.iter().chain(&self.dependencies)
    }
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TesterAci {
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub app: TesterApp,
}

/// What a test container changes of the app: dgr's test image took
/// everything else from the image itself.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TesterApp {
    /// Over the image's `aci.app.environment`, name by name.
    #[serde(default)]
    pub environment: Vec<NameValue>,
}

#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Aci {
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub app: App,
    #[serde(default)]
    pub annotations: Vec<NameValue>,
}

/// The process a container of the image runs, and what it needs.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct App {
    #[serde(default)]
    pub exec: Vec<String>,
    pub user: Option<UserOrId>,
    pub group: Option<UserOrId>,
    #[serde(default, rename = "supplementaryGIDs")]
    pub supplementary_gids: Vec<u32>,
    pub working_directory: Option<String>,
    #[serde(default)]
    pub environment: Vec<NameValue>,
    #[serde(default)]
    pub mount_points: Vec<MountPoint>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub isolators: Vec<Isolator>,
    /// Readiness and graceful stop (`crate::lifecycle`).
    pub readiness: Option<lifecycle::Readiness>,
    pub stable: Option<lifecycle::Stable>,
    pub drained: Option<lifecycle::Drained>,
    pub stop_signal: Option<lifecycle::StopSignal>,
}

impl App {
    /// The app's own lifecycle settings (a dependency's fill the gaps).
    pub fn lifecycle(&self) -> lifecycle::Lifecycle {
        lifecycle::Lifecycle {
            readiness: self.readiness.clone(),
            stable: self.stable.clone(),
            drained: self.drained.clone(),
            stop_signal: self.stop_signal.clone(),
        }
    }
}

/// A user or group, by name or number.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum UserOrId {
    Id(u32),
    Name(String),
}

impl std::fmt::Display for UserOrId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserOrId::Id(id) => write!(f, "{id}"),
            UserOrId::Name(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NameValue {
    pub name: String,
    pub value: String,
}

/// A host directory mounted into a build root.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostMount {
    pub from: String,
    pub to: String,
}

/// A named volume of the app.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MountPoint {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    pub port: u16,
}

fn default_protocol() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Isolator {
    pub name: String,
    pub value: serde_json::Value,
}

/// `pod-manifest.yml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodManifest {
    pub name: String,
    pub pod: Pod,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pod {
    pub apps: Vec<PodApp>,
    #[serde(default)]
    pub annotations: Vec<NameValue>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PodApp {
    /// Defaults to the tiny name of the first dependency.
    pub name: Option<String>,
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub app: App,
}

/// A manifest after parsing, with the file it came from for error messages.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub path: PathBuf,
    pub manifest: T,
}

/// Renders `text` (the manifest is a template over `attributes`) and
/// parses it as an image manifest, checking every name in it.
pub fn parse_image(
    path: &Path,
    text: &str,
    attributes: &serde_json::Value,
) -> Result<ImageManifest, InputError> {
    let text = render(path, text, attributes)?;
    let manifest: ImageManifest = crate::yaml::parse(path, &text)?;
    check_name(path, &text, "name", &manifest.name, true)?;
    for dependency in manifest
        .aci
        .dependencies
        .iter()
        .chain(&manifest.builder.dependencies)
        .chain(manifest.tester.all_dependencies())
    {
        check_name(path, &text, "dependencies", dependency, true)?;
    }
    check_tester(path, &text, &manifest.tester)?;
    for port in &manifest.aci.app.ports {
        if !matches!(port.protocol.as_str(), "tcp" | "udp" | "sctp") {
            let line = line_of(&text, &port.protocol);
            return Err(InputError {
                line,
                ..InputError::new(
                    path,
                    format!(
                        "port `{}`: protocol {:?} is not tcp, udp or sctp",
                        port.name, port.protocol
                    ),
                )
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for mount in &manifest.aci.app.mount_points {
        if !mount.path.starts_with('/') {
            let line = line_of(&text, &mount.path);
            return Err(InputError {
                line,
                ..InputError::new(
                    path,
                    format!(
                        "mount point `{}`: path {:?} must be absolute",
                        mount.name, mount.path
                    ),
                )
            });
        }
        if !seen.insert(&mount.name) {
            let line = line_of(&text, &mount.name);
            return Err(InputError {
                line,
                ..InputError::new(
                    path,
                    format!("mount point name `{}` is used twice", mount.name),
                )
            });
        }
    }
    check_lifecycle(path, &text, &manifest.aci.app)?;
    if let Some(dir) = &manifest.aci.app.working_directory
        && !dir.starts_with('/')
    {
        let line = line_of(&text, dir);
        return Err(InputError {
            line,
            ..InputError::new(path, format!("workingDirectory {dir:?} must be absolute"))
        });
    }
    Ok(manifest)
}

/// Renders and parses a pod manifest, checking every name in it.
pub fn parse_pod(
    path: &Path,
    text: &str,
    attributes: &serde_json::Value,
) -> Result<PodManifest, InputError> {
    let text = render(path, text, attributes)?;
    let manifest: PodManifest = crate::yaml::parse(path, &text)?;
    check_name(path, &text, "name", &manifest.name, true)?;
    if manifest.pod.apps.is_empty() {
        return Err(InputError {
            line: line_of(&text, "apps"),
            ..InputError::new(path, "a pod needs at least one app under `pod.apps`")
        });
    }
    let mut names = std::collections::HashSet::new();
    for app in &manifest.pod.apps {
        if app.dependencies.is_empty() {
            return Err(InputError {
                line: line_of(&text, "apps"),
                ..InputError::new(path, "every pod app needs at least one dependency")
            });
        }
        for dependency in &app.dependencies {
            check_name(path, &text, "dependencies", dependency, true)?;
        }
        check_lifecycle(path, &text, &app.app)?;
        let name = app
            .name
            .clone()
            .unwrap_or_else(|| tiny_name_of(&app.dependencies[0]));
        if !names.insert(name.clone()) {
            return Err(InputError {
                line: line_of(&text, &name),
                ..InputError::new(
                    path,
                    format!("two pod apps are named `{name}`; give one a `name:`"),
                )
            });
        }
    }
    Ok(manifest)
}

/// Every lifecycle command names something to run.
fn check_lifecycle(path: &Path, text: &str, app: &App) -> Result<(), InputError> {
    let commands = [
        ("readiness", app.readiness.as_ref().map(|r| &r.exec)),
        ("stable", app.stable.as_ref().map(|s| &s.exec)),
        ("drained", app.drained.as_ref().map(|d| &d.exec)),
    ];
    for (key, exec) in commands {
        if let Some(crate::templates::CheckCmd::Argv(argv)) = exec
            && argv.is_empty()
        {
            return Err(InputError {
                line: line_of(text, &format!("{key}:")),
                ..InputError::new(
                    path,
                    format!("`{key}.exec` is empty: expected a command (a list or a string)"),
                )
            });
        }
    }
    Ok(())
}

fn tiny_name_of(reference: &str) -> String {
    reference
        .parse::<ImageName>()
        .map(|n| n.tiny_name().to_string())
        .unwrap_or_default()
}

fn render(path: &Path, text: &str, attributes: &serde_json::Value) -> Result<String, InputError> {
    if !crate::templates::has_template_syntax(text) {
        return Ok(text.to_string());
    }
    crate::templates::render_str(&path.display().to_string(), text, attributes)
        .map_err(|e| e.into_input_error(path))
}

fn check_name(
    path: &Path,
    text: &str,
    key: &str,
    name: &str,
    needs_domain: bool,
) -> Result<(), InputError> {
    let line = line_of(text, name);
    let parsed: ImageName = name.parse().map_err(|e: String| InputError {
        line,
        ..InputError::new(path, format!("`{key}`: {e}"))
    })?;
    if needs_domain && parsed.domain().is_none() {
        return Err(InputError {
            line,
            ..InputError::new(
                path,
                format!(
                    "`{key}`: {name:?} has no registry domain; expected a name like aci.example.com/{name}"
                ),
            )
        });
    }
    Ok(())
}

/// What `herd test` cannot do of dgr's `tester:` is an error, not ignored.
fn check_tester(path: &Path, text: &str, tester: &Tester) -> Result<(), InputError> {
    let refuse = |needle: &str, message: &str| {
        Err(InputError {
            line: line_of(text, needle),
            ..InputError::new(path, message)
        })
    };
    if !tester.builder.dependencies.is_empty() || !tester.builder.mount_points.is_empty() {
        // The `builder:` key under `tester:`, not the image's own.
        let line = text
            .lines()
            .enumerate()
            .skip_while(|(_, l)| !l.starts_with("tester:"))
            .find(|(_, l)| l.trim_start().starts_with("builder:"))
            .map(|(i, _)| i + 1);
        return Err(InputError {
            line,
            ..InputError::new(
                path,
                "`tester.builder`: herd test builds no test image, so only its `environment` is used; \
             name images that provide bats under `tester.aci.dependencies` instead of builder dependencies",
            )
        });
    }
    for variable in tester
        .aci
        .app
        .environment
        .iter()
        .chain(&tester.builder.environment)
    {
        let name = &variable.name;
        if name.is_empty() || name.contains(['=', '\0']) {
            return refuse(
                name,
                &format!("tester environment: {name:?} is not a variable name (non-empty, no '=')"),
            );
        }
    }
    Ok(())
}

/// The first line holding `needle`, for values serde does not locate.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<ImageManifest, InputError> {
        parse_image(
            Path::new("aci-manifest.yml"),
            text,
            &json!({"version": "1.2"}),
        )
    }

    #[test]
    fn dgr_tester_sections_parse_and_their_dependencies_are_checked() {
        let manifest = parse(
            "name: x.io/a:1\ntester:\n  dependencies: [x.io/short:1]\n  aci:\n    dependencies: [x.io/bats:1]\n    app:\n      environment: [{name: A, value: b}]\n  builder:\n    environment: [{name: C, value: d}]\n",
        )
        .unwrap();
        let all: Vec<&String> = manifest.tester.all_dependencies().collect();
        assert_eq!(all, ["x.io/bats:1", "x.io/short:1"]);
        assert_eq!(manifest.tester.aci.app.environment[0].name, "A");
        assert_eq!(manifest.tester.builder.environment[0].value, "d");
        let error =
            parse("name: x.io/a:1\ntester:\n  aci:\n    dependencies: [aci-bats]\n").unwrap_err();
        assert_eq!(error.line, Some(4), "{error}");
        assert!(error.to_string().contains("no registry domain"), "{error}");
        let error = parse(
            "name: x.io/a:1\ntester:\n  aci:\n    app:\n      environment: [{name: \"A=B\", value: b}]\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("not a variable name"), "{error}");
    }

    #[test]
    fn full_manifest_parses() {
        let m = parse(
            "name: aci.example.com/aci-mariadb:{{ version }}-1\naci:\n  dependencies: [aci.example.com/aci-debian:12]\n  app:\n    exec: [/usr/sbin/mariadbd]\n    user: mysql\n    group: 27\n    supplementaryGIDs: [4]\n    ports: [{name: mysql, port: 3306}]\n    mountPoints: [{name: data, path: /var/lib/mysql}]\n",
        )
        .unwrap();
        assert_eq!(m.name, "aci.example.com/aci-mariadb:1.2-1");
        assert_eq!(m.aci.app.user, Some(UserOrId::Name("mysql".into())));
        assert_eq!(m.aci.app.group, Some(UserOrId::Id(27)));
        assert_eq!(m.aci.app.ports[0].protocol, "tcp");
    }

    #[test]
    fn bad_manifests_name_file_and_line() {
        let cases = [
            (
                "name: aci.example.com/a:1\naci:\n  ap: {}\n",
                3,
                "did you mean `app`",
            ),
            ("aci: {}\n", 1, "missing field `name`"),
            ("name: aci.example.com/UPPER:1\n", 1, "repository path"),
            ("name: no-domain:1\n", 1, "no registry domain"),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    exec: /bin/sh\n",
                4,
                "invalid type",
            ),
            (
                "name: aci.example.com/a:{{ missing }}\n",
                1,
                "`missing` has no value",
            ),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    ports: [{name: p, port: 99999}]\n",
                4,
                "",
            ),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    mountPoints: [{name: d, path: relative}]\n",
                4,
                "absolute",
            ),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    readiness: {exec: []}\n",
                4,
                "`readiness.exec` is empty",
            ),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    drained:\n      exec: \"true\"\n      interval: soon\n",
                6,
                "invalid duration `soon`",
            ),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    stopSignal: SIGNOPE\n",
                4,
                "unknown signal",
            ),
            (
                "name: aci.example.com/a:1\naci:\n  app:\n    readiness: {exec: \"true\", timout: 1s}\n",
                4,
                "did you mean `timeout`",
            ),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn pod_apps_default_to_the_tiny_name_and_must_be_unique() {
        let text = "name: aci.example.com/pod-x:1\npod:\n  apps:\n    - dependencies: [aci.example.com/a:1]\n    - dependencies: [aci.example.com/other/a:1]\n";
        let err = parse_pod(Path::new("pod-manifest.yml"), text, &json!({})).unwrap_err();
        assert!(err.message.contains("two pod apps are named `a`"), "{err}");
    }
}
