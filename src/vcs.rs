//! What git says about image directories: the time of the last commit
//! that touched each one (the build's `SOURCE_DATE_EPOCH`), the
//! repository's HEAD (the `-v<hash>` of generated versions) and whether
//! the directory has changes not committed (the `-dirty` of generated
//! versions).
//!
//! A tree of hundreds of images asks this for every one of them, so the
//! questions are batched: one `git rev-parse`, one `git status` and one
//! `git log` per repository answer every directory in it, and a directory
//! with no `.git` above it asks git nothing. `git status` compares the
//! whole work tree and costs more than the rest (0.1-0.2 s over 500
//! images), so it is asked only about the directories whose version is
//! generated: a tree of versioned images never runs it. Both answers must not depend on which other directories were
//! asked at the same time, or `herd build DIR` and `herd build TREE`
//! would give DIR different digests: `--full-history` makes git list
//! every commit that touched a path in its usual walk order, so the first
//! one listed for a directory is the same whatever else is listed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What git knows of one directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revision {
    /// Seconds since the epoch of the last commit touching the directory;
    /// 0 outside git or before the first commit.
    pub epoch: u64,
    /// HEAD's short hash; `None` outside git.
    pub short_hash: Option<String>,
    /// Whether git sees changes under the directory that HEAD lacks
    /// (modified, staged, deleted or untracked files; ignored ones do not
    /// count). Always false outside git, and when not asked.
    pub dirty: bool,
}

impl Revision {
    /// What identifies the source beside its content: the commit, and
    /// whether the tree differs from it (an input of the cache key, as
    /// both go into generated versions).
    pub fn commit_label(&self) -> String {
        match (&self.short_hash, self.dirty) {
            (Some(hash), true) => format!("{hash}-dirty"),
            (Some(hash), false) => hash.clone(),
            (None, _) => String::new(),
        }
    }
}

/// The revision of one directory.
pub fn revision(dir: &Path) -> Revision {
    let dirs = [dir.to_path_buf()];
    revisions(&dirs, &dirs).remove(dir).unwrap_or_default()
}

/// The revisions of `dirs`: one `git rev-parse` and one `git log` per
/// repository they are in, and one `git status` over those of them in
/// `dirty_asked` (the others are never dirty).
pub fn revisions(dirs: &[PathBuf], dirty_asked: &[PathBuf]) -> HashMap<PathBuf, Revision> {
    let dirty_asked: std::collections::HashSet<&PathBuf> = dirty_asked.iter().collect();
    let mut by_repository: HashMap<PathBuf, Vec<&PathBuf>> = HashMap::new();
    let mut found = HashMap::new();
    for dir in dirs {
        match work_tree_of(dir) {
            Some(top) => by_repository.entry(top).or_default().push(dir),
            None => {
                found.insert(dir.clone(), Revision::default());
            }
        }
    }
    for (top, dirs) in by_repository {
        let short_hash = git(&top, &["rev-parse", "--short", "HEAD"]);
        let wanted = relative_paths(&top, &dirs);
        let epochs = last_commit_times(&top, &wanted);
        let asked: Vec<&PathBuf> = dirs
            .iter()
            .copied()
            .filter(|d| dirty_asked.contains(*d))
            .collect();
        let dirty = dirty_dirs(&top, &relative_paths(&top, &asked));
        for dir in dirs {
            let epoch = epochs.get(dir).copied().unwrap_or(0);
            found.insert(
                dir.clone(),
                Revision {
                    epoch,
                    short_hash: short_hash.clone(),
                    // Before the first commit everything is uncommitted.
                    dirty: dirty_asked.contains(dir)
                        && (short_hash.is_none() || dirty.contains(dir)),
                },
            );
        }
    }
    found
}

/// The nearest ancestor of `dir` (itself included) holding `.git` (a
/// directory, or the file of a worktree or submodule).
fn work_tree_of(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    absolute
        .ancestors()
        .find(|candidate| candidate.join(".git").exists())
        .map(Path::to_path_buf)
}

/// Directories by their path relative to the repository, as git prints
/// them ("" for the top itself).
fn relative_paths<'a>(top: &Path, dirs: &[&'a PathBuf]) -> HashMap<Vec<u8>, &'a PathBuf> {
    let mut wanted = HashMap::new();
    for dir in dirs {
        let Ok(absolute) = std::path::absolute(dir) else {
            continue;
        };
        let Ok(relative) = absolute.strip_prefix(top) else {
            continue;
        };
        wanted.insert(relative.as_os_str().as_bytes().to_vec(), *dir);
    }
    wanted
}

/// The pathspecs of `wanted` for a git command.
fn pathspecs<'a>(
    wanted: &'a HashMap<Vec<u8>, &PathBuf>,
) -> impl Iterator<Item = &'a std::ffi::OsStr> {
    wanted.keys().map(|relative| {
        if relative.is_empty() {
            std::ffi::OsStr::new(".")
        } else {
            std::ffi::OsStr::from_bytes(relative)
        }
    })
}

