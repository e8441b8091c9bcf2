//! Units (FORMATS.md section 8): one systemd unit (and timer) or one
//! Kubernetes Pod per node of each service of an environment, rendered in
//! memory from Tera templates over the node's merged attributes, then
//! written all at once or compared with what is on disk.

mod changes;
mod escape;
mod kubernetes;
mod output;
pub mod resources;

pub use crate::environments::Target;
pub use changes::{attribute_changes, carries_secrets, hide_carried};
pub use kubernetes::readiness_probe;
pub use output::{Check, check_units, unified_diff, wanted_mode, write_units};

use crate::attributes::secrets;
use crate::environments::{Environment, Node, Service, TemplateFile};
use crate::error::InputError;
use crate::lifecycle::Lifecycle;
use crate::names::ImageName;
use crate::store::Store;
use anyhow::Result;
use base64::Engine;
use rayon::prelude::*;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

/// Generated (or existing) output: path below the output directory ->
/// content.
pub type Files = BTreeMap<PathBuf, Vec<u8>>;

/// The files of one unit: its `.service` (and `.timer`), or its `.yaml`.
type UnitFiles = Vec<(PathBuf, Vec<u8>)>;

/// A unit's files, each with whether it holds secrets.
type MarkedFiles = Vec<(PathBuf, Vec<u8>, bool)>;

/// Base64 characters per `Environment=HERD_ATTRIBUTES_<i>=` line. With the
/// key, a line stays under 2048 bytes, the LINE_MAX that systemd before
/// v235 and fleet enforced on unit file lines.
pub const ENVIRONMENT_CHUNK: usize = 1900;

/// Largest `HERD_ATTRIBUTES=base64,...` the default unit can hand to
/// podman: Linux limits one environment string to 128 KiB (MAX_ARG_STRLEN).
const MAX_ENVIRONMENT_STRING: usize = 128 * 1024 - 1;

/// Seconds a unit's start may spend pulling its images.
const PULL_TIMEOUT: u64 = 900;

/// Name of the built-in unit template in error messages.
const DEFAULT_UNIT: &str = "herd default unit (src/units/default.service.tmpl)";

/// One image a unit runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResolvedImage {
    /// The name as the service manifest gives it (registry domain filled in).
    pub name: String,
    /// What to run: `repository@sha256:...` when the store has the image,
    /// else `name` as written (by tag).
    pub reference: String,
    /// The app's name within the unit: the image's tiny name (for a pod,
    /// its app's name), made unique within the service.
    pub app: String,
    /// Its readiness and stop settings, as the store's image says (empty
    /// without a store).
    #[serde(skip_serializing_if = "Lifecycle::is_empty")]
    pub lifecycle: Lifecycle,
    /// Its memory and CPU limits and ports, as the store's image says
    /// (none without a store).
    pub resources: resources::Resources,
}

/// The images one container entry of a service runs. Without a store, the
/// name stays as written; with one, a stored name is pinned to its digest
/// (a name the store lacks keeps its tag, with a warning). The single
/// place where names become references: pods are to be expanded into
/// their apps here.
pub fn resolve_image(store: Option<&Store>, name: &ImageName) -> Result<Vec<ResolvedImage>> {
    let descriptor = store.map(|s| s.resolve(name)).transpose()?.flatten();
    // A pod expands into its apps, each pinned by digest.
    if let (Some(store), Some(descriptor)) = (store, &descriptor)
        && let Some(apps) = crate::pods::app_images(store, descriptor)?
    {
        let mut images = Vec::new();
        for app in apps {
            let app_descriptor = store.require(&app)?;
            let app_name = app
                .tiny_name()
                .rsplit_once('_')
                .map_or(app.tiny_name(), |(_, a)| a)
                .to_string();
            images.push(ResolvedImage {
                name: app.to_string(),
                reference: format!("{}@{}", app.repository(), app_descriptor.digest()),
                app: app_name,
                lifecycle: crate::lifecycle::of_image(store, &app_descriptor)?,
                resources: image_resources(store, &app_descriptor, &app)?,
            });
        }
        return Ok(images);
    }
    let (lifecycle, resources) = match (store, &descriptor) {
        (Some(store), Some(descriptor)) => (
            crate::lifecycle::of_image(store, descriptor)?,
            image_resources(store, descriptor, name)?,
        ),
        _ => Default::default(),
    };
    let reference = match descriptor {
        Some(descriptor) => format!("{}@{}", name.repository(), descriptor.digest()),
        None => {
            if let Some(store) = store {
                tracing::warn!(
                    "{name} is not in the store {}; its units use the tag",
                    store.root().display()
                );
            }
            name.to_string()
        }
    };
    Ok(vec![ResolvedImage {
        name: name.to_string(),
        reference,
        app: name.tiny_name().to_string(),
        lifecycle,
        resources,
    }])
}

