//! `herd test` and `herd init` end to end: images built by herd, run by
//! podman (tests/containers.conf), tested by bats from the host or from
//! tester images; the scaffold of `herd init` built and tested as it is.

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `herd test DIR --store STORE` with the tests' podman configuration
/// (the command itself uses whatever the user's is).
fn herd_test(dir: &Path, store: &Path) -> Command {
    needs(&["podman", "conmon", "runc", "bats", "bash-static", "busybox"]);
    needs_build_sandbox();
    let mut command = herd();
    command
        .env(
            "CONTAINERS_CONF",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containers.conf"),
        )
        .arg("test")
        .arg(dir)
        .arg("--store")
        .arg(store);
    command
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn write_executable(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// Status 1, not 2: tests ran and one failed (2 is "could not test").
fn assert_tests_failed(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn the_greeter_example_passes_and_a_failing_assertion_fails_the_run() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let dir = work.path().join("aci-greeter");
    copy_tree(&example("aci-greeter"), &dir);

    // The app prints and exits at once; the tests still run beside it.
    let tap = run_ok(&mut herd_test(&dir, &store));
    assert!(tap.starts_with("1..4\n"), "{tap}");
    assert_eq!(tap.matches("\nok ").count(), 4, "{tap}");
    assert!(!tap.contains("not ok"), "{tap}");

    write(
        &dir.join("tests/zz-broken.bats"),
        "@test \"the greeting changed\" {\n  [ \"$(cat /usr/share/greeter/greeting)\" = \"Goodbye\" ]\n}\n",
    );
    let output = run_fails(&mut herd_test(&dir, &store));
    assert_tests_failed(&output);
    let tap = text(&output.stdout);
    assert!(tap.starts_with("1..5\n"), "{tap}");
    assert!(tap.contains("not ok 5 the greeting changed"), "{tap}");
    assert_eq!(tap.matches("\nok ").count(), 4, "{tap}");
}

/// The images env/ runs that `herd build aci/` builds pass their own tests
/// and do their job in a container.
#[test]
fn the_tripsearch_and_mysql_backup_examples_work() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox", "aci-mysql-backup"]);
    let tap = run_ok(&mut herd_test(&example("aci-tripsearch"), &store));
    assert!(
        tap.starts_with("1..2\n") && !tap.contains("not ok"),
        "{tap}"
    );

    let backups = work.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let out = run_ok(
        podman()
            .args(["run", "--rm", "--volume"])
            .arg(format!("{}:/backups", backups.display()))
            .args([
                "--env",
                r#"HERD_ATTRIBUTES={"backup": {"source": {"host": "192.168.1.4"}}}"#,
            ])
            .arg(oci_ref(&store, "aci.example.com/aci-mysql-backup:1.0-1")),
    );
    assert!(
        out.contains("backed up backup@192.168.1.4:3306 to /backups/mysql-"),
        "{out}"
    );
    let dumps: Vec<String> = snapshot(&backups).into_values().map(|c| text(&c)).collect();
    assert_eq!(dumps, ["dump of backup@192.168.1.4:3306\n"]);
}

#[test]
fn a_wait_that_never_succeeds_fails_after_the_timeout() {
    let work = workdir();
    let dir = work.path().join("never-ready");
    busybox_image(
        &dir,
        "name: aci.example.com/never-ready:1\naci:\n  app:\n    exec: [/bin/sleep, \"1000\"]\n",
    );
    write_executable(
        &dir.join("tests/wait.sh"),
        "#!/bin/sh\necho \"still waiting for godot\"\nexit 1\n",
    );
    write(
        &dir.join("tests/never.bats"),
        "@test \"never runs\" {\n  true\n}\n",
    );
    let started = Instant::now();
    let output = run_fails(
        herd_test(&dir, &work.path().join("store"))
            .arg("--timeout")
            .arg("3"),
    );
    let elapsed = started.elapsed();
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("timed out after 3s waiting for")
            && stderr.contains("tests/wait.sh to succeed")
            && stderr.contains("exited with status 1")
            && stderr.contains("still waiting for godot"),
        "{stderr}"
    );
    assert!(stdout.starts_with("Bail out! timed out"), "{stdout}");
    assert!(!stdout.contains("ok 1"), "{stdout}");
    assert!(
        elapsed < Duration::from_secs(60),
        "a 3 s timeout took {elapsed:?}"
    );
}

fn container_exists(name: &str) -> bool {
    podman()
        .args(["container", "exists", name])
        .status()
        .unwrap()
        .success()
}

