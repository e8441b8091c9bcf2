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

/// Where herd mounts its own things inside a build container.
const BUILD_MOUNTS: &str = "/.herd-build";

/// Runs the runlevels in a build root and returns the final manifest and
/// the layer of what they, and the image's files, changed.
fn build_with_scripts(
    store: &Store,
    source: &ImageSource,
    provisional: &ImageManifest,
    base: &Base,
    epoch: u64,
    options: &BuildOptions,
) -> Result<(ImageManifest, LayerBlob)> {
    let isolation = Isolation::choose(options.isolation, options.runtime.as_deref())?;
    let overlay = Overlay::mount(store, &base.extracted_layers(store)?)?;
    let scratch = store.work_dir("scripts-")?;
    let attributes_dir = scratch.path().join("attributes");
    std::fs::create_dir(&attributes_dir)?;
    let provisional_name: ImageName = provisional.name.parse().map_err(anyhow::Error::msg)?;
    let tiny = provisional_name.tiny_name().to_string();
    let chroot = matches!(isolation, Isolation::Chroot);

    // The runtime creates missing mount points in the image root, and their
    // missing parents; those of the manifest's `build.mountPoints`
    // (`/root/.m2`) are not the image's content either, so each is removed
    // from its first missing ancestor (plain paths only: removal must stay
    // in the upper directory).
    let mut mount_targets: Vec<String> =
        ["/.herd-build", "/proc", "/sys", "/dev", "/etc/resolv.conf"]
            .map(String::from)
            .into();
    for mount in &provisional.build.mount_points {
        let path = Path::new(&mount.to);
        let plain = path.components().all(|c| {
            matches!(
                c,
                std::path::Component::RootDir | std::path::Component::Normal(_)
            )
        });
        if !plain || !path.has_root() {
            continue;
        }
        let mut target = PathBuf::from("/");
        let mut missing = false;
        for component in path.components().skip(1) {
            target.push(component);
            match overlay
                .merged
                .join(target.strip_prefix("/").unwrap_or(&target))
                .symlink_metadata()
            {
                Err(_) => {
                    missing = true;
                    break;
                }
                // Never look (or remove) through a link.
                Ok(metadata) if metadata.is_symlink() => break,
                Ok(_) => {}
            }
        }
        if missing {
            mount_targets.push(target.to_string_lossy().into_owned());
        }
    }
    let mount_targets: Vec<&str> = mount_targets.iter().map(String::as_str).collect();
    let existed: Vec<bool> = mount_targets
        .iter()
        .map(|t| {
            overlay
                .merged
                .join(t.trim_start_matches('/'))
                .symlink_metadata()
                .is_ok()
        })
        .collect();

    // A pod's app may have no directory of its own; scripts then see an
    // empty ACI_HOME.
    let home_source = if source.dir.is_dir() {
        source.dir.canonicalize()?
    } else {
        scratch.path().join("empty-home")
    };
    std::fs::create_dir_all(&home_source)?;
    let home = BindMount {
        source: home_source,
        destination: format!("{BUILD_MOUNTS}/home"),
        read_only: true,
        devices: false,
    };
    let attributes = BindMount {
        source: attributes_dir.clone(),
        destination: format!("{BUILD_MOUNTS}/attributes"),
        read_only: false,
        devices: false,
    };
    let host_mounts = |mounts: &[manifest::HostMount]| -> Result<Vec<BindMount>> {
        mounts
            .iter()
            .map(|m| {
                Ok(BindMount {
                    source: host_path(&source.dir, &m.from)?,
                    destination: m.to.clone(),
                    read_only: false,
                    devices: false,
                })
            })
            .collect()
    };
    let env = script_environment(provisional, &provisional_name, epoch);
    let sandbox = Sandbox::choose(&options.sandbox, &provisional.build.sandbox);
    if chroot {
        tracing::warn!(
            "--isolation chroot: build scripts share the host's network and have no pids or memory limit"
        );
    }
    let label = options.label_output.then(|| tiny.clone());
    let ctx = ScriptContext {
        isolation: &isolation,
        scratch: scratch.path(),
        env: &env,
        sandbox: &sandbox,
        label: label.as_deref(),
    };

    // builder: its own root (builder dependencies, or the host read-only),
    // the image root at $ROOTFS.
    let builder_scripts = crate::fsutil::files_in(&source.dir.join("runlevels/builder"))?;
    if !builder_scripts.is_empty() {
        let builder_base = Base::resolve(store, &provisional.builder.dependencies, options.pull)?;
        let builder_overlay = if provisional.builder.dependencies.is_empty() {
            None
        } else {
            Some(Overlay::mount(
                store,
                &builder_base.extracted_layers(store)?,
            )?)
        };
        let root = builder_overlay
            .as_ref()
            .map_or(Root::HostReadOnly, |o| Root::Directory(o.merged.clone()));
        let on_host = chroot && matches!(root, Root::HostReadOnly);
        let inside = |mount: &BindMount| {
            if on_host {
                mount.source.display().to_string()
            } else {
                mount.destination.clone()
            }
        };
        let mut env = env.clone();
        env.push(format!(
            "ROOTFS={}",
            if on_host {
                overlay.merged.display().to_string()
            } else {
                "/rootfs".into()
            }
        ));
        env.push(format!("ACI_HOME={}", inside(&home)));
        env.push(format!("HERD_BUILD_ATTRIBUTES={}", inside(&attributes)));
        env.extend(
            provisional
                .builder
                .environment
                .iter()
                .map(|v| format!("{}={}", v.name, v.value)),
        );
        let mut mounts = vec![
            BindMount {
                source: overlay.merged.clone(),
                destination: "/rootfs".into(),
                read_only: false,
                // Bootstrapping a root (debootstrap) makes and uses device
                // nodes in it.
                devices: true,
            },
            home.clone(),
            attributes.clone(),
        ];
        mounts.extend(host_mounts(&provisional.builder.mount_points)?);
        for script in &builder_scripts {
            let name = script.file_name().unwrap_or_default().to_string_lossy();
            let path = if on_host {
                script.display().to_string()
            } else {
                format!("{BUILD_MOUNTS}/home/runlevels/builder/{name}")
            };
            ScriptContext { env: &env, ..ctx }.run("builder", script, &path, &root, &mounts)?;
        }
    }

    // Everything else runs in the image root itself.
    let root = Root::Directory(overlay.merged.clone());
    let mut mounts = vec![home.clone(), attributes.clone()];
    mounts.extend(host_mounts(&provisional.build.mount_points)?);
    let mut env = env.clone();
    env.push(format!("ACI_HOME={BUILD_MOUNTS}/home"));
    env.push(format!("HERD_BUILD_ATTRIBUTES={BUILD_MOUNTS}/attributes"));
    let ctx = ScriptContext { env: &env, ..ctx };
    // Each script of `host_dir`, in order, run from `inside` (where the
    // container sees that directory).
    let run_scripts = |label: &str, host_dir: &Path, inside: &str| -> Result<()> {
        for script in crate::fsutil::files_in(host_dir)? {
            let name = script.file_name().unwrap_or_default().to_string_lossy();
            ctx.run(label, &script, &format!("{inside}/{name}"), &root, &mounts)?;
        }
        Ok(())
    };
    let run_level = |level: &str| -> Result<()> {
        run_scripts(
            level,
            &source.dir.join("runlevels").join(level),
            &format!("{BUILD_MOUNTS}/home/runlevels/{level}"),
        )
    };
    let run_inherited = |level: &str| -> Result<()> {
        for dependency in &base.stack {
            let inside = image_paths::image_dir(dependency, level);
            run_scripts(
                &format!("{level} of {dependency}"),
                &overlay.merged.join(&inside),
                &format!("/{inside}"),
            )?;
        }
        Ok(())
    };
    run_inherited("inherit-build-early")?;
    run_level("build")?;
    rootfs::materialize(&user_content(source, &tiny, epoch)?, &overlay.merged)?;
    run_level("build-late")?;
    run_inherited("inherit-build-late")?;

    let written = attributes::read_dir(&attributes_dir)?;
    let mut build_attributes = MergedAttributes::new();
    build_attributes.apply_files(&written);
    let manifest = source.manifest(build_attributes.value())?;
    if manifest.aci.dependencies != provisional.aci.dependencies {
        bail!(
            "{}: dependencies may not depend on attributes written by build scripts",
            source.manifest_path.display()
        );
    }
    rootfs::materialize(
        &herd_metadata(source, &manifest, &tiny, base, epoch)?,
        &overlay.merged,
    )?;
    rootfs::remove_mount_targets(&overlay, &mount_targets, &existed);
    let entries = overlay.changes(epoch)?;
    let layer = write_layer_to_store(store, &entries, options.compression)?;
    Ok((manifest, layer))
}

