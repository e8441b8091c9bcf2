//! The image's OCI config and manifest: the last dependency's config with
//! this manifest's app on top, and the labels its dependents read.

use super::*;

/// The app's identity: the manifest's, else the dependency's.
pub(super) fn app_spec(manifest: &ImageManifest, base: &Base) -> AppSpec {
    let app = &manifest.aci.app;
    let label = |key: &str| {
        base.config
            .as_ref()
            .and_then(|c| c.labels().as_ref())
            .and_then(|l| l.get(key))
            .cloned()
    };
    let lifecycle = app.lifecycle().or(label(crate::lifecycle::LABEL)
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default());
    let exec = match (&lifecycle.is_empty(), app.exec.is_empty()) {
        (true, _) => vec![],
        (false, false) => app.exec.clone(),
        (false, true) => base
            .config
            .as_ref()
            .and_then(|c| c.cmd().clone())
            .unwrap_or_default(),
    };
    AppSpec {
        user: app
            .user
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| label(labels::USER)),
        group: app
            .group
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| label(labels::GROUP)),
        supplementary_gids: if app.supplementary_gids.is_empty() {
            label(labels::SUPPLEMENTARY_GIDS)
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or_default()
        } else {
            app.supplementary_gids.clone()
        },
        lifecycle,
        exec,
    }
}

/// The image config: the last dependency's, with this manifest's app on top.
pub(super) fn image_config(
    manifest: &ImageManifest,
    stack: &[String],
    base: &Base,
    layers: &[(LayerBlob, String)],
    epoch: u64,
    inherits: bool,
    partials: &std::collections::BTreeSet<String>,
) -> Result<ImageConfiguration> {
    let app = &manifest.aci.app;
    let inherited = base.config.clone().unwrap_or_default();

    let mut env: Vec<String> = inherited
        .env()
        .clone()
        .unwrap_or_else(|| vec![DEFAULT_PATH.to_string()]);
    for variable in &app.environment {
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(variable.name.as_str()));
        env.push(format!("{}={}", variable.name, variable.value));
    }

    let mut labels: BTreeMap<String, String> = inherited
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    for annotation in &manifest.aci.annotations {
        labels.insert(annotation.name.clone(), annotation.value.clone());
    }
    labels.insert(labels::STACK.into(), stack.join(" "));
    if base.resolved.is_empty() {
        labels.remove(labels::DEPENDENCIES);
    } else {
        labels.insert(labels::DEPENDENCIES.into(), base.resolved.join(" "));
    }
    if inherits {
        labels.insert(labels::INHERITS.into(), "true".into());
    } else {
        labels.remove(labels::INHERITS);
    }
    if partials.is_empty() {
        labels.remove(labels::PARTIALS);
    } else {
        // Space-separated: a name with whitespace could not be read back
        // (and no include of it can be checked against the label).
        let names: Vec<&str> = partials
            .iter()
            .map(String::as_str)
            .filter(|name| !name.contains(char::is_whitespace))
            .collect();
        labels.insert(labels::PARTIALS.into(), names.join(" "));
    }
    let spec = app_spec(manifest, base);
    let mut set_or_keep = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            labels.insert(key.to_string(), value);
        }
    };
    set_or_keep(labels::USER, spec.user.clone());
    set_or_keep(labels::GROUP, spec.group.clone());
    if !spec.supplementary_gids.is_empty() {
        set_or_keep(
            labels::SUPPLEMENTARY_GIDS,
            Some(serde_json::to_string(&spec.supplementary_gids)?),
        );
    }
    if !app.mount_points.is_empty() {
        let points: Vec<Value> = app
            .mount_points
            .iter()
            .map(|m| json!({"name": m.name, "path": m.path, "readOnly": m.read_only}))
            .collect();
        set_or_keep(labels::MOUNT_POINTS, Some(serde_json::to_string(&points)?));
    }
    if !spec.lifecycle.is_empty() {
        set_or_keep(
            crate::lifecycle::LABEL,
            Some(serde_json::to_string(&spec.lifecycle)?),
        );
    }
    if !app.isolators.is_empty() {
        let isolators: Vec<Value> = app
            .isolators
            .iter()
            .map(|i| json!({"name": i.name, "value": i.value}))
            .collect();
        set_or_keep(labels::ISOLATORS, Some(serde_json::to_string(&isolators)?));
    }

    let mut ports: Vec<String> = inherited.exposed_ports().clone().unwrap_or_default();
    ports.extend(
        app.ports
            .iter()
            .map(|p| format!("{}/{}", p.port, p.protocol)),
    );
    ports.sort();
    ports.dedup();
    let mut volumes: Vec<String> = inherited.volumes().clone().unwrap_or_default();
    volumes.extend(app.mount_points.iter().map(|m| m.path.clone()));
    volumes.sort();
    volumes.dedup();

    let command = if app.exec.is_empty() {
        inherited.cmd().clone()
    } else {
        Some(app.exec.clone())
    };
    let working_dir = app
        .working_directory
        .clone()
        .or_else(|| inherited.working_dir().clone());

    let mut config = json!({
        "Env": env,
        "Entrypoint": [format!("/{}", image_paths::INIT)],
        "Labels": labels,
    });
    let object = config.as_object_mut().expect("built as an object");
    if let Some(command) = command {
        object.insert("Cmd".into(), json!(command));
    }
    if let Some(dir) = working_dir {
        object.insert("WorkingDir".into(), json!(dir));
    }
    // The config's sets are objects whose values are empty objects.
    for (key, members) in [("ExposedPorts", &ports), ("Volumes", &volumes)] {
        if !members.is_empty() {
            let set: serde_json::Map<String, Value> =
                members.iter().map(|m| (m.clone(), json!({}))).collect();
            object.insert(key.into(), set.into());
        }
    }
    if let Some(signal) = inherited.stop_signal() {
        object.insert("StopSignal".into(), json!(signal));
    }

    let created = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch),
    )
    .to_string();
    let history: Vec<Value> = layers
        .iter()
        .map(|(_, line)| json!({"created": created, "created_by": line}))
        .collect();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|(blob, _)| blob.diff_id.to_string())
        .collect();
    let document = json!({
        "created": created,
        "architecture": host_architecture(),
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    serde_json::from_value(document).context("assembling the image config")
}

/// The OCI name of the machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

pub(super) fn image_manifest(
    manifest: &ImageManifest,
    config: Descriptor,
    layers: &[(LayerBlob, String)],
) -> Result<OciManifest> {
    let layer_descriptors: Vec<Value> = layers
        .iter()
        .map(|(blob, _)| json!({"mediaType": blob.media_type, "digest": blob.digest.to_string(), "size": blob.size}))
        .collect();
    let mut document = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": layer_descriptors,
    });
    if !manifest.aci.annotations.is_empty() {
        let annotations: BTreeMap<&str, &str> = manifest
            .aci
            .annotations
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        document["annotations"] = json!(annotations);
    }
    serde_json::from_value(document).context("assembling the image manifest")
}
