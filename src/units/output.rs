//! The output directory of `herd gen`: replaced whole and atomically by
//! the generated files, or compared with them (`--check`, `--diff`).

use super::Files;
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// What differs between generated files and a directory.
#[derive(Debug, Default)]
pub struct Check {
    /// Generated, not in the directory.
    pub added: Vec<PathBuf>,
    /// In both, with other content.
    pub changed: Vec<PathBuf>,
    /// In the directory, no longer generated.
    pub removed: Vec<PathBuf>,
    /// The directory's content of the changed and removed files.
    pub existing: Files,
}

impl Check {
    pub fn is_clean(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// Compares `files` with `dir` (a missing directory is empty). When
/// `services` is not empty, only their subdirectories are compared.
pub fn check_units(dir: &Path, files: &Files, services: &[String]) -> Result<Check> {
    compare(dir, &list(dir)?, files, services, true, None)
}

/// Mode of a generated file holding secrets: root's group may read it
/// (for tools that inspect units), others may not.
pub const PRIVATE_MODE: u32 = 0o640;
/// Mode of the other generated files, whatever the umask: units are for
/// everyone to read.
pub const PUBLIC_MODE: u32 = 0o644;

/// `check_units` over an already listed directory; `keep_existing` keeps
/// the old content of what differs, for diffs. With `private`, a file of
/// the same content but another mode than it is to have differs too.
fn compare(
    dir: &Path,
    listed: &[PathBuf],
    files: &Files,
    services: &[String],
    keep_existing: bool,
    private: Option<&BTreeSet<PathBuf>>,
) -> Result<Check> {
    let on_disk: BTreeSet<&PathBuf> = listed.iter().filter(|p| in_scope(p, services)).collect();
    let mut check = Check::default();
    // Reading is most of the cost of an unchanged run: do it in parallel.
    let differing: Vec<Option<Vec<u8>>> = files
        .par_iter()
        .map(|(path, content)| match on_disk.contains(path) {
            false => Ok(None),
            true => read(dir, path).map(|old| {
                let mode_differs = private.is_some_and(|private| {
                    mode_of(&dir.join(path)) != Some(wanted_mode(private, path))
                });
                (old != *content || mode_differs).then_some(old)
            }),
        })
        .collect::<Result<_>>()?;
    for ((path, _), old) in files.iter().zip(differing) {
        match old {
            _ if !on_disk.contains(path) => check.added.push(path.clone()),
            Some(old) => {
                check.changed.push(path.clone());
                if keep_existing {
                    check.existing.insert(path.clone(), old);
                }
            }
            None => {}
        }
    }
    for path in on_disk.into_iter().filter(|p| !files.contains_key(*p)) {
        check.removed.push(path.clone());
        if keep_existing {
            check.existing.insert(path.clone(), read(dir, path)?);
        }
    }
    Ok(check)
}

/// Replaces `dir` by a directory holding exactly `files` (plus, when
/// `services` is not empty, the other services' files already there), and
/// says whether anything changed. The new tree is made in a sibling
/// temporary directory, which then takes the place of `dir` in one atomic
/// rename: a reader sees the old units or the new ones, never a mix.
/// Files that did not change are hard links to the old ones, and nothing
/// is touched when no file changed: creating and deleting thousands of
/// files is what costs, not rendering them. A directory holding anything
/// `herd gen` would not have written is refused rather than replaced.
pub fn write_units(
    dir: &Path,
    files: &Files,
    private: &BTreeSet<PathBuf>,
    services: &[String],
) -> Result<bool> {
    // Replace what a symbolic link points at, not the link.
    let resolved;
    let dir = match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => {
            resolved = dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()))?;
            resolved.as_path()
        }
        _ => dir,
    };
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "units".into());
    let prefix = format!(".{base}.herd-");
    // One writer of an output directory at a time. Holding the lock, the
    // temporary directories beside it are those of killed runs: removed.
    let lock_path = parent.join(format!("{prefix}lock"));
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    remove_abandoned(parent, &prefix);
    // Listed under the lock: another run may have just replaced it.
    let existing = list(dir)?;
    if let Some(foreign) = existing.iter().find(|p| !looks_generated(p)) {
        bail!(
            "{} holds {}, which herd gen does not write; refusing to replace the directory (choose another --out)",
            dir.display(),
            foreign.display()
        );
    }
    let check = compare(dir, &existing, files, services, false, Some(private))?;
    if check.is_clean() && dir.is_dir() {
        return Ok(false);
    }
    let fresh: HashSet<&PathBuf> = check.added.iter().chain(&check.changed).collect();
    let temp = tempfile::Builder::new()
        .prefix(&prefix)
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    // Generated files, and the other services' files when only some were generated.
    let kept = existing.iter().filter(|p| !in_scope(p, services));
    let paths: Vec<&PathBuf> = files.keys().chain(kept).collect();
    let subdirs: BTreeSet<&Path> = paths.iter().filter_map(|p| p.parent()).collect();
    for subdir in subdirs {
        std::fs::create_dir_all(temp.path().join(subdir))?;
    }
    paths.par_iter().try_for_each(|path| {
        let target = temp.path().join(path);
        match files.get(*path) {
            Some(content) if fresh.contains(path) => {
                write_with_mode(&target, content, wanted_mode(private, path))
            }
            _ => link_or_copy(&dir.join(path), &target),
        }
        .with_context(|| format!("writing {}", target.display()))
    })?;
    // One flush for the whole tree, rather than one fsync per file.
    nix::unistd::syncfs(std::fs::File::open(temp.path())?)
        .context("syncing the new units to disk")?;
    // A temporary directory is private (0700); units are for everyone to read.
    std::fs::set_permissions(
        temp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    tracing::debug!(
        "wrote {}, linked {}",
        crate::terminal::count(fresh.len(), "file"),
        paths.len() - fresh.len()
    );
    swap_in(temp, dir)?;
    crate::fsutil::sync_dir(parent);
    Ok(true)
}

