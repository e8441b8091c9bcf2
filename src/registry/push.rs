//! Pushing store images to registries: blobs first (skipped when the
//! registry has them, mounted when it has them in another repository,
//! uploaded otherwise), the manifest last, so a registry never holds a
//! manifest whose blobs are missing.

use super::client::Client;
use super::{BlobRef, ManifestParts, Options, PARALLEL_BLOBS, Session, parallel};
use crate::names::ImageName;
use crate::store::{Store, from_oci_digest};
use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The manifest annotation of a pod: the full names of its app images.
pub const POD_APPS: &str = "io.herd.pod.apps";

/// What a push did, for `--json`.
#[derive(Debug, Default, Serialize)]
pub struct PushSummary {
    pub images: Vec<PushedImage>,
    pub bytes_uploaded: u64,
    pub blobs_uploaded: u64,
    pub blobs_skipped: u64,
    pub blobs_mounted: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PushedImage {
    /// The name in the store.
    pub name: String,
    /// Where it went: `host/repository:tag`.
    pub destination: String,
    pub digest: String,
}

#[derive(Default)]
struct Counts {
    bytes_uploaded: AtomicU64,
    uploaded: AtomicU64,
    skipped: AtomicU64,
    mounted: AtomicU64,
}

/// Pushes each named image of the store, and for a pod its app images
/// first, to the registry its name (or `options`, or the config file's
/// mirror) designates.
pub fn push(store: &Store, names: &[ImageName], options: &Options) -> Result<PushSummary> {
    let session = Session::new(store, options)?;
    let pusher = Pusher {
        session: &session,
        counts: Counts::default(),
        pushed: Mutex::default(),
    };
    let mut done = HashSet::new();
    let result = names
        .iter()
        .try_for_each(|name| pusher.push_name(name, &mut done));
    // Even a failed push learned where blobs are.
    session.known.save(store);
    result?;
    let counts = pusher.counts;
    Ok(PushSummary {
        images: pusher.pushed.into_inner().expect("pushed lock"),
        bytes_uploaded: counts.bytes_uploaded.into_inner(),
        blobs_uploaded: counts.uploaded.into_inner(),
        blobs_skipped: counts.skipped.into_inner(),
        blobs_mounted: counts.mounted.into_inner(),
    })
}

struct Pusher<'s, 'a> {
    session: &'s Session<'a>,
    counts: Counts,
    pushed: Mutex<Vec<PushedImage>>,
}

impl Pusher<'_, '_> {
    fn push_name(&self, name: &ImageName, done: &mut HashSet<ImageName>) -> Result<()> {
        if !done.insert(name.clone()) {
            return Ok(());
        }
        let store = self.session.store;
        let descriptor = store.require(name)?;
        // Kept from gc while it is sent (another herd may move the tag).
        store.protect_image(&descriptor)?;
        let digest = from_oci_digest(descriptor.digest());
        let bytes = store.read_blob(&digest)?;
        let parts = ManifestParts::parse(&bytes, &format!("the manifest of {name}"))?;
        if let Some(apps) = parts.annotations.get(POD_APPS).and_then(|v| v.as_str()) {
            for app in apps.split_whitespace() {
                let app: ImageName = app
                    .parse()
                    .map_err(|e| anyhow!("{name}: its {POD_APPS} annotation names {app:?}: {e}"))?;
                self.push_name(&app, done)
                    .with_context(|| format!("pushing {app}, an app of the pod {name}"))?;
            }
        }
        let endpoint = self.session.endpoint(name);
        let client = self.session.client(&endpoint)?;
        // A name pinned by digest and without a tag is pushed by digest.
        let by_digest = digest.to_string();
        let tag = match (name.tag(), name.digest()) {
            (Some(tag), _) => tag,
            (None, Some(_)) => by_digest.as_str(),
            (None, None) => "latest",
        };
        let media_type = descriptor.media_type().to_string();
        self.push_manifest(
            &client,
            &endpoint.repository,
            tag,
            &digest,
            &bytes,
            &parts,
            &media_type,
        )?;
        let separator = if tag == by_digest { "@" } else { ":" };
        let destination = format!("{}{separator}{tag}", endpoint.display());
        self.session
            .progress
            .line(&format!("pushed {name} to {destination} ({digest})"));
        self.pushed.lock().expect("pushed lock").push(PushedImage {
            name: name.to_string(),
            destination,
            digest: digest.to_string(),
        });
        Ok(())
    }

