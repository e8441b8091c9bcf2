//! Pods: several apps that share one network and one lifetime
//! (FORMATS.md section 7). Each app is built as an image of its own; the
//! pod itself is stored as an OCI artifact whose one layer is a Kubernetes
//! Pod document that references the app images by digest, so a pod can be
//! versioned, pushed and found in a registry like an image, and
//! `podman kube play` runs it as it is.

use crate::build::{BuildOptions, ImageSource, build_source, source_date_epoch};
use crate::error::InputError;
use crate::manifest::{self, Aci, ImageManifest, PodManifest};
use crate::names::ImageName;
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use oci_spec::image::{Descriptor, MediaType};
use serde_json::{Value, json};
use std::path::Path;

pub const ARTIFACT_TYPE: &str = "application/vnd.herd.pod.v1";
pub const DOCUMENT_MEDIA_TYPE: &str = "application/yaml";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Manifest annotation listing the pod's app images (full names,
/// space-separated), so push and install can find them.
pub const APPS_ANNOTATION: &str = "io.herd.pod.apps";

/// A built pod.
#[derive(Debug, Clone)]
pub struct BuiltPod {
    pub name: ImageName,
    pub manifest: Descriptor,
    pub apps: Vec<crate::build::BuiltImage>,
}

/// Reads and checks `pod-manifest.yml` of `dir`.
pub fn read_manifest(dir: &Path) -> Result<(PodManifest, std::path::PathBuf)> {
    let path = dir.join(manifest::POD_MANIFEST);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| InputError::new(&path, format!("cannot read the pod manifest: {e}")))?;
    let files = crate::attributes::read_dir(&dir.join("attributes"))?;
    let mut attributes = crate::attributes::MergedAttributes::new();
    attributes.apply_files(&files);
    Ok((manifest::parse_pod(&path, &text, attributes.value())?, path))
}

/// The name of each app's image: `<pod repository>_<app>:<pod version>`.
fn app_image_name(pod: &ImageName, app: &str) -> Result<ImageName> {
    pod.with_path_suffix(&format!("_{app}"))
        .map_err(anyhow::Error::msg)
}

/// The app's name: given, or the tiny name of its first dependency.
pub fn app_name(app: &manifest::PodApp) -> String {
    app.name.clone().unwrap_or_else(|| {
        app.dependencies[0]
            .parse::<ImageName>()
            .map(|n| n.tiny_name().to_string())
            .unwrap_or_default()
    })
}

/// Builds every app of the pod in `dir`, then the pod artifact.
pub fn build_pod(dir: &Path, store: &Store, options: &BuildOptions) -> Result<BuiltPod> {
    let (pod, manifest_path) = read_manifest(dir)?;
    let epoch = options
        .source_date_epoch
        .map_or_else(|| source_date_epoch(dir), Ok)?;
    let mut name: ImageName = pod
        .name
        .parse()
        .map_err(|e: String| InputError::new(&manifest_path, e))?;
    if name.tag().is_none() {
        let version = crate::build::generated_version(dir, epoch);
        name = name.with_tag(&version).map_err(anyhow::Error::msg)?;
    }
    let options = BuildOptions {
        source_date_epoch: Some(epoch),
        ..options.clone()
    };
    let shared = (name.tiny_name().to_string(), dir.join("attributes"));
    // Every dependency must be there before any app is built: a pod that
    // cannot be built whole leaves nothing behind.
    for app in &pod.pod.apps {
        for dependency in &app.dependencies {
            let dependency: ImageName = dependency.parse().map_err(anyhow::Error::msg)?;
            crate::dependency::resolve(store, &dependency, options.pull).with_context(|| {
                format!(
                    "resolving dependency {dependency} of app {} of pod {name}",
                    app_name(app)
                )
            })?;
        }
    }
    // Resolved once: the apps' builds find every dependency in the store.
    let options = BuildOptions {
        pull: crate::dependency::PullPolicy::Never,
        ..options
    };
    let mut apps = Vec::new();
    for app in &pod.pod.apps {
        let app_name = app_name(app);
        let image = app_image_name(&name, &app_name)?;
        let manifest = ImageManifest {
            name: image.to_string(),
            aci: Aci {
                dependencies: app.dependencies.clone(),
                app: app.app.clone(),
                annotations: pod.pod.annotations.clone(),
            },
            ..Default::default()
        };
        let source = ImageSource::for_pod_app(
            &dir.join(&app_name),
            &manifest_path,
            manifest,
            shared.clone(),
        )?;
        let built = build_source(source, store, &options)
            .with_context(|| format!("building app {app_name} of pod {name}"))?;
        apps.push(built);
    }
    let document = pod_document(store, &name, &pod, &apps)?;
    let manifest = store_artifact(store, &name, &document, &apps)?;
    store.set_tag(&name, &manifest)?;
    Ok(BuiltPod {
        name,
        manifest,
        apps,
    })
}