/// Removes the `<prefix>*` directories in `parent`: what a `herd gen`
/// killed while writing left. Only called with the output's lock held.
fn remove_abandoned(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let abandoned = entry.file_name().to_string_lossy().starts_with(prefix)
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if abandoned {
            tracing::debug!(
                "removing {}, left by a killed herd gen",
                entry.path().display()
            );
            let _ = remove_tree(&entry.path());
        }
    }
}

/// The mode a generated file is written with, on disk or on a machine.
pub fn wanted_mode(private: &BTreeSet<PathBuf>, path: &Path) -> u32 {
    if private.contains(path) {
        PRIVATE_MODE
    } else {
        PUBLIC_MODE
    }
}

fn mode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

/// Creates `path` with exactly `mode` (not less by the umask, and never
/// more for a moment: a secret is not readable between create and chmod).
fn write_with_mode(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & PRIVATE_MODE)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    file.write_all(content)
}

fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::hard_link(from, to).or_else(|_| std::fs::copy(from, to).map(drop))
}

/// Puts the directory `temp` where `dir` is. With an existing `dir`, the
/// two are exchanged atomically (renameat2 RENAME_EXCHANGE) and the old
/// units, now at the temporary path, are deleted; a file system without
/// exchange gets two renames instead.
fn swap_in(temp: tempfile::TempDir, dir: &Path) -> Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    let temp = temp.keep();
    if std::fs::symlink_metadata(dir).is_err() {
        return std::fs::rename(&temp, dir)
            .with_context(|| format!("moving the new units to {}", dir.display()));
    }
    let old = match renameat2(AT_FDCWD, &temp, AT_FDCWD, dir, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => temp,
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
            let mut old = temp.clone().into_os_string();
            old.push(".old");
            let old = PathBuf::from(old);
            std::fs::rename(dir, &old)
                .with_context(|| format!("moving {} aside", dir.display()))?;
            if let Err(e) = std::fs::rename(&temp, dir) {
                let _ = std::fs::rename(&old, dir);
                let _ = remove_tree(&temp);
                return Err(e)
                    .with_context(|| format!("moving the new units to {}", dir.display()));
            }
            old
        }
        Err(e) => {
            let _ = remove_tree(&temp);
            return Err(e).with_context(|| format!("replacing {}", dir.display()));
        }
    };
    remove_tree(&old).with_context(|| format!("removing the old units at {}", old.display()))
}

/// Removes a units tree, its service directories in parallel.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.par_iter().try_for_each(|path| {
        if path.is_dir() {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        }
    })?;
    std::fs::remove_dir(dir)
}

/// A unified diff of one unit; `None` is a missing file.
pub fn unified_diff(path: &Path, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    let old_text = String::from_utf8_lossy(old.unwrap_or_default());
    let new_text = String::from_utf8_lossy(new.unwrap_or_default());
    let label = |present: bool, side: &str| {
        if present {
            format!("{side}/{}", path.display())
        } else {
            "/dev/null".into()
        }
    };
    similar::TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&label(old.is_some(), "a"), &label(new.is_some(), "b"))
        .to_string()
}

