//! Build scripts (runlevels) run through runc: the aci/ examples and
//! failing or hostile scripts.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn layers(store: &Path, name: &str) -> Vec<String> {
    let out = run_ok(
        Command::new(tool("skopeo"))
            .arg("inspect")
            .arg(oci_ref(store, name)),
    );
    let value: serde_json::Value = serde_json::from_str(&out).unwrap();
    value["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn shell_in(store: &Path, name: &str, script: &str) -> String {
    run_ok(
        podman()
            .args(["run", "--rm", "--entrypoint", "/bin/sh"])
            .arg(oci_ref(store, name))
            .args(["-c", script]),
    )
}

const BASE: &str = "aci.example.com/aci-busybox:1.36-1";
const GREETER: &str = "aci.example.com/aci-greeter:2.4-1";

#[test]
fn example_images_build_on_each_other_through_their_scripts() {
    let work = workdir();
    let store = work.path().join("store");
    let out = build_examples(&store, &["aci-busybox", "aci-greeter"]);
    // The tag carries the version the build script wrote.
    assert!(out.contains(GREETER), "{out}");

    // The base's layers are reused as they are, by digest.
    let base_layers = layers(&store, BASE);
    let greeter_layers = layers(&store, GREETER);
    assert_eq!(
        greeter_layers[..base_layers.len()],
        base_layers[..],
        "dependent layers: {greeter_layers:?}"
    );
    assert_eq!(greeter_layers.len(), base_layers.len() + 1);

    // The build script deleted a file of the base; the inherit script of
    // the base ran in the dependent only; files/ were copied before
    // build-late, which changed their mode.
    let seen = shell_in(
        &store,
        GREETER,
        "test -e /etc/motd && echo motd-present; cat /etc/herd/base; stat -c '%a' /usr/share/greeter/greeting; ls -a / | tr '\\n' ' '",
    );
    assert!(!seen.contains("motd-present"), "{seen}");
    assert!(seen.contains("built on aci-busybox"), "{seen}");
    assert!(seen.contains("444"), "{seen}");
    assert!(
        !seen.contains(".herd-build"),
        "mount points leaked into the image: {seen}"
    );
    let base_seen = shell_in(
        &store,
        BASE,
        "cat /etc/motd; test -e /etc/herd/base && echo inherit-ran-in-base; true",
    );
    assert!(base_seen.contains("Welcome"), "{base_seen}");
    assert!(!base_seen.contains("inherit-ran-in-base"), "{base_seen}");
}

/// An image on the example base with the given build script.
fn image_with_script(dir: &Path, name: &str, level: &str, script: &str) {
    needs_build_sandbox();
    std::fs::create_dir_all(dir.join("runlevels").join(level)).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!("name: aci.example.com/{name}:1\naci:\n  dependencies: [{BASE}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("runlevels").join(level).join("10-script.sh"),
        script,
    )
    .unwrap();
}

#[test]
fn a_failing_script_names_itself_and_leaves_the_store_unchanged() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let before = snapshot(&store.join("blobs"));
    let index = std::fs::read(store.join("index.json")).unwrap();

    let dir = work.path().join("failing");
    image_with_script(
        &dir,
        "failing",
        "build",
        "for i in $(seq 1 30); do echo line $i; done\nexit 3\n",
    );
    let output = run_fails(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("build script 10-script.sh failed with exit status 3"),
        "{stderr}"
    );
    assert!(stderr.contains("  | line 30"), "{stderr}");
    assert!(stderr.contains("  | line 11"), "{stderr}");
    let last_lines = stderr.split("the last lines of its output").nth(1).unwrap();
    assert!(
        !last_lines.contains("line 10\n"),
        "more than 20 lines kept: {stderr}"
    );
    assert_eq!(snapshot(&store.join("blobs")), before);
    assert_eq!(std::fs::read(store.join("index.json")).unwrap(), index);
}

#[test]
fn a_builder_script_cannot_write_to_the_host() {
    let work = workdir();
    let store = work.path().join("store");
    let escape = std::env::temp_dir().join(format!("herd-escape-{}", std::process::id()));
    let _ = std::fs::remove_file(&escape);
    let dir = work.path().join("escaping");
    std::fs::create_dir_all(dir.join("runlevels/builder")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        "name: aci.example.com/escaping:1\n",
    )
    .unwrap();
    let root_escape = format!("/root/herd-escape-{}", std::process::id());
    std::fs::write(
        dir.join("runlevels/builder/10-escape.sh"),
        format!("touch {root_escape} || echo refused-root\ntouch {} || echo refused-tmp\nmkdir -p $ROOTFS/ok && echo inside > $ROOTFS/ok/file\nexit 0\n", escape.display()),
    )
    .unwrap();
    run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    assert!(
        !escape.exists(),
        "a builder script wrote {}",
        escape.display()
    );
    assert!(
        !Path::new(&root_escape).exists(),
        "a builder script wrote {root_escape}"
    );
    // And what it wrote under $ROOTFS is in the image.
    let bundle = work.path().join("bundle");
    run_ok(
        Command::new(tool("umoci"))
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:aci.example.com/escaping:1", store.display()))
            .arg(&bundle),
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/ok/file")).unwrap(),
        "inside\n"
    );
}

