//! How `herd build` finds dependencies and names what it builds, end to
//! end: unversioned dependencies (the store's highest version, then the
//! registry's tags), `--pull never|missing|always` (requests counted by the
//! hostile server on loopback), unqualified names refused, and generated
//! versions (`-dirty`, a real time for uncommitted directories).

mod common;

use common::hostile::{Hostile, Reply};
use common::*;
use std::path::Path;
use std::process::Command;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// An image directory of files only (no build script: no runtime needed).
fn image(dir: &Path, manifest: &str, file: &str) {
    write(&dir.join("aci-manifest.yml"), manifest);
    write(&dir.join("files/opt").join(file), file);
}

/// `herd build ARGS` confined to `work` (its store, config and home).
fn build(work: &Path, args: &[&str]) -> Command {
    let mut command = confined_herd(work, &["build"]);
    command.args(args);
    command
}

/// The labels of `name`'s config, from `herd inspect`.
fn labels(work: &Path, name: &str) -> serde_json::Value {
    let out = run_ok(&mut confined_herd(work, &["inspect", name]));
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    inspected["config"]["config"]["Labels"].clone()
}

/// A config routing aci.example.com to `host`, plain http.
fn route_to(work: &Path, host: &str) {
    write(
        &work.join("config.yml"),
        &format!("registries:\n  aci.example.com: {{mirror: \"{host}\", insecure: true}}\n"),
    );
}

#[test]
fn an_unversioned_dependency_takes_the_highest_version_in_the_store_and_the_build_records_it() {
    let work = workdir();
    let w = work.path();
    route_to(w, "127.0.0.1:9");
    // 10 is higher than 9 and 9-2 (numeric parts, then the suffix), and
    // built first: the order in the store must not matter.
    for (version, file) in [("10", "ten"), ("9-2", "nine-two"), ("9", "nine")] {
        let dir = w.join(format!("base-{version}"));
        image(
            &dir,
            &format!("name: aci.example.com/dep-base:{version}\n"),
            file,
        );
        run_ok(&mut build(w, &[dir.to_str().unwrap()]));
    }
    let app = w.join("app");
    image(
        &app,
        "name: aci.example.com/dep-app:1\naci:\n  dependencies:\n    - aci.example.com/dep-base\n",
        "app",
    );
    // Nothing is asked of a registry: the store has versions.
    let out = run_ok(&mut build(w, &[app.to_str().unwrap(), "--pull", "never"]));
    assert!(out.contains("aci.example.com/dep-app:1 sha256:"), "{out}");
    let base_digest = {
        let out = run_ok(&mut confined_herd(
            w,
            &["inspect", "aci.example.com/dep-base:10"],
        ));
        let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
        inspected["digest"].as_str().unwrap().to_string()
    };
    let labels = labels(w, "aci.example.com/dep-app:1");
    assert_eq!(
        labels["io.herd.dependencies"].as_str(),
        Some(format!("aci.example.com/dep-base:10@{base_digest}").as_str()),
        "{labels}"
    );
    let stack = labels["io.herd.stack"].as_str().unwrap();
    assert_eq!(stack, "dep-base dep-app", "{labels}");
}

#[test]
fn pull_never_with_a_missing_dependency_fails_without_any_request() {
    let work = workdir();
    let w = work.path();
    let registry = Hostile::start(|_| Reply::status(404));
    route_to(w, &registry.host());
    let app = w.join("app");
    image(
        &app,
        "name: aci.example.com/needs-missing:1\naci:\n  dependencies: [aci.example.com/not-here:1]\n",
        "app",
    );
    let output = run_fails(&mut build(w, &[app.to_str().unwrap(), "--pull", "never"]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("aci.example.com/not-here:1 is not in the store")
            && stderr.contains("--pull never"),
        "{stderr}"
    );
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());

    // The same build may ask (the default is `missing`): it does, which
    // shows the registry above was reachable and not asked.
    let output = run_fails(&mut build(w, &[app.to_str().unwrap()]));
    assert!(text(&output.stderr).contains("pulling it failed"));
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.target == "/v2/not-here/manifests/1"),
        "{:?}",
        registry.requests()
    );
}

