//! `herd init`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Create a new image directory that builds and passes its own test as it
/// is: manifest, attributes, a template, build scripts and tests. It needs
/// no base image (it installs the host's static busybox).
#[derive(clap::Args)]
pub struct InitArgs {
    /// The directory to create; it must not exist, or be empty.
    #[arg(value_name = "DIR")]
    dir: PathBuf,

    /// The image's name [default: aci.example.com/<directory name>:0.1-1]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let made = herd::scaffold::scaffold(&args.dir, args.name.as_deref())?;
    let dir = args.dir.display();
    println!("created {dir} for {}:", made.name);
    for file in &made.files {
        println!("  {}", file.display());
    }
    println!("build it with `herd build {dir}`, test it with `herd test {dir}`");
    Ok(ExitCode::SUCCESS)
}
