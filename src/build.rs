//! `herd build` for one image directory: manifest -> layers -> config ->
//! manifest -> store. Data flows one way: the directory is read, layers are
//! written into the store's temporary area, and the tag is set last, so an
//! interrupted or failed build leaves every earlier tag as it was.

use crate::attributes::{self, MergedAttributes};
use crate::error::InputError;
use crate::image_paths::{self, AppSpec};
use crate::layers::{self, Compression, Entry, LayerBlob, ScanOptions};
use crate::manifest::{self, ImageManifest};
use crate::names::{self, ImageName};
use crate::rootfs::{self, Overlay};
use crate::runtime::{self, BindMount, Ending, Isolation, IsolationKind, Root};
use crate::sandbox::{self, Sandbox};
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest as OciManifest, MediaType};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod config;
mod scripts;
mod source;

pub use config::host_architecture;
use config::*;
use scripts::*;
use source::*;
pub use source::{ImageSource, generated_version, source_date_epoch, source_date_epoch_or};

/// What a build may vary. The defaults give reproducible images.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub compression: Compression,
    /// Timestamps in the image (file mtimes, `created`). `None`: the
    /// `SOURCE_DATE_EPOCH` variable, else the last git commit time of the
    /// directory, else 0.
    pub source_date_epoch: Option<u64>,
    /// The `herd-init` executable to put in every image. `None`: `HERD_INIT`,
    /// else `herd-init` beside the running executable.
    pub init_binary: Option<PathBuf>,
    /// How build scripts are isolated.
    pub isolation: IsolationKind,
    /// The OCI runtime binary; `None`: runc, else crun, from PATH.
    pub runtime: Option<PathBuf>,
    /// The command line's network, limits and timeout for build scripts
    /// (over the manifest's `build.sandbox`).
    pub sandbox: sandbox::Choices,
    /// Whether script output lines carry the image's name (several images
    /// build at once).
    pub label_output: bool,
    /// When dependencies may be pulled from registries.
    pub pull: crate::dependency::PullPolicy,
}

/// The result of a build.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub name: ImageName,
    pub manifest: Descriptor,
}