/// Paths of the files below `dir`, relative to it; other entries than
/// directories and regular files are listed too so they are noticed.
fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(vec![]);
    }
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut paths = vec![];
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let relative = entry
            .path()
            .strip_prefix(dir)
            .unwrap_or(entry.path())
            .to_path_buf();
        if !entry.file_type().is_dir() || relative.components().count() > 1 {
            paths.push(relative);
        }
    }
    Ok(paths)
}

/// `<service>/<unit>.service|timer|yaml`, the only shape `herd gen` writes.
fn looks_generated(path: &Path) -> bool {
    path.components().count() == 2
        && path
            .extension()
            .is_some_and(|e| e == "service" || e == "timer" || e == "yaml")
}

fn in_scope(path: &Path, services: &[String]) -> bool {
    services.is_empty()
        || path
            .components()
            .next()
            .is_some_and(|c| services.iter().any(|s| c.as_os_str() == s.as_str()))
}

fn read(dir: &Path, path: &Path) -> Result<Vec<u8>> {
    let full = dir.join(path);
    std::fs::read(&full).with_context(|| format!("reading {}", full.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> Files {
        entries
            .iter()
            .map(|(p, c)| (PathBuf::from(p), c.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn write_replaces_the_directory_and_check_sees_changes() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("units/prod");
        let first = files(&[("a/p_a_h1.service", "one\n"), ("b/p_b_h1.service", "two\n")]);
        assert!(write_units(&out, &first, &BTreeSet::new(), &[]).unwrap());
        assert!(check_units(&out, &first, &[]).unwrap().is_clean());
        assert!(
            !write_units(&out, &first, &BTreeSet::new(), &[]).unwrap(),
            "nothing changed, nothing to write"
        );
        let second = files(&[
            ("a/p_a_h1.service", "one!\n"),
            ("c/p_c_h1.service", "three\n"),
        ]);
        let check = check_units(&out, &second, &[]).unwrap();
        assert_eq!(check.added, vec![PathBuf::from("c/p_c_h1.service")]);
        assert_eq!(check.changed, vec![PathBuf::from("a/p_a_h1.service")]);
        assert_eq!(check.removed, vec![PathBuf::from("b/p_b_h1.service")]);
        let diff = unified_diff(
            Path::new("a/p_a_h1.service"),
            Some(b"one\n"),
            Some(b"one!\n"),
        );
        assert!(diff.contains("-one\n+one!\n"), "{diff}");
        write_units(&out, &second, &BTreeSet::new(), &[]).unwrap();
        assert!(!out.join("b").exists());
        let beside: Vec<String> = std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".prod.herd-lock")
            .collect();
        assert_eq!(beside, ["prod"], "a temporary directory was left");
        // Only service a: c is kept (the same file, linked), a replaced.
        let inode =
            |p: &str| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(out.join(p)).unwrap());
        let c_before = inode("c/p_c_h1.service");
        write_units(
            &out,
            &files(&[("a/p_a_h2.service", "x\n")]),
            &BTreeSet::new(),
            &["a".into()],
        )
        .unwrap();
        assert_eq!(inode("c/p_c_h1.service"), c_before);
        assert!(!out.join("a/p_a_h1.service").exists());
    }

    #[test]
    fn temporaries_of_killed_runs_are_removed_by_the_next() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("prod");
        let abandoned = root.path().join(".prod.herd-x1Y2z3/a");
        std::fs::create_dir_all(&abandoned).unwrap();
        std::fs::write(abandoned.join("p_a_h1.service"), "half").unwrap();
        let other = root.path().join(".preprod.herd-x1Y2z3");
        std::fs::create_dir_all(&other).unwrap();
        write_units(
            &out,
            &files(&[("a/p_a_h1.service", "one\n")]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
        assert!(!root.path().join(".prod.herd-x1Y2z3").exists());
        assert!(
            other.exists(),
            "another output's temporaries are not this run's to remove"
        );
    }

    #[test]
    fn a_symbolic_link_keeps_pointing_at_the_new_units() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        write_units(
            &real,
            &files(&[("a/x.service", "1\n")]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_units(
            &link,
            &files(&[("a/x.service", "2\n")]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(link.join("a/x.service")).unwrap(),
            "2\n"
        );
    }

    #[test]
    fn a_directory_with_other_files_is_not_replaced() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("notes.txt"), "keep me").unwrap();
        let err = write_units(
            root.path(),
            &files(&[("a/x.service", "")]),
            &BTreeSet::new(),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("notes.txt"), "{err}");
        assert!(root.path().join("notes.txt").exists());
    }
}
