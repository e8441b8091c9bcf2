//! `herd test`: an image directory's `tests/*.bats` run inside a running
//! container of the image (FORMATS.md section 2), the way dgr ran them, on
//! the real start path: herd-init runs the prestart scripts and renders the
//! templates, the app starts, `tests/wait.sh` is retried until it succeeds,
//! then bats runs beside the app and prints TAP.
//!
//! The image is always built first: its name may come from attributes that
//! only its build scripts write, so the name to look up in the store is not
//! known before the build, and a test of a stale image would prove nothing.
//!
//! **Why podman.** The tests need a *running* container to exec into,
//! started from the image config the way users run it; `runtime` only runs
//! a process to completion in a prepared root. podman reads the image from
//! an OCI layout directly and uses the user's own configuration.
//!
//! **Where bats comes from.**
//! - The manifest's `tester.dependencies`: their layers go *below* the
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

use crate::build::{self, BuildOptions, BuiltImage, ImageSource};
use crate::names::ImageName;
use crate::store::{self, Store};
use anyhow::{Context, Result, bail};
use oci_spec::image::{Descriptor, MediaType};
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// The directory has no `tests/*.bats`; the image was built only.
    NoTests,
}

/// Builds the image directory `dir` into `store`, then runs its tests in a
/// container of it. bats's TAP output goes to stdout as it comes. SIGINT,
/// SIGTERM and SIGHUP make this return an error (after stopping the build's
/// scripts and removing the container) instead of ending the process.
pub fn test_image(dir: &Path, store: &Store, options: &TestOptions) -> Result<Verdict> {
    // Declared first, dropped last: restores the signal dispositions only
    // once the build's scripts and the container are gone.
    let _interrupts = crate::interrupt::Catch::signals()?;
    let tests = dir.join("tests");
    let source = ImageSource::read(dir)?;
    let testers: Vec<ImageName> = source
        .provisional_manifest()?
        .tester
        .dependencies
        .iter()
        .map(|d| d.parse().map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    let suites = bats_files(&tests)?;
    // Tools are looked for before the build, which may take long.
    let tools = if suites.is_empty() {
        None
    } else {
        Some(HostTools::find(testers.is_empty(), &source.manifest_path)?)
    };
    let built = build::build_source(source, store, &options.build)?;
    tracing::info!("built {} {}", built.name, built.manifest.digest());
    let Some(tools) = tools else {
        tracing::warn!(
            "{}: no *.bats file; {} was built, nothing was tested",
            tests.display(),
            built.name
        );
        return Ok(Verdict::NoTests);
    };
    tracing::info!(
        "testing {} with {} ({})",
        built.name,
        suites.join(", "),
        if testers.is_empty() {
            "the host's bats".to_string()
        } else {
            format!(
                "bats from {}",
                testers
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );

    remove_orphans(&tools.podman);
    let work = WorkDir::create()?;
    tools.install(&work.path().join("tools"))?;
    copy_tree(&tests, &work.path().join("tests"))?;
    let layout = work.path().join("image");
    let app = write_layout(store, &built, &testers, &layout)?;

    let container = Container::start(&tools.podman, &work, &layout, &built.name, &app)?;
    let wait = WaitScript::of(&tests);
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

    let bats: Vec<String> = match &tools.bats {
        Some(_) => vec![
            format!("{TOOLS}/bin/bash"),
            format!("{TOOLS}/bats/bin/bats"),
        ],
        None => vec!["bats".into()],
    };
    let status =
        container.exec_inheriting(&[&bats[..], &["--tap".into(), TESTS.into()]].concat())?;
    container.report_app_status(&app);
    match status {
        0 => Ok(Verdict::Passed),
        // podman's own failures, and commands that could not be started.
        125..=127 | 255 => {
            container.ensure_running()?;
            if tools.bats.is_none() {
                bail!(
                    "bats could not run in the container (exit status {status}); the images under tester.dependencies must put `bats` (and bash) on the image's PATH"
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

/// `tests/wait.sh`, and how it runs in the container.
struct WaitScript {
    path: PathBuf,
    command: Vec<String>,
}

impl WaitScript {
    /// Through its own `#!` interpreter (from the image) when it is
    /// executable, else through the toolbox's sh: the rule build scripts
    /// follow too.
    fn of(tests: &Path) -> Option<WaitScript> {
        let path = tests.join("wait.sh");
        let metadata = path.metadata().ok().filter(|m| m.is_file())?;
        let inside = format!("{TESTS}/wait.sh");
        let command = if metadata.permissions().mode() & 0o111 != 0 {
            vec![inside]
        } else {
            vec![format!("{TOOLS}/bin/sh"), inside]
        };
        Some(WaitScript { path, command })
    }
}

/// Busybox applets herd's own commands in the container use.
const APPLETS_USED: &[&str] = &["sh", "test", "touch", "cat"];

/// The host programs a test uses: podman, and those copied into the
/// toolbox.
struct HostTools {
    podman: PathBuf,
    busybox: PathBuf,
    /// A static bash and the root of the bats installation, when the host's
    /// bats runs the tests.
    bats: Option<(PathBuf, PathBuf)>,
}

impl HostTools {
    fn find(host_bats: bool, manifest: &Path) -> Result<HostTools> {
        let podman = crate::runtime::find_executable(Path::new("podman")).context(
            "herd test runs the image with podman, which is not on PATH (Debian: apt-get install podman)",
        )?;
        let busybox = find_static(&["busybox"]).with_context(|| {
            "herd test needs a statically linked busybox on the host for its helpers in the container (Debian: apt-get install busybox-static)"
        })?;
        let bats = if host_bats {
            let hint = || {
                format!(
                    "or name images that provide bats under `tester.dependencies` in {}",
                    manifest.display()
                )
            };
            let bash = find_static(&["bash-static", "bash"]).with_context(|| {
                format!(
                    "the host's bats needs a statically linked bash to run in the container (Debian: apt-get install bash-static), {}",
                    hint()
                )
            })?;
            let root = bats_root().with_context(|| {
                format!("install bats (Debian: apt-get install bats), {}", hint())
            })?;
            Some((bash, root))
        } else {
            None
        };
        Ok(HostTools {
            podman,
            busybox,
            bats,
        })
    }

    /// Fills the toolbox directory `dir`: busybox with a link per applet,
    /// and bash and bats when the host's bats is used.
    fn install(&self, dir: &Path) -> Result<()> {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        copy_file(&self.busybox, &bin.join("busybox"))?;
        let list = Command::new(&self.busybox)
            .arg("--list")
            .output()
            .with_context(|| format!("running {} --list", self.busybox.display()))?;
        let list = String::from_utf8_lossy(&list.stdout);
        let applets: Vec<&str> = list.split_whitespace().collect();
        let missing: Vec<&str> = APPLETS_USED
            .iter()
            .copied()
            .filter(|a| !applets.contains(a))
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} lacks the applets {} that herd test uses in the container",
                self.busybox.display(),
                missing.join(", ")
            );
        }
        for applet in applets {
            if applet != "busybox" && !applet.contains('/') {
                std::os::unix::fs::symlink("busybox", bin.join(applet))?;
            }
        }
        if let Some((bash, root)) = &self.bats {
            copy_file(bash, &bin.join("bash"))?;
            let bats = dir.join("bats");
            for part in ["libexec/bats-core", "lib/bats-core"] {
                copy_tree(&root.join(part), &bats.join(part))?;
            }
            std::fs::create_dir_all(bats.join("bin"))?;
            copy_file(&root.join("bin/bats"), &bats.join("bin/bats"))?;
            for script in std::iter::once(bats.join("bin/bats")).chain(
                std::fs::read_dir(bats.join("libexec/bats-core"))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path()),
            ) {
                point_at_toolbox_bash(&script)?;
            }
        }
        for entry in walkdir::WalkDir::new(dir) {
            let entry = entry?;
            if entry.file_type().is_dir() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(())
    }
}

/// Rewrites a `#!...bash` first line to the toolbox's bash.
fn point_at_toolbox_bash(script: &Path) -> Result<()> {
    let text = std::fs::read(script)?;
    let Some(rest) = text.strip_prefix(b"#!") else {
        return Ok(());
    };
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    if !String::from_utf8_lossy(&rest[..end]).contains("bash") {
        return Ok(());
    }
    let mut patched = format!("#!{TOOLS}/bin/bash").into_bytes();
    patched.extend_from_slice(&rest[end..]);
    std::fs::write(script, patched)?;
    Ok(())
}

/// The first of `names` on PATH that is a static executable.
fn find_static(names: &[&str]) -> Result<PathBuf> {
    let mut seen = vec![];
    for name in names {
        let Some(path) = crate::runtime::find_executable(Path::new(name)) else {
            continue;
        };
        if is_static_elf(&path)? {
            return Ok(path);
        }
        seen.push(format!("{} is dynamically linked", path.display()));
    }
    if seen.is_empty() {
        bail!("none of {} is on PATH", names.join(", "))
    }
    bail!("{}", seen.join("; "))
}

/// Whether `path` is an ELF executable without a program interpreter: it
/// runs in any root, whatever libraries that root has.
fn is_static_elf(path: &Path) -> Result<bool> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut header = [0u8; 64];
    if file.read_exact_at(&mut header, 0).is_err() || &header[..4] != b"\x7fELF" {
        return Ok(false);
    }
    let little = header[5] == 1;
    let u16_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1]];
        if little {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    let u32_at = |b: &[u8], at: usize| {
        let bytes = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if little {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        }
    };
    let (table, entry_size, count) = if header[4] == 2 {
        let low = u64::from(u32_at(&header, 32));
        let high = u64::from(u32_at(&header, 36));
        let offset = if little {
            low | high << 32
        } else {
            (low << 32) | high
        };
        (offset, u16_at(&header, 54), u16_at(&header, 56))
    } else {
        (
            u64::from(u32_at(&header, 28)),
            u16_at(&header, 42),
            u16_at(&header, 44),
        )
    };
    let (entry_size, count) = (usize::from(entry_size), usize::from(count));
    if entry_size < 4 {
        return Ok(false);
    }
    let mut headers = vec![0u8; entry_size * count];
    file.read_exact_at(&mut headers, table)
        .with_context(|| format!("reading the program headers of {}", path.display()))?;
    const PT_INTERP: u32 = 3;
    Ok(headers
        .chunks(entry_size)
        .all(|entry| u32_at(entry, 0) != PT_INTERP))
}

/// The installation root of the host's bats (`bin/bats`,
/// `libexec/bats-core`, `lib/bats-core`), found from `bats` on PATH the way
/// bats finds it itself.
fn bats_root() -> Result<PathBuf> {
    let bats = crate::runtime::find_executable(Path::new("bats")).context("bats is not on PATH")?;
    let real = bats.canonicalize()?;
    let root = real
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for part in ["libexec/bats-core/bats", "lib/bats-core"] {
        if !root.join(part).exists() {
            bail!(
                "{} is not a bats-core installation: {} is missing",
                real.display(),
                root.join(part).display()
            );
        }
    }
    Ok(root)
}

/// Copies a file with its permissions.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Copies a directory tree, symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let target = to.join(entry.path().strip_prefix(from)?);
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &target)?;
        } else {
            copy_file(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A temporary directory whose path podman accepts as an image name:
/// lowercase letters, digits and separators only.
struct WorkDir(PathBuf);

/// Work directories (and so containers) are named `<prefix><pid>-<n>`.
const WORK_DIR_PREFIX: &str = "herd-test-run-";

impl WorkDir {
    fn create() -> Result<WorkDir> {
        let temp = std::env::temp_dir();
        let parent = if usable_in_image_name(&temp) {
            temp
        } else {
            PathBuf::from("/tmp")
        };
        for n in 0..1000 {
            let path = parent.join(format!("{WORK_DIR_PREFIX}{}-{n}", std::process::id()));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                    return Ok(WorkDir(path));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("creating {}", path.display()));
                }
            }
        }
        bail!("cannot create a work directory in {}", parent.display())
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn name(&self) -> String {
        self.0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether every component of `path` is a valid component of an image
/// name (lowercase alphanumerics joined by `.`, `_` or `-`).
fn usable_in_image_name(path: &Path) -> bool {
    path.is_absolute()
        && path.components().skip(1).all(|c| {
            let part = c.as_os_str().to_string_lossy();
            let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            part.starts_with(alnum)
                && part.ends_with(alnum)
                && part.chars().all(|c| alnum(c) || "._-".contains(c))
        })
}

/// Writes the image to run into a new OCI layout at `layout`, tagged with
/// the image's name, and returns the image's command (the app): the image
/// itself, or, with tester images, a copy whose layers are the testers'
/// (those the image does not have) below the image's own. Blobs are links
/// to the store's.
fn write_layout(
    store: &Store,
    built: &BuiltImage,
    testers: &[ImageName],
    layout: &Path,
) -> Result<Vec<String>> {
    let target = Store::open(layout)?;
    let link = |digest: &oci_spec::image::Digest| -> Result<()> {
        let digest = store::from_oci_digest(digest);
        // podman reads the bytes: a layer from the build cache comes now.
        crate::registry::fetch_lazy(store, std::slice::from_ref(&digest))?;
        match std::os::unix::fs::symlink(store.blob_path(&digest), target.blob_path(&digest)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(e).with_context(|| format!("linking blob {digest}"))
            }
            _ => Ok(()),
        }
    };
    let manifest = store.read_manifest(&built.manifest)?;
    let config = store.read_config(&manifest)?;
    let app = config
        .config()
        .as_ref()
        .and_then(|c| c.cmd().clone())
        .unwrap_or_default();
    let descriptor = if testers.is_empty() {
        link(built.manifest.digest())?;
        link(manifest.config().digest())?;
        built.manifest.clone()
    } else {
        let own = layers_of(&manifest, &config, &built.name)?;
        let mut layers: Vec<(Descriptor, String)> = vec![];
        for tester in testers {
            let descriptor = crate::registry::pull_if_missing(store, tester)
                .with_context(|| format!("resolving tester dependency {tester}"))?;
            let manifest = store.read_manifest(&descriptor)?;
            let config = store.read_config(&manifest)?;
            for layer in layers_of(&manifest, &config, tester)? {
                let known = |(l, _): &(Descriptor, String)| l.digest() == layer.0.digest();
                if !own.iter().any(known) && !layers.iter().any(known) {
                    layers.push(layer);
                }
            }
        }
        layers.extend(own);
        let mut stacked_config = config.clone();
        stacked_config
            .rootfs_mut()
            .set_diff_ids(layers.iter().map(|(_, d)| d.clone()).collect());
        // History describes the image's own layers and would no longer
        // match them; it is optional.
        stacked_config.set_history(None);
        let mut stacked = manifest.clone();
        stacked.set_config(target.write_json(MediaType::ImageConfig, &stacked_config)?);
        stacked.set_layers(layers.into_iter().map(|(l, _)| l).collect());
        target.write_json(MediaType::ImageManifest, &stacked)?
    };
    for layer in target.read_manifest(&descriptor)?.layers() {
        link(layer.digest())?;
    }
    target.set_tag(&built.name, &descriptor)?;
    Ok(app)
}

/// The layers of an image with their diff IDs.
fn layers_of(
    manifest: &oci_spec::image::ImageManifest,
    config: &oci_spec::image::ImageConfiguration,
    name: &ImageName,
) -> Result<Vec<(Descriptor, String)>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        bail!(
            "{name}: its config lists {} layers but its manifest {}",
            diff_ids.len(),
            manifest.layers().len()
        );
    }
    Ok(manifest
        .layers()
        .iter()
        .cloned()
        .zip(diff_ids.iter().cloned())
        .collect())
}

