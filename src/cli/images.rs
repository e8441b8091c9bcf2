//! `herd images` and `herd inspect`.
use std::process::ExitCode;

/// List the images in the store.
#[derive(clap::Args)]
pub struct ImagesArgs {}

/// Print an image's manifest and config.
#[derive(clap::Args)]
pub struct InspectArgs {}

pub fn run_images(_args: ImagesArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}

pub fn run_inspect(_args: InspectArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
