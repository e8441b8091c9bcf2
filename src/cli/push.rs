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
    publish_cache_keys(&store, &args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for image in &summary.images {
            println!("{} {}", image.destination, image.digest);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// With `cache: {push: true}` in the config file, a pushed directory's
/// last build is published to the registry build cache too, as
/// `herd build --cache-push` would have. Not with `--registry`: the cache
/// entry belongs where the images' names say they live.
fn publish_cache_keys(store: &Store, args: &PushArgs) -> Result<()> {
    let Some(settings) = herd::registry::config::Config::load()?
        .cache
        .filter(|c| c.push)
    else {
        return Ok(());
    };
    if args.registry.options().registry.is_some() {
        return Ok(());
    }
    let remote = herd::registry::cache::RemoteCache::new(store, &settings.prefix, true)?;
    for target in &args.targets {
        let dir = Path::new(target);
        if !dir.is_dir() {
            continue;
        }
        let Some(record) = herd::cache::last_record(store, dir)? else {
            continue;
        };
        let (Some(key), Some((last, _))) = (&record.key, record.tags.last()) else {
            continue;
        };
        let repository = last
            .parse::<ImageName>()
            .map_err(|e| anyhow!("{last}: {e}"))?
            .repository();
        if !remote.applies_to(&repository) {
            continue;
        }
        let key = key
            .parse()
            .map_err(|e| anyhow!("the build record of {target}: {e}"))?;
        remote
            .publish_entry(&repository, &key, &record.tags)
            .with_context(|| format!("publishing the build cache key of {target}"))?;
    }
    Ok(())
}

/// A directory stands for the name its last build in this store produced
/// (the build record), else the name in its manifest; anything else is a
/// name. A manifest name without a version means the newest version of
/// that repository in the store (builds generate versions).
fn resolve_target(store: &Store, target: &str) -> Result<ImageName> {
    let dir = Path::new(target);
    if !dir.is_dir() {
        return target.parse().map_err(|e: String| {
            anyhow!("{target:?} is neither an image name nor a directory: {e}")
        });
    }
    if let Some(name) = herd::cache::last_built(store, dir)? {
        return Ok(name);
    }
    let name = manifest_name(dir).map_err(|e| not_built(store, dir, &e))?;
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

/// The error for a directory never built in this store whose manifest
/// name needs a build to evaluate: how to push it instead.
fn not_built(store: &Store, dir: &Path, error: &anyhow::Error) -> anyhow::Error {
    let tiny = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let candidates: Vec<String> = store
        .tags()
        .unwrap_or_default()
        .into_iter()
        .filter(|tag| {
            tag.name
                .parse::<ImageName>()
                .is_ok_and(|n| n.tiny_name() == tiny)
        })
        .map(|tag| tag.name)
        .collect();
    let has = if candidates.is_empty() {
        String::new()
    } else {
        format!(" (the store has {})", candidates.join(", "))
    };
    anyhow!(
        "{dir} has no build recorded in the store {store}, and its manifest name cannot be read without one: {error:#}; build it with `herd build {dir}` and push it again, or push it by name: `herd push NAME`{has}",
        dir = dir.display(),
        store = store.root().display()
    )
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
