//! The Debian-based examples (debootstrap, apt-get): slow and networked, so
//! they run only with HERD_TEST_DEBIAN=1 (and then must pass).

mod common;

use common::*;
use std::path::Path;

#[test]
fn debian_examples_build_and_run_when_asked() {
    if std::env::var_os("HERD_TEST_DEBIAN").is_none() {
        eprintln!("not building the Debian examples: set HERD_TEST_DEBIAN=1 to run them");
        return;
    }
    let work = workdir();
    let store = work.path().join("store");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("aci/debian");
    let out = run_ok(
        herd()
            .arg("build")
            .arg(&examples)
            .arg("--store")
            .arg(&store),
    );
    let name = out
        .lines()
        .find(|l| l.starts_with("aci.example.com/aci-mariadb:"))
        .expect("mariadb was built")
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let config = run_ok(
        podman()
            .args(["run", "--rm"])
            .arg(format!("oci:{}:{name}", store.display()))
            .args(["cat", "/etc/mysql/mariadb.conf.d/90-herd.cnf"]),
    );
    assert!(config.contains("max_connections = 100"), "{config}");
    // MariaDB itself runs in the image and reads the rendered file.
    let version = run_ok(
        podman()
            .args(["run", "--rm"])
            .arg(format!("oci:{}:{name}", store.display()))
            .args(["mariadbd", "--version"]),
    );
    assert!(version.contains("MariaDB"), "{version}");
    let defaults = run_ok(
        podman()
            .args(["run", "--rm"])
            .arg(format!("oci:{}:{name}", store.display()))
            .args(["my_print_defaults", "--mysqld"]),
    );
    assert!(
        defaults.contains("--max_connections=100"),
        "mariadbd does not read the rendered config:\n{defaults}"
    );
}
