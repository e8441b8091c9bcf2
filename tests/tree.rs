//! Whole-tree builds: order, cache, rebuilds of what changed, cycles, graph.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// A chain and two leaves: z-base <- y-mid <- {x-leaf, w-leaf}, and an
/// independent v-alone. Names sort against the build order on purpose.
fn tree(root: &Path) {
    busybox_image(&root.join("z-base"), "name: aci.example.com/z-base:1\n");
    for (dir, name, dependency) in [
        ("y-mid", "y-mid", "z-base"),
        ("leaves/x-leaf", "x-leaf", "y-mid"),
        ("leaves/w-leaf", "w-leaf", "y-mid"),
    ] {
        let dir = root.join(dir);
        std::fs::create_dir_all(dir.join("files/etc")).unwrap();
        std::fs::write(dir.join("aci-manifest.yml"), format!("name: aci.example.com/{name}:1\naci:\n  dependencies: [aci.example.com/{dependency}:1]\n")).unwrap();
        std::fs::write(dir.join(format!("files/etc/{name}")), name).unwrap();
    }
    std::fs::create_dir_all(root.join("v-alone/files")).unwrap();
    std::fs::write(
        root.join("v-alone/aci-manifest.yml"),
        "name: aci.example.com/v-alone:1\n",
    )
    .unwrap();
    std::fs::write(root.join("v-alone/files/alone"), "alone").unwrap();
}

fn build_json(root: &Path, store: &Path) -> serde_json::Value {
    let out = run_ok(
        herd()
            .arg("build")
            .arg(root)
            .arg("--store")
            .arg(store)
            .args(["--json", "--jobs", "2"]),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn states(summary: &serde_json::Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = summary["units"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["tags"][0]["name"].as_str().unwrap_or("?").to_string(),
                u["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    states.sort();
    states
}

#[test]
fn a_tree_builds_in_dependency_order_then_comes_from_the_cache() {
    let work = workdir();
    let (root, store) = (work.path().join("tree"), work.path().join("store"));
    tree(&root);

    let first = build_json(&root, &store);
    assert_eq!(first["built"], 5, "{first}");
    // A leaf holds its whole chain: built after its dependencies.
    let bundle = work.path().join("bundle");
    run_ok(
        Command::new(tool("umoci"))
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:aci.example.com/x-leaf:1", store.display()))
            .arg(&bundle),
    );
    for file in ["etc/y-mid", "etc/x-leaf", "bin/busybox"] {
        assert!(
            bundle.join("rootfs").join(file).exists(),
            "{file} missing from x-leaf"
        );
    }

    let second = build_json(&root, &store);
    assert_eq!(
        (second["built"].as_u64(), second["cached"].as_u64()),
        (Some(0), Some(5)),
        "{second}"
    );

    // One changed file rebuilds its image and what depends on it, only.
    std::fs::write(root.join("y-mid/files/etc/y-mid"), "changed").unwrap();
    let third = build_json(&root, &store);
    let expected: Vec<(String, String)> = [
        ("aci.example.com/v-alone:1", "cached"),
        ("aci.example.com/w-leaf:1", "built"),
        ("aci.example.com/x-leaf:1", "built"),
        ("aci.example.com/y-mid:1", "built"),
        ("aci.example.com/z-base:1", "cached"),
    ]
    .iter()
    .map(|(n, s)| (n.to_string(), s.to_string()))
    .collect();
    assert_eq!(states(&third), expected, "{third}");

    // A mode change counts as a change too.
    let alone = root.join("v-alone/files/alone");
    std::fs::set_permissions(&alone, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let fourth = build_json(&root, &store);
    assert_eq!(fourth["built"], 1, "{fourth}");
}

#[test]
fn a_cycle_is_reported_by_name_and_nothing_is_built() {
    let work = workdir();
    let root = work.path().join("tree");
    for (name, dependency) in [("a", "c"), ("b", "a"), ("c", "b")] {
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("aci-manifest.yml"), format!("name: aci.example.com/{name}:1\naci:\n  dependencies: [aci.example.com/{dependency}:1]\n")).unwrap();
    }
    let store = work.path().join("store");
    let output = run_fails(herd().arg("build").arg(&root).arg("--store").arg(&store));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("dependency cycle"), "{stderr}");
    for name in [
        "aci.example.com/a:1",
        "aci.example.com/b:1",
        "aci.example.com/c:1",
    ] {
        assert!(stderr.contains(name), "{stderr}");
    }
    assert!(
        !store.exists(),
        "a build that cannot start must not create the store"
    );
}

#[test]
fn the_graph_is_valid_dot() {
    let work = workdir();
    let root = work.path().join("tree");
    tree(&root);
    let dot = run_ok(herd().arg("graph").arg(&root));
    assert!(
        dot.contains("\"aci.example.com/x-leaf:1\" -> \"aci.example.com/y-mid:1\" [style=solid]"),
        "{dot}"
    );
    let svg = run_ok(
        Command::new(tool("dot"))
            .arg("-Tsvg")
            .arg(write(&work.path().join("g.dot"), &dot)),
    );
    assert!(svg.contains("<svg"), "{svg}");
}

fn write(path: &Path, content: &str) -> std::path::PathBuf {
    std::fs::write(path, content).unwrap();
    path.to_path_buf()
}
