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

    /// Seconds to wait for a connection, an answer, or a small body; a
    /// blob may take this plus a second per 64 KiB [default: the config
    /// file's `timeout:`, else 30]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,

    /// How often to retry what may get better (timeouts, resets, 408, 429,
    /// 5xx) [default: the config file's `retry_times:`, else 7, over about
    /// 30 s]
    #[arg(long, value_name = "N")]
    retry_times: Option<u32>,
}

fn parse_host(text: &str) -> Result<String, String> {
    herd::registry::config::check_host(text).map(|()| text.to_string())
}

impl RegistryArgs {
    pub fn options(&self) -> herd::registry::Options {
        herd::registry::Options {
            registry: self.registry.clone(),
            insecure: self.insecure,
            timeout: self.timeout.map(std::time::Duration::from_secs),
            retry_times: self.retry_times,
        }
    }
}

pub fn run(args: PullArgs) -> Result<ExitCode> {
    let store = args.store.open_or_create()?;
    let options = args.registry.options();
    for name in &args.names {
        let name: ImageName = name.parse().map_err(|e: String| anyhow!("{name:?}: {e}"))?;
        let descriptor = herd::registry::pull(&store, &name, &options)?;
        println!("{name} {}", descriptor.digest());
    }
    Ok(ExitCode::SUCCESS)
}
