//! Commands about herd itself: `herd version`, `herd completions`,
//! `herd man`. They take the command line's definition from main.rs.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// herd's version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("HERD_GIT_COMMIT"),
    ")"
);

/// Print herd's version and the git commit it was built from.
#[derive(clap::Args, Debug)]
pub struct VersionArgs {}

/// Print a shell completion script on standard output
/// (bash: `herd completions bash > /etc/bash_completion.d/herd`;
/// zsh: into a directory of $fpath as `_herd`; fish: into
/// ~/.config/fish/completions/herd.fish).
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Write man pages (herd.1 and herd-COMMAND.1 for each command) into DIR
/// (for example /usr/local/share/man/man1).
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing)
    dir: PathBuf,
}

pub fn run_version(_: VersionArgs) -> Result<ExitCode> {
    println!("herd {VERSION}");
    Ok(ExitCode::SUCCESS)
}

pub fn run_completions(args: CompletionsArgs, mut command: clap::Command) -> Result<ExitCode> {
    clap_complete::generate(args.shell, &mut command, "herd", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}

pub fn run_man(args: ManArgs, command: clap::Command) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut written = 0;
    let mut write = |name: String, page: clap::Command| -> Result<()> {
        let mut bytes = Vec::new();
        clap_mangen::Man::new(page).render(&mut bytes)?;
        let path = args.dir.join(format!("{name}.1"));
        herd::fsutil::write_atomic(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        written += 1;
        Ok(())
    };
    let command = command.name("herd");
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("herd-{}", sub.get_name());
        // The page's title is the whole command, as git's are (herd-build).
        write(name.clone(), sub.clone().name(name))?;
    }
    write("herd".into(), command)?;
    eprintln!("wrote {written} man pages to {}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}
