//! Embeds the git commit herd is built from, for `herd version` and
//! `--version`. Outside a git checkout (a crates tarball) or without git,
//! the build goes on and the version says the commit is unknown.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    let date = git(&["log", "-1", "--format=%cs", "HEAD"]);
    let described = match (commit, date) {
        (Some(commit), Some(date)) => format!("commit {commit} {date}"),
        (Some(commit), None) => format!("commit {commit}"),
        _ => "commit unknown: built outside git".to_string(),
    };
    println!("cargo:rustc-env=HERD_GIT_COMMIT={described}");
    // Run again when HEAD moves (a commit, a checkout); files that do not
    // exist are not named, as cargo would then rerun this at every build.
    for name in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
