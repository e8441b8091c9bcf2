//! `herd doctor`: checks this host for what herd's commands need.

use super::StoreArg;
use herd::doctor::{self, Status};
use std::process::ExitCode;

/// Check this host for what herd needs: an OCI runtime, overlayfs, root,
/// podman and its pause process, slirp4netns, skopeo, bats, the store's
/// directory and free space, registry credentials. One line per item with
/// the fix; nothing is changed.
///
/// Exit status: 0 when everything herd's commands need is there (warnings
/// are for what only some uses need), 1 otherwise.
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    #[command(flatten)]
    store: StoreArg,
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = doctor::checks(&args.store.path()?);
    for check in &checks {
        let mut line = format!(
            "{:<8} {}: {}",
            check.status.label(),
            check.item,
            check.detail
        );
        if let Some(fix) = &check.fix {
            line.push_str("; fix: ");
            line.push_str(fix);
        }
        println!("{}", herd::terminal::escape_controls(&line));
    }
    let missing = checks
        .iter()
        .filter(|c| c.status == Status::Missing)
        .count();
    if doctor::all_ok(&checks) {
        eprintln!("herd has what it needs on this host");
        Ok(ExitCode::SUCCESS)
    } else {
        let s = if missing == 1 { "" } else { "s" };
        eprintln!("{missing} item{s} missing: herd's commands will fail until fixed");
        Ok(ExitCode::from(1))
    }
}
