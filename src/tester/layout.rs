//! Where a test's image and work files are: a work directory podman
//! accepts as an image name, and the temporary OCI layout of the image to
//! run (blobs linked to the store's, tester images stacked below).

use crate::build::BuiltImage;
use crate::names::ImageName;
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use oci_spec::image::{Descriptor, MediaType};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A temporary directory whose path podman accepts as an image name:
/// lowercase letters, digits and separators only.
pub(super) struct WorkDir(PathBuf);

/// Work directories (and so containers) are named `<prefix><pid>-<n>`.
pub(super) const WORK_DIR_PREFIX: &str = "herd-test-run-";

impl WorkDir {
    pub(super) fn create() -> Result<WorkDir> {
        let temp = std::env::temp_dir();
        let parent = if usable_in_image_name(&temp) {
            temp
        } else {
            PathBuf::from("/tmp")
        };
        for n in 0..1000 {
            let path = parent.join(format!("{WORK_DIR_PREFIX}{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                    return Ok(WorkDir(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        bail!("cannot create a work directory in {}", parent.display())
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }

    pub(super) fn name(&self) -> String {
        self.0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether every component of `path` is a valid component of an image
/// name (lowercase alphanumerics joined by `.`, `_` or `-`).
fn usable_in_image_name(path: &Path) -> bool {
    path.is_absolute()
        && path.components().skip(1).all(|c| {
            let part = c.as_os_str().to_string_lossy();
            let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || "._-".contains(c))
        })
}

/// Writes the image to run into a new OCI layout at `layout`, tagged with
/// the image's name, and returns the image's command (the app): the image
/// itself, or, with tester images, a copy whose layers are the testers'
/// (those the image does not have) below the image's own. Blobs are links
/// to the store's.
pub(super) fn write_layout(
    store: &Store,
    built: &BuiltImage,
    testers: &[crate::dependency::Resolved],
    layout: &Path,
) -> Result<Vec<String>> {
    let target = Store::open(layout)?;
    let link = |digest: &oci_spec::image::Digest| -> Result<()> {
        let digest = store::from_oci_digest(digest);
        match std::os::unix::fs::symlink(store.blob_path(&digest), target.blob_path(&digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(e).with_context(|| format!("linking blob {digest}"))
            }
            _ => Ok(()),
        }
    };
    let manifest = store.read_manifest(&built.manifest)?;
    let config = store.read_config(&manifest)?;
    let app = config
        .config()
        .as_ref()
        .and_then(|c| c.cmd().clone())
        .unwrap_or_default();
    let descriptor = if testers.is_empty() {
        link(built.manifest.digest())?;
        link(manifest.config().digest())?;
        built.manifest.clone()
    } else {
        let own = layers_of(&manifest, &config, &built.name)?;
        let mut layers: Vec<(Descriptor, String)> = vec![];
        for tester in testers {
            let manifest = store.read_manifest(&tester.descriptor)?;
            let config = store.read_config(&manifest)?;
            for layer in layers_of(&manifest, &config, &tester.name)? {
                let known = |(l, _): &(Descriptor, String)| l.digest() == layer.0.digest();
                if !own.iter().any(known) && !layers.iter().any(known) {
                    layers.push(layer);
                }
            }
        }
        layers.extend(own);
        let mut stacked_config = config.clone();
        stacked_config
            .rootfs_mut()
            .set_diff_ids(layers.iter().map(|(_, d)| d.clone()).collect());
        // History describes the image's own layers and would no longer
        // match them; it is optional.
        stacked_config.set_history(None);
        let mut stacked = manifest.clone();
        stacked.set_config(target.write_json(MediaType::ImageConfig, &stacked_config)?);
        stacked.set_layers(layers.into_iter().map(|(l, _)| l).collect());
        target.write_json(MediaType::ImageManifest, &stacked)?
    };
    for layer in target.read_manifest(&descriptor)?.layers() {
        link(layer.digest())?;
    }
    target.set_tag(&built.name, &descriptor)?;
    Ok(app)
}

/// The layers of an image with their diff IDs.
fn layers_of(
    manifest: &oci_spec::image::ImageManifest,
    config: &oci_spec::image::ImageConfiguration,
    name: &ImageName,
) -> Result<Vec<(Descriptor, String)>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        bail!(
            "{name}: its config lists {} layers but its manifest {}",
            diff_ids.len(),
            manifest.layers().len()
        );
    }
    Ok(manifest
        .layers()
        .iter()
        .cloned()
        .zip(diff_ids.iter().cloned())
        .collect())
}