/// Labels herd sets on the config, read back when an image is a dependency.
pub mod labels {
    pub const STACK: &str = "io.herd.stack";
    pub const USER: &str = "io.herd.app.user";
    pub const GROUP: &str = "io.herd.app.group";
    pub const SUPPLEMENTARY_GIDS: &str = "io.herd.app.supplementary-gids";
    pub const MOUNT_POINTS: &str = "io.herd.app.mount-points";
    pub const ISOLATORS: &str = "io.herd.app.isolators";
    /// Set when the image has inherit-build-* scripts for its dependents.
    pub const INHERITS: &str = "io.herd.inherit-build";
    /// The `aci.dependencies` as the build resolved them, space-separated
    /// `name:version@digest` (an unversioned dependency with the version
    /// it resolved to).
    pub const DEPENDENCIES: &str = "io.herd.dependencies";
    /// The `.partial` files of the image's `/herd/templates` (its
    /// dependencies' and its own), space-separated: its dependents'
    /// templates may include them.
    pub const PARTIALS: &str = "io.herd.template-partials";
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Builds the image directory `dir` into `store` and tags it.
pub fn build_image(dir: &Path, store: &Store, options: &BuildOptions) -> Result<BuiltImage> {
    build_source(ImageSource::read(dir)?, store, options)
}

/// Builds an image from its source (a directory, or an app of a pod).
pub fn build_source(
    source: ImageSource,
    store: &Store,
    options: &BuildOptions,
) -> Result<BuiltImage> {
    // A build queued behind an interrupted one does not start.
    crate::interrupt::check()?;
    let dir = source.dir.as_path();
    let epoch = options
        .source_date_epoch
        .map_or_else(|| source_date_epoch(dir), Ok)?;
    // Until build scripts ran, attributes they write are unknown: the
    // provisional manifest stands in for them (for dependencies and the
    // variables scripts see); the final one is rendered after the scripts.
    let provisional = source.provisional_manifest()?;

    let base = Base::resolve(store, &provisional.aci.dependencies, options.pull)?;
    // The image's /herd/templates is its dependencies' and its own: the
    // label tells its dependents which partials they may include.
    let mut partials = base.partials.clone();
    partials.extend(crate::templates::check_dir(
        &dir.join("templates"),
        &base.partials,
    )?);
    let init = init_layer(store, options)?;
    let (manifest, own) = if needs_build_root(dir, &base) {
        build_with_scripts(store, &source, &provisional, &base, epoch, options)?
    } else {
        let manifest = source.manifest(&Value::Null)?;
        let tiny = tiny_name(&source, &manifest)?;
        let mut entries = user_content(&source, &tiny, epoch)?;
        entries.extend(herd_metadata(&source, &manifest, &tiny, &base, epoch)?);
        layers::complete_and_sort(&mut entries, epoch);
        (
            manifest,
            write_layer_to_store(store, &entries, options.compression)?,
        )
    };
    let name = image_name(&source.manifest_path, &manifest.name, dir, epoch)?;

    let mut layers = base.layers.clone();
    if !layers.iter().any(|(blob, _)| blob.digest == init.digest) {
        layers.push((init, "herd init".into()));
    }
    layers.push((own, format!("herd build {}", name.tiny_name())));

    let inherits = image_paths::STORED_RUNLEVELS
        .iter()
        .filter(|level| level.starts_with("inherit-"))
        .any(|level| has_scripts(&dir.join("runlevels").join(level)));
    let stack = stack(&source, &manifest, name.tiny_name(), &base)?;
    let config = image_config(
        &manifest, &stack, &base, &layers, epoch, inherits, &partials,
    )?;
    let config_descriptor = store.write_json(MediaType::ImageConfig, &config)?;
    let oci_manifest = image_manifest(&manifest, config_descriptor, &layers)?;
    let manifest_descriptor = store.write_json(MediaType::ImageManifest, &oci_manifest)?;
    store.set_tag(&name, &manifest_descriptor)?;
    Ok(BuiltImage {
        name,
        manifest: manifest_descriptor,
    })
}

fn tiny_name(source: &ImageSource, manifest: &ImageManifest) -> Result<String> {
    let name: ImageName = manifest
        .name
        .parse()
        .map_err(|e: String| InputError::new(&source.manifest_path, e))?;
    Ok(name.tiny_name().to_string())
}

/// Whether the build needs a root filesystem: the image has build scripts,
/// or a dependency left inherit-build scripts for it.
fn needs_build_root(dir: &Path, base: &Base) -> bool {
    ["builder", "build", "build-late"]
        .iter()
        .any(|level| has_scripts(&dir.join("runlevels").join(level)))
        || base.inherits
}

fn has_scripts(dir: &Path) -> bool {
    crate::fsutil::files_in(dir).is_ok_and(|s| !s.is_empty())
}

/// What an image inherits from its dependencies.
#[derive(Default)]
struct Base {
    /// Layers in order, with their history line.
    layers: Vec<(LayerBlob, String)>,
    /// Tiny names, deepest base first.
    stack: Vec<String>,
    /// The config of the last dependency: the starting point of ours.
    config: Option<oci_spec::image::Config>,
    /// Whether a dependency has inherit-build scripts for this build.
    inherits: bool,
    /// Each dependency as resolved: `name:version@digest`.
    resolved: Vec<String>,
    /// The partials of the dependencies' `/herd/templates`.
    partials: std::collections::BTreeSet<String>,
}

impl Base {
    fn resolve(
        store: &Store,
        dependencies: &[String],
        pull: crate::dependency::PullPolicy,
    ) -> Result<Base> {
        let mut base = Base::default();
        for dependency in dependencies {
            // A layer an earlier dependency brought is not stacked again
            // (the common base of two dependencies); a layer one manifest
            // lists twice is kept twice, as that image has it.
            let earlier: std::collections::HashSet<crate::digest::Digest> =
                base.layers.iter().map(|(b, _)| b.digest.clone()).collect();
            let name: ImageName = dependency.parse().map_err(anyhow::Error::msg)?;
            let resolved = crate::dependency::resolve(store, &name, pull)
                .with_context(|| format!("resolving dependency {name}"))?;
            base.resolved.push(resolved.reference());
            let (name, descriptor) = (resolved.name, resolved.descriptor);
            // Kept from gc while this build runs (another herd may move
            // the tag meanwhile).
            let walk = store.protect_image(&descriptor)?;
            if let Some(missing) = walk.missing.first() {
                bail!("dependency {name}: blob {missing} is not in the store (run herd fsck)");
            }
            let manifest = store.read_manifest(&descriptor)?;
            let config = store.read_config(&manifest)?;
            let diff_ids = config.rootfs().diff_ids();
            if diff_ids.len() != manifest.layers().len() {
                bail!(
                    "dependency {name}: its config lists {} layers but its manifest {}",
                    diff_ids.len(),
                    manifest.layers().len()
                );
            }
            for (layer, diff_id) in manifest.layers().iter().zip(diff_ids) {
                let blob = LayerBlob {
                    digest: store::from_oci_digest(layer.digest()),
                    diff_id: diff_id.parse().map_err(anyhow::Error::msg)?,
                    size: layer.size(),
                    media_type: media_type_str(layer.media_type())?,
                };
                if !earlier.contains(&blob.digest) {
                    base.layers.push((blob, format!("from {name}")));
                }
            }
            let labels = config
                .config()
                .as_ref()
                .and_then(|c| c.labels().clone())
                .unwrap_or_default();
            for tiny in labels
                .get(labels::STACK)
                .map(String::as_str)
                .unwrap_or("")
                .split_whitespace()
            {
                if !base.stack.iter().any(|t| t == tiny) {
                    base.stack.push(tiny.to_string());
                }
            }
            base.inherits |= labels.contains_key(labels::INHERITS);
            base.partials.extend(
                labels
                    .get(labels::PARTIALS)
                    .map(String::as_str)
                    .unwrap_or("")
                    .split_whitespace()
                    .map(str::to_string),
            );
            base.config = config.config().clone();
        }
        Ok(base)
    }
}

impl Base {
    /// The extracted layers to stack under a build root, lowest first.
    /// overlayfs refuses a directory twice, and a layer applied again
    /// later wins wherever its earlier application had any effect (the
    /// topmost mention of a path decides), so only the last occurrence of
    /// a repeated layer is stacked.
    fn extracted_layers(&self, store: &Store) -> Result<Vec<PathBuf>> {
        let mut seen = std::collections::HashSet::new();
        let mut last_first: Vec<&(LayerBlob, String)> = self
            .layers
            .iter()
            .rev()
            .filter(|(blob, _)| seen.insert(blob.diff_id.clone()))
            .collect();
        last_first.reverse();
        last_first
            .into_iter()
            .map(|(blob, origin)| rootfs::extracted_layer(store, blob, origin))
            .collect()
    }
}

fn media_type_str(media_type: &MediaType) -> Result<&'static str> {
    Ok(match media_type.to_string().as_str() {
        layers::MEDIA_TYPE_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            layers::MEDIA_TYPE_GZIP
        }
        layers::MEDIA_TYPE_ZSTD => layers::MEDIA_TYPE_ZSTD,
        layers::MEDIA_TYPE_TAR => layers::MEDIA_TYPE_TAR,
        other => bail!("layer media type {other} is not supported"),
    })
}