fn image_resources(
    store: &Store,
    descriptor: &oci_spec::image::Descriptor,
    name: &ImageName,
) -> Result<resources::Resources> {
    resources::Resources::of_image(store, descriptor, &name.to_string(), &mut |warning| {
        tracing::warn!("{warning}")
    })
}

/// The `Environment=` lines that carry a unit's attributes, as ggn did:
///
/// ```text
/// Environment=HERD_ATTRIBUTES_COUNT=<n>
/// Environment=HERD_ATTRIBUTES_0=<base64 characters 0..1900>
/// Environment=HERD_ATTRIBUTES_1=<base64 characters 1900..3800>
/// ...
/// ```
///
/// The chunks are consecutive slices of the standard, padded base64 of the
/// attributes' JSON. They are joined by concatenating
/// `HERD_ATTRIBUTES_0` .. `HERD_ATTRIBUTES_<n-1>` in numeric order with
/// nothing between them; `"base64,"` followed by that is the value of
/// `HERD_ATTRIBUTES` the container init reads. There is always at least
/// one chunk.
pub fn environment_lines(attributes_base64: &str) -> String {
    let chunks = chunks(attributes_base64);
    let mut lines = format!("Environment=HERD_ATTRIBUTES_COUNT={}", chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        lines.push_str(&format!("\nEnvironment=HERD_ATTRIBUTES_{i}={chunk}"));
    }
    lines
}

/// The `/bin/sh` word that rebuilds `HERD_ATTRIBUTES` from the lines of
/// `environment_lines` inside a unit's `Exec*=` line: `$$` is systemd's
/// escape for a `$` it must not expand itself, so the shell reads the
/// chunks from its environment and no command line holds them.
pub fn attributes_from_environment(attributes_base64: &str) -> String {
    let count = chunks(attributes_base64).len();
    let mut expression = String::from("base64,");
    for i in 0..count {
        expression.push_str(&format!("$${{HERD_ATTRIBUTES_{i}}}"));
    }
    expression
}

fn chunks(text: &str) -> Vec<&str> {
    // Base64 is ASCII, so byte offsets are character boundaries.
    let chunks: Vec<&str> = text
        .as_bytes()
        .chunks(ENVIRONMENT_CHUNK)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    if chunks.is_empty() { vec![""] } else { chunks }
}

/// What `generate_all` makes: the files, and which of them carry secret
/// attributes (written 0640 rather than world-readable).
#[derive(Debug, Default)]
pub struct Generated {
    pub files: Files,
    pub private: BTreeSet<PathBuf>,
}

/// Renders every unit of `env` for `target`, resolving images through
/// `store` when given. Nothing is written; any failure fails the whole.
pub fn generate(env: &Environment, target: Target, store: Option<&Store>) -> Result<Files> {
    Ok(generate_all(env, target, store)?.files)
}

