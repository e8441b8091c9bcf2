//! Lazy blobs: layers of an image that came from the registry build cache
//! (`registry::cache`) with their manifest and config only. The store
//! knows where each lives (`cache/lazy/<hex>`: the repository, size and
//! media type) and fetches it when something needs the bytes: a build on
//! the image's root, `install`, `test`, `push`.
//!
//! A lazy blob is known-but-absent: a walk lists it apart from the missing
//! ones, so `set_tag` accepts the image, fsck does not call it corruption
//! and gc forgets the record when no tag reaches it any more. The record
//! is only a location: the bytes fetched are checked against the digest
//! (and size) like any download, so a forged record costs a failed fetch,
//! never a wrong layer.

use super::Store;
use crate::digest::Digest;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub(super) const DIR: &str = "cache/lazy";
/// A record is a few hundred bytes; anything bigger is not one.
const MAX_RECORD_BYTES: u64 = 4096;

/// Where a lazy blob can be fetched from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// The image name (repository, no tag) whose registry holds the blob;
    /// turned into an endpoint with the config file when fetched.
    pub repository: String,
    pub size: u64,
    pub media_type: String,
}

impl Store {
    fn lazy_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(DIR).join(digest.hex())
    }

    /// Records that `digest` lives at `location` and is not in `blobs/`.
    pub fn record_lazy(&self, digest: &Digest, location: &Location) -> Result<()> {
        super::create_private_dir(&self.root.join("cache"))?;
        super::create_private_dir(&self.root.join(DIR))?;
        crate::fsutil::write_atomic(&self.lazy_path(digest), &serde_json::to_vec(location)?)
    }

    /// Where the lazy blob `digest` lives, if it is one (absent from
    /// `blobs/` and recorded).
    pub fn lazy_location(&self, digest: &Digest) -> Option<Location> {
        if self.has_blob(digest) {
            return None;
        }
        let path = self.lazy_path(digest);
        let file = std::fs::File::open(&path).ok()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_RECORD_BYTES), &mut bytes)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the record of `digest` (fetched now, or unreachable).
    pub fn forget_lazy(&self, digest: &Digest) -> Result<()> {
        match std::fs::remove_file(self.lazy_path(digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing the lazy record of {digest}"))
            }
            _ => Ok(()),
        }
    }

    /// Removes the records of blobs not in `keep` or already in `blobs/`;
    /// returns how many. Called by gc under the store lock.
    pub(super) fn prune_lazy(&self, keep: &std::collections::HashSet<Digest>) -> Result<usize> {
        let Ok(entries) = std::fs::read_dir(self.root.join(DIR)) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".herd-tmp-") {
                continue; // clean's business
            }
            let digest = format!("sha256:{name}").parse::<Digest>().ok();
            if digest
                .as_ref()
                .is_some_and(|d| keep.contains(d) && !self.has_blob(d))
            {
                continue;
            }
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lazy_blob_is_known_until_it_is_fetched_and_forgotten_when_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = Digest::of(b"layer");
        let location = Location {
            repository: "127.0.0.1:5000/app".into(),
            size: 5,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        };
        store.record_lazy(&digest, &location).unwrap();
        assert_eq!(store.lazy_location(&digest), Some(location));
        // Once the bytes are there, the blob is an ordinary one.
        store.write_blob(b"layer").unwrap();
        assert_eq!(store.lazy_location(&digest), None);
        assert_eq!(store.prune_lazy(&Default::default()).unwrap(), 1);
        assert!(!store.lazy_path(&digest).exists());
    }
}
