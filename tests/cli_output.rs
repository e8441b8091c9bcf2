//! The command line around the builds: colour only on a terminal or when
//! asked, quiet and verbose, the build's status line, wrapped help, store
//! management (images, tag, rmi, inspect --format) and every broken
//! manifest of a tree reported in one run.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// `command` run under `script -qc` so its stderr is a terminal; returns
/// what the terminal showed.
fn on_a_terminal(command: &str, env: &[(&str, &str)]) -> String {
    assert!(
        Path::new("/usr/bin/script").is_file(),
        "script is not installed (Debian package bsdutils)"
    );
    let mut script = Command::new("/usr/bin/script");
    script
        .args(["-qec", command, "/dev/null"])
        .env_remove("NO_COLOR")
        .env_remove("LOG_LEVEL")
        .env("TERM", "xterm")
        .env(
            "HERD_CONFIG",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/offline.yml"),
        );
    for (key, value) in env {
        script.env(key, value);
    }
    let output = script.output().expect("running script");
    text(&output.stdout)
}

fn quoted(path: &Path) -> String {
    shlex::try_quote(&path.to_string_lossy())
        .unwrap()
        .into_owned()
}

/// A files-only image (no scripts, nothing to run).
fn plain_image(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("aci-manifest.yml"), format!("name: {name}\n")).unwrap();
    std::fs::write(dir.join("files/hello"), name).unwrap();
}

/// An image on the busybox example (built into `store`) whose build
/// runlevel runs `script` as 10-script.sh.
fn image_with_build_script(store: &Path, dir: &Path, name: &str, script: &str) {
    build_examples(store, &["aci-busybox"]);
    std::fs::create_dir_all(dir.join("runlevels/build")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!("name: {name}\naci:\n  dependencies: [aci.example.com/aci-busybox:1.36-1]\n"),
    )
    .unwrap();
    std::fs::write(dir.join("runlevels/build/10-script.sh"), script).unwrap();
}

fn build(dir: &Path, store: &Path) -> String {
    run_ok(herd().arg("build").arg(dir).arg("--store").arg(store))
}

#[test]
fn colour_goes_to_a_terminal_only_and_when_asked() {
    let work = workdir();
    let store = work.path().join("store");
    plain_image(&work.path().join("a"), "aci.example.com/a:1");
    build(&work.path().join("a"), &store);
    let missing = |extra: &[&str]| {
        let output = run_fails(
            herd()
                .args(["inspect", "aci.example.com/nope:1", "--store"])
                .arg(&store)
                .args(extra)
                .env_remove("NO_COLOR"),
        );
        text(&output.stderr)
    };
    let piped = missing(&[]);
    assert!(piped.starts_with("error: "), "{piped}");
    assert!(
        !piped.contains('\u{1b}'),
        "escape codes in a pipe: {piped:?}"
    );
    let forced = missing(&["--color", "always"]);
    assert!(forced.contains("\u{1b}[1;31merror"), "{forced:?}");

    let command = format!(
        "{} inspect aci.example.com/nope:1 --store {}",
        quoted(&herd_binary()),
        quoted(&store)
    );
    let shown = on_a_terminal(&command, &[]);
    assert!(
        shown.contains("\u{1b}[1;31merror"),
        "no colour on a terminal: {shown:?}"
    );
    let shown = on_a_terminal(&command, &[("NO_COLOR", "1")]);
    assert!(shown.contains("error: "), "{shown:?}");
    assert!(!shown.contains('\u{1b}'), "NO_COLOR ignored: {shown:?}");
    let shown = on_a_terminal(&format!("{command} --color never"), &[]);
    assert!(
        !shown.contains('\u{1b}'),
        "--color never ignored: {shown:?}"
    );
}

#[test]
fn a_build_on_a_terminal_shows_a_status_line_and_a_pipe_gets_plain_lines() {
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("slow");
    image_with_build_script(
        &store,
        &dir,
        "aci.example.com/slow:1",
        "sleep 1\necho waited\n",
    );
    let shown = on_a_terminal(
        &format!(
            "{} build {} --store {}",
            quoted(&herd_binary()),
            quoted(&dir),
            quoted(&store)
        ),
        &[],
    );
    assert!(
        shown.contains("[0/1]")
            && shown.contains("aci.example.com/slow:1: build script 10-script.sh"),
        "no status line naming the image and its script: {shown:?}"
    );
    assert!(shown.contains("built"), "{shown:?}");

    let output = herd()
        .args(["build", "--no-cache", "--store"])
        .arg(&store)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    let logged = text(&output.stderr);
    assert!(
        logged.contains("running build script 10-script.sh"),
        "{logged}"
    );
    assert!(logged.contains("built aci.example.com/slow:1"), "{logged}");
    assert!(
        !logged.contains("[0/1]") && !logged.contains('\r'),
        "{logged:?}"
    );
}

