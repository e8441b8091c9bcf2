//! The local container engine's image storage (containers-storage, shared
//! by podman, buildah and CRI-O): installing images there so that
//! `podman run NAME` and `podman kube play` find them by name, as dgr's
//! install did for rkt.
//!
//! The copy is made by skopeo, the reference implementation of
//! containers-storage writes: herd does not re-implement that storage's
//! locking and layer database.

use crate::names::ImageName;
use crate::store::Store;
use anyhow::{Context, Result, bail};
use std::process::Command;

/// Copies `name` (an image, or every app image of a pod) from the store
/// into containers-storage. Returns the image names installed.
pub fn install(store: &Store, name: &ImageName) -> Result<Vec<ImageName>> {
    let descriptor = store.require(name)?;
    store.protect_image(&descriptor)?; // kept from gc while skopeo reads it
    // A name pinned by digest may be found under another tag: skopeo reads
    // the image under the name the store has it, and containers-storage
    // gets the name without the digest (skopeo refuses one there).
    let stored = descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::store::REF_NAME))
        .cloned()
        .unwrap_or_else(|| name.to_string());
    let images = match crate::pods::app_images(store, &descriptor)? {
        Some(apps) => apps,
        None => vec![name.clone()],
    };
    for image in &images {
        let source_name = if image == name {
            stored.clone()
        } else {
            image.to_string()
        };
        // skopeo reads every layer: those still in the registry come now.
        let image_descriptor = if image == name {
            descriptor.clone()
        } else {
            store.require(image)?
        };
        store.protect_image(&image_descriptor)?;
        crate::registry::materialize(store, &image_descriptor)?;
        let source = format!("oci:{}:{source_name}", store.root().display());
        let destination = format!("containers-storage:{}", image.without_digest());
        let output = Command::new("skopeo")
            .args(["copy", "--quiet", &source, &destination])
            .output()
            .context("running skopeo (install the skopeo package)")?;
        if !output.status.success() {
            bail!(
                "installing {image} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    Ok(images)
}