/// A Kubernetes Pod document: one container per app, images by digest.
fn pod_document(
    store: &Store,
    name: &ImageName,
    pod: &PodManifest,
    apps: &[crate::build::BuiltImage],
) -> Result<String> {
    let mut containers = Vec::new();
    let mut volumes: Vec<Value> = Vec::new();
    let mut port_annotations = Vec::new();
    for (app, built) in pod.pod.apps.iter().zip(apps) {
        // The app's effective fields are those of its image (filled from
        // its dependency where the pod left them empty).
        let oci = store.read_manifest(&built.manifest)?;
        let config = store.read_config(&oci)?;
        let labels = config
            .config()
            .as_ref()
            .and_then(|c| c.labels().clone())
            .unwrap_or_default();
        let mount_points: Vec<Value> = labels
            .get(crate::build::labels::MOUNT_POINTS)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let lifecycle: crate::lifecycle::Lifecycle = labels
            .get(crate::lifecycle::LABEL)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let mut container = json!({
            "name": kube_name(&app_name(app)),
            "image": format!("{}@{}", built.name.repository(), built.manifest.digest()),
            "readinessProbe": crate::units::readiness_probe(&lifecycle),
        });
        let mounts: Vec<Value> = mount_points
            .iter()
            .map(|m| json!({"name": kube_name(m["name"].as_str().unwrap_or("")), "mountPath": m["path"], "readOnly": m["readOnly"]}))
            .collect();
        for mount in &mounts {
            if !volumes.iter().any(|v| v["name"] == mount["name"]) {
                volumes.push(json!({"name": mount["name"], "emptyDir": {}}));
            }
        }
        if !mounts.is_empty() {
            container["volumeMounts"] = json!(mounts);
        }
        // Ports are recorded as an annotation, not as `ports:`: podman
        // refuses port mappings for pods on the host network, which is how
        // these pods run (`podman kube play --network host`).
        let ports = config
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        if !ports.is_empty() {
            port_annotations.push((
                format!("io.herd.ports.{}", kube_name(&app_name(app))),
                ports.join(" "),
            ));
        }
        containers.push(container);
    }
    let mut annotations = serde_json::Map::new();
    annotations.insert("io.herd.pod.name".into(), json!(name.to_string()));
    // `podman kube play` then waits for every app's READY=1 (its init says
    // it once the app's readiness command succeeded), and with
    // `--service-container` tells systemd the pod is ready only then.
    annotations.insert("io.containers.sdnotify".into(), json!("container"));
    for annotation in &pod.pod.annotations {
        annotations.insert(annotation.name.clone(), json!(annotation.value));
    }
    for (key, value) in port_annotations {
        annotations.insert(key, json!(value));
    }
    let mut spec = json!({"containers": containers});
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    let document = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": kube_name(name.tiny_name()), "annotations": annotations},
        "spec": spec,
    });
    Ok(serde_yaml_ng::to_string(&document)?)
}

/// A name Kubernetes accepts (RFC 1123 label): lowercase letters, digits
/// and '-', starting and ending with a letter or digit, at most 63 long.
pub fn kube_name(name: &str) -> String {
    let mut label: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    label.truncate(63);
    label.trim_matches('-').to_string()
}

