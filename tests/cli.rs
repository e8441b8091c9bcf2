//! The command line around the commands, end to end with the herd binary:
//! read-only commands never create a store, version, completions, man
//! pages, and the mistakes users make most (a directory of environments,
//! `--out /`, a missing attributes file, a script without `#!`, a runtime
//! that is not one).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn stderr_of(command: &mut Command) -> String {
    let output = run_fails(command);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{command:?}: {}",
        text(&output.stderr)
    );
    text(&output.stderr)
}

fn environments() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("env")
}

#[test]
fn read_only_commands_say_there_is_no_store_and_create_none() {
    let work = workdir();
    let typo = work.path().join("typo");
    let name = "aci.example.com/x:1";
    let env = environments().join("prod-dc1");
    let out = work.path().join("units");
    let commands: Vec<Vec<&str>> = vec![
        vec!["images"],
        vec!["inspect", name],
        vec!["kube", name],
        vec!["install", name],
        vec!["fsck"],
        vec!["gc"],
        vec!["clean"],
        vec!["push", name],
    ];
    for args in &commands {
        let error = stderr_of(herd().args(args).arg("--store").arg(&typo));
        assert!(
            error.contains(&format!("no herd store at {}", typo.display())),
            "{args:?}: {error}"
        );
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let error = stderr_of(
        herd()
            .arg("gen")
            .arg(&env)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&typo),
    );
    assert!(
        error.contains(&format!("no herd store at {}", typo.display())),
        "{error}"
    );
    assert!(!typo.exists() && !out.exists());

    // The default store too, for every command alike, `gen --store` included.
    let data = work.path().join("data");
    let default = data.join("herd/store");
    let with_default = |args: &[&str]| {
        let mut command = herd();
        command.args(args).env("XDG_DATA_HOME", &data);
        command
    };
    let error = stderr_of(&mut with_default(&["images"]));
    assert!(
        error.contains(&format!("no herd store at {}", default.display())),
        "{error}"
    );
    let mut generate = with_default(&["gen"]);
    generate.arg(&env).arg("--out").arg(&out).arg("--store");
    let error = stderr_of(&mut generate);
    assert!(
        error.contains(&format!("no herd store at {}", default.display())),
        "{error}"
    );
    assert!(
        !data.exists(),
        "a read-only command created {}",
        data.display()
    );

    // build creates the default store; then the others read it.
    let image = work.path().join("image");
    busybox_image(&image, &format!("name: {name}\n"));
    let mut build = with_default(&["build"]);
    run_ok(build.arg(&image));
    assert!(default.join("index.json").is_file());
    let images = run_ok(&mut with_default(&["images"]));
    assert!(images.contains(name), "{images}");
    let mut generate = with_default(&["gen"]);
    run_ok(generate.arg(&env).arg("--out").arg(&out).arg("--store"));
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    needs(&["git"]);
    let version = run_ok(herd().arg("version"));
    let commit = run_ok(
        Command::new(tool("git"))
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(
        version.starts_with(&format!(
            "herd {} (commit {}",
            env!("CARGO_PKG_VERSION"),
            commit.trim()
        )),
        "{version} vs {commit}"
    );
    assert_eq!(run_ok(herd().arg("--version")), version);
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_commands() {
    needs(&["bash"]);
    for shell in ["bash", "zsh", "fish"] {
        let script = run_ok(herd().args(["completions", shell]));
        for command in ["build", "gen", "doctor", "completions"] {
            assert!(script.contains(command), "{shell}: no {command}");
        }
    }
    let work = workdir();
    let bash = work.path().join("herd.bash");
    std::fs::write(&bash, run_ok(herd().args(["completions", "bash"]))).unwrap();
    run_ok(Command::new(tool("bash")).arg("-n").arg(&bash));
    let error = stderr_of(herd().args(["completions", "tcsh"]));
    assert!(error.contains("invalid value 'tcsh'"), "{error}");
}

#[test]
fn man_pages_are_written_for_herd_and_each_command() {
    let work = workdir();
    let dir = work.path().join("man/man1");
    run_ok(herd().arg("man").arg(&dir));
    for page in ["herd.1", "herd-build.1", "herd-gen.1", "herd-doctor.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
    let build = std::fs::read_to_string(dir.join("herd-build.1")).unwrap();
    assert!(
        build.contains("herd\\-build") && build.contains("\\-\\-store"),
        "{build}"
    );
}

#[test]
fn gen_lists_a_directory_of_environments_and_refuses_root_as_output() {
    let work = workdir();
    let error = stderr_of(herd().arg("gen").arg(environments()));
    assert!(
        error.contains("holds environments, not one: preprod, prod-dc1")
            && error.contains("herd gen "),
        "{error}"
    );
    let started = std::time::Instant::now();
    let error = stderr_of(
        herd()
            .arg("gen")
            .arg(environments().join("prod-dc1"))
            .args(["--out", "/"]),
    );
    assert!(error.contains("--out /: the filesystem's root"), "{error}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // An output holding the environment is refused as well.
    let copy = work.path().join("env");
    copy_tree(&environments(), &copy);
    let error = stderr_of(
        herd()
            .arg("gen")
            .arg(copy.join("prod-dc1"))
            .arg("--out")
            .arg(&copy),
    );
    assert!(error.contains("holds the environment"), "{error}");
    // The lock beside --out is hidden: nothing else shows beside it.
    let out = work.path().join("out/units");
    run_ok(
        herd()
            .arg("gen")
            .arg(copy.join("prod-dc1"))
            .arg("--out")
            .arg(&out),
    );
    let visible: Vec<String> = std::fs::read_dir(work.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(visible, ["units"]);
}

#[test]
fn try_says_an_attributes_file_is_missing() {
    let error = stderr_of(
        herd()
            .arg("try")
            .arg(example("aci-templated"))
            .args(["--attributes", "/missing.yml"]),
    );
    assert!(
        error.contains("--attributes /missing.yml: no such file"),
        "{error}"
    );
}

#[test]
fn a_script_without_a_shebang_gets_a_hint_and_a_broken_runtime_is_blamed() {
    needs_build_sandbox();
    let work = workdir();
    let dir = work.path().join("noshebang");
    busybox_image(&dir, "name: aci.example.com/noshebang:1\n");
    let script = dir.join("runlevels/builder/10-setup.sh");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, "echo hello > \"$ROOTFS/hello\"\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let store = work.path().join("store");
    let error = stderr_of(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    assert!(
        error.contains("hint: 10-setup.sh is executable but has no #! line")
            && error.contains("#!/bin/sh"),
        "{error}"
    );
    // Fixed, it builds.
    std::fs::write(&script, "#!/bin/sh\necho hello > \"$ROOTFS/hello\"\n").unwrap();
    run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));

    let error = stderr_of(
        herd()
            .arg("build")
            .arg(&dir)
            .args(["--no-cache", "--runtime", "/bin/false", "--store"])
            .arg(&store),
    );
    assert!(
        error.contains("the OCI runtime /bin/false does not work"),
        "{error}"
    );
    assert!(!error.contains("script 10-setup.sh"), "{error}");
}
