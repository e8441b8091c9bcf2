//! Pods: built from aci/pod-web, installed into podman's storage and run
//! with `podman kube play`.

mod common;

use common::*;
use std::process::Command;

const POD: &str = "aci.example.com/pod-web:1.0-1";

/// Removes the pod from podman when the test ends, however it ends.
struct PlayedPod(&'static str);

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let _ = podman().args(["pod", "rm", "--force", self.0]).output();
    }
}

#[test]
fn the_example_pod_runs_with_kube_play_and_merges_attributes_in_order() {
    needs_podman_pods();
    needs(&["skopeo"]); // herd install
    let work = workdir();
    let store = work.path().join("store");
    let built = build_examples(&store, &["aci-busybox", "pod-web"]);
    assert!(
        built.contains("aci.example.com/pod-web_web:1.0-1 sha256:"),
        "{built}"
    );
    assert!(
        built.contains("aci.example.com/pod-web_reporter:1.0-1 sha256:"),
        "{built}"
    );

    let document = run_ok(herd().args(["kube", POD, "--store"]).arg(&store));
    let pod_file = work.path().join("pod.yaml");
    std::fs::write(&pod_file, &document).unwrap();
    run_ok(
        Command::new(tool("kubernetes-validate"))
            .arg("--strict")
            .arg(&pod_file),
    );
    assert!(
        document.contains("image: aci.example.com/pod-web_web@sha256:"),
        "{document}"
    );

    let installed = run_ok(herd().args(["install", POD, "--store"]).arg(&store));
    assert!(
        installed.contains("installed aci.example.com/pod-web_reporter:1.0-1"),
        "{installed}"
    );

    let _ = podman().args(["pod", "rm", "--force", "pod-web"]).output();
    let _cleanup = PlayedPod("pod-web");
    run_ok(
        podman()
            .args(["kube", "play", "--network", "host"])
            .arg(&pod_file),
    );

    // Both apps run: the sidecar sees the service.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let logs = loop {
        let logs = text(
            &podman()
                .args(["logs", "pod-web-reporter"])
                .output()
                .unwrap()
                .stdout,
        );
        if logs.contains("web is up") || std::time::Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert!(
        logs.contains("reporter: web is up: greeting: set by the web app"),
        "{logs}"
    );

    // Precedence: base image < pod's shared attributes < the app's own.
    let page = run_ok(podman().args(["exec", "pod-web-web", "cat", "/srv/www/index.html"]));
    assert_eq!(
        page,
        "greeting: set by the web app\nowner: set by the pod\nservice: web on port 18080\ntimezone: UTC\n"
    );
}

#[test]
fn rebuilding_an_unchanged_pod_gives_the_same_digest() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let first = built_digest(&build_examples(&store, &["pod-web"]), POD);
    let second = built_digest(&build_examples(&store, &["pod-web"]), POD);
    assert_eq!(first, second);
}

#[test]
fn a_pod_without_a_version_gets_a_generated_one() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let pod = work.path().join("pod-unversioned");
    copy_tree(&example("pod-web"), &pod);
    let manifest = std::fs::read_to_string(pod.join("pod-manifest.yml"))
        .unwrap()
        .replace("pod-web:1.0-1", "pod-web");
    std::fs::write(pod.join("pod-manifest.yml"), manifest).unwrap();
    let out = run_ok(
        herd()
            .arg("build")
            .arg(&pod)
            .arg("--store")
            .arg(&store)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    assert!(
        out.contains("aci.example.com/pod-web:20231114.221320 sha256:"),
        "{out}"
    );
    assert!(
        out.contains("aci.example.com/pod-web_web:20231114.221320 sha256:"),
        "{out}"
    );
}

#[test]
fn a_pod_with_a_missing_dependency_fails_clearly_and_writes_nothing() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let before = snapshot(&store);
    let pod = work.path().join("pod-broken");
    std::fs::create_dir_all(&pod).unwrap();
    std::fs::write(
        pod.join("pod-manifest.yml"),
        "name: aci.example.com/pod-broken:1\npod:\n  apps:\n    - dependencies: [aci.example.com/aci-busybox:1.36-1]\n    - dependencies: [aci.example.com/aci-nothere:1]\n",
    )
    .unwrap();
    // An empty configuration: no registry is configured for the domain.
    std::fs::write(work.path().join("no-config.yml"), "{}\n").unwrap();
    let output = run_fails(
        herd()
            .arg("build")
            .arg(&pod)
            .arg("--store")
            .arg(&store)
            .env("HERD_CONFIG", work.path().join("no-config.yml")),
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains("aci.example.com/aci-nothere:1"), "{stderr}");
    assert!(
        stderr.contains("app aci-nothere of pod aci.example.com/pod-broken:1"),
        "{stderr}"
    );
    let after = snapshot(&store);
    assert_eq!(
        before.get(&store.join("index.json")),
        after.get(&store.join("index.json")),
        "the index changed: a pod whose build failed must not be tagged"
    );
    assert!(!text(&after[&store.join("index.json")].clone()).contains("pod-broken"));
}

#[test]
fn herd_gen_expands_a_stored_pod_into_its_apps_by_digest() {
    let work = workdir();
    let store = work.path().join("store");
    let built = build_examples(&store, &["aci-busybox", "pod-web"]);
    let env = work.path().join("env/test");
    std::fs::create_dir_all(env.join("services/web")).unwrap();
    std::fs::write(env.join("config.yml"), "envName: test\n").unwrap();
    std::fs::write(
        env.join("services/web/service-manifest.yml"),
        format!("containers: [{POD}]\nnodes:\n  - hostname: web1\n"),
    )
    .unwrap();
    let out = work.path().join("units");
    run_ok(
        herd()
            .arg("gen")
            .arg(&env)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&store),
    );
    let unit = std::fs::read_to_string(out.join("web/test_web_web1.service")).unwrap();
    for app in [
        "aci.example.com/pod-web_web",
        "aci.example.com/pod-web_reporter",
    ] {
        let digest = built_digest(&built, &format!("{app}:1.0-1"));
        assert!(
            unit.contains(&format!("{app}@{digest}")),
            "{app} not pinned in:\n{unit}"
        );
    }
}