#[test]
fn pull_always_asks_the_registry_even_for_what_the_store_has() {
    let work = workdir();
    let w = work.path();
    let registry = Hostile::start(|_| Reply::status(404));
    route_to(w, &registry.host());
    let base = w.join("base");
    image(&base, "name: aci.example.com/have-it:1\n", "base");
    let app = w.join("app");
    image(
        &app,
        "name: aci.example.com/uses-it:1\naci:\n  dependencies: [aci.example.com/have-it:1]\n",
        "app",
    );
    // Built in the same run: never pulled, whatever --pull says.
    run_ok(&mut build(
        w,
        &[
            base.to_str().unwrap(),
            app.to_str().unwrap(),
            "--pull",
            "always",
        ],
    ));
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());
    // From the store, `missing` asks nothing, `always` asks the registry.
    run_ok(&mut build(w, &[app.to_str().unwrap(), "--no-cache"]));
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());
    let output = run_fails(&mut build(w, &[app.to_str().unwrap(), "--pull", "always"]));
    assert!(text(&output.stderr).contains("pulling it failed"));
    assert!(
        registry
            .requests()
            .iter()
            .any(|r| r.target == "/v2/have-it/manifests/1"),
        "{:?}",
        registry.requests()
    );
}

#[test]
fn an_unversioned_dependency_missing_from_the_store_takes_the_registrys_highest_version_tag() {
    let work = workdir();
    let w = work.path();
    let registry = Hostile::start(|request| {
        if request.target.starts_with("/v2/far-base/tags/list") {
            Reply::json(
                200,
                r#"{"name": "far-base", "tags": ["latest", "9", "12-3", "12-10", "main"]}"#,
            )
        } else {
            Reply::status(404)
        }
    });
    route_to(w, &registry.host());
    let app = w.join("app");
    image(
        &app,
        "name: aci.example.com/far-app:1\naci:\n  dependencies: [aci.example.com/far-base]\n",
        "app",
    );
    let output = run_fails(&mut build(w, &[app.to_str().unwrap()]));
    let stderr = text(&output.stderr);
    let targets: Vec<String> = registry.requests().into_iter().map(|r| r.target).collect();
    assert!(
        targets
            .iter()
            .any(|t| t.starts_with("/v2/far-base/tags/list")),
        "{targets:?}"
    );
    // The highest version, never `latest`.
    assert!(
        targets.contains(&"/v2/far-base/manifests/12-10".to_string()),
        "{targets:?}\n{stderr}"
    );
    assert!(
        !targets.iter().any(|t| t.ends_with("/manifests/latest")),
        "{targets:?}"
    );
    assert!(
        stderr.contains("aci.example.com/far-base:12-10"),
        "{stderr}"
    );
}

#[test]
fn an_unversioned_dependency_comes_from_a_real_registry_at_its_highest_version() {
    let registry = Registry::start();
    let work = workdir();
    let w = work.path();
    route_to(w, &registry.host());
    for (version, file) in [("2", "two"), ("10", "ten")] {
        let dir = w.join(format!("reg-base-{version}"));
        image(
            &dir,
            &format!("name: aci.example.com/reg-base:{version}\n"),
            file,
        );
        run_ok(&mut build(w, &[dir.to_str().unwrap()]));
        run_ok(&mut confined_herd(
            w,
            &["push", &format!("aci.example.com/reg-base:{version}")],
        ));
    }
    // A new store: the registry is the only source.
    std::fs::remove_dir_all(w.join("store")).unwrap();
    let app = w.join("app");
    image(
        &app,
        "name: aci.example.com/reg-app:1\naci:\n  dependencies: [aci.example.com/reg-base]\n",
        "app",
    );
    run_ok(&mut build(w, &[app.to_str().unwrap()]));
    let labels = labels(w, "aci.example.com/reg-app:1");
    let recorded = labels["io.herd.dependencies"].as_str().unwrap_or_default();
    assert!(
        recorded.starts_with("aci.example.com/reg-base:10@sha256:"),
        "{labels}"
    );
    let images = run_ok(&mut confined_herd(w, &["images"]));
    assert!(
        !images.contains("reg-base:2"),
        "only 10 was pulled:\n{images}"
    );
}

