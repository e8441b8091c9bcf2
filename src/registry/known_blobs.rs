//! Where herd last saw each blob of the store on each registry, so a push
//! to another repository of the same registry can mount the blob instead
//! of uploading it. Kept in `registry-blobs.json` in the store directory
//! (OCI layout readers ignore unknown files). It is only a hint: a wrong
//! entry costs one mount request that the registry answers with 202.

use crate::digest::Digest;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

const FILE: &str = "registry-blobs.json";

/// Repositories remembered per blob and registry; the newest come first.
const MAX_REPOSITORIES: usize = 4;

/// registry host -> digest -> repositories.
type Map = BTreeMap<String, BTreeMap<String, Vec<String>>>;

pub struct KnownBlobs {
    path: PathBuf,
    seen: Mutex<Map>,
    /// Something was recorded this run: only then is the file written.
    recorded: std::sync::atomic::AtomicBool,
}

impl KnownBlobs {
    /// Reads the store's file; a missing or unreadable one is empty.
    pub fn load(store: &Store) -> KnownBlobs {
        let path = store.root().join(FILE);
        KnownBlobs {
            seen: Mutex::new(read(&path)),
            path,
            recorded: Default::default(),
        }
    }

    /// Repositories of `host` other than `except` known to hold `digest`.
    pub fn sources(&self, host: &str, digest: &Digest, except: &str) -> Vec<String> {
        let seen = self.seen.lock().expect("known blobs lock");
        let repositories = seen.get(host).and_then(|blobs| blobs.get(digest.as_str()));
        repositories
            .into_iter()
            .flatten()
            .filter(|r| *r != except)
            .cloned()
            .collect()
    }

    pub fn record(&self, host: &str, digest: &Digest, repository: &str) {
        let mut seen = self.seen.lock().expect("known blobs lock");
        add(&mut seen, host, digest.as_str(), repository);
        self.recorded
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Merges what this run saw into the file, under the store's lock so
    /// concurrent pushes keep each other's entries. Blobs no longer in the
    /// store are dropped: herd will never push them again. A failure costs
    /// only future mounts, so it is logged, not returned. A run that
    /// recorded nothing (a pull that failed at its manifest) writes nothing.
    pub fn save(&self, store: &Store) {
        if !self.recorded.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let result = (|| -> anyhow::Result<()> {
            let _lock = store.lock()?;
            let mut merged = read(&self.path);
            for (host, blobs) in self.seen.lock().expect("known blobs lock").iter() {
                for (digest, repositories) in blobs {
                    for repository in repositories.iter().rev() {
                        add(&mut merged, host, digest, repository);
                    }
                }
            }
            for blobs in merged.values_mut() {
                blobs
                    .retain(|digest, _| digest.parse::<Digest>().is_ok_and(|d| store.has_blob(&d)));
            }
            merged.retain(|_, blobs| !blobs.is_empty());
            crate::fsutil::write_atomic(&self.path, &serde_json::to_vec(&merged)?)
        })();
        if let Err(error) = result {
            tracing::warn!("could not update {}: {error:#}", self.path.display());
        }
    }
}

fn read(path: &std::path::Path) -> Map {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

fn add(map: &mut Map, host: &str, digest: &str, repository: &str) {
    let repositories = map
        .entry(host.to_string())
        .or_default()
        .entry(digest.to_string())
        .or_default();
    repositories.retain(|r| r != repository);
    repositories.insert(0, repository.to_string());
    repositories.truncate(MAX_REPOSITORIES);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_repositories_per_registry_and_forgets_blobs_gone_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let kept = store.write_blob(b"kept").unwrap();
        let gone = Digest::of(b"gone");
        let known = KnownBlobs::load(&store);
        known.record("reg:5000", &kept, "a");
        known.record("reg:5000", &kept, "b");
        known.record("reg:5000", &gone, "a");
        known.save(&store);
        let reloaded = KnownBlobs::load(&store);
        assert_eq!(reloaded.sources("reg:5000", &kept, "c"), vec!["b", "a"]);
        assert_eq!(reloaded.sources("reg:5000", &kept, "b"), vec!["a"]);
        assert!(reloaded.sources("other:5000", &kept, "c").is_empty());
        assert!(reloaded.sources("reg:5000", &gone, "c").is_empty());
    }
}
