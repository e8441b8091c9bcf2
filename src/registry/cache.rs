//! The registry build cache: CI runners share the build cache through the
//! registry the images go to. A build's cache key (`crate::cache::key`,
//! which covers every input and the digests of the dependencies) is
//! published as a tag `herd-cache-<key>` in the image's own repository;
//! the manifest under it is a small artifact (`ARTIFACT_TYPE`) whose
//! `io.herd.cache.record` annotation names the key and each tag the build
//! produced with its manifest digest.
//!
//! Why a tag and not an OCI 1.1 referrer: a referrer points from the image
//! to the artifact, so finding it needs the image's digest, which is what
//! the runner is asking for; and Debian's docker-registry (distribution
//! 2.8) has no referrers API. A tag is answered by every registry in one
//! request.
//!
//! A hit fetches each named manifest by digest (checked against the bytes:
//! a record whose manifest does not match is ignored with a warning) and
//! its config; layers become lazy blobs (`store::lazy`), fetched only when
//! something needs them (`fetch_lazy`, `materialize`). A record may only
//! name the repositories the unit builds, so a cache writer cannot make a
//! runner tag another image.

use super::client::Client;
use super::progress::BlobProgress;
use super::{ManifestParts, Options, PARALLEL_BLOBS, Session, parallel};
use crate::digest::Digest;
use crate::names::ImageName;
use crate::store::{LazyLocation, Store, to_oci_digest};
use anyhow::{Context, Result, anyhow, bail};
use oci_spec::image::{Descriptor, MediaType};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// The `artifactType` of a cache record's manifest.
pub const ARTIFACT_TYPE: &str = "application/vnd.herd.build-cache.v1";
/// The manifest annotation holding the record (JSON of `Entry`).
pub const RECORD: &str = "io.herd.cache.record";
/// Cache tags are this followed by the key's hex digits.
pub const TAG_PREFIX: &str = "herd-cache-";
/// OCI 1.1's empty descriptor, the config and only layer of a record.
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";
/// A config is a few KiB; a record naming a bigger one is not trusted
/// with the bandwidth.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// A unit builds an image, or a pod and its apps: a handful of tags.
const MAX_TAGS: usize = 64;

/// Bytes this process fetched for the build cache: manifests, configs and
/// lazy layers, for the build's summary.
static FETCHED: AtomicU64 = AtomicU64::new(0);

pub fn bytes_fetched() -> u64 {
    FETCHED.load(Ordering::Relaxed)
}

/// What a cache tag's manifest records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    /// (name, manifest digest), apps before their pod, as `cache::Record`.
    tags: Vec<(String, String)>,
}

/// The registry build cache of one `herd build`.
pub struct RemoteCache<'a> {
    session: Session<'a>,
    /// Which images use it: those whose name starts with this.
    prefix: String,
    /// Publish the keys of what is built (`--cache-push`).
    pub publish: bool,
}

