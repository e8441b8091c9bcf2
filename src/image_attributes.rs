//! The attributes a container of an image directory would start with,
//! read on the host for `herd try` and `herd attributes`: the dependency
//! images' attribute files out of their layers in the store, in the
//! init's `/herd/stack` order (deepest base first), then for an app of a
//! pod the pod's `attributes/`, then the directory's own. Each file keeps
//! its origin (`IMAGE: /herd/images/TINY/attributes/FILE`) for `--explain`.

use crate::attributes::{AttributeFile, MergedAttributes};
use crate::build::ImageSource;
use crate::image_paths;
use crate::names::ImageName;
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// An attribute file in a layer larger than this is refused: the same
/// bound as the YAML reader's own input.
const MAX_FILE: u64 = 4 << 20;

/// What a directory's container merges, and what could not be read.
pub struct StackAttributes {
    pub merged: MergedAttributes,
    /// Each source used, lowest precedence first, for the user to see.
    pub sources: Vec<String>,
    /// Dependencies whose attributes are missing (not in the store).
    pub warnings: Vec<String>,
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
    };
    let mut stacked: Vec<(String, Vec<AttributeFile>)> = vec![];
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
        for (tiny, files) in image_files(store, &name, &descriptor)? {
            // A base two dependencies share is merged once, where it first
            // comes, as the build stacks it.
            if !stacked.iter().any(|(t, _)| *t == tiny) {
                stacked.push((tiny, files));
            }
        }
    }
    for (_, files) in &stacked {
        if let Some(first) = files.first() {
            let label = first.path.display().to_string();
            let image = label.split(": ").next().unwrap_or(&label);
            result
                .sources
                .push(format!("{image} ({} files)", files.len()));
        }
        result.merged.apply_files(files);
    }
    for local in shared.into_iter().chain([dir.join("attributes")]) {
        let files = crate::attributes::read_dir(&local)?;
        if !files.is_empty() {
            result
                .sources
                .push(format!("{} ({} files)", local.display(), files.len()));
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

/// The attribute files of each image of `name`'s stack, deepest first,
/// read from its layers (a later layer's file replaces an earlier one's).
fn image_files(
    store: &Store,
    name: &ImageName,
    descriptor: &oci_spec::image::Descriptor,
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
        let path = store.blob_path(&store::from_oci_digest(layer.digest()));
        let reader = crate::layers::open_decompressed(&path, layer.media_type().as_ref())?;
        let mut archive = tar::Archive::new(reader);
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
            if !path.starts_with(image_paths::IMAGES) {
                continue;
            }
            let (dir, file) = path.rsplit_once('/').unwrap_or(("", &path));
            if let Some(hidden) = file.strip_prefix(".wh.") {
                files.remove(&format!("{dir}/{hidden}"));
                continue;
            }
            let is_attribute = dir.ends_with("/attributes") || dir.contains("/attributes/");
            if !is_attribute
                || !entry.header().entry_type().is_file()
                || !(file.ends_with(".yml") || file.ends_with(".yaml"))
            {
                continue;
            }
            if entry.size() > MAX_FILE {
                bail!("{name}: /{path} is larger than {MAX_FILE} bytes");
            }
            let mut content = vec![];
            entry.read_to_end(&mut content)?;
            files.insert(path, content);
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
