//! An image directory as read from disk: its manifest (a template over
//! its attributes), its name and version, and its source date.

use super::*;

/// An image directory as read from disk.
pub struct ImageSource {
    pub dir: PathBuf,
    pub manifest_path: PathBuf,
    manifest: ManifestSource,
    pub attributes: MergedAttributes,
    /// For an app of a pod: the pod's shared attributes, stacked as an
    /// image of their own (tiny name, directory) between the dependencies
    /// and the app.
    pub shared: Option<(String, PathBuf)>,
}

enum ManifestSource {
    /// `aci-manifest.yml`, a template over attributes.
    Template(String),
    /// A manifest herd made (the app of a pod).
    Given(Box<ImageManifest>),
}

impl ImageSource {
    pub fn read(dir: &Path) -> Result<ImageSource> {
        let manifest_path = dir.join(manifest::IMAGE_MANIFEST);
        let manifest_text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            InputError::new(
                &manifest_path,
                format!(
                    "cannot read the image manifest: {e} (is {} an image directory?)",
                    dir.display()
                ),
            )
        })?;
        let files = attributes::read_dir(&dir.join("attributes"))?;
        if let Some(file) = files.iter().find(|f| !f.includes.is_empty()) {
            return Err(InputError::new(
                &file.path,
                "`include:` is only supported in environment attributes",
            )
            .into());
        }
        let mut merged = MergedAttributes::new();
        merged.apply_files(&files);
        Ok(ImageSource {
            dir: dir.to_path_buf(),
            manifest_path,
            manifest: ManifestSource::Template(manifest_text),
            attributes: merged,
            shared: None,
        })
    }

    /// The source of an app of a pod: `dir` holds its files, templates,
    /// attributes and runlevels; the manifest is made by the pod build.
    pub fn for_pod_app(
        dir: &Path,
        manifest_path: &Path,
        manifest: ImageManifest,
        shared: (String, PathBuf),
    ) -> Result<ImageSource> {
        let files = attributes::read_dir(&dir.join("attributes"))?;
        let mut merged = MergedAttributes::new();
        merged.apply_files(&files);
        Ok(ImageSource {
            dir: dir.to_path_buf(),
            manifest_path: manifest_path.to_path_buf(),
            manifest: ManifestSource::Given(Box::new(manifest)),
            attributes: merged,
            shared: Some(shared),
        })
    }

    /// The manifest with attributes that only build scripts can provide
    /// standing in as "0", so that it parses before the scripts ran.
    pub fn provisional_manifest(&self) -> Result<ImageManifest, InputError> {
        let ManifestSource::Template(text) = &self.manifest else {
            return self.manifest(&Value::Null);
        };
        let mut stand_ins = Value::Object(Default::default());
        loop {
            let mut values = self.attributes.value().clone();
            attributes::merge_value(&mut values, &stand_ins);
            let name = self.manifest_path.display().to_string();
            match crate::templates::render_str(&name, text, &values) {
                Err(crate::templates::RenderError::Missing { attribute, .. })
                    if !has_path(&stand_ins, &attribute) =>
                {
                    set_path(&mut stand_ins, &attribute, Value::from("0"));
                }
                _ => return self.manifest(&stand_ins),
            }
        }
    }

    /// The manifest rendered over the image's attributes with `extra` (the
    /// attributes build scripts wrote) on top.
    pub fn manifest(&self, extra: &Value) -> Result<ImageManifest, InputError> {
        match &self.manifest {
            ManifestSource::Template(text) => {
                let mut values = self.attributes.value().clone();
                attributes::merge_value(&mut values, extra);
                manifest::parse_image(&self.manifest_path, text, &values)
            }
            ManifestSource::Given(manifest) => Ok((**manifest).clone()),
        }
    }
}

pub(super) fn has_path(value: &Value, dotted: &str) -> bool {
    dotted
        .split('.')
        .try_fold(value, |v, key| v.get(key))
        .is_some()
}

/// Sets `dotted` (e.g. `db.version`) in `value`, creating maps on the way.
pub(super) fn set_path(value: &mut Value, dotted: &str, leaf: Value) {
    let mut current = value;
    let keys: Vec<&str> = dotted.split('.').collect();
    for key in &keys[..keys.len() - 1] {
        if !current.get(key).is_some_and(Value::is_object) {
            current[key] = Value::Object(Default::default());
        }
        current = &mut current[key];
    }
    current[keys[keys.len() - 1]] = leaf;
}

/// Parses the manifest's name, giving it a generated version if it has none.
pub(super) fn image_name(
    manifest_path: &Path,
    text: &str,
    dir: &Path,
    epoch: u64,
) -> Result<ImageName> {
    let name: ImageName = text
        .parse()
        .map_err(|e: String| InputError::new(manifest_path, e))?;
    if name.digest().is_some() {
        return Err(InputError::new(
            manifest_path,
            format!("{name}: an image being built has no digest yet; name it without @sha256:..."),
        )
        .into());
    }
    if name.tag().is_some() {
        return Ok(name);
    }
    Ok(name
        .with_tag(&generated_version(dir, epoch))
        .map_err(|e| InputError::new(manifest_path, e))?)
}

/// The version of an image or pod directory whose name has none
/// (FORMATS.md section 1): the time of `epoch` (its last commit), `-v` and
/// the commit, `-dirty` when git sees changes under it. A directory no
/// commit touched (new, or outside git) has no commit time: its version
/// takes the modification time of its newest entry instead, so that each
/// change gets a new version. That time is only in the tag, never in the
/// image: the image's file times and `created` stay `epoch`, and its
/// digest stays reproducible.
pub fn generated_version(dir: &Path, epoch: u64) -> String {
    let revision = crate::vcs::revision(dir);
    let time = if epoch != 0 { epoch } else { newest_mtime(dir) };
    names::generated_version(time, revision.short_hash.as_deref(), revision.dirty)
}

/// The newest modification time of `dir` and everything under it
/// (symbolic links themselves, not what they point at); the current time
/// when none can be read.
pub(super) fn newest_mtime(dir: &Path) -> u64 {
    let newest = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|since| since.as_secs());
    newest.filter(|&t| t > 0).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

/// `SOURCE_DATE_EPOCH`, else the last commit time of `dir`, else 0.
pub fn source_date_epoch(dir: &Path) -> Result<u64> {
    source_date_epoch_or(|| crate::vcs::revision(dir).epoch)
}

/// `SOURCE_DATE_EPOCH`, else what `from_git` says.
pub fn source_date_epoch_or(from_git: impl FnOnce() -> u64) -> Result<u64> {
    if let Ok(value) = std::env::var("SOURCE_DATE_EPOCH") {
        return value
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"));
    }
    Ok(from_git())
}