#[test]
fn quiet_leaves_only_errors_and_verbose_reaches_build_scripts() {
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("level");
    image_with_build_script(
        &store,
        &dir,
        "aci.example.com/level:1",
        "echo \"level=$LOG_LEVEL\"\n",
    );

    let output = herd()
        .args(["build", "-v", "--store"])
        .arg(&store)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("| level=debug"),
        "{}",
        text(&output.stderr)
    );

    let output = herd()
        .args(["build", "-q", "--no-cache", "--store"])
        .arg(&store)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(text(&output.stderr), "", "-q printed more than errors");
    assert!(text(&output.stdout).starts_with("aci.example.com/level:1 sha256:"));

    let output = run_fails(herd().args(["build", "-q", "/nonexistent-herd-dir"]));
    assert!(
        text(&output.stderr).starts_with("error: "),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn help_fits_the_width_it_is_given() {
    let help = run_ok(herd().args(["build", "--help"]).env("COLUMNS", "50"));
    for line in help.lines() {
        assert!(line.chars().count() <= 50, "line wider than 50: {line:?}");
    }
}

#[test]
fn images_are_sorted_scriptable_tagged_and_removed() {
    let work = workdir();
    let store = work.path().join("store");
    plain_image(&work.path().join("tree/b"), "aci.example.com/bravo:1");
    plain_image(&work.path().join("tree/a"), "aci.example.com/zulu:1");
    build(&work.path().join("tree"), &store);
    let herd_in = |args: &[&str]| {
        let mut command = herd();
        command.args(args).arg("--store").arg(&store);
        command
    };

    let table = run_ok(&mut herd_in(&["images"]));
    let names: Vec<&str> = table
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        ["NAME", "aci.example.com/bravo:1", "aci.example.com/zulu:1"]
    );

    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&mut herd_in(&["images", "--json"]))).unwrap();
    assert_eq!(json[0]["Name"], "aci.example.com/bravo:1");
    assert_eq!(json[0]["Tag"], "1");
    assert!(json[0]["Size"].as_u64().unwrap() > 0);
    let bravo = json[0]["Digest"].as_str().unwrap().to_string();

    let lines = run_ok(&mut herd_in(&[
        "images",
        "--format",
        "{{.Repository}}\\t{{.Tag}}",
    ]));
    assert_eq!(lines, "aci.example.com/bravo\t1\naci.example.com/zulu\t1\n");
    let typo = run_fails(&mut herd_in(&["images", "--format", "{{.Nmae}}"]));
    assert!(
        text(&typo.stderr).contains("did you mean `Name`?"),
        "{}",
        text(&typo.stderr)
    );

    let digests = run_ok(&mut herd_in(&["images", "-q"]));
    assert_eq!(digests.lines().count(), 2, "{digests}");
    assert!(
        digests.lines().all(|l| l.starts_with("sha256:")),
        "{digests}"
    );

    run_ok(&mut herd_in(&[
        "tag",
        "aci.example.com/bravo:1",
        "registry.example.com/b:stable",
    ]));
    let inspected = run_ok(&mut herd_in(&[
        "inspect",
        "registry.example.com/b:stable",
        "--format",
        "{{.Digest}}",
    ]));
    assert_eq!(inspected.trim(), bravo);

    let typo = run_fails(&mut herd_in(&[
        "rmi",
        "aci.example.com/bravo:1",
        "aci.example.com/zuly:1",
    ]));
    assert!(
        text(&typo.stderr).contains("aci.example.com/zuly:1 is not in the store")
            && text(&typo.stderr).contains("did you mean `aci.example.com/zulu:1`?"),
        "{}",
        text(&typo.stderr)
    );
    assert!(text(&typo.stdout).contains("untagged aci.example.com/bravo:1"));
    let left = run_ok(&mut herd_in(&["images", "--format", "{{.Name}}"]));
    assert_eq!(
        left,
        "aci.example.com/zulu:1\nregistry.example.com/b:stable\n"
    );
    // The blobs stay until gc: the other name still inspects.
    run_ok(&mut herd_in(&["inspect", "registry.example.com/b:stable"]));
}

#[test]
fn every_broken_manifest_of_a_tree_is_reported_in_one_run() {
    let work = workdir();
    let root = work.path().join("tree");
    for i in 0..10 {
        let dir = root.join(format!("broken-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("aci-manifest.yml"),
            format!("name: aci.example.com/b{i}:1\nacii: {{}}\n"),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("selfish")).unwrap();
    std::fs::write(
        root.join("selfish/aci-manifest.yml"),
        "name: aci.example.com/selfish:1\naci:\n  dependencies: [aci.example.com/selfish:1]\n",
    )
    .unwrap();
    plain_image(&root.join("fine"), "aci.example.com/fine:1");
    let store = work.path().join("store");
    let output = run_fails(herd().arg("build").arg(&root).arg("--store").arg(&store));
    let stderr = text(&output.stderr);
    for i in 0..10 {
        assert!(
            stderr.contains(&format!("broken-{i}/aci-manifest.yml")),
            "broken-{i} not reported:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("dependency cycle: aci.example.com/selfish:1 -> aci.example.com/selfish:1"),
        "{stderr}"
    );
    assert!(stderr.contains("11 problems in the build plan"), "{stderr}");
    assert!(!stderr.contains("built"), "something was built: {stderr}");
    assert_eq!(output.status.code(), Some(2));
}