/// Variables every build script gets.
fn script_environment(manifest: &ImageManifest, name: &ImageName, _epoch: u64) -> Vec<String> {
    let mut env = vec![
        DEFAULT_PATH.to_string(),
        format!("ACI_NAME={}", name.repository()),
        format!("ACI_VERSION={}", name.tag().unwrap_or("")),
        // herd's own level (`-v`, `-q` or LOG_LEVEL), so `-v` traces
        // the scripts too.
        format!("LOG_LEVEL={}", crate::terminal::log_level()),
    ];
    // HERD_ENV_<NAME> on the host reaches scripts as <NAME> (proxies).
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix("HERD_ENV_").filter(|n| !n.is_empty()) {
            env.push(format!("{name}={value}"));
        }
    }
    let _ = manifest;
    env
}

/// A manifest's `from:` path: relative to the image directory, `~` the
/// home directory.
fn host_path(image_dir: &Path, from: &str) -> Result<PathBuf> {
    let path = match from.strip_prefix("~/") {
        Some(rest) => {
            PathBuf::from(std::env::var_os("HOME").context("HOME is not set for a ~ mount")?)
                .join(rest)
        }
        None => image_dir.join(from),
    };
    path.canonicalize().with_context(|| {
        format!(
            "mount point source {from:?} ({}) does not exist",
            path.display()
        )
    })
}

