//! Pulling images from registries into the store: the manifest (the host
//! platform's, from an index), then the blobs the store lacks, each
//! written to a temporary file and committed only once its digest checks
//! out; the tag is set last. A pod's app images are pulled before it.

use super::client::{Client, MANIFEST_TYPES};
use super::push::POD_APPS;
use super::{ManifestParts, Options, PARALLEL_BLOBS, Session, parallel};
use crate::names::ImageName;
use crate::store::{Store, to_oci_digest};
use anyhow::{Context, Result, anyhow, bail};
use oci_spec::image::{Descriptor, MediaType};

/// Pulls `name` (by its tag, or its digest) into `store` and tags it
/// there under `name`. A pod comes with its app images, each pulled by
/// the digest its document names and tagged under the name its manifest
/// lists.
pub fn pull(store: &Store, name: &ImageName, options: &Options) -> Result<Descriptor> {
    let session = Session::new(store, options)?;
    let reference = match name.digest() {
        Some(digest) => digest.to_string(),
        None => name.tag().unwrap_or("latest").to_string(),
    };
    let result = pull_reference(&session, name, &reference, None);
    // Even a failed pull learned where blobs are.
    session.known.save(store);
    result
}

/// The tags the registry of `name` has for its repository.
pub fn list_tags(store: &Store, name: &ImageName, options: &Options) -> Result<Vec<String>> {
    let session = Session::new(store, options)?;
    let endpoint = session.endpoint(name);
    session.client(&endpoint)?.list_tags(&endpoint.repository)
}

/// Pulls `reference` (a tag or a digest) of `name`'s repository and tags
/// it as `name`; `app_of` is the pod being pulled, if any.
fn pull_reference(
    session: &Session,
    name: &ImageName,
    reference: &str,
    app_of: Option<&ImageName>,
) -> Result<Descriptor> {
    let store = session.store;
    let endpoint = session.endpoint(name);
    let client = session.client(&endpoint)?;
    let repository = &endpoint.repository;
    let by_digest = reference.parse::<crate::digest::Digest>().ok();
    let (mut bytes, mut media_type) = client.get_manifest(repository, reference)?;
    if let Some(wanted) = &by_digest
        && crate::digest::Digest::of(&bytes) != *wanted
    {
        bail!(
            "{}: asked for manifest {wanted}, the registry sent one with digest {}",
            endpoint.display(),
            crate::digest::Digest::of(&bytes)
        );
    }
    let mut parts =
        ManifestParts::parse(&bytes, &format!("the manifest of {}", endpoint.display()))?;
    if !parts.children.is_empty() {
        let child = host_platform(&parts, &endpoint.display())?;
        (bytes, media_type) = client.get_manifest(repository, child.as_str())?;
        parts = ManifestParts::parse(
            &bytes,
            &format!("manifest {child} of {}", endpoint.display()),
        )?;
        if !parts.children.is_empty() {
            bail!(
                "{}: the platform's manifest {child} is itself an index",
                endpoint.display()
            );
        }
    }
    download(session, &client, repository, &parts)?;
    let (bytes, media_type) = super::docker::to_oci(bytes, media_type, &endpoint.display())?;
    let digest = store.write_blob(&bytes)?;
    let mut descriptor = Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        to_oci_digest(&digest),
    );
    // The store's index keeps what the manifest is (a pod, say), as
    // herd's own builds do.
    let artifact_type = crate::registry::client::parse_json(&bytes, "the manifest")?
        .get("artifactType")
        .and_then(|t| t.as_str())
        .map(str::to_string);
    if artifact_type.as_deref() == Some(crate::pods::ARTIFACT_TYPE) {
        if let Some(pod) = app_of {
            bail!("{name}, an app of the pod {pod}, is itself a pod");
        }
        // Apps first: a pod in the store has its apps.
        pull_apps(session, name, &parts)?;
    }
    descriptor.set_artifact_type(artifact_type.map(|t| MediaType::from(t.as_str())));
    store.set_tag(name, &descriptor)?;
    session.progress.line(&format!(
        "pulled {name} from {}{}{reference} ({digest})",
        endpoint.display(),
        if by_digest.is_some() { "@" } else { ":" }
    ));
    Ok(descriptor)
}

