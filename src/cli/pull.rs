//! `herd pull`, and the registry options push shares.

use super::StoreArg;
use anyhow::{Result, anyhow};
use herd::names::ImageName;
use std::process::ExitCode;

/// Pull an image into the store, under its name. From an index (a
/// multi-platform image), the linux image of this machine's architecture.
#[derive(clap::Args)]
pub struct PullArgs {
    /// Image names, e.g. aci.example.com/aci-base:1.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,

    #[command(flatten)]
    store: StoreArg,

    #[command(flatten)]
    registry: RegistryArgs,
}

/// How to reach the registry, beyond herd's config file.
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// Use this registry instead of the one in each name; the repository
    /// path is kept.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_host)]
    registry: Option<String>,

    /// Plain http instead of https.
    #[arg(long)]
    insecure: bool,
}

fn parse_host(text: &str) -> Result<String, String> {
    herd::registry::config::check_host(text).map(|()| text.to_string())
}

impl RegistryArgs {
    pub fn options(&self) -> herd::registry::Options {
        herd::registry::Options {
            registry: self.registry.clone(),
            insecure: self.insecure,
        }
    }
}

pub fn run(args: PullArgs) -> Result<ExitCode> {
    let store = args.store.open()?;
    let options = args.registry.options();
    for name in &args.names {
        let name: ImageName = name.parse().map_err(|e: String| anyhow!("{name:?}: {e}"))?;
        let descriptor = herd::registry::pull(&store, &name, &options)?;
        println!("{name} {}", descriptor.digest());
    }
    Ok(ExitCode::SUCCESS)
}