/// `generate`, also saying which files hold secrets.
pub fn generate_all(env: &Environment, target: Target, store: Option<&Store>) -> Result<Generated> {
    let images = resolve_services(env, store)?;
    // Kubernetes output renders only timers (their schedule), but a broken
    // template fails either target.
    let templates = Templates::load(env)?;
    let node_lists: Vec<Option<Value>> = env
        .services
        .iter()
        .map(|s| templates.use_nodes(s).then(|| s.node_list()))
        .collect();
    let work: Vec<(usize, &Service, &Node)> = env
        .services
        .iter()
        .enumerate()
        .flat_map(|(i, service)| service.nodes.iter().map(move |node| (i, service, node)))
        .collect();
    // Each file with whether it is private.
    let rendered: Vec<Result<MarkedFiles>> = work
        .par_iter()
        .map(|(i, service, node)| {
            let mut unit = Unit::new(env, service, node, &images[*i]);
            unit.nodes = node_lists[*i].as_ref();
            match target {
                Target::Systemd => {
                    // The unit's text carries its attributes, secrets too.
                    let private = service.has_secrets || secrets::map_has_secrets(&node.attributes);
                    let files = templates.render(&mut unit)?;
                    Ok(files.into_iter().map(|(p, c)| (p, c, private)).collect())
                }
                Target::Kubernetes => {
                    let event = templates.on_calendar(&mut unit)?;
                    kubernetes::files(&unit, event.as_ref())
                }
            }
        })
        .collect();
    let mut generated = Generated::default();
    for result in rendered {
        for (path, content, private) in result? {
            if private {
                generated.private.insert(path.clone());
            }
            generated.files.insert(path, content);
        }
    }
    Ok(generated)
}

/// Each service's images, resolving every distinct name once.
fn resolve_services(env: &Environment, store: Option<&Store>) -> Result<Vec<Vec<ResolvedImage>>> {
    let mut resolved: HashMap<&ImageName, Vec<ResolvedImage>> = HashMap::new();
    let mut services = vec![];
    for service in &env.services {
        let mut images: Vec<ResolvedImage> = vec![];
        for name in &service.containers {
            if !resolved.contains_key(name) {
                resolved.insert(name, resolve_image(store, name)?);
            }
            for image in &resolved[name] {
                let mut image = image.clone();
                let base = image.app.clone();
                let mut n = 1;
                while images.iter().any(|i| i.app == image.app) {
                    n += 1;
                    image.app = format!("{base}-{n}");
                }
                images.push(image);
            }
        }
        services.push(images);
    }
    Ok(services)
}

/// One unit being rendered: a service on one node.
struct Unit<'a> {
    env: &'a Environment,
    service: &'a Service,
    node: &'a Node,
    images: &'a [ResolvedImage],
    /// `<envName>_<service>_<hostname>`
    name: String,
    attributes: Value,
    attributes_json: String,
    attributes_base64: String,
    /// The service's `nodes`, when its templates read it (only built for
    /// them, once per service, borrowed by its units).
    nodes: Option<&'a Value>,
}

impl<'a> Unit<'a> {
    fn new(
        env: &'a Environment,
        service: &'a Service,
        node: &'a Node,
        images: &'a [ResolvedImage],
    ) -> Self {
        let attributes = service.node_value(node);
        let attributes_json = attributes.to_string();
        let attributes_base64 = base64::engine::general_purpose::STANDARD.encode(&attributes_json);
        let name = format!("{}_{}_{}", env.config.env_name, service.name, node.hostname);
        Unit {
            env,
            service,
            node,
            images,
            name,
            attributes,
            attributes_json,
            attributes_base64,
            nodes: None,
        }
    }

    /// Seconds systemd gives each start phase (`TimeoutStartSec=`): the
    /// longest readiness timeout of the unit's images with a minute for
    /// the containers to start, and at least the 15 minutes the pulls in
    /// `ExecStartPre=` may take (systemd times each phase on its own).
    fn start_timeout(&self) -> u64 {
        let readiness = self
            .images
            .iter()
            .map(|i| {
                i.lifecycle
                    .readiness
                    .as_ref()
                    .map_or(0, |r| r.timeout.ceil_seconds())
            })
            .max()
            .unwrap_or(0);
        (readiness + 60).max(PULL_TIMEOUT)
    }

    /// `<service>/<unit name>.<extension>` below the output directory.
    fn path(&self, extension: &str) -> PathBuf {
        PathBuf::from(&self.service.name).join(format!("{}.{extension}", self.name))
    }

