//! `herd images` and `herd inspect`.

use super::StoreArg;
use anyhow::Context;
use herd::names::ImageName;
use std::process::ExitCode;

/// List the images in the store: name, digest, size and creation time.
#[derive(clap::Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    store: StoreArg,
}

/// Print an image's OCI manifest and config as JSON, with its readiness
/// and stop settings (`lifecycle`) read from the config.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The image name, e.g. aci.example.com/aci-base:1.
    name: String,

    #[command(flatten)]
    store: StoreArg,
}

pub fn run_images(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let mut rows = vec![[
        "NAME".to_string(),
        "DIGEST".into(),
        "SIZE".into(),
        "CREATED".into(),
    ]];
    for tag in store.tags()? {
        let (size, created) = match store.read_manifest(&tag.descriptor) {
            Ok(manifest) => {
                let size = manifest.config().size()
                    + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
                let created = store
                    .read_config(&manifest)
                    .ok()
                    .and_then(|c| c.created().clone())
                    .unwrap_or_default();
                (human_size(size), created)
            }
            Err(_) => ("-".into(), "-".into()),
        };
        let digest = tag.descriptor.digest().to_string();
        rows.push([tag.name, digest, size, created]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        println!(
            "{:w0$}  {:w1$}  {:>w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let name: ImageName = args.name.parse().map_err(anyhow::Error::msg)?;
    let descriptor = store.require(&name)?;
    let manifest = store.read_manifest(&descriptor)?;
    let config: serde_json::Value = serde_json::from_slice(
        &store.read_blob(&herd::store::from_oci_digest(manifest.config().digest()))?,
    )
    .context("parsing the config")?;
    let lifecycle = herd::lifecycle::of_image(&store, &descriptor)?;
    let output = serde_json::json!({
        "name": name.to_string(),
        "digest": descriptor.digest(),
        "lifecycle": lifecycle.describe(),
        "manifest": manifest,
        "config": config,
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(ExitCode::SUCCESS)
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