fn container_running(name: &str) -> bool {
    let output = podman()
        .args(["inspect", "--format", "{{.State.Running}}", name])
        .output()
        .unwrap();
    output.status.success() && text(&output.stdout).trim() == "true"
}

/// Polls `condition` every 200 ms until it holds or `limit` passed.
fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    condition()
}

#[test]
fn a_killed_herd_test_does_not_leave_its_container_running() {
    let work = workdir();
    let dir = work.path().join("killed");
    busybox_image(
        &dir,
        "name: aci.example.com/killed:1\naci:\n  app:\n    exec: [/bin/sleep, \"1000\"]\n",
    );
    // Never ready: herd test waits with its container running.
    write(&dir.join("tests/wait.sh"), "exit 1\n");
    write(&dir.join("tests/x.bats"), "@test \"x\" {\n  true\n}\n");
    let mut child = herd_test(&dir, &work.path().join("store"))
        .arg("--timeout")
        .arg("600")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // herd test names its container after its work directory.
    let name = format!("herd-test-run-{}-0", child.id());
    let started = eventually(Duration::from_secs(120), || container_exists(&name));
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    let stopped = eventually(Duration::from_secs(60), || !container_running(&name));
    // The next herd test removes what the killed one left.
    write(&dir.join("tests/wait.sh"), "exit 0\n");
    run_ok(&mut herd_test(&dir, &work.path().join("store")));
    let removed = !container_exists(&name) && !Path::new("/tmp").join(&name).exists();
    let _ = podman()
        .args(["rm", "--force", "--time", "0", &name])
        .output();
    let _ = std::fs::remove_dir_all(Path::new("/tmp").join(&name));
    assert!(started, "the container {name} never ran");
    assert!(
        stopped,
        "the container {name} kept running after herd test was killed"
    );
    assert!(
        removed,
        "the next herd test did not remove {name} and its work directory"
    );
}

#[test]
fn wait_sh_is_retried_until_the_app_is_ready_and_runs_without_a_shebang() {
    let work = workdir();
    let dir = work.path().join("slow-start");
    busybox_image(
        &dir,
        "name: aci.example.com/slow-start:1\naci:\n  app:\n    exec: [/bin/sh, -c, \"sleep 2; echo ready > /tmp/ready; exec sleep 1000\"]\n",
    );
    std::fs::create_dir_all(dir.join("files/tmp")).unwrap();
    // Not executable: run by herd's own sh.
    write(&dir.join("tests/wait.sh"), "test -e /tmp/ready\n");
    write(
        &dir.join("tests/ready.bats"),
        "@test \"the app got ready before the tests\" {\n  [ \"$(cat /tmp/ready)\" = ready ]\n}\n",
    );
    let tap = run_ok(&mut herd_test(&dir, &work.path().join("store")));
    assert_eq!(tap, "1..1\nok 1 the app got ready before the tests\n");
}

#[test]
fn a_container_that_stops_at_start_is_reported_with_its_log() {
    let work = workdir();
    let dir = work.path().join("bad-start");
    busybox_image(
        &dir,
        "name: aci.example.com/bad-start:1\naci:\n  app:\n    exec: [/bin/sleep, \"1000\"]\n",
    );
    write_executable(
        &dir.join("runlevels/prestart-early/10-refuse.sh"),
        "#!/bin/sh\necho 'refusing to start: no database'\nexit 1\n",
    );
    write(&dir.join("tests/x.bats"), "@test \"x\" {\n  true\n}\n");
    let output = run_fails(&mut herd_test(&dir, &work.path().join("store")));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the container stopped with exit status 1")
            && stderr.contains("refusing to start: no database"),
        "{stderr}"
    );
}

#[test]
fn an_image_without_a_shell_is_tested_with_herds_tools() {
    let work = workdir();
    let dir = work.path().join("no-shell");
    write(
        &dir.join("aci-manifest.yml"),
        "name: aci.example.com/no-shell:1\n",
    );
    write(&dir.join("files/etc/motd"), "data only\n");
    write(
        &dir.join("tests/data.bats"),
        "@test \"the data is there\" {\n  [ \"$(cat /etc/motd)\" = \"data only\" ]\n  [ ! -e /bin/sh ]\n}\n",
    );
    let tap = run_ok(&mut herd_test(&dir, &work.path().join("store")));
    assert_eq!(tap, "1..1\nok 1 the data is there\n");
}