    /// What unit templates see: the merged attributes at the top level,
    /// and these names on top of them (a same-named attribute is hidden).
    /// Takes the attributes: a unit is rendered once.
    fn context(&mut self) -> Value {
        let mut context = match std::mem::take(&mut self.attributes) {
            Value::Object(map) => map,
            _ => Default::default(),
        };
        let extra = json!({
            "env_name": self.env.config.env_name,
            "service_name": self.service.name,
            "hostname": self.node.hostname,
            "unit_name": self.name,
            "images": self.images,
            "attributes_json": self.attributes_json,
            "attributes_base64": self.attributes_base64,
            "environment_lines": environment_lines(&self.attributes_base64),
            "attributes_from_environment": attributes_from_environment(&self.attributes_base64),
            "fleet_lines": self.node.fleet,
            "has_timer": self.service.timer_template.is_some(),
            "stop_timeout": self.service.stop_timeout,
            "start_timeout": self.start_timeout(),
            "mount_points": self.service.mount_points,
            "registry_tls_verify": self.env.config.registry.tls_verify,
        });
        if let Value::Object(extra) = extra {
            context.extend(extra);
        }
        if let Some(nodes) = self.nodes {
            // Tera's context owns its values: one copy of the service's
            // list per unit, and only for templates that read it.
            context.insert("nodes".into(), nodes.clone());
        }
        Value::Object(context)
    }
}

/// Every template of the environment, parsed once into one Tera set that
/// all units render from (in parallel: rendering only reads it).
struct Templates {
    tera: tera::Tera,
    files: HashMap<String, TemplateFile>,
    /// The templates (by name) that read `nodes`.
    reading_nodes: HashSet<String>,
}