/// Locates the `herd-init` executable.
pub fn init_binary(options: &BuildOptions) -> Result<PathBuf> {
    if let Some(path) = &options.init_binary {
        return Ok(path.clone());
    }
    if let Some(path) = std::env::var_os("HERD_INIT") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("finding the herd executable")?;
    let beside = exe.with_file_name("herd-init");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "cannot find herd-init beside {} (install it there or set HERD_INIT)",
        exe.display()
    )
}

/// The digest of the init at `path`, hashed once per process while its
/// size and mtime stay the same (every image of a tree asks for it: its
/// cache key and its init layer).
pub fn init_digest(path: &Path) -> Result<crate::digest::Digest> {
    use std::os::unix::fs::MetadataExt;
    type Stamp = (u64, i64, i64);
    type Known = std::collections::HashMap<PathBuf, (Stamp, crate::digest::Digest)>;
    static KNOWN: std::sync::OnceLock<std::sync::Mutex<Known>> = std::sync::OnceLock::new();
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading the init {}", path.display()))?;
    let stamp = (metadata.len(), metadata.mtime(), metadata.mtime_nsec());
    let known = KNOWN.get_or_init(Default::default);
    if let Some((seen, digest)) = known.lock().expect("not poisoned").get(path)
        && *seen == stamp
    {
        return Ok(digest.clone());
    }
    let file = std::fs::File::open(path)
        .with_context(|| format!("reading the init {}", path.display()))?;
    let (digest, _) = crate::digest::digest_reader(std::io::BufReader::new(file))
        .with_context(|| format!("reading the init {}", path.display()))?;
    known
        .lock()
        .expect("not poisoned")
        .insert(path.to_path_buf(), (stamp, digest.clone()));
    Ok(digest)
}

