//! `herd test`: an image directory's `tests/*.bats` run inside a running
//! container of the image (FORMATS.md section 2), the way dgr ran them, on
//! the real start path: herd-init runs the prestart scripts and renders the
//! templates, the app starts, `tests/wait.sh` is retried until it succeeds,
//! then bats runs beside the app and prints TAP.
//!
//! The paths are built first, as `herd build` builds them (a tree, a pod,
//! the build cache): an image's name may come from attributes that only
//! its build scripts write, so the name to look up in the store is not
//! known before the build, and a test of a stale image would prove
//! nothing; the cache's key is over every input, so a cached image is the
//! image these sources build. Each image with tests is then tested, and
//! each app of a pod with tests of its own (`<pod dir>/<app>/tests/`), as
//! dgr tested a pod app by app.
//!
//! `tester:` in the manifest changes the test container the way dgr's
//! test image did: `tester.aci.app.environment` over the image's
//! environment, `tester.aci.dependencies` (or `tester.dependencies`)
//! below its layers, `tester.builder.environment` for `wait.sh` and bats.
//!
//! **Why podman.** The tests need a *running* container to exec into,
//! started from the image config the way users run it; `runtime` only runs
//! a process to completion in a prepared root. podman reads the image from
//! an OCI layout directly and uses the user's own configuration.
//!
//! **Where bats comes from.**
//! - The manifest's `tester.aci.dependencies` (or `tester.dependencies`):
//!   their layers go *below* the
//!   image's (dgr's test image, too, depended on the tester images, then on
//!   the image), so every file of the image is exactly as built and the
//!   testers only add what the image lacks (bash, bats). `bats` must then be
//!   on the image's PATH.
//! - Otherwise the host's bats. bats is a bash program that starts core
//!   tools, and the image may have neither bash nor those tools. Mounting the
//!   host's `/usr` and starting its dynamically linked bash through the
//!   host's loader works for bash itself, but not for the programs bats then
//!   starts. A *static* bash (Debian package bash-static) and a static
//!   busybox run in any root: they are copied, with bats's scripts, into a
//!   toolbox mounted read-only at `/.herd-test/tools`. bats's
//!   `#!/usr/bin/env bash` lines are pointed at that bash (the image may have
//!   no `/usr/bin/env`), and the toolbox's `bin` comes *last* on PATH, so
//!   tests use the image's own tools first.
//!
//! **Images whose app exits at once** (a base image's shell, a one-shot
//! job) could not be tested if the container lived only as long as the app.
//! The container's command is therefore a keep-alive from the toolbox that
//! herd-init runs in place of the app, after prestart scripts and templates:
//! it marks the start as done, runs the real app in the background and
//! stays up. The app's exit status is reported, not judged: the tests do.
//!
//! **Waits end.** dgr waited for `wait.sh` forever; here the start and the
//! wait share a timeout, after which the test fails with the last output of
//! `wait.sh` and the end of the container's log. `wait.sh` runs through its
//! own `#!` interpreter when it is executable, else through the toolbox's
//! sh. A container that stops (a failing prestart script, a template error)
//! fails the test at once, with its log.
//!
//! In the container, the tests are at `/.herd-test/tests` (a copy), run as
//! root through `podman exec`, with `TMPDIR=/.herd-test/tmp` (a tmpfs, so
//! the image's `/tmp` is as the app left it).
//!
//! The keep-alive never ends by itself, so an interrupted test (SIGINT,
//! SIGTERM, SIGHUP) stops what it waits for and still removes its
//! container.
//!
//! Nothing is added to the store: the image to run is written to a
//! temporary OCI layout whose blobs are links to the store's. podman names
//! an image loaded from a layout after the layout's path and refuses upper
//! case, so that path is lowercase; the name is removed from podman after.

mod container;
mod layout;
mod tools;

use crate::build::{BuildOptions, BuiltImage, ImageSource};
use crate::dependency::{PullPolicy, Resolved};
use crate::manifest::NameValue;
use crate::names::ImageName;
use crate::plan::{self, Event, Kind, Plan};
use crate::store::Store;
use anyhow::{Context, Result, bail};
use container::{Container, WaitScript, remove_orphans};
use layout::{WorkDir, write_layout};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tools::{HostTools, copy_tree};