impl Templates {
    fn load(env: &Environment) -> Result<Templates, InputError> {
        let default = TemplateFile {
            name: DEFAULT_UNIT.to_string(),
            path: PathBuf::from(DEFAULT_UNIT),
            text: include_str!("units/default.service.tmpl").to_string(),
        };
        let files: HashMap<String, TemplateFile> = env
            .partials
            .iter()
            .chain(
                env.services
                    .iter()
                    .flat_map(|s| s.unit_template.iter().chain(&s.timer_template)),
            )
            .cloned()
            .chain([default])
            .map(|t| (t.name.clone(), t))
            .collect();
        let mut tera = crate::templates::tera_set();
        escape::for_units(&mut tera);
        // All at once: Tera rebuilds its inheritance chains on every add.
        tera.add_raw_templates(files.values().map(|t| (t.name.as_str(), t.text.as_str())))
            .map_err(|e| locate(&e, &files, None, "parsing"))?;
        if let Err((name, message)) = crate::templates::limits::check_recursion(&tera) {
            let path = files
                .get(&name)
                .map_or_else(|| PathBuf::from(&name), |t| t.path.clone());
            return Err(InputError::new(&path, message));
        }
        let reading_nodes = tera
            .templates
            .iter()
            .filter(|(_, template)| {
                crate::templates::idents(&template.ast)
                    .iter()
                    .any(|ident| ident.split(['.', '[']).next() == Some("nodes"))
            })
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Templates {
            tera,
            files,
            reading_nodes,
        })
    }

    /// Whether rendering `service` may read `nodes`: its own templates or
    /// any partial (which it may include) do.
    fn use_nodes(&self, service: &Service) -> bool {
        !self.reading_nodes.is_empty()
            && (self
                .reading_nodes
                .iter()
                .any(|name| name.ends_with(".partial"))
                || service
                    .unit_template
                    .iter()
                    .chain(&service.timer_template)
                    .any(|t| self.reading_nodes.contains(&t.name)))
    }

    fn render(&self, unit: &mut Unit) -> Result<UnitFiles> {
        let context = tera::Context::from_value(unit.context())?;
        let service = unit.service;
        let template = service
            .unit_template
            .as_ref()
            .map_or(DEFAULT_UNIT, |t| t.name.as_str());
        if template == DEFAULT_UNIT
            && unit.attributes_base64.len() + "HERD_ATTRIBUTES=base64,".len()
                > MAX_ENVIRONMENT_STRING
        {
            anyhow::bail!(
                "{}: the attributes of {} are {} bytes as base64, more than the 128 KiB a process environment variable can hold; write a unit.tmpl that passes them in a file",
                service.manifest_path.display(),
                unit.name,
                unit.attributes_base64.len()
            );
        }
        let mut out = vec![(
            unit.path("service"),
            self.render_one(template, &context, &format!("{}.service", unit.name))?,
        )];
        if let Some(timer) = &service.timer_template {
            out.push((
                unit.path("timer"),
                self.render_one(&timer.name, &context, &format!("{}.timer", unit.name))?,
            ));
        }
        Ok(out)
    }

    /// The `OnCalendar=` of the unit's rendered timer, if it has one. A
    /// timer cron cannot follow (other triggers, several events) is an error.
    fn on_calendar(&self, unit: &mut Unit) -> Result<Option<kubernetes::CalendarEvent>> {
        let Some(timer) = &unit.service.timer_template else {
            return Ok(None);
        };
        let context = tera::Context::from_value(unit.context())?;
        let rendered = self.render_one(&timer.name, &context, &format!("{}.timer", unit.name))?;
        let text = String::from_utf8_lossy(&rendered);
        let mut section = "";
        let mut events = vec![];
        for (number, line) in text.lines().map(str::trim).enumerate() {
            if line.starts_with('[') {
                section = line;
            } else if section == "[Timer]"
                && let Some((key, value)) = line.split_once('=')
            {
                match key.trim() {
                    "OnCalendar" => events.push((number + 1, value.trim().to_string())),
                    "OnActiveSec" | "OnBootSec" | "OnStartupSec" | "OnUnitActiveSec"
                    | "OnUnitInactiveSec" => anyhow::bail!(
                        "{}: the timer of {} uses {}, which a Kubernetes CronJob cannot express (use OnCalendar=)",
                        timer.path.display(),
                        unit.name,
                        key.trim()
                    ),
                    _ => {}
                }
            }
        }
        match &events[..] {
            [(rendered_line, expression)] => Ok(Some(kubernetes::CalendarEvent {
                line: match template_line(&timer.text, expression) {
                    Some(line) => kubernetes::EventLine::Template(line),
                    None => kubernetes::EventLine::Rendered(*rendered_line),
                },
                expression: expression.clone(),
                template: timer.path.clone(),
            })),
            _ => anyhow::bail!(
                "{}: the timer of {} has {} OnCalendar= lines; a Kubernetes CronJob takes exactly one",
                timer.path.display(),
                unit.name,
                events.len()
            ),
        }
    }

    fn render_one(
        &self,
        template: &str,
        context: &tera::Context,
        output: &str,
    ) -> Result<Vec<u8>, InputError> {
        use crate::templates::limits;
        let mut text = limits::render(&self.tera, template, context, limits::MAX_RENDERED_BYTES)
            .map_err(|e| {
                locate(
                    &e,
                    &self.files,
                    Some(template),
                    &format!("rendering {output}"),
                )
            })?;
        if let Some(line) = escape::refused_line(&text) {
            let path = self
                .files
                .get(template)
                .map_or_else(|| PathBuf::from(template), |t| t.path.clone());
            return Err(InputError::new(
                &path,
                format!(
                    "rendering {output}: line {line} would get a value holding a newline or NUL, which would start another unit line; values cannot hold one (a template that means it writes `| safe`)"
                ),
            ));
        }
        // Tera drops a template's final newline; unit files end with one.
        if !text.ends_with('\n') {
            text.push('\n');
        }
        Ok(text.into_bytes())
    }
}