/// What every script run of one build shares.
#[derive(Clone, Copy)]
struct ScriptContext<'a> {
    isolation: &'a Isolation,
    scratch: &'a Path,
    env: &'a [String],
    sandbox: &'a Sandbox,
    label: Option<&'a str>,
}

impl ScriptContext<'_> {
    /// Runs one script; a failure is an error with its name, status and
    /// the tail of its output.
    fn run(
        &self,
        level: &str,
        script: &Path,
        inside: &str,
        root: &Root,
        mounts: &[BindMount],
    ) -> Result<()> {
        crate::interrupt::check()?;
        let name = script.file_name().unwrap_or_default().to_string_lossy();
        let name = crate::terminal::escape_controls(&name);
        match self.label {
            Some(label) => tracing::info!("{label}: running {level} script {name}"),
            None => tracing::info!("running {level} script {name}"),
        }
        crate::status::doing(|| format!("{level} script {name}"));
        let executable =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(script)?.permissions())
                & 0o111
                != 0;
        let args = if executable {
            vec![inside.to_string()]
        } else {
            vec!["/bin/sh".to_string(), inside.to_string()]
        };
        let run = runtime::Run {
            root: root.clone(),
            mounts: mounts.to_vec(),
            env: self.env.to_vec(),
            args,
            sandbox: self.sandbox.clone(),
            label: self.label.map(String::from),
        };
        let outcome = runtime::run(self.isolation, &run, self.scratch)?;
        let tail = || {
            outcome
                .tail
                .iter()
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let limits = || {
            outcome
                .limits
                .iter()
                .map(|hit| format!("; {hit}"))
                .collect::<String>()
        };
        match outcome.ending {
            Ending::Interrupted(signal) => bail!(
                "interrupted by {signal} while {level} script {name} ran; its container was stopped"
            ),
            Ending::TimedOut => bail!(
                "{level} script {name} timed out: still running after {} (runlevel {level}, timeout from --script-timeout or build.sandbox.timeout), so it was killed with its container; the last lines of its output:\n{}",
                humantime::format_duration(self.sandbox.timeout),
                tail()
            ),
            Ending::Exited(0) if outcome.limits.is_empty() => Ok(()),
            Ending::Exited(code) => bail!(
                "{level} script {name} {}{}; the last lines of its output:\n{}{}",
                if code == 0 {
                    "exited with status 0 but ran into a limit".to_string()
                } else {
                    format!("failed with exit status {code}")
                },
                limits(),
                tail(),
                if executable && !starts_like_a_program(script) {
                    format!(
                        "\nhint: {name} is executable but has no #! line, so it cannot be \
                         run: start it with #!/bin/sh (or make it non-executable: herd then \
                         runs it with /bin/sh)"
                    )
                } else {
                    String::new()
                }
            ),
        }
    }
}