/// Builds a tester image holding the host's static bash and busybox and
/// its bats, the way a team would publish one.
fn build_bats_image(work: &Path, store: &Path) {
    let dir = work.join("aci-bats");
    write(
        &dir.join("aci-manifest.yml"),
        "name: aci.example.com/aci-bats:1\n",
    );
    write(&dir.join("files/etc/motd"), "from the tester\n");
    write_executable(
        &dir.join("runlevels/builder/10-install.sh"),
        r#"#!/bin/sh
set -eu
mkdir -p "$ROOTFS/bin" "$ROOTFS/usr/bin" "$ROOTFS/usr/lib" "$ROOTFS/usr/libexec" "$ROOTFS/tmp"
chmod 1777 "$ROOTFS/tmp"
cp "$(command -v bash-static)" "$ROOTFS/bin/bash"
cp "$(command -v busybox)" "$ROOTFS/bin/busybox"
for applet in $(busybox --list); do
  [ -e "$ROOTFS/bin/$applet" ] || ln -s busybox "$ROOTFS/bin/$applet"
done
ln -s /bin/env "$ROOTFS/usr/bin/env"
root=$(dirname "$(dirname "$(readlink -f "$(command -v bats)")")")
cp -r "$root/libexec/bats-core" "$ROOTFS/usr/libexec/"
cp -r "$root/lib/bats-core" "$ROOTFS/usr/lib/"
cp "$root/bin/bats" "$ROOTFS/usr/bin/bats"
"#,
    );
    run_ok(herd().arg("build").arg(&dir).arg("--store").arg(store));
}

#[test]
fn tester_dependencies_provide_bats_below_the_image() {
    let work = workdir();
    let store = work.path().join("store");
    build_bats_image(work.path(), &store);
    let dir = work.path().join("tested");
    write(
        &dir.join("aci-manifest.yml"),
        "name: aci.example.com/tested:1\ntester:\n  dependencies: [aci.example.com/aci-bats:1]\n",
    );
    write(&dir.join("files/etc/motd"), "from the image\n");
    write(
        &dir.join("tests/stacked.bats"),
        r#"@test "the image's files win over the tester's" {
  [ "$(cat /etc/motd)" = "from the image" ]
}

@test "bats is the tester's, not the host's" {
  [ "$BATS_ROOT" = /usr ]
  [ ! -e /.herd-test/tools/bats ]
}
"#,
    );
    let tap = run_ok(&mut herd_test(&dir, &store));
    assert!(tap.starts_with("1..2\n"), "{tap}");
    assert_eq!(tap.matches("\nok ").count(), 2, "{tap}");

    // The test image was not added to the store.
    let images = run_ok(herd().arg("images").arg("--store").arg(&store));
    assert!(!images.contains("herd-test"), "{images}");
}