/// The 1-based line of a timer template that wrote the `OnCalendar=`
/// whose value rendered as `expression`: its one `OnCalendar=` line that
/// is either `expression` to the letter or computed by Tera. None when no
/// line or several could be it (the line is in an included partial, or in
/// branches of an `{% if %}`).
fn template_line(template: &str, expression: &str) -> Option<usize> {
    let could_be: Vec<usize> = template
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            (key.trim() == "OnCalendar"
                && (value == expression || value.contains("{{") || value.contains("{%")))
            .then_some(i + 1)
        })
        .collect();
    match could_be[..] {
        [line] => Some(line),
        _ => None,
    }
}

/// Turns a Tera error into an error against the template file it is in:
/// the innermost template the error chain names (an included partial
/// rather than the unit including it), else `fallback`.
fn locate(
    error: &tera::Error,
    files: &HashMap<String, TemplateFile>,
    fallback: Option<&str>,
    doing: &str,
) -> InputError {
    let mut messages = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(next) = source {
        messages.push(next.to_string());
        source = next.source();
    }
    let named = messages.iter().rev().find_map(|m| {
        m.split('\'')
            .skip(1)
            .step_by(2)
            .find(|name| files.contains_key(*name))
    });
    let Some(file) = named.or(fallback).and_then(|name| files.get(name)) else {
        return InputError::new(
            std::path::Path::new("templates"),
            format!("{doing}: {}", messages.join(": ")),
        );
    };
    let mut located = crate::templates::classify(error, &file.text).into_input_error(&file.path);
    located.message = format!("{} ({doing})", located.message);
    located
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_lines_split_and_join_back() {
        let encoded = "A".repeat(ENVIRONMENT_CHUNK * 2 + 5);
        let lines = environment_lines(&encoded);
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines[0], "Environment=HERD_ATTRIBUTES_COUNT=3");
        assert_eq!(lines.len(), 4);
        assert!(
            lines.iter().all(|l| l.len() < 2048),
            "a line is too long for systemd"
        );
        let joined: String = lines[1..]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                l.strip_prefix(&format!("Environment=HERD_ATTRIBUTES_{i}="))
                    .unwrap()
            })
            .collect();
        assert_eq!(joined, encoded);
        assert_eq!(
            attributes_from_environment(&encoded),
            "base64,$${HERD_ATTRIBUTES_0}$${HERD_ATTRIBUTES_1}$${HERD_ATTRIBUTES_2}"
        );
    }

    #[test]
    fn small_attributes_take_one_line() {
        assert_eq!(
            environment_lines("e30="),
            "Environment=HERD_ATTRIBUTES_COUNT=1\nEnvironment=HERD_ATTRIBUTES_0=e30="
        );
        assert_eq!(
            attributes_from_environment(""),
            "base64,$${HERD_ATTRIBUTES_0}"
        );
    }

    #[test]
    fn the_template_line_of_an_on_calendar_is_the_one_that_could_have_written_it() {
        let daily = "daily";
        assert_eq!(template_line("[Timer]\nOnCalendar=daily\n", daily), Some(2));
        assert_eq!(
            template_line("[Timer]\n OnCalendar = {{ at }}\n", daily),
            Some(2)
        );
        // Another literal value: the line was written elsewhere.
        assert_eq!(template_line("[Timer]\nOnCalendar=weekly\n", daily), None);
        assert_eq!(template_line("[Timer]\n{% include \"t\" %}\n", daily), None);
        assert_eq!(
            template_line(
                "{% if a %}\nOnCalendar=weekly\n{% else %}\nOnCalendar=daily\n{% endif %}\n",
                daily
            ),
            Some(4)
        );
        // Either branch could have written it.
        assert_eq!(
            template_line(
                "{% if a %}\nOnCalendar={{ at }}\n{% else %}\nOnCalendar=daily\n{% endif %}\n",
                daily
            ),
            None
        );
    }

    #[test]
    fn images_without_store_keep_their_tag() {
        let name: ImageName = "aci.example.com/pod-mysql:10.1-29".parse().unwrap();
        let images = resolve_image(None, &name).unwrap();
        assert_eq!(
            images,
            vec![ResolvedImage {
                name: name.to_string(),
                reference: name.to_string(),
                app: "pod-mysql".into(),
                lifecycle: Lifecycle::default(),
                resources: Default::default(),
            }]
        );
    }
}
