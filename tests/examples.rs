//! The library examples in examples/ build an image and read it back.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn example_binary(name: &str) -> std::path::PathBuf {
    // Cargo builds examples beside the test binaries' directory.
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    deps.parent().unwrap().join("examples").join(name)
}

#[test]
fn the_library_examples_build_and_list_an_image() {
    let work = workdir();
    let (dir, store) = (work.path().join("hello"), work.path().join("store"));
    busybox_image(&dir, "name: aci.example.com/from-library:1\n");
    let build = example_binary("build_image");
    if !build.exists() {
        // `cargo test` without --all-targets does not build examples.
        run_ok(
            Command::new(env!("CARGO"))
                .args(["build", "--examples"])
                .current_dir(env!("CARGO_MANIFEST_DIR")),
        );
    }
    let init = Path::new(&herd_binary()).with_file_name("herd-init");
    let out = run_ok(
        Command::new(&build)
            .arg(&dir)
            .arg(&store)
            .env("HERD_INIT", &init),
    );
    assert!(
        out.starts_with("aci.example.com/from-library:1 sha256:"),
        "{out}"
    );
    let listed = run_ok(Command::new(example_binary("list_store")).arg(&store));
    assert!(listed.contains(out.trim()), "{listed}");
    assert_eq!(listed.matches("  layer sha256:").count(), 2, "{listed}");
}