/// The init's own layer. Its bytes depend only on the init binary (fixed
/// owner, mode and mtime, no other file), so every image built by the same
/// herd shares it by digest; it is compressed once per process and store
/// (a tree of 500 images otherwise compresses the 4 MB init 500 times).
fn init_layer(store: &Store, options: &BuildOptions) -> Result<LayerBlob> {
    type Key = (PathBuf, crate::digest::Digest, Compression);
    static MADE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<Key, LayerBlob>>> =
        std::sync::OnceLock::new();
    let path = init_binary(options)?;
    let key: Key = (
        store.root().to_path_buf(),
        init_digest(&path)?,
        options.compression,
    );
    let made = MADE.get_or_init(Default::default);
    let known = made.lock().expect("not poisoned").get(&key).cloned();
    if let Some(blob) = known {
        // Protected first, then found: gc cannot take it in between.
        store.protect(std::slice::from_ref(&blob.digest))?;
        if store.blob_path(&blob.digest).is_file() {
            return Ok(blob);
        }
    }
    let size = std::fs::metadata(&path)
        .with_context(|| format!("reading the init {}", path.display()))?
        .len();
    let mut entries = vec![Entry {
        kind: layers::EntryKind::File { source: path, size },
        ..Entry::bytes(image_paths::INIT, vec![], 0o755, 0)
    }];
    layers::complete_and_sort(&mut entries, 0);
    let blob = write_layer_to_store(store, &entries, options.compression)?;
    made.lock().expect("not poisoned").insert(key, blob.clone());
    Ok(blob)
}

/// Writes a layer into the store's temporary area and commits it.
pub fn write_layer_to_store(
    store: &Store,
    entries: &[Entry],
    compression: Compression,
) -> Result<LayerBlob> {
    let temp = store.temp_file()?;
    let watch = crate::status::watch_layer(temp.path());
    let blob = layers::write_layer(entries, compression, temp.reopen()?)?;
    drop(watch);
    store.commit_blob(temp, &blob.digest)?;
    Ok(blob)
}