impl<'a> RemoteCache<'a> {
    pub fn new(store: &'a Store, prefix: &str, publish: bool) -> Result<RemoteCache<'a>> {
        let prefix = prefix.trim_end_matches('/').to_string();
        if prefix.is_empty() {
            bail!("--cache needs a registry (host[:port]) or a name prefix (host/path)");
        }
        Ok(RemoteCache {
            session: Session::new(store, &Options::default())?,
            prefix,
            publish,
        })
    }

    /// Whether the images of `repository` (`host/path`) use this cache:
    /// the prefix is its registry or a whole leading part of its path.
    pub fn applies_to(&self, repository: &str) -> bool {
        repository == self.prefix
            || repository
                .strip_prefix(&self.prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    fn tag_name(repository: &str, key: &Digest) -> Result<ImageName> {
        format!("{repository}:{TAG_PREFIX}{}", key.hex())
            .parse()
            .map_err(|e| anyhow!("{repository}: {e}"))
    }

    /// Looks `key` up in the repository `produces[0]`; on a hit every
    /// image the record names is in the store (layers lazy) and tagged,
    /// and the record is returned. A record that cannot be used is a
    /// warning and a miss: the unit is built as if there were none.
    pub fn lookup(&self, produces: &[String], key: &Digest) -> Option<Vec<(String, String)>> {
        let repository = produces.first()?;
        match self.try_lookup(repository, produces, key) {
            Ok(found) => found,
            Err(error) => {
                eprintln!(
                    "warning: ignoring the registry cache entry {TAG_PREFIX}{} of {repository}: {}",
                    key.hex(),
                    crate::terminal::escape_controls(&format!("{error:#}"))
                );
                None
            }
        }
    }

    fn try_lookup(
        &self,
        repository: &str,
        produces: &[String],
        key: &Digest,
    ) -> Result<Option<Vec<(String, String)>>> {
        let name = Self::tag_name(repository, key)?;
        let endpoint = self.session.endpoint(&name);
        let client = self.session.client(&endpoint)?;
        let tag = name.tag().unwrap_or_default();
        let Some((bytes, _)) = client.find_manifest(&endpoint.repository, tag)? else {
            return Ok(None);
        };
        FETCHED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let value = super::client::parse_json(&bytes, "the cache record")?;
        if value.get("artifactType").and_then(|t| t.as_str()) != Some(ARTIFACT_TYPE) {
            bail!("its manifest is not a herd cache record (artifactType {ARTIFACT_TYPE})");
        }
        let entry = value
            .get("annotations")
            .and_then(|a| a.get(RECORD))
            .and_then(|r| r.as_str())
            .ok_or_else(|| anyhow!("its manifest has no {RECORD} annotation"))?;
        let entry: Entry = serde_json::from_str(entry)
            .map_err(|e| anyhow!("its {RECORD} annotation does not parse: {e}"))?;
        if entry.key != key.to_string() {
            bail!("it records the key {}, not {key}", entry.key);
        }
        if entry.tags.is_empty() || entry.tags.len() > MAX_TAGS {
            bail!("it names {} images (1 to {MAX_TAGS})", entry.tags.len());
        }
        let mut images = Vec::new();
        for (tag, digest) in &entry.tags {
            let tag: ImageName = tag
                .parse()
                .map_err(|e| anyhow!("it names {tag:?}, not an image name: {e}"))?;
            if !produces.contains(&tag.repository()) {
                bail!(
                    "it names {tag}, which this directory does not build (it builds {})",
                    produces.join(", ")
                );
            }
            let digest: Digest = digest
                .parse()
                .map_err(|e| anyhow!("it names {digest:?} for {tag}: {e}"))?;
            images.push((tag, digest));
        }
        for (tag, digest) in &images {
            self.fetch_image(tag, digest)
                .with_context(|| format!("{tag} at {digest}"))?;
        }
        Ok(Some(entry.tags))
    }

    /// Fetches the manifest `digest` of `name`'s repository and its config
    /// (a pod artifact: all of it, a few KiB), records its layers as lazy
    /// blobs and tags it `name`.
    fn fetch_image(&self, name: &ImageName, digest: &Digest) -> Result<()> {
        let store = self.session.store;
        let endpoint = self.session.endpoint(name);
        let client = self.session.client(&endpoint)?;
        let repository = &endpoint.repository;
        // The client checks the bytes against the digest asked for.
        let (bytes, media_type) = client
            .find_manifest(repository, digest.as_str())?
            .ok_or_else(|| anyhow!("{} has no manifest {digest}", endpoint.display()))?;
        FETCHED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if media_type != MediaType::ImageManifest.to_string() {
            bail!("its manifest is a {media_type}, not an OCI image manifest as herd pushes");
        }
        let parts = ManifestParts::parse(&bytes, "the manifest")?;
        if !parts.children.is_empty() {
            bail!("its manifest is an index, not what a herd build produces");
        }
        let value = super::client::parse_json(&bytes, "the manifest")?;
        let artifact_type = value
            .get("artifactType")
            .and_then(|t| t.as_str())
            .map(str::to_string);
        let is_pod = artifact_type.as_deref() == Some(crate::pods::ARTIFACT_TYPE);
        let layer_types: Vec<String> = value
            .get("layers")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .map(|l| {
                l.get("mediaType")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let digests: Vec<Digest> = parts.blobs.iter().map(|b| b.digest.clone()).collect();
        // Kept from gc from here, lazy or not, until the tag holds them.
        store.protect(&digests)?;
        for (index, blob) in parts.blobs.iter().enumerate() {
            if store.has_blob(&blob.digest) {
                continue;
            }
            if index == 0 || is_pod {
                if index == 0 && blob.size > MAX_CONFIG_BYTES {
                    bail!("its config claims {} bytes", blob.size);
                }
                let quiet = super::progress::Progress::quiet().blob(&blob.digest, blob.size);
                download(&client, repository, &blob.digest, blob.size, store, &quiet)?;
            } else {
                let location = LazyLocation {
                    repository: name.repository(),
                    size: blob.size,
                    media_type: layer_types.get(index - 1).cloned().unwrap_or_default(),
                };
                store.record_lazy(&blob.digest, &location)?;
            }
        }
        self.session.known.record(client.host(), digest, repository);
        let stored = store.write_blob(&bytes)?;
        let mut descriptor = Descriptor::new(
            MediaType::ImageManifest,
            bytes.len() as u64,
            to_oci_digest(&stored),
        );
        descriptor.set_artifact_type(artifact_type.map(|t| MediaType::from(t.as_str())));
        store.set_tag(name, &descriptor)
    }

    /// Publishes `tags`, the build under `key` of the unit whose first
    /// repository is `repository`: pushes the images (a no-op for what
    /// the registry has), then the record. Returns the bytes uploaded.
    pub fn publish_entry(
        &self,
        repository: &str,
        key: &Digest,
        tags: &[(String, String)],
    ) -> Result<u64> {
        let store = self.session.store;
        let cache_name = Self::tag_name(repository, key)?;
        let endpoint = self.session.endpoint(&cache_name);
        let client = self.session.client(&endpoint)?;
        let tag = cache_name.tag().unwrap_or_default();
        let entry = Entry {
            key: key.to_string(),
            tags: tags.to_vec(),
        };
        let manifest = record_manifest(&entry)?;
        let digest = Digest::of(&manifest);
        if client
            .manifest_digest(&endpoint.repository, tag)?
            .as_deref()
            == Some(digest.as_str())
        {
            return Ok(0); // published already
        }
        let names = tags
            .iter()
            .map(|(name, _)| name.parse::<ImageName>().map_err(anyhow::Error::msg))
            .collect::<Result<Vec<_>>>()?;
        let pushed = super::push(store, &names, &self.session.options)?;
        let empty = Digest::of(EMPTY);
        if !client.has_blob(&endpoint.repository, &empty)? {
            store.write_blob(EMPTY)?;
            let progress = self.session.progress.blob(&empty, EMPTY.len() as u64);
            client.upload_blob(
                &endpoint.repository,
                &empty,
                EMPTY.len() as u64,
                &store.blob_path(&empty),
                &progress,
            )?;
        }
        client.put_manifest(
            &endpoint.repository,
            tag,
            MediaType::ImageManifest.as_ref(),
            &manifest,
        )?;
        Ok(pushed.bytes_uploaded)
    }
}

/// The manifest of a cache record: OCI 1.1's artifact form (empty config
/// and layer, the record in an annotation), which registries that predate
/// OCI 1.1 store as an ordinary image manifest.
fn record_manifest(entry: &Entry) -> Result<Vec<u8>> {
    let empty = serde_json::json!({
        "mediaType": EMPTY_TYPE,
        "digest": Digest::of(EMPTY).to_string(),
        "size": EMPTY.len(),
    });
    crate::store::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::ImageManifest.to_string(),
        "artifactType": ARTIFACT_TYPE,
        "config": empty,
        "layers": [empty],
        "annotations": {RECORD: serde_json::to_string(entry)?},
    }))
}

fn download(
    client: &Client,
    repository: &str,
    digest: &Digest,
    size: u64,
    store: &Store,
    progress: &BlobProgress,
) -> Result<()> {
    client.download_blob(repository, digest, size, store, progress)?;
    FETCHED.fetch_add(size, Ordering::Relaxed);
    Ok(())
}

/// Fetches the lazy blobs among `digests` (the others are skipped) from
/// where their records say, checking each against its digest and size.
pub fn fetch_lazy(store: &Store, digests: &[Digest]) -> Result<()> {
    let wanted: Vec<(Digest, LazyLocation)> = digests
        .iter()
        .filter_map(|d| store.lazy_location(d).map(|l| (d.clone(), l)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let session = Session::new(store, &Options::default())?;
    parallel(&wanted, PARALLEL_BLOBS, |(digest, location)| {
        let name: ImageName = location.repository.parse().map_err(|e| {
            anyhow!(
                "the lazy record of {digest} names {:?}: {e}",
                location.repository
            )
        })?;
        let endpoint = session.endpoint(&name);
        let client = session.client(&endpoint)?;
        store.protect(std::slice::from_ref(digest))?;
        let progress = session.progress.blob(digest, location.size);
        download(
            &client,
            &endpoint.repository,
            digest,
            location.size,
            store,
            &progress,
        )
        .with_context(|| {
            format!("fetching layer {digest} of {name}, which came from the build cache")
        })?;
        progress.finish("fetched from the build cache");
        store.forget_lazy(digest)
    })
}

/// Fetches every lazy blob of the image `descriptor`: before a command
/// hands the store's files to another tool (skopeo, podman).
pub fn materialize(store: &Store, descriptor: &Descriptor) -> Result<()> {
    let walk = store.walk(descriptor);
    fetch_lazy(store, &walk.lazy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_an_oci_artifact_with_its_entry_in_an_annotation() {
        let entry = Entry {
            key: Digest::of(b"key").to_string(),
            tags: vec![("x.io/a:1".into(), Digest::of(b"m").to_string())],
        };
        let bytes = record_manifest(&entry).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["artifactType"], ARTIFACT_TYPE);
        let back: Entry =
            serde_json::from_str(value["annotations"][RECORD].as_str().unwrap()).unwrap();
        assert_eq!(back.tags, entry.tags);
        // The same entry is the same manifest: a re-publish is one HEAD.
        assert_eq!(bytes, record_manifest(&entry).unwrap());
    }
}
