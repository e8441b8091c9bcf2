//! `herd gc`, `herd clean` and `herd fsck`: store maintenance.

use super::StoreArg;
use std::process::ExitCode;

/// Remove blobs that no tag references.
#[derive(clap::Args)]
pub struct GcArgs {
    #[command(flatten)]
    store: StoreArg,
}

/// Remove leftovers of interrupted builds: build script containers whose
/// herd is gone (stopped and deleted), build roots, temporary files.
#[derive(clap::Args)]
pub struct CleanArgs {
    #[command(flatten)]
    store: StoreArg,
}

/// Check the store: every blob matches its digest, every tag resolves.
#[derive(clap::Args)]
pub struct FsckArgs {
    #[command(flatten)]
    store: StoreArg,
}

pub fn run_gc(args: GcArgs) -> anyhow::Result<ExitCode> {
    let report = args.store.open()?.gc()?;
    for problem in &report.problems {
        eprintln!("warning: {problem} (kept what it references)");
    }
    println!(
        "removed {}, {}",
        herd::terminal::count(report.blobs, "blob"),
        herd::terminal::count(report.bytes as usize, "byte")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_clean(args: CleanArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    // Containers first: a killed herd's script may still be writing into a
    // build root.
    let containers = match herd::runtime::Isolation::choose(Default::default(), None) {
        Ok(herd::runtime::Isolation::Runtime(binary)) => herd::runtime::remove_orphans(&binary)?,
        _ => 0,
    };
    herd::rootfs::unmount_stale(&store)?;
    let removed = store.clean()? + herd::rootfs::remove_unverified_layers(&store)?;
    println!("removed {removed} leftovers and {containers} build script containers");
    Ok(ExitCode::SUCCESS)
}

pub fn run_fsck(args: FsckArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let mut problems = store.fsck()?;
    problems.extend(herd::rootfs::check_layer_cache(&store));
    problems.extend(herd::pods::check_apps(&store)?);
    for problem in &problems {
        println!("{}", herd::terminal::escape_controls(problem));
    }
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}