#[test]
fn init_makes_a_directory_that_builds_and_passes_its_own_test() {
    let work = workdir();
    let dir = work.path().join("aci-hello");
    let out = run_ok(herd().arg("init").arg(&dir));
    assert!(out.contains("aci.example.com/aci-hello:0.1-1"), "{out}");
    for file in [
        "aci-manifest.yml",
        "attributes/aci-hello.yml",
        "templates/etc/aci-hello/aci-hello.conf.tmpl",
        "runlevels/build/10-install.sh",
        "tests/wait.sh",
        "tests/aci-hello.bats",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let tap = run_ok(&mut herd_test(&dir, &work.path().join("store")));
    assert!(tap.starts_with("1..3\n"), "{tap}");
    assert_eq!(tap.matches("\nok ").count(), 3, "{tap}");
    assert!(!tap.contains("not ok"), "{tap}");
}

#[test]
fn init_refuses_a_non_empty_directory_and_changes_nothing() {
    let work = workdir();
    let dir = work.path().join("taken");
    write(
        &dir.join("aci-manifest.yml"),
        "name: aci.example.com/mine:1\n",
    );
    write(&dir.join("notes/todo.txt"), "keep me\n");
    let before = snapshot(&dir);
    let output = run_fails(
        herd()
            .arg("init")
            .arg(&dir)
            .arg("--name")
            .arg("aci.example.com/taken:1"),
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("taken") && stderr.contains("not empty"),
        "{stderr}"
    );
    assert_eq!(snapshot(&dir), before);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

/// dgr's `double_env_test`, ported: `tester.aci.app.environment` wins over
/// the image's environment name by name; `tester.builder.environment`
/// reaches the test commands only. Run from the work directory with
/// relative paths (the store's blobs are linked from elsewhere), twice:
/// the second run takes the image from the build cache, its build script
/// does not run again.
#[test]
fn tester_environment_overrides_the_image_with_relative_paths_and_the_build_cache() {
    let work = workdir();
    let dir = work.path().join("env-test");
    busybox_image(
        &dir,
        r#"name: aci.example.com/env-test:1
build:
  mountPoints: [{from: ../marker, to: /marker}]
aci:
  app:
    exec: [/bin/sleep, "1000"]
    environment:
      - {name: TEST_VAR, value: "false"}
      - {name: TEST_VAR_APP, value: "true"}
tester:
  aci:
    app:
      environment:
        - {name: TEST_VAR, value: "true"}
        - {name: TEST_VAR_TEST, value: "true"}
  builder:
    environment: [{name: TEST_RUNNER, value: bats}]
"#,
    );
    std::fs::create_dir(work.path().join("marker")).unwrap();
    write_executable(
        &dir.join("runlevels/build-late/10-count.sh"),
        "#!/bin/sh\necho ran >> /marker/count\n",
    );
    write(
        &dir.join("tests/env.bats"),
        r#"@test "tester values over the image's" {
  [ "$TEST_VAR" = true ]
  [ "$TEST_VAR_APP" = true ]
  [ "$TEST_VAR_TEST" = true ]
}

@test "the app runs with them too" {
  tr '\0' '\n' < /proc/1/environ | grep -qx TEST_VAR=true
}

@test "tester.builder.environment is for the tests only" {
  [ "$TEST_RUNNER" = bats ]
  ! tr '\0' '\n' < /proc/1/environ | grep -q ^TEST_RUNNER=
}
"#,
    );
    for _ in 0..2 {
        let tap =
            run_ok(herd_test(Path::new("env-test"), Path::new("store")).current_dir(work.path()));
        assert!(tap.starts_with("1..3\n"), "{tap}");
        assert_eq!(tap.matches("\nok ").count(), 3, "{tap}");
    }
    let count = std::fs::read_to_string(work.path().join("marker/count")).unwrap();
    assert_eq!(count, "ran\n", "the build script ran once");
}

/// A tree: the image and the pod's app are each tested, in one run.
#[test]
fn a_tree_with_a_pod_tests_the_image_and_each_app_with_tests() {
    let work = workdir();
    let tree = work.path().join("tree");
    let image = tree.join("tree-img");
    busybox_image(
        &image,
        "name: aci.example.com/tree-img:1\naci:\n  app:\n    exec: [/bin/sleep, \"1000\"]\n",
    );
    write(
        &image.join("tests/image.bats"),
        "@test \"the image\" {\n  [ -x /bin/sh ]\n}\n",
    );
    let pod = tree.join("tree-pod");
    write(
        &pod.join("pod-manifest.yml"),
        "name: aci.example.com/tree-pod:1\npod:\n  apps:\n    - dependencies: [aci.example.com/tree-img:1]\n",
    );
    write(&pod.join("tree-img/files/etc/app-of-pod"), "yes\n");
    write(
        &pod.join("tree-img/tests/app.bats"),
        "@test \"the pod's app\" {\n  [ \"$(cat /etc/app-of-pod)\" = yes ]\n}\n",
    );
    let tap = run_ok(&mut herd_test(&tree, &work.path().join("store")));
    assert!(
        tap.contains("# aci.example.com/tree-img:1\n1..1\nok 1 the image\n"),
        "{tap}"
    );
    assert!(
        tap.contains("# aci.example.com/tree-pod_tree-img:1\n1..1\nok 1 the pod's app\n"),
        "{tap}"
    );
}

#[test]
fn what_herd_test_cannot_do_is_said() {
    let work = workdir();
    let store = work.path().join("store");
    let env = work.path().join("env/prod");
    write(&env.join("config.yml"), "envName: prod\n");
    let output = run_fails(&mut herd_test(&work.path().join("env"), &store));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("holds no aci-manifest.yml or pod-manifest.yml"),
        "{stderr}"
    );
    assert!(!stderr.contains("is it an image directory"), "{stderr}");

    let dir = work.path().join("with-builder");
    write(
        &dir.join("aci-manifest.yml"),
        "name: aci.example.com/with-builder:1\ntester:\n  builder:\n    dependencies: [aci.example.com/aci-tester:1]\n",
    );
    let output = run_fails(&mut herd_test(&dir, &store));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("aci-manifest.yml:3") && stderr.contains("herd test builds no test image"),
        "{stderr}"
    );
    let dir = work.path().join("with-isolators");
    write(
        &dir.join("aci-manifest.yml"),
        "name: aci.example.com/with-isolators:1\ntester:\n  aci:\n    app:\n      exec: [/bin/true]\n",
    );
    let output = run_fails(&mut herd_test(&dir, &store));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("aci-manifest.yml:5") && stderr.contains("exec"),
        "{stderr}"
    );
}
