//! The attributes and templates a container of an image directory would
//! start with, read on the host for `herd try` and `herd attributes`: the
//! dependency images' attribute files out of their layers in the store, in
//! the init's `/herd/stack` order (deepest base first), then for an app of
//! a pod the pod's `attributes/`, then the directory's own. Each file keeps
//! its origin (`IMAGE: /herd/images/TINY/attributes/FILE`) for `--explain`.
//! The dependencies' `/herd/templates` come from the same layers, applied
//! in order as the container's root filesystem stacks them (whiteouts
//! included); the directory's own `templates/` go over them at build.

use crate::attributes::{AttributeFile, MergedAttributes};
use crate::build::ImageSource;
use crate::image_paths;
use crate::names::ImageName;
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An attribute file or template in a layer larger than this is refused:
/// the same bound as the YAML reader's own input.
const MAX_FILE: u64 = 4 << 20;
/// The most bytes of dependency templates read for one directory, and of
/// attribute files and templates read from one layer.
const MAX_TEMPLATES: u64 = 64 << 20;

/// What a directory's container merges, and what could not be read.
pub struct StackAttributes {
    pub merged: MergedAttributes,
    /// Each source used, lowest precedence first, for the user to see.
    pub sources: Vec<String>,
    /// Dependencies whose attributes are missing (not in the store).
    pub warnings: Vec<String>,
    /// The dependencies' files of `/herd/templates`, as the container's
    /// root filesystem has them before the directory's own are added.
    pub templates: Vec<StackTemplate>,
}

/// A file of a dependency's `/herd/templates`.
pub struct StackTemplate {
    /// Its path below `/herd/templates`.
    pub relative: PathBuf,
    pub content: Vec<u8>,
    /// The dependency whose layers brought it.
    pub image: String,
}

impl StackTemplate {
    /// Where it comes from, for messages: `IMAGE: /herd/templates/FILE`.
    pub fn origin(&self) -> String {
        format!(
            "{}: /{TEMPLATES_PREFIX}{}",
            self.image,
            self.relative.display()
        )
    }
}

/// The attributes of the image directory or pod app directory `dir`, with
/// its dependencies read from `store` when one is given.
pub fn for_dir(dir: &Path, store: Option<&Store>) -> Result<StackAttributes> {
    let (dependencies, shared) = match pod_app(dir)? {
        Some((dependencies, pod_dir)) => (dependencies, Some(pod_dir.join("attributes"))),
        None if dir.join(crate::manifest::IMAGE_MANIFEST).is_file() => {
            let source = ImageSource::read(dir)?;
            (source.provisional_manifest()?.aci.dependencies, None)
        }
        None => (vec![], None),
    };
    let mut result = StackAttributes {
        merged: MergedAttributes::new(),
        sources: vec![],
        warnings: vec![],
        templates: vec![],
    };
    let mut stacked: Vec<(String, Vec<AttributeFile>)> = vec![];
    let mut templates = StackTemplates::default();
    for dependency in &dependencies {
        let name: ImageName = dependency.parse().map_err(anyhow::Error::msg)?;
        let found = match store {
            Some(store) => store.resolve(&name)?,
            None => None,
        };
        let Some(descriptor) = found else {
            result.warnings.push(format!(
                "dependency {name} is not in the store: its attributes are not included (herd pull or build it)"
            ));
            continue;
        };
        let store = store.expect("found in it");
        for (tiny, files) in image_files(store, &name, &descriptor, &mut templates)? {
            // A base two dependencies share is merged once, where it first
            // comes, as the build stacks it.
            if !stacked.iter().any(|(t, _)| *t == tiny) {
                stacked.push((tiny, files));
            }
        }
    }
    result.templates = templates
        .files
        .into_iter()
        .map(|(path, (content, image))| StackTemplate {
            relative: PathBuf::from(&path[TEMPLATES_PREFIX.len()..]),
            image,
            content,
        })
        .collect();
    for (_, files) in &stacked {
        if let Some(first) = files.first() {
            let label = first.path.display().to_string();
            let image = label.split(": ").next().unwrap_or(&label);
            result.sources.push(format!(
                "{image} ({})",
                crate::terminal::count(files.len(), "file")
            ));
        }
        result.merged.apply_files(files);
    }
    for local in shared.into_iter().chain([dir.join("attributes")]) {
        let files = crate::attributes::read_dir(&local)?;
        if !files.is_empty() {
            result.sources.push(format!(
                "{} ({})",
                local.display(),
                crate::terminal::count(files.len(), "file")
            ));
        }
        result.merged.apply_files(&files);
    }
    Ok(result)
}

/// For an app directory of a pod (`POD/web`, named by an app of
/// `POD/pod-manifest.yml`): the app's dependencies and the pod directory.
fn pod_app(dir: &Path) -> Result<Option<(Vec<String>, PathBuf)>> {
    let Some(pod_dir) = dir
        .parent()
        .filter(|p| p.join(crate::manifest::POD_MANIFEST).is_file())
    else {
        return Ok(None);
    };
    let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let (pod, _) = crate::pods::read_manifest(pod_dir)?;
    Ok(pod
        .pod
        .apps
        .iter()
        .find(|app| crate::pods::app_name(app) == name)
        .map(|app| (app.dependencies.clone(), pod_dir.to_path_buf())))
}

/// The dependencies' templates read so far: layer path -> content and
/// the image it came with; and the layers already applied (a base two
/// dependencies share is stacked once).
#[derive(Default)]
struct StackTemplates {
    files: BTreeMap<String, (Vec<u8>, String)>,
    applied: std::collections::HashSet<String>,
}

