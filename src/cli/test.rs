//! `herd test`.

use super::StoreArg;
use herd::tester::{self, TestOptions, Verdict};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Build image or pod directories (or trees of them, with the build
/// cache, as herd build does), then run each image's tests/*.bats (a pod
/// app's: POD/APP/tests/*.bats) inside a container of it (started as users
/// start it) once tests/wait.sh succeeds. TAP on stdout; exit status 1
/// when a test fails, 2 when the tests could not run.
///
/// bats comes from the images under `tester.aci.dependencies` (or
/// `tester.dependencies`) in aci-manifest.yml, else from the host (bats,
/// with bash-static and busybox-static); `tester.aci.app.environment`
/// replaces values of the image's environment. The image runs under
/// podman, with your podman configuration.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Image or pod directories, or directories holding them.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

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

    #[command(flatten)]
    pull: super::build::PullArg,
}

pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open_or_create()?;
    let options = TestOptions {
        timeout: Duration::from_secs(args.timeout),
        build: herd::build::BuildOptions {
            sandbox: args.sandbox.choices(),
            pull: args.pull.pull,
            ..Default::default()
        },
    };
    match tester::test_paths(&args.paths, &store, &options) {
        Ok(Verdict::Passed) => Ok(ExitCode::SUCCESS),
        Ok(Verdict::Failed) => Ok(ExitCode::FAILURE),
        Ok(Verdict::NoTests) => {
            let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
            println!("1..0 # SKIP no tests/*.bats in {}", paths.join(", "));
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
