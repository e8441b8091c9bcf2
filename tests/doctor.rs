//! `herd doctor` end to end: one line per item, the fix for what is
//! missing, exit 1 when something herd needs is missing, never a secret.

mod common;

use common::*;
use std::path::Path;

/// Everything `herd doctor` looks for on PATH, found on this machine.
const PROGRAMS: &[&str] = &[
    "podman",
    "conmon",
    "catatonit",
    "runc",
    "slirp4netns",
    "skopeo",
    "bats",
    "git",
    "ssh",
];

/// `herd doctor` confined to `dir` (its store, HOME, credentials).
fn doctor(dir: &Path) -> std::process::Command {
    confined_herd(dir, &["doctor"])
}

#[test]
fn with_everything_installed_the_doctor_exits_0_one_line_per_item() {
    needs(PROGRAMS);
    let work = workdir();
    let output = doctor(work.path()).output().unwrap();
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}{}",
        output.status,
        text(&output.stderr)
    );
    for item in ["root", "OCI runtime", "overlayfs", "store"]
        .iter()
        .chain(PROGRAMS.iter().filter(|p| **p != "runc"))
    {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.contains(&format!(" {item}: "))),
            "no ok line for {item}:\n{stdout}"
        );
    }
    // The store is not made yet: where it will be, and the free space.
    let store = work.path().join("store");
    assert!(
        stdout.contains(&format!("store: {} (not created yet", store.display()))
            && stdout.contains(" free"),
        "{stdout}"
    );
    assert!(!store.exists(), "the doctor created the store");
    // No credentials: said, not a failure.
    assert!(
        stdout.contains("warning  registry credentials: none found"),
        "{stdout}"
    );
}

#[test]
fn a_path_without_catatonit_names_it_with_the_fix_and_exits_1() {
    needs(PROGRAMS);
    let work = workdir();
    // A PATH holding every program but catatonit.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in PROGRAMS.iter().filter(|p| **p != "catatonit") {
        std::os::unix::fs::symlink(tool(program), bin.join(program)).unwrap();
    }
    // The catatonit package also links it into podman's helper directory,
    // where podman finds it whatever PATH says: hidden under an empty
    // tmpfs in a mount namespace of the doctor's own.
    let mut confined = doctor(work.path());
    confined.env("PATH", &bin);
    let mut command = std::process::Command::new(tool("unshare"));
    command
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg("for d in /usr/libexec/podman /usr/lib/podman; do [ ! -d $d ] || /bin/mount -t tmpfs none $d || exit 99; done; exec \"$@\"")
        .arg("sh")
        .arg(confined.get_program())
        .args(confined.get_args());
    for (key, value) in confined.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let output = command.output().unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("missing"))
        .collect();
    assert_eq!(missing.len(), 1, "{stdout}");
    assert!(
        missing[0].starts_with("missing  catatonit: ")
            && missing[0].ends_with("fix: apt-get install catatonit"),
        "{stdout}"
    );
    assert!(
        text(&output.stderr).contains("1 item missing"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn credentials_are_named_by_file_and_registry_never_by_secret() {
    let work = workdir();
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    // "hunter2:hunter2" in base64.
    std::fs::write(
        docker.join("config.json"),
        r#"{"auths": {"registry.example:5000": {"auth": "aHVudGVyMjpodW50ZXIy"}}}"#,
    )
    .unwrap();
    let output = doctor(work.path()).output().unwrap();
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(
        all.contains(&format!(
            "ok       registry credentials: {} (registry.example:5000)",
            docker.join("config.json").display()
        )),
        "{all}"
    );
    assert!(
        !all.contains("aHVudGVyMjpodW50ZXIy") && !all.contains("hunter2"),
        "{all}"
    );
}