fn store_artifact(
    store: &Store,
    name: &ImageName,
    document: &str,
    apps: &[crate::build::BuiltImage],
) -> Result<Descriptor> {
    let config_digest = store.write_blob(b"{}")?;
    let layer_digest = store.write_blob(document.as_bytes())?;
    let app_names: Vec<String> = apps.iter().map(|a| a.name.to_string()).collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest.to_string(), "size": 2, "data": "e30="},
        "layers": [{
            "mediaType": DOCUMENT_MEDIA_TYPE,
            "digest": layer_digest.to_string(),
            "size": document.len(),
            "annotations": {"org.opencontainers.image.title": format!("{}.yaml", name.tiny_name())},
        }],
        "annotations": {APPS_ANNOTATION: app_names.join(" ")},
    });
    let mut descriptor = store.write_json(MediaType::ImageManifest, &manifest)?;
    descriptor.set_artifact_type(Some(MediaType::Other(ARTIFACT_TYPE.into())));
    Ok(descriptor)
}

/// The app image names of the pod stored under `descriptor`, or `None`
/// when it is not a pod.
pub fn app_images(store: &Store, descriptor: &Descriptor) -> Result<Option<Vec<ImageName>>> {
    let manifest = store.read_manifest(descriptor)?;
    if manifest
        .artifact_type()
        .as_ref()
        .map(ToString::to_string)
        .as_deref()
        != Some(ARTIFACT_TYPE)
    {
        return Ok(None);
    }
    let apps = manifest
        .annotations()
        .as_ref()
        .and_then(|a| a.get(APPS_ANNOTATION))
        .cloned()
        .unwrap_or_default();
    Ok(Some(
        apps.split_whitespace()
            .map(|n| n.parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?,
    ))
}

/// The images a pod document runs: repository -> digest, from its
/// containers' `image: repository@sha256:...`.
pub fn image_digests(document: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let value: Value = serde_yaml_ng::from_str(document).context("not a YAML document")?;
    let containers = value
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .context("it has no spec.containers")?;
    let mut digests = std::collections::BTreeMap::new();
    for container in containers {
        let image = container["image"].as_str().unwrap_or_default();
        let Some((repository, digest)) = image.rsplit_once('@') else {
            bail!("the image {image:?} is not repository@digest");
        };
        let digest: crate::digest::Digest = digest
            .parse()
            .map_err(|e| anyhow::anyhow!("the image {image:?}: {e}"))?;
        digests.insert(repository.to_string(), digest.to_string());
    }
    Ok(digests)
}

/// What `herd fsck` finds wrong with pods: an app image missing from the
/// store, or not the one the pod's document runs.
pub fn check_apps(store: &Store) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for tag in store.tags()? {
        let Ok(Some(apps)) = app_images(store, &tag.descriptor) else {
            continue;
        };
        let Ok(pod) = tag.name.parse::<ImageName>() else {
            continue;
        };
        let digests = kube_document(store, &pod)
            .and_then(|document| image_digests(&document))
            .unwrap_or_default();
        for app in apps {
            match store.resolve(&app)? {
                None => problems.push(format!(
                    "{pod}: its app image {app} is missing from the store (pull the pod again, or build it)"
                )),
                Some(descriptor) => {
                    if let Some(wanted) = digests.get(&app.repository())
                        && *wanted != descriptor.digest().to_string()
                    {
                        problems.push(format!(
                            "{pod}: its app image {app} is {}, the pod runs {wanted}",
                            descriptor.digest()
                        ));
                    }
                }
            }
        }
    }
    Ok(problems)
}

/// The Kubernetes Pod document of the pod `name`.
pub fn kube_document(store: &Store, name: &ImageName) -> Result<String> {
    let descriptor = store.require(name)?;
    let manifest = store.read_manifest(&descriptor)?;
    if manifest
        .artifact_type()
        .as_ref()
        .map(ToString::to_string)
        .as_deref()
        != Some(ARTIFACT_TYPE)
    {
        bail!("{name} is an image, not a pod");
    }
    let layer = manifest
        .layers()
        .first()
        .context("the pod artifact has no document")?;
    let bytes = store.read_blob(&store::from_oci_digest(layer.digest()))?;
    String::from_utf8(bytes).context("the pod document is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_names_are_rfc1123_labels() {
        assert_eq!(kube_name("pod-mysql_aci-mariadb"), "pod-mysql-aci-mariadb");
        assert_eq!(kube_name("_Weird.Name_"), "weird-name");
        assert_eq!(kube_name(&"a".repeat(70)).len(), 63);
    }
}
