//! The registry build cache end to end: a tree built and published by one
//! runner, then built by fresh stores against Debian's `docker-registry`
//! on loopback. Build scripts print a marker, so the tests count which
//! ran; the registry's access log shows which blobs were fetched.

mod common;

use common::{Registry, herd, herd_binary, podman, run_ok, text, workdir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

const MARKER: &str = "cache-test-script-ran:";

/// A runner's scratch space: a store, a config marking the registry as
/// plain http, empty credentials.
struct Runner {
    dir: tempfile::TempDir,
}

impl Runner {
    fn new(registry: &Registry) -> Runner {
        let runner = Runner {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(
            runner.dir.path().join("config.yml"),
            format!(
                "registries:\n  \"{}\": {{insecure: true}}\n",
                registry.host()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(runner.dir.path().join("docker")).unwrap();
        runner
    }

    fn herd(&self, args: &[&str]) -> std::process::Command {
        common::confined_herd(self.dir.path(), args)
    }

    /// `herd build TREE --json ARGS`: the summary and the scripts that ran.
    fn build(&self, tree: &Path, args: &[&str]) -> (Value, Vec<String>, String) {
        let output: Output = self
            .herd(&["build", "--json", "--compression", "none"])
            .arg(tree)
            .args(args)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert!(
            output.status.success(),
            "herd build failed:\n{stderr}\n{}",
            text(&output.stdout)
        );
        let summary: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", text(&output.stdout)));
        let mut ran: Vec<String> = stderr
            .lines()
            .filter_map(|l| {
                l.split_once(MARKER)
                    .map(|(_, name)| name.trim().to_string())
            })
            .collect();
        ran.sort();
        ran.dedup();
        (summary, ran, stderr)
    }
}

/// A base (busybox, no script), a mid-level image on it and three apps,
/// every image but the base with a build script printing the marker.
fn tree(root: &Path, host: &str) -> PathBuf {
    let tree = root.join("tree");
    let image = |dir: &str, deps: &[&str], script: bool| {
        let path = tree.join(dir);
        std::fs::create_dir_all(path.join("files/etc")).unwrap();
        let deps: Vec<String> = deps.iter().map(|d| format!("{host}/cache/{d}:1")).collect();
        std::fs::write(
            path.join("aci-manifest.yml"),
            format!(
                "name: {host}/cache/{dir}:1\naci:\n  dependencies: [{}]\n",
                deps.join(", ")
            ),
        )
        .unwrap();
        std::fs::write(
            path.join(format!("files/etc/{dir}.conf")),
            format!("{dir}\n"),
        )
        .unwrap();
        if script {
            std::fs::create_dir_all(path.join("runlevels/build")).unwrap();
            std::fs::write(
                path.join("runlevels/build/10-mark.sh"),
                format!("#!/bin/sh\necho {MARKER}{dir}\necho {dir} > /etc/{dir}.built\n"),
            )
            .unwrap();
        }
        path
    };
    let base = image("base", &[], false);
    common::add_busybox(&base.join("files"));
    image("mid", &["base"], true);
    image("app1", &["mid"], true);
    image("app2", &["mid"], true);
    image("app3", &["base"], true);
    tree
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {summary}"))
}

/// The layer digests of `name` in `runner`'s store.
fn layers(runner: &Runner, name: &str) -> Vec<String> {
    let inspect: Value =
        serde_json::from_str(&run_ok(&mut runner.herd(&["inspect", name]))).unwrap();
    inspect["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// Blob GETs in the access log after line `since`.
fn blob_gets(registry: &Registry, since: usize) -> Vec<String> {
    registry
        .log("access.log")
        .lines()
        .skip(since)
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .map(str::to_string)
        .collect()
}

/// Publishes the tree from a first runner; returns the registry, the tree
/// and that runner.
fn published() -> (Registry, tempfile::TempDir, PathBuf, Runner) {
    common::tool("docker-registry");
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let tree = tree(work.path(), &registry.host());
    let publisher = Runner::new(&registry);
    let host = registry.host();
    let (summary, ran, _) = publisher.build(&tree, &["--cache", &host, "--cache-push"]);
    assert_eq!(count(&summary, "built"), 5, "{summary}");
    assert_eq!(ran, ["app1", "app2", "app3", "mid"]);
    (registry, work, tree, publisher)
}

#[test]
fn a_fresh_store_builds_a_published_tree_without_scripts_or_layers_and_installs_it_later() {
    let (registry, _work, tree, publisher) = published();
    let host = registry.host();
    let fresh = Runner::new(&registry);
    let since = registry.requests();
    let (summary, ran, stderr) = fresh.build(&tree, &["--cache", &host]);
    assert!(ran.is_empty(), "scripts ran: {ran:?}\n{stderr}");
    assert_eq!(count(&summary, "cached_from_registry"), 5, "{summary}");
    assert_eq!(count(&summary, "built"), 0, "{summary}");
    assert!(
        stderr.contains("0 built, 0 cached locally, 5 cached from the registry"),
        "{stderr}"
    );
    let mut all_layers = Vec::new();
    for image in ["base", "mid", "app1", "app2", "app3"] {
        let name = format!("{host}/cache/{image}:1");
        // The same images as the publisher built.
        let digest = |runner: &Runner| {
            let images = run_ok(&mut runner.herd(&["images"]));
            images
                .lines()
                .find(|l| l.contains(&name))
                .unwrap_or_else(|| panic!("{name} not in:\n{images}"))
                .split_whitespace()
                .find(|w| w.starts_with("sha256:"))
                .unwrap_or_else(|| panic!("no digest for {name} in:\n{images}"))
                .to_string()
        };
        assert_eq!(digest(&fresh), digest(&publisher), "{name}");
        all_layers.extend(layers(&publisher, &name));
    }
    let gets = blob_gets(&registry, since);
    for layer in &all_layers {
        assert!(
            !gets.iter().any(|g| g.contains(layer.as_str())),
            "layer {layer} was fetched:\n{}",
            gets.join("\n")
        );
    }
    // Only manifests and configs: far less than busybox's layer.
    let fetched = count(&summary, "bytes_fetched");
    assert!(fetched > 0 && fetched < 100_000, "{fetched} bytes fetched");
    // Layers not fetched are known, not corruption.
    assert_eq!(run_ok(&mut fresh.herd(&["fsck"])).trim(), "ok");
    run_ok(&mut fresh.herd(&["gc"]));

    // A second build in the same store is a local hit: no request at all.
    let since = registry.requests();
    let (summary, ran, _) = fresh.build(&tree, &["--cache", &host]);
    assert!(ran.is_empty(), "{ran:?}");
    assert_eq!(count(&summary, "cached"), 5, "{summary}");
    assert_eq!(registry.requests(), since);

    // Installing needs the bytes: the layers come now, and it runs.
    let app = format!("{host}/cache/app1:1");
    let since = registry.requests();
    let installed = run_ok(&mut fresh.herd(&["install", &app]));
    assert!(installed.contains(&app), "{installed}");
    let gets = blob_gets(&registry, since);
    for layer in layers(&publisher, &app) {
        assert!(
            gets.iter().any(|g| g.contains(layer.as_str())),
            "layer {layer} was not fetched for install:\n{}",
            gets.join("\n")
        );
    }
    let output = podman()
        .args(["run", "--rm", "--pull", "never", "--entrypoint", "/bin/cat"])
        .arg(&app)
        .args(["/etc/base.conf", "/etc/mid.built", "/etc/app1.built"])
        .output()
        .unwrap();
    let _ = podman().args(["rmi", "--ignore", &app]).output();
    assert!(
        output.status.success(),
        "podman run failed: {}",
        text(&output.stderr)
    );
    assert_eq!(text(&output.stdout), "base\nmid\napp1\n");
    assert_eq!(run_ok(&mut fresh.herd(&["fsck"])).trim(), "ok");
}

#[test]
fn a_change_rebuilds_exactly_the_changed_image_and_its_dependents() {
    let (registry, _work, tree, _publisher) = published();
    let host = registry.host();
    std::fs::write(tree.join("mid/files/etc/mid.conf"), "mid, changed\n").unwrap();
    let fresh = Runner::new(&registry);
    let (summary, ran, stderr) = fresh.build(&tree, &["--cache", &host]);
    assert_eq!(ran, ["app1", "app2", "mid"], "{stderr}");
    assert_eq!(count(&summary, "built"), 3, "{summary}");
    assert_eq!(count(&summary, "cached_from_registry"), 2, "{summary}");
    // Without --cache-push nothing was published: another fresh runner
    // rebuilds the same three.
    let other = Runner::new(&registry);
    let (_, ran, _) = other.build(&tree, &["--cache", &host]);
    assert_eq!(ran, ["app1", "app2", "mid"]);
}

#[test]
fn an_entry_whose_manifest_does_not_match_its_digest_is_ignored_with_a_warning() {
    let (registry, _work, tree, publisher) = published();
    let host = registry.host();
    // Someone with write access to the registry's storage swaps the bytes
    // of app3's manifest; the record still names the original digest.
    let name = format!("{host}/cache/app3:1");
    let inspect: Value =
        serde_json::from_str(&run_ok(&mut publisher.herd(&["inspect", &name]))).unwrap();
    let digest = inspect["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in {inspect}"))
        .trim_start_matches("sha256:")
        .to_string();
    let data = registry
        .storage()
        .join("docker/registry/v2/blobs/sha256")
        .join(&digest[..2])
        .join(&digest)
        .join("data");
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&data).unwrap()).unwrap();
    forged["annotations"] = serde_json::json!({"forged": "yes"});
    std::fs::write(&data, serde_json::to_vec(&forged).unwrap()).unwrap();

    let fresh = Runner::new(&registry);
    let (summary, ran, stderr) = fresh.build(&tree, &["--cache", &host]);
    assert!(
        stderr.contains("warning: ignoring the registry cache entry")
            && stderr.contains(&format!("sha256:{digest}")),
        "{stderr}"
    );
    assert_eq!(ran, ["app3"], "{stderr}");
    assert_eq!(count(&summary, "cached_from_registry"), 4, "{summary}");
    let images = run_ok(&mut fresh.herd(&["images"]));
    assert!(!images.contains("forged"), "{images}");
}

#[test]
fn a_push_of_built_directories_publishes_their_keys_when_the_config_says_so() {
    common::tool("docker-registry");
    let registry = Registry::start();
    let host = registry.host();
    let work = tempfile::tempdir().unwrap();
    let tree = tree(work.path(), &host);
    let dirs = [tree.join("base"), tree.join("app3")];
    let publisher = Runner::new(&registry);
    let (_, ran, _) = publisher.build(&tree.join("base"), &[]);
    assert!(ran.is_empty());
    let (_, ran, _) = publisher.build(&tree.join("app3"), &[]);
    assert_eq!(ran, ["app3"]);
    std::fs::write(
        publisher.dir.path().join("config.yml"),
        format!(
            "registries:\n  \"{host}\": {{insecure: true}}\ncache: {{prefix: \"{host}\", push: true}}\n"
        ),
    )
    .unwrap();
    run_ok(publisher.herd(&["push"]).args(&dirs));

    // A fresh runner with the cache in its config file, read-only.
    let fresh = Runner::new(&registry);
    std::fs::write(
        fresh.dir.path().join("config.yml"),
        format!("registries:\n  \"{host}\": {{insecure: true}}\ncache: {{prefix: \"{host}\"}}\n"),
    )
    .unwrap();
    let output = fresh
        .herd(&["build", "--json", "--compression", "none"])
        .args(&dirs)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains(MARKER), "{stderr}");
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(count(&summary, "cached_from_registry"), 2, "{summary}");
    // Another prefix: the cache does not apply, everything is built.
    std::fs::write(
        fresh.dir.path().join("config.yml"),
        format!(
            "registries:\n  \"{host}\": {{insecure: true}}\ncache: {{prefix: \"{host}/other\"}}\n"
        ),
    )
    .unwrap();
    let other = Runner::new(&registry);
    std::fs::copy(
        fresh.dir.path().join("config.yml"),
        other.dir.path().join("config.yml"),
    )
    .unwrap();
    let (summary, ran, _) = other.build(&tree.join("app3"), &[]);
    assert_eq!(ran, ["app3"]);
    assert_eq!(count(&summary, "built"), 1, "{summary}");
}

/// A fresh CI runner builds the same herd-init anew: same bytes, a new
/// mtime. The cache keys must not change with it; new bytes must.
#[test]
fn the_key_follows_the_inits_bytes_not_its_mtime() {
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("image");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        "name: aci.example.com/init-key:1\n",
    )
    .unwrap();
    std::fs::write(dir.join("files/hello"), "hello\n").unwrap();
    let init = work.path().join("herd-init");
    std::fs::copy(herd_binary().with_file_name("herd-init"), &init).unwrap();
    let build = || -> Value {
        let out = run_ok(
            herd()
                .env("HERD_INIT", &init)
                .args(["build", "--json", "--store"])
                .arg(&store)
                .arg(&dir),
        );
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(count(&build(), "built"), 1);
    // The same bytes, written again later.
    let bytes = std::fs::read(&init).unwrap();
    std::fs::remove_file(&init).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&init, &bytes).unwrap();
    assert_eq!(count(&build(), "cached"), 1);
    // Other bytes: every image carries the init, so it is rebuilt.
    let mut other = bytes;
    other.push(0);
    std::fs::write(&init, &other).unwrap();
    assert_eq!(count(&build(), "built"), 1);
}