/// Removes the stopped containers and work directories of `herd test`
/// runs that were killed (their names carry the dead process's id).
/// Best effort: a failure here must not fail this run's test.
fn remove_orphans(podman: &Path) {
    let dead = |name: &str| {
        name.strip_prefix(WORK_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
            })
    };
    let listed = Command::new(podman)
        .args(["ps", "--all", "--format", "{{.Names}}", "--filter"])
        .arg(format!("name=^{WORK_DIR_PREFIX}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(listed) = listed {
        for name in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            if dead(name) {
                tracing::debug!("removing {name}, left by a killed herd test");
                let mut rm = Command::new(podman);
                rm.args(["rm", "--force", "--time", "0", name]);
                quiet(rm);
            }
        }
    }
    // The names podman gave the killed runs' images (after their layouts).
    let images = Command::new(podman)
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(images) = images {
        for image in String::from_utf8_lossy(&images.stdout).split_whitespace() {
            let orphan = image
                .split('/')
                .any(|part| dead(part.split(':').next().unwrap_or_default()));
            if orphan {
                let mut rmi = Command::new(podman);
                rmi.args(["rmi", image]);
                quiet(rmi);
            }
        }
    }
    for parent in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if dead(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Runs a clean-up command whose failure is of no consequence.
fn quiet(mut command: Command) {
    let _ = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A detached podman container of the image under test. Dropping it
/// removes the container and the name podman gave the image.
struct Container {
    podman: PathBuf,
    name: String,
    /// podman's name for the image it loaded from the layout.
    image: Option<String>,
    /// herd's end of the [`LIFELINE`], held as long as the container should run.
    _lifeline: std::fs::File,
}

impl Container {
    /// Loads the image of `layout` into podman and starts it with the
    /// keep-alive in place of the app `app`, the toolbox and the tests of
    /// `work` mounted read-only.
    fn start(
        podman: &Path,
        work: &WorkDir,
        layout: &Path,
        name: &ImageName,
        app: &[String],
    ) -> Result<Container> {
        let lifeline = work.path().join("tools").join(LIFELINE);
        nix::unistd::mkfifo(&lifeline, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .with_context(|| format!("creating {}", lifeline.display()))?;
        // Read and write: opening a FIFO for writing alone would block until
        // the container opened it for reading.
        let lifeline = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lifeline)
            .with_context(|| format!("opening {}", lifeline.display()))?;
        let mut container = Container {
            podman: podman.to_path_buf(),
            name: work.name(),
            image: None,
            _lifeline: lifeline,
        };
        // Loaded on its own first, to learn the name podman gives it (after
        // the layout's path) and remove that name afterwards.
        let reference = format!("oci:{}:{name}", layout.display());
        let id = container
            .captured(container.command(&["pull", "-q", &reference]))
            .with_context(|| format!("loading {name} into podman"))?;
        let id = id.trim().to_string();
        let tags = container.captured(container.command(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoTags}}",
            &id,
        ]))?;
        let tags: Vec<String> = serde_json::from_str(tags.trim()).unwrap_or_default();
        container.image = tags.into_iter().find(|t| t.contains(&work.name()));

        let work_dir = work.path().display();
        let mut run = container.command(&["run", "-d", "-q", "--name", &container.name]);
        run.arg("--volume")
            .arg(format!("{work_dir}/tools:{TOOLS}:ro,z"))
            .arg("--volume")
            .arg(format!("{work_dir}/tests:{TESTS}:ro,z"))
            .arg("--tmpfs")
            .arg(format!("{SCRATCH}:rw,mode=1777"))
            .arg(&id)
            .arg(format!("{TOOLS}/bin/sh"))
            .arg("-c")
            .arg(KEEP_ALIVE)
            .arg("herd-test-app")
            .args(app);
        container
            .captured(run)
            .with_context(|| format!("starting a container of {name}"))?;
        Ok(container)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.podman);
        command.args(args);
        command
    }

    /// `podman exec` of `args` through the wrapper that sets PATH and TMPDIR.
    fn exec(&self, args: &[String]) -> Command {
        let mut command = self.command(&["exec", &self.name]);
        command
            .arg(format!("{TOOLS}/bin/sh"))
            .arg("-c")
            .arg(EXEC_WRAPPER)
            .arg("herd-test")
            .args(args);
        command
    }

    /// Runs `command`'s stdout; an error with its output when it fails.
    fn captured(&self, mut command: Command) -> Result<String> {
        let output = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.podman.display()))?;
        if !output.status.success() {
            bail!(
                "{:?} failed ({}): {}",
                command.get_args().collect::<Vec<_>>(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until herd-init started the keep-alive (prestart scripts ran,
    /// templates rendered), then until `wait` (`tests/wait.sh` and how to
    /// run it) succeeds; both within `timeout`.
    fn wait_until_ready(&self, wait: Option<&WaitScript>, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let started_check = vec![format!("{TOOLS}/bin/test"), "-e".into(), STARTED.into()];
        let mut started = false;
        let mut last: Option<(i32, String)> = None;
        loop {
            let check = match (started, wait) {
                (false, _) => &started_check,
                (true, Some(wait)) => &wait.command,
                (true, None) => return Ok(()),
            };
            match run_combined(self.exec(check), deadline)? {
                Some((0, _)) if !started => {
                    started = true;
                    continue;
                }
                Some((0, _)) => return Ok(()),
                Some(result) if started => last = Some(result),
                _ => {}
            }
            self.ensure_running()?;
            let now = Instant::now();
            if now >= deadline {
                let after = humantime::format_duration(timeout);
                let Some(wait) = wait.filter(|_| started) else {
                    bail!(
                        "timed out after {after}: the container did not finish starting (herd-init's prestart scripts and templates); the end of its log:\n{}",
                        self.log_tail()
                    )
                };
                let last = match last {
                    Some((code, output)) => format!(
                        "its last run exited with status {code}{}",
                        if output.trim().is_empty() {
                            String::new()
                        } else {
                            format!(" and printed:\n{}", indent(&output))
                        }
                    ),
                    None => "no run of it finished".into(),
                };
                bail!(
                    "timed out after {after} waiting for {} to succeed (wait longer with --timeout)\n{last}\nthe end of the container's log:\n{}",
                    wait.path.display(),
                    self.log_tail()
                )
            }
            pause(RETRY_EVERY.min(deadline - now))?;
        }
    }

    /// Runs `args` in the container with our stdout and stderr; returns its
    /// exit status.
    fn exec_inheriting(&self, args: &[String]) -> Result<i32> {
        let mut child = self
            .exec(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", self.podman.display()))?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(exit_code(status));
            }
            if let Err(interrupted) = pause(POLL_EVERY) {
                stop(&mut child);
                return Err(interrupted);
            }
        }
    }

    /// An error, with the end of the log, unless the container still runs.
    fn ensure_running(&self) -> Result<()> {
        let state = self.captured(self.command(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            &self.name,
        ]))?;
        match state.trim().split_once(' ') {
            Some(("true", _)) => Ok(()),
            Some((_, code)) => bail!(
                "the container stopped with exit status {code} before the tests finished; the end of its log:\n{}",
                self.log_tail()
            ),
            None => bail!("podman reported the container's state as {state:?}"),
        }
    }

    /// The last lines of the container's log, indented.
    fn log_tail(&self) -> String {
        let lines = LOG_LINES.to_string();
        let logs = self.command(&["logs", "--tail", &lines, &self.name]);
        match run_combined(logs, Instant::now() + Duration::from_secs(10)) {
            Ok(Some((_, output))) if !output.trim().is_empty() => indent(&output),
            _ => "  | (nothing)".into(),
        }
    }

    /// Says so when the app exited with a failure while the tests ran: the
    /// tests decide the verdict, but this is worth knowing.
    fn report_app_status(&self, app: &[String]) {
        let read = vec![format!("{TOOLS}/bin/cat"), APP_STATUS.into()];
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Ok(Some((0, status))) = run_combined(self.exec(&read), deadline) {
            let status = status.trim();
            if status != "0" {
                tracing::warn!(
                    "the app ({}) exited with status {status} during the test; its log:\n{}",
                    app.join(" "),
                    self.log_tail()
                );
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        quiet(self.command(&["rm", "--force", "--time", "0", &self.name]));
        if let Some(image) = &self.image {
            // Only the name: the image stays while other names or
            // containers use it.
            quiet(self.command(&["rmi", image]));
        }
    }
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })
}

fn stop(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `command` with stdout and stderr on one pipe and returns its exit
/// status and output; `None` when it still ran at `deadline` (it is then
/// killed).
fn run_combined(command: Command, deadline: Instant) -> Result<Option<(i32, String)>> {
    let (mut child, mut reader) = crate::runtime::spawn_combined(command)?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = reader.read_to_end(&mut output);
        let _ = sender.send(output);
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            break None;
        }
        if let Err(interrupted) = pause(POLL_EVERY) {
            stop(&mut child);
            return Err(interrupted);
        }
    };
    // A killed podman may leave a helper holding the pipe: do not wait on it
    // for long.
    let output = receiver
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    Ok(status.map(|s| (exit_code(s), String::from_utf8_lossy(&output).into_owned())))
}

/// Sleeps for `duration`; an error if the test was interrupted.
fn pause(duration: Duration) -> Result<()> {
    if let Some(signal) = crate::interrupt::received() {
        bail!("interrupted by {signal}; the test container is being removed");
    }
    std::thread::sleep(duration);
    Ok(())
}