/// What the image directory puts into the image: `files/` at `/`, its
/// templates, attributes and stored runlevels under `/herd`.
fn user_content(source: &ImageSource, tiny: &str, epoch: u64) -> Result<Vec<Entry>> {
    // Content from the user's directory is owned by root, like Docker's
    // COPY: the builder's own uid means nothing inside the image.
    let scan = ScanOptions {
        owner: Some((0, 0)),
        mtime_clamp: epoch,
        allow_special_files: false,
    };
    let dir = &source.dir;
    let mut entries = Vec::new();
    let files = dir.join("files");
    if files.is_dir() {
        if files.join(image_paths::HERD_DIR).symlink_metadata().is_ok() {
            bail!(
                "{}: /{} is reserved for herd's own files",
                files.join(image_paths::HERD_DIR).display(),
                image_paths::HERD_DIR
            );
        }
        let files_entries = layers::scan_tree(&files, "", &scan)?;
        layers::refuse_whiteout_names(&files_entries, &files.display().to_string())?;
        entries.extend(files_entries);
    }
    let mut add_dir = |from: PathBuf, to: String| -> Result<()> {
        if from.is_dir() {
            entries.extend(layers::scan_tree(&from, &to, &scan)?);
        }
        Ok(())
    };
    add_dir(dir.join("templates"), image_paths::TEMPLATES.to_string())?;
    for level in image_paths::STORED_RUNLEVELS {
        add_dir(
            dir.join("runlevels").join(level),
            image_paths::image_dir(tiny, level),
        )?;
    }
    let mut attribute_dirs = vec![];
    if let Some((shared, shared_dir)) = &source.shared {
        attribute_dirs.push((
            shared_dir.clone(),
            image_paths::image_dir(shared, "attributes"),
        ));
    }
    attribute_dirs.push((
        dir.join("attributes"),
        image_paths::image_dir(tiny, "attributes"),
    ));
    for (from, to) in attribute_dirs {
        if from.is_dir() {
            let mut found = layers::scan_tree(&from, &to, &scan)?;
            store_linked_attributes(&from, &to, &mut found)?;
            entries.extend(found);
        }
    }
    layers::complete_and_sort(&mut entries, epoch);
    Ok(entries)
}

/// An attribute file that is a link (into a configuration management
/// tree) goes into the image as the file it names: the link's target would
/// not exist in the container. `attributes::read_dir` already read and
/// checked each such target as a strict attribute file, so only a file
/// with `default:`/`override:` roots can be taken in this way.
fn store_linked_attributes(from: &Path, to: &str, entries: &mut [layers::Entry]) -> Result<()> {
    for entry in entries.iter_mut() {
        if !matches!(entry.kind, layers::EntryKind::Symlink { .. }) {
            continue;
        }
        let layer_path = String::from_utf8_lossy(&entry.path).into_owned();
        let Some(relative) = layer_path.strip_prefix(&format!("{to}/")) else {
            continue;
        };
        let link = from.join(relative);
        if !matches!(
            link.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            continue;
        }
        let target = attributes::followed_link(&link)?;
        let metadata =
            std::fs::metadata(&target).with_context(|| format!("reading {}", target.display()))?;
        entry.mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o7777;
        entry.kind = layers::EntryKind::File {
            source: target,
            size: metadata.len(),
        };
    }
    Ok(())
}

/// The images whose attributes the init merges, deepest base first: the
/// dependencies', a pod's shared attributes, this image.
fn stack(
    source: &ImageSource,
    manifest: &ImageManifest,
    tiny: &str,
    base: &Base,
) -> Result<Vec<String>> {
    let mut stack = base.stack.clone();
    stack.extend(source.shared.iter().map(|(shared, _)| shared.clone()));
    if stack.iter().any(|t| t == tiny) {
        bail!(
            "{}: a dependency has the same short name {tiny:?}; image names must differ in their last path segment",
            manifest.name
        );
    }
    stack.push(tiny.to_string());
    Ok(stack)
}

/// herd's own description of the image for the init: the stack of images
/// and the app's identity.
fn herd_metadata(
    source: &ImageSource,
    manifest: &ImageManifest,
    tiny: &str,
    base: &Base,
    epoch: u64,
) -> Result<Vec<Entry>> {
    let stack = stack(source, manifest, tiny, base)?;
    let stack_text: String = stack.iter().map(|t| format!("{t}\n")).collect();
    let app = app_spec(manifest, base);
    let mut entries = vec![
        Entry::bytes(image_paths::STACK, stack_text.into_bytes(), 0o644, epoch),
        Entry::bytes(image_paths::APP, store::canonical_json(&app)?, 0o644, epoch),
    ];
    layers::complete_and_sort(&mut entries, epoch);
    Ok(entries)
}