#[test]
fn a_version_no_script_writes_is_an_error_naming_it() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let dir = work.path().join("unversioned");
    image_with_script(&dir, "unversioned", "build", "true\n");
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!(
            "name: aci.example.com/unversioned:{{{{ version }}}}\naci:\n  dependencies: [{BASE}]\n"
        ),
    )
    .unwrap();
    let output = run_fails(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("aci-manifest.yml:1: attribute `version` has no value"),
        "{stderr}"
    );
}

#[test]
fn a_builder_script_writing_to_a_host_system_directory_fails() {
    let work = workdir();
    let target = format!("/usr/local/herd-escape-{}", std::process::id());
    let dir = work.path().join("escaping");
    std::fs::create_dir_all(dir.join("runlevels/builder")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        "name: aci.example.com/escaping:1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("runlevels/builder/10-escape.sh"),
        format!("set -e\ntouch {target}\n"),
    )
    .unwrap();
    let output = run_fails(
        herd()
            .arg("build")
            .arg(&dir)
            .arg("--store")
            .arg(work.path().join("store")),
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("builder script 10-escape.sh failed"),
        "{stderr}"
    );
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    assert!(
        !Path::new(&target).exists(),
        "a builder script wrote {target}"
    );
}

#[test]
fn a_builder_script_can_make_and_use_device_nodes_in_the_image_root() {
    // debootstrap makes /dev/null in its target and writes to it: $ROOTFS
    // is not nodev. The device cgroup still keeps other devices closed.
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("devices");
    std::fs::create_dir_all(dir.join("runlevels/builder")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        "name: aci.example.com/devices:1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("runlevels/builder/10-devices.sh"),
        "set -e\nmkdir $ROOTFS/dev\nmknod -m 666 $ROOTFS/dev/null c 1 3\necho discarded > $ROOTFS/dev/null\n\
         mknod $ROOTFS/disk b 7 0\nif head -c 1 $ROOTFS/disk >/dev/null 2>&1; then echo block-device-readable; exit 1; fi\n\
         rm $ROOTFS/disk\n",
    )
    .unwrap();
    run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    let bundle = work.path().join("bundle");
    run_ok(
        Command::new(tool("umoci"))
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:aci.example.com/devices:1", store.display()))
            .arg(&bundle),
    );
    let null = bundle.join("rootfs/dev/null").symlink_metadata().unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&null.file_type()),
        "{null:?}"
    );
}

#[test]
fn build_mount_points_are_not_left_in_the_image() {
    let work = workdir();
    let store = work.path().join("store");
    let dir = work.path().join("mounting");
    image_with_script(
        &dir,
        "mounting",
        "build",
        "echo cached > /var/cache/herd-test/file\necho kept > /kept\n",
    );
    std::fs::create_dir(dir.join("cache")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!(
            "name: aci.example.com/mounting:1\nbuild:\n  mountPoints: [{{from: cache, to: /var/cache/herd-test}}]\naci:\n  dependencies: [{BASE}]\n"
        ),
    )
    .unwrap();
    run_ok(
        herd()
            .arg("build")
            .arg(example("aci-busybox"))
            .arg(&dir)
            .arg("--store")
            .arg(&store),
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("cache/file")).unwrap(),
        "cached\n"
    );
    let seen = shell_in(
        &store,
        "aci.example.com/mounting:1",
        "cat /kept; test -e /var/cache/herd-test && echo mount-point-left; true",
    );
    assert!(seen.contains("kept"), "{seen}");
    assert!(!seen.contains("mount-point-left"), "{seen}");
}

#[test]
fn control_characters_in_script_names_and_output_are_printed_escaped() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let dir = work.path().join("hostile");
    image_with_script(
        &dir,
        "hostile",
        "build",
        "printf '\\033]0;owned\\007\\033[2Jcleared\\n'\nexit 1\n",
    );
    let scripts = dir.join("runlevels/build");
    std::fs::rename(
        scripts.join("10-script.sh"),
        scripts.join("10-\u{1b}[2Jscript.sh"),
    )
    .unwrap();
    let output = run_fails(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    let stderr = text(&output.stderr);
    assert!(!output.stderr.contains(&0x1b), "{stderr:?}");
    assert!(
        stderr.contains("build script 10-\\x1b[2Jscript.sh failed"),
        "{stderr}"
    );
    let last_lines = stderr.split("the last lines of its output").nth(1).unwrap();
    assert!(
        last_lines.contains("  | \\x1b]0;owned\\x07\\x1b[2Jcleared"),
        "{stderr}"
    );
}