    /// Pushes what a manifest references, then the manifest under
    /// `reference`. An unchanged manifest already there costs one HEAD.
    #[allow(clippy::too_many_arguments)]
    fn push_manifest(
        &self,
        client: &Client,
        repository: &str,
        reference: &str,
        digest: &crate::digest::Digest,
        bytes: &[u8],
        parts: &ManifestParts,
        media_type: &str,
    ) -> Result<()> {
        if client.manifest_digest(repository, reference)?.as_deref() == Some(digest.as_str()) {
            // A registry holds a manifest only with all it references.
            self.counts
                .skipped
                .fetch_add(parts.blobs.len() as u64, Ordering::Relaxed);
            for blob in &parts.blobs {
                self.session
                    .known
                    .record(client.host(), &blob.digest, repository);
            }
            return Ok(());
        }
        for (child, value) in &parts.children {
            let child_bytes = self
                .session
                .store
                .read_blob(&child.digest)
                .context("an index's manifest is missing from the store")?;
            let child_parts =
                ManifestParts::parse(&child_bytes, &format!("manifest {}", child.digest))?;
            let child_type = value
                .get("mediaType")
                .and_then(|t| t.as_str())
                .unwrap_or("application/vnd.oci.image.manifest.v1+json");
            self.push_manifest(
                client,
                repository,
                child.digest.as_str(),
                &child.digest,
                &child_bytes,
                &child_parts,
                child_type,
            )?;
        }
        parallel(&parts.blobs, PARALLEL_BLOBS, |blob| {
            self.push_blob(client, repository, blob)
        })?;
        client.put_manifest(repository, reference, media_type, bytes)
    }

    fn push_blob(&self, client: &Client, repository: &str, blob: &BlobRef) -> Result<()> {
        let session = self.session;
        if session.store.lazy_location(&blob.digest).is_some() {
            // From the build cache: fetched only if this registry lacks it.
            if client.has_blob(repository, &blob.digest)? {
                self.counts.skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            super::fetch_lazy(session.store, std::slice::from_ref(&blob.digest))?;
        }
        let path = session.store.blob_path(&blob.digest);
        let size = std::fs::metadata(&path)
            .with_context(|| {
                format!(
                    "blob {} is missing from the store {}",
                    blob.digest,
                    session.store.root().display()
                )
            })?
            .len();
        if size != blob.size {
            anyhow::bail!(
                "blob {} in the store has {size} bytes, its manifest says {}",
                blob.digest,
                blob.size
            );
        }
        let progress = session.progress.blob(&blob.digest, size);
        let outcome = if client.has_blob(repository, &blob.digest)? {
            self.counts.skipped.fetch_add(1, Ordering::Relaxed);
            "already there"
        } else if self.mount(client, repository, blob) {
            self.counts.mounted.fetch_add(1, Ordering::Relaxed);
            "mounted"
        } else {
            client.upload_blob(repository, &blob.digest, size, &path, &progress)?;
            self.counts.uploaded.fetch_add(1, Ordering::Relaxed);
            self.counts
                .bytes_uploaded
                .fetch_add(size, Ordering::Relaxed);
            "uploaded"
        };
        session
            .known
            .record(client.host(), &blob.digest, repository);
        progress.finish(outcome);
        Ok(())
    }

    /// Tries the repositories where this registry was seen holding the
    /// blob. A refused mount (no pull access there, blob deleted) only
    /// means uploading it.
    fn mount(&self, client: &Client, repository: &str, blob: &BlobRef) -> bool {
        for from in self
            .session
            .known
            .sources(client.host(), &blob.digest, repository)
            .iter()
            .take(2)
        {
            match client.mount_blob(repository, &blob.digest, from) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(error) => tracing::debug!("mount failed, uploading instead: {error:#}"),
            }
        }
        false
    }
}