/// Whether an executable script can be executed directly: it starts with
/// `#!` or is an ELF program.
fn starts_like_a_program(script: &Path) -> bool {
    let mut head = [0u8; 4];
    let read = std::fs::File::open(script)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    head[..read].starts_with(b"#!") || head[..read].starts_with(b"\x7fELF")
}

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

fn has_path(value: &Value, dotted: &str) -> bool {
    dotted
        .split('.')
        .try_fold(value, |v, key| v.get(key))
        .is_some()
}

/// Sets `dotted` (e.g. `db.version`) in `value`, creating maps on the way.
fn set_path(value: &mut Value, dotted: &str, leaf: Value) {
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
fn image_name(manifest_path: &Path, text: &str, dir: &Path, epoch: u64) -> Result<ImageName> {
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
fn newest_mtime(dir: &Path) -> u64 {
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

/// The init's own layer. Its bytes depend only on the init binary (fixed
/// owner, mode and mtime, no other file), so every image built by the same
/// herd shares it by digest; it is compressed once per process and store
/// (a tree of 500 images otherwise compresses the 4 MB init 500 times).
fn init_layer(store: &Store, options: &BuildOptions) -> Result<LayerBlob> {
    type Key = (PathBuf, PathBuf, (u64, i64, i64), Compression);
    use std::os::unix::fs::MetadataExt;
    static MADE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<Key, LayerBlob>>> =
        std::sync::OnceLock::new();
    let path = init_binary(options)?;
    let metadata =
        std::fs::metadata(&path).with_context(|| format!("reading the init {}", path.display()))?;
    let key: Key = (
        store.root().to_path_buf(),
        path.clone(),
        (metadata.len(), metadata.mtime(), metadata.mtime_nsec()),
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
    let mut entries = vec![Entry {
        kind: layers::EntryKind::File {
            source: path,
            size: metadata.len(),
        },
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

/// The app's identity: the manifest's, else the dependency's.
fn app_spec(manifest: &ImageManifest, base: &Base) -> AppSpec {
    let app = &manifest.aci.app;
    let label = |key: &str| {
        base.config
            .as_ref()
            .and_then(|c| c.labels().as_ref())
            .and_then(|l| l.get(key))
            .cloned()
    };
    let lifecycle = app.lifecycle().or(label(crate::lifecycle::LABEL)
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default());
    let exec = match (&lifecycle.is_empty(), app.exec.is_empty()) {
        (true, _) => vec![],
        (false, false) => app.exec.clone(),
        (false, true) => base
            .config
            .as_ref()
            .and_then(|c| c.cmd().clone())
            .unwrap_or_default(),
    };
    AppSpec {
        user: app
            .user
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| label(labels::USER)),
        group: app
            .group
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| label(labels::GROUP)),
        supplementary_gids: if app.supplementary_gids.is_empty() {
            label(labels::SUPPLEMENTARY_GIDS)
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default()
        } else {
            app.supplementary_gids.clone()
        },
        lifecycle,
        exec,
    }
}

/// The image config: the last dependency's, with this manifest's app on top.
fn image_config(
    manifest: &ImageManifest,
    stack: &[String],
    base: &Base,
    layers: &[(LayerBlob, String)],
    epoch: u64,
    inherits: bool,
    partials: &std::collections::BTreeSet<String>,
) -> Result<ImageConfiguration> {
    let app = &manifest.aci.app;
    let inherited = base.config.clone().unwrap_or_default();

    let mut env: Vec<String> = inherited
        .env()
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_PATH.to_string()]);
    for variable in &app.environment {
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(variable.name.as_str()));
        env.push(format!("{}={}", variable.name, variable.value));
    }

    let mut labels: BTreeMap<String, String> = inherited
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for annotation in &manifest.aci.annotations {
        labels.insert(annotation.name.clone(), annotation.value.clone());
    }
    labels.insert(labels::STACK.into(), stack.join(" "));
    if base.resolved.is_empty() {
        labels.remove(labels::DEPENDENCIES);
    } else {
        labels.insert(labels::DEPENDENCIES.into(), base.resolved.join(" "));
    }
    if inherits {
        labels.insert(labels::INHERITS.into(), "true".into());
    } else {
        labels.remove(labels::INHERITS);
    }
    if partials.is_empty() {
        labels.remove(labels::PARTIALS);
    } else {
        // Space-separated: a name with whitespace could not be read back
        // (and no include of it can be checked against the label).
        let names: Vec<&str> = partials
            .iter()
            .map(String::as_str)
            .filter(|name| !name.contains(char::is_whitespace))
            .collect();
        labels.insert(labels::PARTIALS.into(), names.join(" "));
    }
    let spec = app_spec(manifest, base);
    let mut set_or_keep = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            labels.insert(key.to_string(), value);
        }
    };
    set_or_keep(labels::USER, spec.user.clone());
    set_or_keep(labels::GROUP, spec.group.clone());
    if !spec.supplementary_gids.is_empty() {
        set_or_keep(
            labels::SUPPLEMENTARY_GIDS,
            Some(serde_json::to_string(&spec.supplementary_gids)?),
        );
    }
    if !app.mount_points.is_empty() {
        let points: Vec<Value> = app
            .mount_points
            .iter()
            .map(|m| json!({"name": m.name, "path": m.path, "readOnly": m.read_only}))
            .collect();
        set_or_keep(labels::MOUNT_POINTS, Some(serde_json::to_string(&points)?));
    }
    if !spec.lifecycle.is_empty() {
        set_or_keep(
            crate::lifecycle::LABEL,
            Some(serde_json::to_string(&spec.lifecycle)?),
        );
    }
    if !app.isolators.is_empty() {
        let isolators: Vec<Value> = app
            .isolators
            .iter()
            .map(|i| json!({"name": i.name, "value": i.value}))
            .collect();
        set_or_keep(labels::ISOLATORS, Some(serde_json::to_string(&isolators)?));
    }

    let mut ports: Vec<String> = inherited.exposed_ports().clone().unwrap_or_default();
    ports.extend(
        app.ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol)),
    );
    ports.sort();
    ports.dedup();
    let mut volumes: Vec<String> = inherited.volumes().clone().unwrap_or_default();
    volumes.extend(app.mount_points.iter().map(|m| m.path.clone()));
    volumes.sort();
    volumes.dedup();

    let command = if app.exec.is_empty() {
        inherited.cmd().clone()
    } else {
        Some(app.exec.clone())
    };
    let working_dir = app
        .working_directory
        .clone()
        .or_else(|| inherited.working_dir().clone());

    let mut config = json!({
        "Env": env,
        "Entrypoint": [format!("/{}", image_paths::INIT)],
        "Labels": labels,
    });
    let object = config.as_object_mut().expect("built as an object");
    if let Some(command) = command {
        object.insert("Cmd".into(), json!(command));
    }
    if let Some(dir) = working_dir {
        object.insert("WorkingDir".into(), json!(dir));
    }
    // The config's sets are objects whose values are empty objects.
    for (key, members) in [("ExposedPorts", &ports), ("Volumes", &volumes)] {
        if !members.is_empty() {
            let set: serde_json::Map<String, Value> =
                members.iter().map(|m| (m.clone(), json!({}))).collect();
            object.insert(key.into(), set.into());
        }
    }
    if let Some(signal) = inherited.stop_signal() {
        object.insert("StopSignal".into(), json!(signal));
    }

    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch),
    )
    .to_string();
    let history: Vec<Value> = layers
        .iter()
        .map(|(_, line)| json!({"created": created, "created_by": line}))
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(blob, _)| blob.diff_id.to_string())
        .collect();
    let document = json!({
        "created": created,
        "architecture": host_architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    serde_json::from_value(document).context("assembling the image config")
}

/// The OCI name of the machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn image_manifest(
    manifest: &ImageManifest,
    config: Descriptor,
    layers: &[(LayerBlob, String)],
) -> Result<OciManifest> {
    let layer_descriptors: Vec<Value> = layers
        .iter()
        .map(|(blob, _)| json!({"mediaType": blob.media_type, "digest": blob.digest.to_string(), "size": blob.size}))
        .collect();
    let mut document = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descriptors,
    });
    if !manifest.aci.annotations.is_empty() {
        let annotations: BTreeMap<&str, &str> = manifest
            .aci
            .annotations
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        document["annotations"] = json!(annotations);
    }
    serde_json::from_value(document).context("assembling the image manifest")
}
