//! The Debian-based examples (debootstrap, apt-get): slow (a few minutes)
//! and they need Debian's package mirror, which CI reaches; they always run.

mod common;

use common::*;

#[test]
fn debian_examples_build_mariadb_which_runs_becomes_ready_and_drains() {
    needs_build_sandbox();
    needs(&["debootstrap", "podman"]);
    let work = workdir();
    let store = work.path().join("store");
    let out = build_examples(&store, &["debian"]);
    let name = out
        .lines()
        .find(|l| l.starts_with("aci.example.com/aci-mariadb:"))
        .expect("mariadb was built")
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let run = |command: &[&str]| {
        run_ok(
            podman()
                .args(["run", "--rm"])
                .arg(oci_ref(&store, &name))
                .args(command),
        )
    };
    let config = run(&["cat", "/etc/mysql/mariadb.conf.d/90-herd.cnf"]);
    assert!(config.contains("max_connections = 100"), "{config}");
    // MariaDB itself runs in the image and reads the rendered file.
    let version = run(&["mariadbd", "--version"]);
    assert!(version.contains("MariaDB"), "{version}");
    let defaults = run(&["my_print_defaults", "--mysqld"]);
    assert!(
        defaults.contains("--max_connections=100"),
        "mariadbd does not read the rendered config:\n{defaults}"
    );

    // The server itself: ready once `mariadb-admin ping` answers, and
    // stopped only once `herd-no-sessions` found no client left.
    let container = format!("herd-debian-test-{}", std::process::id());
    run_ok(
        podman()
            .args([
                "run",
                "-d",
                "--name",
                &container,
                "--env",
                "HERD_STOP_TIMEOUT=30",
            ])
            .arg(oci_ref(&store, &name)),
    );
    let ready = podman()
        .args(["exec", &container, "/herd/init", "ready", "--wait", "120"])
        .output()
        .unwrap();
    run_ok(podman().args(["stop", "-t", "30", &container]));
    let logs = podman().args(["logs", &container]).output().unwrap();
    let _ = podman().args(["rm", "-f", &container]).output();
    let logs = text(&logs.stdout) + &text(&logs.stderr);
    assert!(
        ready.status.success(),
        "MariaDB never became ready:\n{logs}"
    );
    assert!(
        logs.contains("herd-init: ready after") && logs.contains("herd-init: stop: drained after"),
        "{logs}"
    );

    // pod-mysql, which env/*/services/mysql-main runs: its app is the
    // aci-mariadb just built (named without a version), configured from
    // the environment's attribute through the pod's templated one.
    assert!(
        out.lines()
            .any(|l| l.starts_with("aci.example.com/pod-mysql:10.11-1 ")),
        "{out}"
    );
    let app = oci_ref(&store, "aci.example.com/pod-mysql_mariadb:10.11-1");
    let config = |attributes: &[&str]| {
        run_ok(
            podman()
                .args(["run", "--rm"])
                .args(attributes)
                .arg(&app)
                .args(["cat", "/etc/mysql/mariadb.conf.d/90-herd.cnf"]),
        )
    };
    let alone = config(&[]);
    assert!(
        alone.contains("innodb_buffer_pool_size = 128M")
            && alone.contains("bind-address = 0.0.0.0"),
        "{alone}"
    );
    let from_env = config(&[
        "--env",
        r#"HERD_ATTRIBUTES={"mysql": {"innodbBufferPoolSize": "4G"}}"#,
    ]);
    assert!(
        from_env.contains("innodb_buffer_pool_size = 4G"),
        "{from_env}"
    );
}
