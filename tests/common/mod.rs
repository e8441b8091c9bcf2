//! Helpers shared by the end-to-end tests: run the built binaries, make
//! image directories, run podman with the tests' containers.conf.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn herd_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herd"))
}

/// A `herd` command with a clean environment for herd's own variables.
pub fn herd() -> Command {
    let mut command = Command::new(herd_binary());
    for variable in [
        "HERD_STORE",
        "HERD_INIT",
        "HERD_CONFIG",
        "SOURCE_DATE_EPOCH",
        "LOG_LEVEL",
    ] {
        command.env_remove(variable);
    }
    command
}

/// A temporary directory removed on drop. Its path is lowercase digits and
/// dashes only: podman turns the path of an `oci:` reference into an image
/// name, which must be lowercase.
pub struct Workdir(PathBuf);

impl Workdir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn workdir() -> Workdir {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let path = std::env::temp_dir().join(format!("herd-test-{}-{nanos}-{n}", std::process::id()));
    std::fs::create_dir_all(&path).unwrap();
    Workdir(path)
}

/// Runs `command`, panics with its output unless it succeeds, returns stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs `command`, panics unless it fails, returns its output.
pub fn run_fails(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        !output.status.success(),
        "{command:?} should have failed:\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A tool the tests need. Missing tools fail the test with a hint: CI
/// installs them (.ci/run), and a skipped check would hide a regression.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let path = Path::new(dir).join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed; run .ci/run or install it (see README)")
}

/// A `podman` command using tests/containers.conf.
pub fn podman() -> Command {
    let mut command = Command::new(tool("podman"));
    command.env(
        "CONTAINERS_CONF",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containers.conf"),
    );
    command
}

/// Commands busybox provides that the tests' images use.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "sleep", "stat", "rm", "mkdir", "touch", "test", "grep", "ps",
    "kill", "id", "true", "false", "wc", "env", "sed", "head", "tail", "readlink", "find", "chmod",
    "date", "printf", "cp", "mv", "seq", "tr", "od",
];

/// Copies the host's static busybox into `files_dir/bin` with a symlink per
/// applet, so an image built from it has a shell and core tools.
pub fn add_busybox(files_dir: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("busybox is not installed (Debian package busybox-static)"));
    let bin = files_dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// Writes an image directory with a busybox root and the given manifest.
pub fn busybox_image(dir: &Path, manifest: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("aci-manifest.yml"), manifest).unwrap();
    add_busybox(&dir.join("files"));
}

/// Every file of a directory tree with its bytes, for "unchanged" checks.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Copies a directory tree, keeping symlinks as symlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        let file_type = entry.file_type();
        if file_type.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The digest `herd build` printed for `name` ("NAME DIGEST" lines).
pub fn built_digest(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().strip_prefix("sha256:"))
                .map(|d| format!("sha256:{d}"))
        })
        .unwrap_or_else(|| panic!("no digest for {name} in:\n{stdout}"))
}