/// Pulls the app images of the pod `pod`: the names its manifest lists,
/// at the digests its document runs.
fn pull_apps(session: &Session, pod: &ImageName, parts: &ManifestParts) -> Result<()> {
    let apps = parts
        .annotations
        .get(POD_APPS)
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    // blobs[0] is the config, then the layers: the document is the first.
    let document = parts
        .blobs
        .get(1)
        .ok_or_else(|| anyhow!("the pod {pod} has no document layer"))?;
    let document = session.store.read_blob(&document.digest)?;
    let document = String::from_utf8(document)
        .map_err(|_| anyhow!("the document of the pod {pod} is not UTF-8"))?;
    let digests = crate::pods::image_digests(&document)
        .map_err(|e| anyhow!("the document of the pod {pod}: {e:#}"))?;
    for app in apps.split_whitespace() {
        let app: ImageName = app
            .parse()
            .map_err(|e| anyhow!("{pod}: its {POD_APPS} annotation names {app:?}: {e}"))?;
        let digest = digests.get(&app.repository()).ok_or_else(|| {
            anyhow!(
                "the pod {pod} lists the app {app} but its document runs no image of {}",
                app.repository()
            )
        })?;
        pull_reference(session, &app, digest, Some(pod))
            .with_context(|| format!("pulling {app}, an app of the pod {pod}"))?;
    }
    Ok(())
}

fn download(
    session: &Session,
    client: &Client,
    repository: &str,
    parts: &ManifestParts,
) -> Result<()> {
    let store = session.store;
    parallel(&parts.blobs, PARALLEL_BLOBS, |blob| {
        // Kept from gc until the tag is set, whether reused or downloaded.
        store.protect(std::slice::from_ref(&blob.digest))?;
        if !store.has_blob(&blob.digest) {
            let progress = session.progress.blob(&blob.digest, blob.size);
            client.download_blob(repository, &blob.digest, blob.size, store, &progress)?;
            progress.finish("downloaded");
        }
        session
            .known
            .record(client.host(), &blob.digest, repository);
        Ok(())
    })
}

/// The digest of the linux manifest for this machine's architecture.
fn host_platform(index: &ManifestParts, what: &str) -> Result<crate::digest::Digest> {
    let architecture = crate::build::host_architecture();
    let platform = |value: &serde_json::Value, key: &str| {
        value
            .get("platform")
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let mut offered = Vec::new();
    for (child, value) in &index.children {
        let media_type = value
            .get("mediaType")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let (os, arch) = (platform(value, "os"), platform(value, "architecture"));
        if os == "linux"
            && arch == architecture
            && (media_type.is_empty() || MANIFEST_TYPES.contains(&media_type))
        {
            return Ok(child.digest.clone());
        }
        offered.push(format!("{os}/{arch}"));
    }
    bail!(
        "{what} has no image for linux/{architecture}; it has {}",
        offered.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_gives_the_manifest_of_this_machine() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let arch = crate::build::host_architecture();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": MANIFEST_TYPES[0], "digest": digest('a'), "size": 1, "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": MANIFEST_TYPES[2], "digest": digest('b'), "size": 1, "platform": {"os": "linux", "architecture": arch}},
            ],
        });
        let parts = ManifestParts::parse(index.to_string().as_bytes(), "index").unwrap();
        assert_eq!(host_platform(&parts, "x").unwrap().to_string(), digest('b'));

        let other = serde_json::json!({"manifests": [
            {"digest": digest('a'), "size": 1, "platform": {"os": "windows", "architecture": arch}},
        ]});
        let parts = ManifestParts::parse(other.to_string().as_bytes(), "index").unwrap();
        let error = host_platform(&parts, "reg/app").unwrap_err().to_string();
        assert!(
            error.contains(&format!("windows/{arch}")) && error.contains("reg/app"),
            "{error}"
        );
    }

    #[test]
    fn malformed_manifests_are_errors_not_panics() {
        for bad in [
            &b"<html>"[..],
            br#"{"layers": [{"digest": "md5:x", "size": 1}]}"#,
            br#"{"config": {"digest": "sha256:ab"}}"#,
            b"{}",
        ] {
            assert!(
                ManifestParts::parse(bad, "m").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