/// How long the container may take to start and `tests/wait.sh` to succeed,
/// unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the test's own things are mounted in the container.
const TOOLS: &str = "/.herd-test/tools";
const TESTS: &str = "/.herd-test/tests";
const SCRATCH: &str = "/.herd-test/tmp";
/// Written by the keep-alive once herd-init started it: the prestart
/// scripts ran and the templates are rendered.
const STARTED: &str = "/.herd-test/tmp/started";
/// The app's exit status, once it exited.
const APP_STATUS: &str = "/.herd-test/tmp/app-status";

/// Run by herd-init in place of the app (arguments: the app's command).
/// Absolute paths: the app must see the image's PATH unchanged.
const KEEP_ALIVE: &str = "/.herd-test/tools/bin/touch /.herd-test/tmp/started
if [ $# -gt 0 ]; then ( \"$@\"; echo $? > /.herd-test/tmp/app-status ) & fi
/.herd-test/tools/bin/cat /.herd-test/tools/.lifeline > /dev/null";

/// A FIFO in the toolbox that herd holds open for writing while the test
/// runs. The keep-alive reads it and gets end-of-file when herd's end is
/// closed, which the kernel does even when herd is killed with SIGKILL:
/// the keep-alive then exits and the container stops. (A detached
/// container otherwise outlives a killed `herd test`.) The stopped
/// container stays (its log may be wanted); the next `herd test` removes it.
const LIFELINE: &str = ".lifeline";

/// Wraps every command run in the container: the toolbox after the image's
/// own tools on PATH, and a scratch directory for bats.
const EXEC_WRAPPER: &str = "PATH=\"${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}:/.herd-test/tools/bin\"
TMPDIR=/.herd-test/tmp
export PATH TMPDIR
exec \"$@\"";

/// Pause between two runs of `tests/wait.sh`.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How often a running command is checked for its end or an interrupt.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// Lines of the container's log shown when it failed to get ready.
const LOG_LINES: usize = 20;

/// What `herd test` may vary.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// How the image is built before it is tested.
    pub build: BuildOptions,
    /// How long the container may take to start and `tests/wait.sh` to
    /// succeed.
    pub timeout: Duration,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            build: BuildOptions::default(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// How a test run ended. bats printed the details (TAP) on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// At least one test failed.
    Failed,
    /// No image had `tests/*.bats`; they were built only.
    NoTests,
}

/// One image to test, as planned before the build: where its tests are and
/// how its container differs from the image.
struct Subject {
    /// The plan's unit that builds it.
    unit: usize,
    /// For an app of a pod: its repository (the pod's name + `_<app>`).
    app_repository: Option<String>,
    tests: PathBuf,
    suites: Vec<String>,
    manifest_path: PathBuf,
    testers: Vec<ImageName>,
    environment: Vec<NameValue>,
    exec_environment: Vec<NameValue>,
}

/// Builds `paths` (image or pod directories, or trees of them) into
/// `store`, from the build cache where it can, then runs the tests of
/// every image and pod app that has some, each in a container of its own.
/// bats's TAP output goes to stdout as it comes. SIGINT, SIGTERM and
/// SIGHUP make this return an error (after stopping the build's scripts
/// and removing the container) instead of ending the process.
pub fn test_paths(paths: &[PathBuf], store: &Store, options: &TestOptions) -> Result<Verdict> {
    // Declared first, dropped last: restores the signal dispositions only
    // once the build's scripts and the container are gone.
    let _interrupts = crate::interrupt::Catch::signals()?;
    let plan = plan::discover(paths)?;
    plan.order()?;
    let mut subjects = Vec::new();
    for unit in 0..plan.units.len() {
        subjects.extend(subjects_of(&plan, unit)?);
    }
    // Tools are looked for before the build, which may take long.
    let tools = match subjects.iter().find(|s| !s.suites.is_empty()) {
        None => None,
        Some(first) => {
            let host_bats = subjects
                .iter()
                .find(|s| !s.suites.is_empty() && s.testers.is_empty());
            let manifest = host_bats.map_or(&first.manifest_path, |s| &s.manifest_path);
            Some(HostTools::find(host_bats.is_some(), manifest)?)
        }
    };
    let built = build(&plan, store, &options.build)?;
    // Tester images this run built are not pulled, whatever `--pull` says.
    let produced: Vec<&String> = plan.units.iter().flat_map(|u| &u.produces).collect();

    let mut verdict = Verdict::NoTests;
    let with_tests = subjects.iter().filter(|s| !s.suites.is_empty()).count();
    for subject in &subjects {
        let image = built_image(store, &plan, &built, subject)?;
        let Some(tools) = tools.as_ref().filter(|_| !subject.suites.is_empty()) else {
            tracing::warn!(
                "{}: no *.bats file; {} was built, nothing was tested",
                subject.tests.display(),
                image.name
            );
            continue;
        };
        if with_tests > 1 {
            // TAP readers take this as a comment between the runs.
            println!("# {}", image.name);
            std::io::stdout().flush()?;
        }
        let mut testers = Vec::new();
        for tester in &subject.testers {
            let policy = if produced.contains(&&tester.repository()) {
                PullPolicy::Never
            } else {
                options.build.pull
            };
            testers.push(
                crate::dependency::resolve(store, tester, policy)
                    .with_context(|| format!("resolving tester dependency {tester}"))?,
            );
        }
        match test_image(store, &image, subject, &testers, tools, options)? {
            Verdict::Failed => verdict = Verdict::Failed,
            Verdict::Passed if verdict == Verdict::NoTests => verdict = Verdict::Passed,
            _ => {}
        }
    }
    Ok(verdict)
}

/// What of unit `unit` is tested: an image, or each app of a pod.
fn subjects_of(plan: &Plan, unit: usize) -> Result<Vec<Subject>> {
    let dir = &plan.units[unit].dir;
    if plan.units[unit].kind == Kind::Pod {
        let (pod, manifest_path) = crate::pods::read_manifest(dir)?;
        let name: ImageName = pod.name.parse().map_err(anyhow::Error::msg)?;
        let mut subjects = Vec::new();
        for app in &pod.pod.apps {
            let app_name = crate::pods::app_name(app);
            let tests = dir.join(&app_name).join("tests");
            let repository = name
                .with_path_suffix(&format!("_{app_name}"))
                .map_err(anyhow::Error::msg)?
                .repository();
            subjects.push(Subject {
                unit,
                app_repository: Some(repository),
                suites: bats_files(&tests)?,
                tests,
                manifest_path: manifest_path.clone(),
                testers: vec![],
                environment: vec![],
                exec_environment: vec![],
            });
        }
        return Ok(subjects);
    }
    let source = ImageSource::read(dir)?;
    let tester = source.provisional_manifest()?.tester;
    let testers = tester
        .all_dependencies()
        .map(|d| d.parse().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let tests = dir.join("tests");
    Ok(vec![Subject {
        unit,
        app_repository: None,
        suites: bats_files(&tests)?,
        tests,
        manifest_path: source.manifest_path.clone(),
        testers,
        environment: tester.aci.app.environment,
        exec_environment: tester.builder.environment,
    }])
}

/// Builds the plan as `herd build` does, with the cache; the tags of each
/// unit. A failed build is an error naming each failure.
fn build(plan: &Plan, store: &Store, options: &BuildOptions) -> Result<Vec<Vec<(String, String)>>> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = BuildOptions {
        label_output: jobs > 1 && plan.units.len() > 1,
        ..options.clone()
    };
    let report = |event: &Event| {
        if let Event::Finished(unit, outcome) = event {
            let name = &plan.units[*unit].name;
            match &outcome.result {
                Ok(built) if built.cached => tracing::info!("cached {name}"),
                Ok(_) => tracing::info!("built {name}"),
                Err(_) => {}
            }
        }
    };
    let outcomes = plan.execute(store, &options, true, jobs, &report);
    let mut tags = Vec::new();
    let mut failures = Vec::new();
    for (unit, outcome) in plan.units.iter().zip(outcomes) {
        match outcome.result {
            Ok(built) => tags.push(built.tags),
            Err(error) => {
                failures.push(format!("{}: {error}", unit.dir.display()));
                tags.push(vec![]);
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "the build failed, nothing was tested:\n{}",
            failures.join("\n")
        );
    }
    Ok(tags)
}

/// The image the build produced for `subject`.
fn built_image(
    store: &Store,
    plan: &Plan,
    built: &[Vec<(String, String)>],
    subject: &Subject,
) -> Result<BuiltImage> {
    let tags = &built[subject.unit];
    // An image's own tag is its last; a pod's apps are found by repository.
    let tag = match &subject.app_repository {
        None => tags.last(),
        Some(repository) => tags.iter().find(|(name, _)| {
            name.parse::<ImageName>()
                .is_ok_and(|n| &n.repository() == repository)
        }),
    };
    let Some((name, _)) = tag else {
        bail!(
            "the build of {} tagged nothing to test",
            plan.units[subject.unit].dir.display()
        );
    };
    let name: ImageName = name.parse().map_err(anyhow::Error::msg)?;
    let manifest = store.require(&name)?;
    tracing::info!("built {name} {}", manifest.digest());
    Ok(BuiltImage { name, manifest })
}

/// Runs the tests of `subject`, built as `built`, in a container of it.
fn test_image(
    store: &Store,
    built: &BuiltImage,
    subject: &Subject,
    testers: &[Resolved],
    tools: &HostTools,
    options: &TestOptions,
) -> Result<Verdict> {
    tracing::info!(
        "testing {} with {} ({})",
        built.name,
        subject.suites.join(", "),
        if testers.is_empty() {
            "the host's bats".to_string()
        } else {
            format!(
                "bats from {}",
                testers
                    .iter()
                    .map(|t| t.name.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let host_bats = testers.is_empty();
    if host_bats && tools.bats.is_none() {
        bail!(
            "{}: the host's bats is needed but was not found",
            subject.manifest_path.display()
        );
    }

    remove_orphans(&tools.podman);
    let work = WorkDir::create()?;
    tools.install(&work.path().join("tools"), host_bats)?;
    copy_tree(&subject.tests, &work.path().join("tests"))?;
    let layout = work.path().join("image");
    let app = write_layout(store, built, testers, &layout)?;

    let container = Container::start(
        &tools.podman,
        &work,
        &layout,
        &built.name,
        &app,
        &subject.environment,
        &subject.exec_environment,
    )?;
    let wait = WaitScript::of(&subject.tests);
    tracing::info!(
        "waiting up to {} for the container to start{}",
        humantime::format_duration(options.timeout),
        if wait.is_some() {
            " and tests/wait.sh to succeed"
        } else {
            ""
        }
    );
    container.wait_until_ready(wait.as_ref(), options.timeout)?;

    let bats: Vec<String> = if host_bats {
        vec![
            format!("{TOOLS}/bin/bash"),
            format!("{TOOLS}/bats/bin/bats"),
        ]
    } else {
        vec!["bats".into()]
    };
    let status =
        container.exec_inheriting(&[&bats[..], &["--tap".into(), TESTS.into()]].concat())?;
    container.report_app_status(&app);
    match status {
        0 => Ok(Verdict::Passed),
        // podman's own failures, and commands that could not be started.
        125..=127 | 255 => {
            container.ensure_running()?;
            if !host_bats {
                bail!(
                    "bats could not run in the container (exit status {status}); the images under tester.aci.dependencies must put `bats` (and bash) on the image's PATH"
                );
            }
            bail!("bats could not run in the container (exit status {status})")
        }
        _ => {
            container.ensure_running()?;
            Ok(Verdict::Failed)
        }
    }
}

/// The `*.bats` file names in `tests`, sorted.
fn bats_files(tests: &Path) -> Result<Vec<String>> {
    Ok(crate::fsutil::files_in(tests)?
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".bats"))
        .collect())
}