#[test]
fn an_unqualified_dependency_is_an_error_naming_file_and_line() {
    let work = workdir();
    let w = work.path();
    let registry = Hostile::start(|_| Reply::status(404));
    write(
        &w.join("config.yml"),
        &format!(
            "registries:\n  docker.io: {{mirror: \"{}\", insecure: true}}\n",
            registry.host()
        ),
    );
    let app = w.join("app");
    image(
        &app,
        "name: aci.example.com/unqualified:1\naci:\n  dependencies:\n    - aci-busybox\n",
        "app",
    );
    let output = run_fails(&mut build(w, &[app.to_str().unwrap()]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("aci-manifest.yml:4")
            && stderr.contains("\"aci-busybox\" has no registry domain")
            && stderr.contains("aci.example.com/aci-busybox"),
        "{stderr}"
    );
    assert!(registry.requests().is_empty(), "{:?}", registry.requests());
}

fn git(dir: &Path, args: &[&str]) {
    run_ok(
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args),
    );
}

/// The tag `herd build` printed for the repository `repository`.
fn built_tag(out: &str, repository: &str) -> String {
    out.lines()
        .find_map(|l| {
            l.split_whitespace()
                .next()?
                .strip_prefix(&format!("{repository}:"))
        })
        .unwrap_or_else(|| panic!("no {repository} in {out}"))
        .to_string()
}

#[test]
fn generated_versions_say_dirty_and_uncommitted_directories_get_their_time() {
    let work = workdir();
    let w = work.path();
    route_to(w, "127.0.0.1:9");
    let repo = w.join("repo");
    let dir = repo.join("aci-versioned");
    image(&dir, "name: aci.example.com/versioned\n", "one");
    let repository = "aci.example.com/versioned";

    // Outside git: the time of the newest file, not 1970.
    let out = run_ok(&mut build(w, &[dir.to_str().unwrap()]));
    let outside = built_tag(&out, repository);
    assert!(!outside.starts_with("19700101"), "{outside}");
    let year = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    assert!(outside.starts_with(&year[..4]), "{outside} vs {year}");
    assert!(!outside.contains("-v"), "{outside}");

    // In a repository, not committed yet: dirty, and still its own time
    // (no commit dates it).
    git(&repo, &["init", "-q"]);
    write(&repo.join("README"), "readme");
    git(&repo, &["add", "README"]);
    git(&repo, &["commit", "-q", "-m", "readme"]);
    let out = run_ok(&mut build(w, &[dir.to_str().unwrap()]));
    let untracked = built_tag(&out, repository);
    assert!(untracked.ends_with("-dirty"), "{out}");
    assert_eq!(
        untracked.split('-').next(),
        outside.split('-').next(),
        "{untracked} {outside}"
    );

    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let out = run_ok(&mut build(w, &[dir.to_str().unwrap()]));
    let clean = built_tag(&out, repository);
    assert!(
        clean.contains("-v") && !clean.ends_with("-dirty"),
        "{clean}"
    );
    let digest_clean = built_digest(&out, &format!("{repository}:{clean}"));

    // A changed file: another tag, not the clean one with another digest.
    write(&dir.join("files/opt/one"), "changed");
    let out = run_ok(&mut build(w, &[dir.to_str().unwrap()]));
    let dirty = built_tag(&out, repository);
    assert_eq!(dirty, format!("{clean}-dirty"), "{out}");
    let images = run_ok(&mut confined_herd(
        w,
        &["inspect", &format!("{repository}:{clean}")],
    ));
    assert!(
        images.contains(&digest_clean),
        "the clean tag kept its image"
    );

    // Committed again: clean.
    git(&repo, &["commit", "-q", "-am", "two"]);
    let out = run_ok(&mut build(w, &[dir.to_str().unwrap()]));
    let again = built_tag(&out, repository);
    assert!(!again.ends_with("-dirty") && again != clean, "{again}");
}
