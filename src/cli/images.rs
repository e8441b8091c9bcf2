//! `herd images`, `herd inspect`, `herd tag` and `herd rmi`: the store's
//! names, as podman manages its own.

use super::StoreArg;
use super::format;
use anyhow::Context;
use herd::names::ImageName;
use std::process::ExitCode;

/// List the images in the store, sorted by name: name, digest, size and
/// creation time.
///
/// With -q, as `podman images -q`: only the digests, once each, for
/// scripts.
#[derive(clap::Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    store: StoreArg,

    /// A JSON array on stdout, one object per image (Name, Repository,
    /// Tag, Digest, Size in bytes, Created).
    #[arg(long, conflicts_with = "format")]
    json: bool,

    /// One line per image from a template: `{{.Name}}`, `{{.Repository}}`,
    /// `{{.Tag}}`, `{{.Digest}}`, `{{.Size}}` (bytes), `{{.Created}}`;
    /// `\t` is a tab.
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,
}

/// Print an image's OCI manifest and config as JSON, with its readiness
/// and stop settings (`lifecycle`) read from the config.
#[derive(clap::Args)]
pub struct InspectArgs {
    /// The image name, e.g. aci.example.com/aci-base:1.
    name: String,

    /// Print a template filled from the JSON instead: `{{.Digest}}`,
    /// `{{.Config.config.Env}}` (keys match in any case).
    #[arg(long, value_name = "TEMPLATE")]
    format: Option<String>,

    #[command(flatten)]
    store: StoreArg,
}

/// Give a stored image another name (as `podman tag`); nothing is copied.
#[derive(clap::Args)]
pub struct TagArgs {
    /// The name the image has, e.g. aci.example.com/aci-base:1.
    source: String,
    /// The name to add, e.g. registry.example.com/base:stable.
    target: String,

    #[command(flatten)]
    store: StoreArg,
}

/// Remove names from the store (as `podman rmi`). Blobs no other name uses
/// go at the next `herd gc`.
#[derive(clap::Args)]
pub struct RmiArgs {
    /// The names to remove.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,

    #[command(flatten)]
    store: StoreArg,
}

fn parse_name(text: &str) -> anyhow::Result<ImageName> {
    text.parse().map_err(anyhow::Error::msg)
}

pub fn run_images(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let mut tags = store.tags()?;
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    let mut images = Vec::new();
    for tag in tags {
        let (size, created) = match store.read_manifest(&tag.descriptor) {
            Ok(manifest) => {
                let size = manifest.config().size()
                    + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
                let created = store
                    .read_config(&manifest)
                    .ok()
                    .and_then(|c| c.created().clone());
                (Some(size), created)
            }
            Err(_) => (None, None),
        };
        let name = tag.name.parse::<ImageName>().ok();
        images.push(serde_json::json!({
            "Name": tag.name,
            "Repository": name.as_ref().map(ImageName::repository),
            "Tag": name.as_ref().and_then(|n| n.tag().map(str::to_string)),
            "Digest": tag.descriptor.digest().to_string(),
            "Size": size,
            "Created": created,
        }));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&images)?);
        return Ok(ExitCode::SUCCESS);
    }
    // `-q`, as podman's: only the digests, once each, for scripts.
    if super::quiet() {
        let mut digests: Vec<&str> = images.iter().filter_map(|i| i["Digest"].as_str()).collect();
        digests.dedup();
        for digest in digests {
            println!("{digest}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(template) = &args.format {
        for image in &images {
            println!("{}", format::render(template, image)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let mut rows = vec![[
        "NAME".to_string(),
        "DIGEST".into(),
        "SIZE".into(),
        "CREATED".into(),
    ]];
    for image in &images {
        rows.push([
            text(&image["Name"]),
            text(&image["Digest"]),
            image["Size"].as_u64().map_or("-".into(), human_size),
            text(&image["Created"]),
        ]);
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
    let name = parse_name(&args.name)?;
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
    match &args.format {
        Some(template) => println!("{}", format::render(template, &output)?),
        None => println!("{}", serde_json::to_string_pretty(&output)?),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_tag(args: TagArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let source = parse_name(&args.source)?;
    let target = parse_name(&args.target)?;
    let descriptor = store.require(&source)?;
    store.set_tag(&target, &descriptor)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_rmi(args: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    // Every name is tried; the unknown ones are reported together.
    let mut problems = Vec::new();
    for text in &args.names {
        let removed = parse_name(text).and_then(|name| match store.remove_tag(&name)? {
            true => Ok(name),
            false => Err(store.not_found(&name)),
        });
        match removed {
            Ok(name) => println!("untagged {name}"),
            Err(error) => problems.push(error),
        }
    }
    herd::error::Problems::check(problems, "the names given")?;
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
