//! `herd build`.
use std::process::ExitCode;

/// Build images and pods from directories into the store.
#[derive(clap::Args)]
pub struct BuildArgs {}

pub fn run(_args: BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not yet implemented")
}
