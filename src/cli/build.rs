//! `herd build`.

use super::StoreArg;
use herd::build::{BuildOptions, build_image};
use herd::layers::Compression;
use herd::runtime::IsolationKind;
use std::path::PathBuf;
use std::process::ExitCode;

/// Build images from image directories (each holding an aci-manifest.yml)
/// into the store, tagged with the name in their manifest.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Image directories to build.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    store: StoreArg,

    /// Layer compression.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    compression: Compression,

    /// Timestamp (seconds since 1970) for file times and `created`
    /// [default: SOURCE_DATE_EPOCH, else the directory's last git commit, else 0]
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,

    /// How build scripts are isolated from the host.
    #[arg(long, value_enum, default_value_t = IsolationKind::Runtime)]
    isolation: IsolationKind,

    /// The OCI runtime that runs build scripts [default: runc, else crun, from PATH]
    #[arg(long, value_name = "PATH")]
    runtime: Option<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let options = BuildOptions {
        compression: args.compression,
        source_date_epoch: args.source_date_epoch,
        init_binary: None,
        isolation: args.isolation,
        runtime: args.runtime,
    };
    for path in &args.paths {
        if path.join(herd::manifest::POD_MANIFEST).is_file() {
            let pod = herd::pods::build_pod(path, &store, &options)?;
            for app in &pod.apps {
                println!("{} {}", app.name, app.manifest.digest());
            }
            println!("{} {}", pod.name, pod.manifest.digest());
        } else {
            let built = build_image(path, &store, &options)?;
            println!("{} {}", built.name, built.manifest.digest());
        }
    }
    Ok(ExitCode::SUCCESS)
}
