//! Walking what a tagged image needs: its manifest (or index and its
//! manifests), configs and layers.
//!
//! The store may hold anything another tool or an attacker wrote, so the
//! walk trusts no label: a manifest is read as JSON and taken for what its
//! content is (an index lists `manifests`, an image manifest has `config`
//! and `layers`); a label that disagrees is a problem, not a failure. A
//! visited set and a depth bound stop an index that lists itself or an
//! endless chain of indexes; every problem is recorded and the walk goes on
//! with the rest, so one bad entry does not hide the others.

use super::Store;
use crate::digest::Digest;
use std::collections::HashSet;

/// Indexes nest this deep at most (an index of platform manifests is 1).
const MAX_DEPTH: usize = 8;
/// A manifest bigger than this is not one (registries use 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// What a walk from one descriptor found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Every blob reached, present or not, the first one the top manifest.
    pub blobs: Vec<Digest>,
    /// The blobs reached that the store lacks (and cannot fetch).
    pub missing: Vec<Digest>,
    /// The blobs reached that are lazy (`store::lazy`): absent, but the
    /// store knows where they live. Not missing: fetched when needed.
    pub lazy: Vec<Digest>,
    /// What is wrong, one line each, naming the manifest's digest.
    pub problems: Vec<String>,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Walks the image `digest` (labelled `media_type`) of `store`.
pub fn walk(store: &Store, digest: &Digest, media_type: &str) -> Walk {
    let mut walk = Walk::default();
    let mut visited = HashSet::new();
    let mut ancestors = Vec::new();
    visit_manifest(
        store,
        digest,
        media_type,
        &mut ancestors,
        &mut visited,
        &mut walk,
    );
    walk
}

fn visit_blob(store: &Store, digest: &Digest, visited: &mut HashSet<Digest>, walk: &mut Walk) {
    if visited.insert(digest.clone()) {
        walk.blobs.push(digest.clone());
        if !store.has_blob(digest) {
            if store.lazy_location(digest).is_some() {
                walk.lazy.push(digest.clone());
            } else {
                walk.missing.push(digest.clone());
            }
        }
    }
}

fn visit_manifest(
    store: &Store,
    digest: &Digest,
    label: &str,
    ancestors: &mut Vec<Digest>,
    visited: &mut HashSet<Digest>,
    walk: &mut Walk,
) {
    if !visited.insert(digest.clone()) {
        return; // shared by two parents: walked once
    }
    walk.blobs.push(digest.clone());
    let path = store.blob_path(digest);
    let size = match path.metadata() {
        Ok(metadata) => metadata.len(),
        Err(_) => {
            walk.missing.push(digest.clone());
            return;
        }
    };
    if size > MAX_MANIFEST_BYTES {
        walk.problems.push(format!(
            "manifest {digest}: {size} bytes is too big for a manifest (at most {MAX_MANIFEST_BYTES})"
        ));
        return;
    }
    let value: serde_json::Value = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(value) => value,
        Err(error) => {
            walk.problems.push(format!(
                "manifest {digest}: cannot be read as JSON: {error}"
            ));
            return;
        }
    };
    let labelled_index = INDEX_TYPES.contains(&label);
    let children = value.get("manifests").and_then(|m| m.as_array());
    let is_index = children.is_some();
    let is_image = value.get("config").is_some() || value.get("layers").is_some();
    if !is_index && !is_image {
        walk.problems.push(format!(
            "manifest {digest} (labelled {label}) is neither an image manifest nor an index"
        ));
        return;
    }
    if labelled_index != is_index {
        walk.problems.push(format!(
            "manifest {digest} is labelled {label} but its content is {}",
            if is_index {
                "an index"
            } else {
                "an image manifest"
            }
        ));
    }
    let descriptor = |d: &serde_json::Value| -> Result<(Digest, String), String> {
        let text = d.get("digest").and_then(|v| v.as_str()).unwrap_or_default();
        let media_type = d
            .get("mediaType")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        Ok((text.parse()?, media_type))
    };
    if let Some(children) = children {
        if ancestors.len() + 1 >= MAX_DEPTH {
            walk.problems.push(format!(
                "index {digest}: indexes nest deeper than {MAX_DEPTH}; not walked further"
            ));
            return;
        }
        ancestors.push(digest.clone());
        for child in children {
            match descriptor(child) {
                Ok((child, _)) if ancestors.contains(&child) => walk.problems.push(format!(
                    "index {digest} lists {child}, which contains it (a cycle)"
                )),
                Ok((child, media_type)) => {
                    visit_manifest(store, &child, &media_type, ancestors, visited, walk)
                }
                Err(error) => walk.problems.push(format!("index {digest}: {error}")),
            }
        }
        ancestors.pop();
    }
    if is_image {
        let layers = value.get("layers").and_then(|l| l.as_array());
        for part in value
            .get("config")
            .into_iter()
            .chain(layers.into_iter().flatten())
        {
            match descriptor(part) {
                Ok((blob, _)) => visit_blob(store, &blob, visited, walk),
                Err(error) => walk.problems.push(format!("manifest {digest}: {error}")),
            }
        }
    }
}
