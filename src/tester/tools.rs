//! The host programs `herd test` uses: podman, and the toolbox copied
//! into the container (a static busybox, and a static bash with the
//! host's bats when no tester image provides bats).

use super::TOOLS;
use anyhow::{Context, Result, bail};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Busybox applets herd's own commands in the container use.
const APPLETS_USED: &[&str] = &["sh", "test", "touch", "cat"];

/// The host programs a test uses: podman, and those copied into the
/// toolbox.
pub(super) struct HostTools {
    pub(super) podman: PathBuf,
    busybox: PathBuf,
    /// A static bash and the root of the bats installation, when the host's
    /// bats runs the tests.
    pub(super) bats: Option<(PathBuf, PathBuf)>,
}

impl HostTools {
    pub(super) fn find(host_bats: bool, manifest: &Path) -> Result<HostTools> {
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
    /// and bash and bats when the host's bats is used (`host_bats`).
    pub(super) fn install(&self, dir: &Path, host_bats: bool) -> Result<()> {
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
        if let Some((bash, root)) = self.bats.as_ref().filter(|_| host_bats) {
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
pub(super) fn copy_tree(from: &Path, to: &Path) -> Result<()> {
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
