//! Docker schema 2 manifests turned into OCI ones on pull, as `skopeo copy
//! --format oci` does: the store is an OCI layout, and skopeo, podman,
//! umoci and herd's own readers look there for OCI media types only.
//! Blobs stay as they are (a Docker image config is an OCI config, a
//! Docker gzip layer an OCI gzip layer); only the manifest is rewritten, so
//! its digest changes.

use anyhow::{Context, Result};

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Docker media types of a manifest's parts, and their OCI names.
const PARTS: [(&str, &str); 4] = [
    (
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.oci.image.config.v1+json",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.oci.image.layer.v1.tar+gzip",
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.v1.tar",
    ),
    (
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    ),
];

/// The manifest as stored: a Docker schema 2 manifest converted to OCI,
/// anything else unchanged. Returns the bytes and their media type.
pub fn to_oci(bytes: Vec<u8>, media_type: String, what: &str) -> Result<(Vec<u8>, String)> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("{what}: parsing the manifest"))?;
    let labelled = value.get("mediaType").and_then(|t| t.as_str());
    if media_type != DOCKER_MANIFEST && labelled != Some(DOCKER_MANIFEST) {
        return Ok((bytes, media_type));
    }
    value["mediaType"] = OCI_MANIFEST.into();
    let rename = |descriptor: &mut serde_json::Value| {
        let current = descriptor.get("mediaType").and_then(|t| t.as_str());
        if let Some((_, oci)) = PARTS.iter().find(|(docker, _)| Some(*docker) == current) {
            descriptor["mediaType"] = (*oci).into();
        }
    };
    if let Some(config) = value.get_mut("config") {
        rename(config);
    }
    if let Some(layers) = value.get_mut("layers").and_then(|l| l.as_array_mut()) {
        layers.iter_mut().for_each(rename);
    }
    Ok((crate::store::canonical_json(&value)?, OCI_MANIFEST.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_docker_manifest_becomes_an_oci_one_with_the_same_blobs() {
        let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let docker = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": PARTS[0].0, "digest": digest('a'), "size": 1},
            "layers": [{"mediaType": PARTS[1].0, "digest": digest('b'), "size": 2}],
        });
        let (bytes, media_type) =
            to_oci(docker.to_string().into_bytes(), DOCKER_MANIFEST.into(), "m").unwrap();
        assert_eq!(media_type, OCI_MANIFEST);
        let oci: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(oci["mediaType"], OCI_MANIFEST);
        assert_eq!(oci["config"]["mediaType"], PARTS[0].1);
        assert_eq!(oci["config"]["digest"], digest('a'));
        assert_eq!(oci["layers"][0]["mediaType"], PARTS[1].1);
        assert_eq!(oci["layers"][0]["size"], 2);

        let already = br#"{"schemaVersion":2,"layers":[]}"#.to_vec();
        let (same, kept) = to_oci(already.clone(), OCI_MANIFEST.into(), "m").unwrap();
        assert_eq!((same, kept.as_str()), (already, OCI_MANIFEST));
    }
}
