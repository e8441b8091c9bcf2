//! `herd push`.

use super::StoreArg;
use super::pull::RegistryArgs;
use anyhow::{Context, Result, anyhow};
use herd::names::{ImageName, compare_versions};
use herd::store::Store;
use std::path::Path;
use std::process::ExitCode;

/// Push images and pods from the store to their registries (a pod's app
/// images first). Blobs the registry has are skipped, blobs it has in
/// another repository are mounted.
#[derive(clap::Args)]
pub struct PushArgs {
    /// Image names in the store (aci.example.com/app:1), or image or pod
    /// directories whose manifest name is pushed.
    #[arg(required = true, value_name = "NAME|PATH")]
    targets: Vec<String>,

    #[command(flatten)]
    store: StoreArg,

    #[command(flatten)]
    registry: RegistryArgs,

    /// Print a JSON summary on stdout: digests, bytes and blobs uploaded,
    /// blobs skipped and mounted.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PushArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let names = args
        .targets
        .iter()
        .map(|target| resolve_target(&store, target))
        .collect::<Result<Vec<_>>>()?;
    let summary = herd::registry::push(&store, &names, &args.registry.options())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for image in &summary.images {
            println!("{} {}", image.destination, image.digest);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A directory stands for the name in its manifest; anything else is a
/// name. A manifest name without a version means the newest version of
/// that repository in the store (builds generate versions).
fn resolve_target(store: &Store, target: &str) -> Result<ImageName> {
    let dir = Path::new(target);
    if !dir.is_dir() {
        return target.parse().map_err(|e: String| {
            anyhow!("{target:?} is neither an image name nor a directory: {e}")
        });
    }
    let name = manifest_name(dir)?;
    if name.tag().is_some() {
        return Ok(name);
    }
    let repository = name.repository();
    let newest = store
        .tags()?
        .into_iter()
        .filter_map(|tag| tag.name.parse::<ImageName>().ok())
        .filter(|tagged| tagged.repository() == repository && tagged.tag().is_some())
        .max_by(|a, b| compare_versions(a.tag().unwrap_or_default(), b.tag().unwrap_or_default()));
    newest.ok_or_else(|| {
        anyhow!(
            "{} names {repository}, which has no version in the store: build it first",
            dir.display()
        )
    })
}

fn manifest_name(dir: &Path) -> Result<ImageName> {
    let text = if dir.join(herd::manifest::POD_MANIFEST).is_file() {
        let path = dir.join(herd::manifest::POD_MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        herd::manifest::parse_pod(&path, &text, &serde_json::Value::Null)?.name
    } else {
        herd::build::ImageSource::read(dir)?
            .manifest(&serde_json::Value::Null)?
            .name
    };
    text.parse()
        .map_err(|e: String| anyhow!("{}: the manifest's name: {e}", dir.display()))
}