/// Which of `wanted` hold changes HEAD lacks, from one `git status` over
/// all of them. git lists a directory holding only untracked files as the
/// directory itself (`new/`), which may be above or below an asked one.
fn dirty_dirs(
    top: &Path,
    wanted: &HashMap<Vec<u8>, &PathBuf>,
) -> std::collections::HashSet<PathBuf> {
    let mut dirty = std::collections::HashSet::new();
    if wanted.is_empty() {
        return dirty;
    }
    let output = Command::new("git")
        .arg("-C")
        .arg(top)
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain",
            "-z",
            "--no-renames",
            "--",
        ])
        .args(pathspecs(wanted))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let Ok(output) = output else {
        return dirty;
    };
    // Entries are `XY path\0`; the path is relative to the top.
    for entry in output.stdout.split(|&b| b == 0) {
        let Some(path) = entry.get(3..).filter(|p| !p.is_empty()) else {
            continue;
        };
        let path = path.strip_suffix(b"/").unwrap_or(path);
        for (relative, dir) in wanted {
            let inside = |outer: &[u8], inner: &[u8]| {
                outer.is_empty()
                    || inner == outer
                    || (inner.starts_with(outer) && inner.get(outer.len()) == Some(&b'/'))
            };
            // A change in the directory, or an untracked directory
            // holding it.
            if inside(relative, path) || inside(path, relative) {
                dirty.insert((*dir).clone());
            }
        }
    }
    dirty
}

/// The last commit time touching each of `wanted`, from one `git log` over
/// all of them, read until every directory has its answer.
fn last_commit_times(top: &Path, wanted: &HashMap<Vec<u8>, &PathBuf>) -> HashMap<PathBuf, u64> {
    let mut wanted = wanted.clone();
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(top)
        .args(["-c", "core.quotePath=false", "log", "--full-history"])
        .args([
            "--format=%x01%ct",
            "--name-only",
            "-z",
            "--no-renames",
            "--",
        ]);
    command.args(pathspecs(&wanted));
    let mut found = HashMap::new();
    let Ok(mut child) = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return found;
    };
    let mut output = BufReader::new(child.stdout.take().expect("piped"));
    let mut commit_time: Option<u64> = None;
    let mut first_path = false;
    let mut token = Vec::new();
    while !wanted.is_empty() {
        token.clear();
        match output.read_until(0, &mut token) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if token.last() == Some(&0) {
            token.pop();
        }
        if let Some(time) = token.strip_prefix(b"\x01") {
            commit_time = std::str::from_utf8(time).ok().and_then(|t| t.parse().ok());
            first_path = true;
            continue;
        }
        let mut path: &[u8] = &token;
        if first_path {
            path = path.strip_prefix(b"\n").unwrap_or(path);
            first_path = false;
        }
        let Some(time) = commit_time else { continue };
        // The file's directories, deepest first, and the top itself.
        let mut prefix: &[u8] = path;
        loop {
            prefix = match prefix.iter().rposition(|&b| b == b'/') {
                Some(slash) => &prefix[..slash],
                None => b"",
            };
            if let Some(dir) = wanted.remove(prefix) {
                found.insert(dir.clone(), time);
            }
            if prefix.is_empty() {
                break;
            }
        }
    }
    // Everything asked is answered: the rest of the history is not needed.
    let _ = child.kill();
    let _ = child.wait();
    found
}

/// Runs git in `dir`; `None` when it fails or prints nothing.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("git is installed");
        assert!(status.success(), "git {args:?}");
    }

    fn commit(dir: &Path, file: &str, epoch: u64) {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, epoch.to_string()).unwrap();
        run(dir, &["add", "-A"]);
        let date = format!("@{epoch} +0000");
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["commit", "-q", "-m", file])
            .env("GIT_COMMITTER_DATE", &date)
            .env("GIT_AUTHOR_DATE", &date)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn each_directory_gets_its_own_last_commit_whatever_else_is_asked() {
        let repo = tempfile::tempdir().unwrap();
        run(repo.path(), &["init", "-q"]);
        commit(repo.path(), "aci/a/aci-manifest.yml", 1_000_000_000);
        commit(repo.path(), "aci/b/files/x y\nz", 1_100_000_000);
        commit(repo.path(), "aci/a/files/f", 1_200_000_000);
        commit(repo.path(), "README", 1_300_000_000);
        let a = repo.path().join("aci/a");
        let b = repo.path().join("aci/b");
        let never = repo.path().join("aci/never");
        std::fs::create_dir_all(&never).unwrap();
        let all = revisions(
            &[a.clone(), b.clone(), never.clone()],
            &[a.clone(), b.clone()],
        );
        assert_eq!(all[&a].epoch, 1_200_000_000);
        assert_eq!(all[&b].epoch, 1_100_000_000);
        assert_eq!(all[&never].epoch, 0);
        assert_eq!(revision(&b), all[&b]);
        assert_eq!(revision(repo.path()).epoch, 1_300_000_000);
        let hash = all[&a].short_hash.clone().expect("a hash in git");
        assert!(hash.len() >= 7, "{hash}");
        assert!(!all[&a].dirty && !all[&b].dirty, "{all:?}");
        // Untracked (a directory of its own, or beside committed files),
        // modified: each dirties its directory only.
        std::fs::write(never.join("new"), "x").unwrap();
        std::fs::write(b.join("untracked"), "x").unwrap();
        let asked = [a.clone(), b.clone(), never.clone()];
        let all = revisions(&asked, &asked);
        assert!(
            !all[&a].dirty && all[&b].dirty && all[&never].dirty,
            "{all:?}"
        );
        // Not asked: not dirty, whatever git would say.
        assert!(!revisions(&asked, &[])[&b].dirty);
        std::fs::remove_file(b.join("untracked")).unwrap();
        std::fs::write(a.join("files/f"), "changed").unwrap();
        let all = revisions(&[a.clone(), b.clone()], &[a.clone(), b.clone()]);
        assert!(all[&a].dirty && !all[&b].dirty, "{all:?}");
        assert_eq!(all[&a].commit_label(), format!("{hash}-dirty"));
        let outside = tempfile::tempdir().unwrap();
        assert_eq!(revision(outside.path()), Revision::default());
        let fresh = tempfile::tempdir().unwrap();
        run(fresh.path(), &["init", "-q"]);
        assert!(revision(fresh.path()).dirty, "no commit yet");
    }
}
