//! `herd test`.

use super::StoreArg;
use herd::tester::{self, TestOptions, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Build an image directory, then run its tests/*.bats inside a container
/// of the image (started as users start it) once tests/wait.sh succeeds.
/// TAP on stdout; exit status 1 when a test fails, 2 when the tests could
/// not run.
///
/// bats comes from the images under `tester.dependencies` in
/// aci-manifest.yml, else from the host (bats, with bash-static and
/// busybox-static). The image runs under podman, with your podman
/// configuration.
#[derive(clap::Args)]
pub struct TestArgs {
    /// The image directory (holding aci-manifest.yml and tests/).
    #[arg(value_name = "PATH")]
    path: PathBuf,

    #[command(flatten)]
    store: StoreArg,

    /// Seconds the container may take to start and tests/wait.sh to
    /// succeed before the test fails.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = tester::DEFAULT_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout: u64,

    #[command(flatten)]
    sandbox: super::build::SandboxArgs,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open_or_create()?;
    let options = TestOptions {
        timeout: Duration::from_secs(args.timeout),
        build: herd::build::BuildOptions {
            sandbox: args.sandbox.choices(),
            ..Default::default()
        },
    };
    match tester::test_image(&args.path, &store, &options) {
        Ok(Verdict::Passed) => Ok(ExitCode::SUCCESS),
        Ok(Verdict::Failed) => Ok(ExitCode::FAILURE),
        Ok(Verdict::NoTests) => {
            println!("1..0 # SKIP no tests/*.bats in {}", args.path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(_) if let Some(signal) = herd::interrupt::received() => {
            println!("Bail out! interrupted by {signal}");
            Ok(super::build::interrupted(
                signal,
                "the build scripts and removed the test container",
            ))
        }
        Err(error) => {
            // TAP readers stop here; the error itself goes to stderr.
            let first = error.to_string();
            let first = first.lines().next().unwrap_or_default();
            println!("Bail out! {}", herd::terminal::escape_controls(first));
            Err(error)
        }
    }
}