const TEMPLATES_PREFIX: &str = "herd/templates/";

/// The files of one layer that are wanted (attribute files and templates),
/// and what it hides of the layers below it.
#[derive(Default)]
struct LayerChanges {
    files: BTreeMap<String, Vec<u8>>,
    /// `.wh.NAME` entries: NAME and everything below it.
    hidden: Vec<String>,
    /// `.wh..wh..opq` entries: everything below the directory.
    opaque: Vec<String>,
}

impl LayerChanges {
    /// Applies the layer over `below`, keeping only the files whose path
    /// starts with `prefix`.
    fn apply<T>(&self, below: &mut BTreeMap<String, T>, prefix: &str, file: impl Fn(&[u8]) -> T) {
        let under = |path: &str, dir: &str| {
            path.strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        below.retain(|path, _| {
            !self.hidden.iter().any(|h| path == h || under(path, h))
                && !self.opaque.iter().any(|d| under(path, d))
        });
        for (path, content) in self.files.range(prefix.to_string()..) {
            if !path.starts_with(prefix) {
                break;
            }
            below.insert(path.clone(), file(content));
        }
    }
}

/// Reads the wanted files of the layer at `path` of image `name`.
fn read_layer(name: &ImageName, path: &Path, media_type: &str) -> Result<LayerChanges> {
    let reader = crate::layers::open_decompressed(path, media_type)?;
    let mut archive = tar::Archive::new(reader);
    let mut changes = LayerChanges::default();
    let mut read = 0u64;
    for entry in archive
        .entries()
        .with_context(|| format!("reading a layer of {name}"))?
    {
        let mut entry = entry.with_context(|| format!("reading a layer of {name}"))?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let path = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let wanted_tree =
            path.starts_with(image_paths::IMAGES) || path.starts_with(TEMPLATES_PREFIX);
        if !wanted_tree {
            continue;
        }
        // A hostile layer's `herd/templates/../../etc/x` must not make
        // `herd try` write outside its output directory.
        if path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            bail!("{name}: a layer has the entry {raw:?}: expected a plain relative path");
        }
        let (dir, file) = path.rsplit_once('/').unwrap_or(("", &path));
        if file == ".wh..wh..opq" {
            changes.opaque.push(dir.to_string());
            continue;
        }
        if let Some(hidden) = file.strip_prefix(".wh.") {
            changes.hidden.push(format!("{dir}/{hidden}"));
            continue;
        }
        let is_attribute = path.starts_with(image_paths::IMAGES)
            && (dir.ends_with("/attributes") || dir.contains("/attributes/"))
            && (file.ends_with(".yml") || file.ends_with(".yaml"));
        let is_template = path.starts_with(TEMPLATES_PREFIX);
        if !(is_attribute || is_template) || !entry.header().entry_type().is_file() {
            continue;
        }
        if entry.size() > MAX_FILE {
            bail!("{name}: /{path} is larger than {MAX_FILE} bytes");
        }
        // Checked as it is read: a layer of many files just under the
        // per-file bound must not fill the memory before the total is.
        read += entry.size();
        if read > MAX_TEMPLATES {
            bail!(
                "{name}: a layer holds more than {MAX_TEMPLATES} bytes of attribute files and /herd/templates"
            );
        }
        let mut content = vec![];
        entry.read_to_end(&mut content)?;
        changes.files.insert(path, content);
    }
    Ok(changes)
}

/// The attribute files of each image of `name`'s stack, deepest first,
/// read from its layers (a later layer's file replaces an earlier one's);
/// its templates are added to `templates`.
fn image_files(
    store: &Store,
    name: &ImageName,
    descriptor: &oci_spec::image::Descriptor,
    templates: &mut StackTemplates,
) -> Result<Vec<(String, Vec<AttributeFile>)>> {
    let manifest = store.read_manifest(descriptor)?;
    let config = store.read_config(&manifest)?;
    let stack: Vec<String> = config
        .config()
        .as_ref()
        .and_then(|c| c.labels().as_ref())
        .and_then(|l| l.get(crate::build::labels::STACK))
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    // Layer path -> content, for files under herd/images/<tiny>/attributes/.
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for layer in manifest.layers() {
        let digest = store::from_oci_digest(layer.digest());
        let path = store.blob_path(&digest);
        let changes = read_layer(name, &path, layer.media_type().as_ref())?;
        changes.apply(&mut files, image_paths::IMAGES, <[u8]>::to_vec);
        if templates.applied.insert(digest.to_string()) {
            changes.apply(&mut templates.files, TEMPLATES_PREFIX, |content| {
                (content.to_vec(), name.to_string())
            });
            let bytes: u64 = templates.files.values().map(|(c, _)| c.len() as u64).sum();
            if bytes > MAX_TEMPLATES {
                bail!("{name}: its layers hold more than {MAX_TEMPLATES} bytes of /herd/templates");
            }
        }
    }
    let mut result = vec![];
    for tiny in stack {
        let prefix = format!("{}/", image_paths::image_dir(&tiny, "attributes"));
        let mut parsed = vec![];
        for (path, content) in files.range(prefix.clone()..) {
            if !path.starts_with(&prefix) {
                break;
            }
            let label = PathBuf::from(format!("{name}: /{path}"));
            let text = String::from_utf8(content.clone())
                .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", label.display()))?;
            parsed.push(AttributeFile::parse(&label, &text)?);
        }
        result.push((tiny, parsed));
    }
    Ok(result)
}
