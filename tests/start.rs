//! Container start end to end: the example image aci/aci-templated, built
//! by `herd build` and run by podman (runc): herd-init renders templates
//! from merged attributes, runs prestart scripts and supervises the app.
//! Also `herd try` and `herd attributes` on the same directory.

mod common;

use base64::Engine;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const NAME: &str = "aci.example.com/aci-templated:1";

/// The test's copy of aci/aci-templated: busybox added, and one more
/// template that uses an attribute nobody sets, but only when `strict` is
/// true, so one image serves every test.
fn image_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("aci-templated");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("aci/aci-templated"),
        &dir,
    );
    add_busybox(&dir.join("files"));
    std::fs::write(
        dir.join("templates/etc/app/strict.tmpl"),
        "{% if strict %}\nname={{ name }}\nhost={{ database.host }}\n{% endif %}\n",
    )
    .unwrap();
    dir
}

/// `oci:STORE:NAME` of the image, built once for all tests of this file.
/// The store lives under cargo's target/tmp, replaced at each run: podman
/// names the image after the store's path and refuses upper case, which
/// random temporary directory names have.
fn image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("herd-start-test");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let dir = image_dir(&work);
        let store = work.join("store");
        run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));
        oci_ref(&store, NAME)
    })
}

/// `podman run --rm` of the image with `env` and the command `args`
/// (none: the image's app).
fn run(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut command = podman();
    command.args(["run", "--rm"]);
    for (key, value) in env {
        command.arg("--env").arg(format!("{key}={value}"));
    }
    command.arg(image()).args(args);
    command.output().unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "container failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// A detached container, removed when dropped.
struct Container(String);

impl Container {
    /// `podman run -d` with podman `options`, then the command `args`.
    fn start(options: &[&str], args: &[&str]) -> Container {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "herd-start-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let _ = podman().args(["rm", "-f", &name]).output();
        run_ok(
            podman()
                .args(["run", "-d", "--name", &name])
                .args(options)
                .arg(image())
                .args(args),
        );
        Container(name)
    }

    fn logs(&self) -> String {
        let output = podman().args(["logs", &self.0]).output().unwrap();
        text(&output.stdout) + &text(&output.stderr)
    }

    /// Waits until the logs hold `needle`; fails the test after 30 s.
    fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared in the logs of {}:\n{}",
                self.0,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exit_code(&self) -> String {
        run_ok(podman().args(["inspect", "--format", "{{.State.ExitCode}}", &self.0]))
            .trim()
            .to_string()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", "-t", "0", &self.0]).output();
    }
}

const SHOW: &str = "id -u; id -g; cat /tmp/start-order; cat /etc/app/app.conf; stat -c '%a %u %g %n' /etc/app/secret /etc/app/app.conf";

#[test]
fn default_start_renders_templates_between_the_prestart_scripts_and_runs_the_app_as_its_user() {
    let out = stdout_of(&run(&[], &["/bin/sh", "-c", SHOW]));
    assert_eq!(
        out,
        "1000\n1000\n\
         early: app.conf present: no\n\
         late: app.conf present: yes\n\
         # templated: written by herd-init at container start, do not edit\n\
         name=templated\nport=8080\nurl=http://localhost:8080/\nserver=alpha\nserver=beta\n\
         600 1000 1000 /etc/app/secret\n\
         644 0 0 /etc/app/app.conf\n"
    );
}

#[test]
fn overrides_in_json_base64_file_and_pieces_change_the_output() {
    let app_conf = |env: &[(&str, &str)]| stdout_of(&run(env, &["/bin/cat", "/etc/app/app.conf"]));

    // Plain JSON: a templated value follows, a list is replaced whole.
    let out = app_conf(&[(
        "HERD_ATTRIBUTES",
        r#"{"host": "db.example", "servers": ["gamma"]}"#,
    )]);
    assert!(out.contains("url=http://db.example:8080/\n"), "{out}");
    assert!(
        out.contains("server=gamma\n") && !out.contains("alpha") && !out.contains("beta"),
        "{out}"
    );

    let encoded =
        base64::engine::general_purpose::STANDARD.encode(r#"{"port": 9090, "name": "b64"}"#);
    let out = app_conf(&[("HERD_ATTRIBUTES", &format!("base64,{encoded}"))]);
    assert!(
        out.contains("port=9090\nurl=http://localhost:9090/\n") && out.contains("# b64:"),
        "{out}"
    );

    // The pieces `herd units` writes, and dgr's variable below them.
    let (one, two) = encoded.split_at(7);
    let out = app_conf(&[
        ("TEMPLATER_OVERRIDE", r#"{"name": "dgr", "port": 1}"#),
        ("HERD_ATTRIBUTES_0", one),
        ("HERD_ATTRIBUTES_1", two),
    ]);
    assert!(
        out.contains("# b64:") && out.contains("port=9090\n"),
        "{out}"
    );
    let out = app_conf(&[("TEMPLATER_OVERRIDE", r#"{"name": "dgr"}"#)]);
    assert!(out.contains("# dgr:"), "{out}");

    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("override.yml"),
        "servers: [delta, epsilon]\n",
    )
    .unwrap();
    let mut command = podman();
    command.args([
        "run",
        "--rm",
        "--env",
        "HERD_ATTRIBUTES_FILE=/run/override.yml",
        "--volume",
    ]);
    command.arg(format!(
        "{}:/run/override.yml:ro",
        work.path().join("override.yml").display()
    ));
    let out = stdout_of(
        &command
            .arg(image())
            .args(["/bin/cat", "/etc/app/app.conf"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("server=delta\nserver=epsilon\n") && !out.contains("alpha"),
        "{out}"
    );
}

#[test]
fn invalid_override_stops_the_start_saying_what_was_expected() {
    let output = run(
        &[("HERD_ATTRIBUTES", "{port: 1}")],
        &["/bin/echo", "app ran"],
    );
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("HERD_ATTRIBUTES is not valid JSON")
            && stderr.contains("expected a JSON object"),
        "{stderr}"
    );
    assert!(!text(&output.stdout).contains("app ran"));
}

#[test]
fn a_missing_attribute_stops_the_start_naming_template_line_and_attribute_and_writes_nothing() {
    let container = Container::start(
        &["--env", r#"HERD_ATTRIBUTES={"strict": true}"#],
        &["/bin/echo", "app ran"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while run_ok(podman().args(["inspect", "--format", "{{.State.Status}}", &container.0])).trim()
        != "exited"
    {
        assert!(
            Instant::now() < deadline,
            "the container did not stop: {}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = container.logs();
    assert!(
        logs.contains(
            "/herd/templates/etc/app/strict.tmpl:3: attribute `database.host` has no value"
        ),
        "{logs}"
    );
    assert!(logs.contains("nothing was written"), "{logs}");
    assert!(
        !logs.contains("app ran") && !logs.contains("prestart-late"),
        "{logs}"
    );
    assert_eq!(container.exit_code(), "1");
    // Not even the templates that did render were written.
    let copy = tempfile::tempdir().unwrap();
    let output = podman()
        .args(["cp", &format!("{}:/etc/app/app.conf", container.0)])
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "/etc/app/app.conf was written: {}",
        text(&output.stdout)
    );
}

#[test]
fn a_failing_check_cmd_prints_its_output_and_stops_the_start() {
    let output = run(
        &[("HERD_ATTRIBUTES", r#"{"port": "eighty"}"#)],
        &["/bin/echo", "app ran"],
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("the checkCmd of /herd/templates/etc/app/app.tmpl.conf"),
        "{stderr}"
    );
    assert!(
        stderr.contains("invalid port in /etc/app/app.conf: port=eighty"),
        "{stderr}"
    );
    assert!(!text(&output.stdout).contains("app ran"));
}

#[test]
fn podman_stop_delivers_sigterm_to_the_default_app_quickly() {
    let container = Container::start(&[], &[]);
    container.wait_for_log("app: ready");
    assert!(
        container.logs().contains("url=http://localhost:8080/"),
        "{}",
        container.logs()
    );
    let started = Instant::now();
    run_ok(podman().args(["stop", "-t", "30", &container.0]));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "podman stop took {took:?}: SIGTERM did not reach the app"
    );
    assert!(
        container.logs().contains("app: got TERM, stopping"),
        "{}",
        container.logs()
    );
    assert_eq!(container.exit_code(), "0");
}

#[test]
fn signals_are_forwarded_and_the_app_exit_code_comes_back() {
    let script = "trap 'echo trapped USR1' USR1; trap 'echo trapped HUP' HUP; trap 'echo trapped USR2' USR2; \
                  trap 'echo trapped TERM; exit 42' TERM; echo ready; while true; do sleep 0.1; done";
    let container = Container::start(&[], &["/bin/sh", "-c", script]);
    container.wait_for_log("ready");
    for signal in ["USR1", "HUP", "USR2"] {
        run_ok(podman().args(["kill", "--signal", signal, &container.0]));
        container.wait_for_log(&format!("trapped {signal}"));
    }
    let started = Instant::now();
    run_ok(podman().args(["stop", "-t", "30", &container.0]));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "podman stop took {:?}",
        started.elapsed()
    );
    container.wait_for_log("trapped TERM");
    assert_eq!(container.exit_code(), "42");

    assert_eq!(
        run(&[], &["/bin/sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(
        run(&[], &["/bin/sh", "-c", "kill -KILL $$"]).status.code(),
        Some(137)
    );
    let output = run(&[], &["/no/such/app"]);
    assert_eq!(output.status.code(), Some(127));
    assert!(
        text(&output.stderr).contains("cannot run `/no/such/app`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn orphans_left_by_the_app_are_reaped() {
    // Each inner shell exits at once, leaving its `sleep` to the init;
    // without reaping, 20 zombies would be left when the sleeps end.
    let script = "for i in $(seq 20); do sh -c 'sleep 0.2 &'; done; sleep 1.5; \
                  echo zombies=$(grep -l zombie /proc/[0-9]*/status 2>/dev/null | wc -l)";
    let out = stdout_of(&run(&[], &["/bin/sh", "-c", script]));
    assert_eq!(out.trim(), "zombies=0");
}

#[test]
fn debug_level_traces_scripts_and_masks_secrets() {
    let output = run(&[("LOG_LEVEL", "debug")], &["/bin/true"]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("+ mkdir -p /tmp"),
        "scripts not traced:\n{stderr}"
    );
    assert!(
        stderr.contains("attribute database.password = ******"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("change-me"),
        "a secret was logged:\n{stderr}"
    );
}

#[test]
fn herd_try_reports_every_missing_attribute_and_writes_only_when_all_rendered() {
    let work = tempfile::tempdir().unwrap();
    let dir = image_dir(work.path());
    std::fs::write(
        dir.join("templates/etc/other.tmpl"),
        "a={{ a }}\n\nb={{ b.c }}\n",
    )
    .unwrap();
    let out = work.path().join("out");
    let output = run_fails(
        herd()
            .arg("try")
            .arg(&dir)
            .args(["--attributes", r#"{"strict": true}"#, "--out"])
            .arg(&out),
    );
    let stderr = text(&output.stderr);
    let templates = dir.join("templates");
    for expected in [
        format!(
            "{}:3: attribute `database.host` has no value",
            templates.join("etc/app/strict.tmpl").display()
        ),
        format!(
            "{}:1: attribute `a` has no value",
            templates.join("etc/other.tmpl").display()
        ),
        format!(
            "{}:3: attribute `b.c` has no value",
            templates.join("etc/other.tmpl").display()
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(!out.exists(), "something was written");

    let overrides = work.path().join("override.json");
    std::fs::write(&overrides, r#"{"a": 1, "b": {"c": 2}, "host": "h"}"#).unwrap();
    run_ok(
        herd()
            .arg("try")
            .arg(&dir)
            .arg("--attributes")
            .arg(&overrides)
            .arg("--out")
            .arg(&out),
    );
    let conf = std::fs::read_to_string(out.join("etc/app/app.conf")).unwrap();
    assert!(conf.contains("url=http://h:8080/"), "{conf}");
    assert_eq!(
        std::fs::read_to_string(out.join("etc/other")).unwrap(),
        "a=1\n\nb=2\n"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("etc/app/secret"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Without --out, a temporary directory is made and named.
    std::fs::remove_file(dir.join("templates/etc/other.tmpl")).unwrap();
    let output = herd().arg("try").arg(&dir).output().unwrap();
    let stderr = text(&output.stderr);
    let made = stderr
        .lines()
        .find_map(|l| l.split(" into ").nth(1))
        .unwrap_or_else(|| panic!("no directory named in:\n{stderr}"));
    assert!(
        Path::new(made).join("etc/app/app.conf").is_file(),
        "{stderr}"
    );
    std::fs::remove_dir_all(made).unwrap();
}

#[test]
fn herd_attributes_prints_merged_values_and_explains_their_origin() {
    let work = tempfile::tempdir().unwrap();
    let dir = image_dir(work.path());
    std::fs::write(
        dir.join("attributes/zz-site.yml"),
        "default:\n  port: 9000\noverride:\n  servers: [one]\n",
    )
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(herd().arg("attributes").arg(&dir).args([
            "--format",
            "json",
            "--resolve",
        ])))
        .unwrap();
    assert_eq!(json["port"], 9000);
    assert_eq!(json["servers"], serde_json::json!(["one"]));
    assert_eq!(json["url"], "http://localhost:9000/");

    let explained = run_ok(herd().arg("attributes").arg(&dir).arg("--explain"));
    let site = dir.join("attributes/zz-site.yml");
    assert!(
        explained.contains(&format!("port: 9000  # {}\n", site.display())),
        "{explained}"
    );
    assert!(
        explained.contains(&format!(
            "servers: [\"one\"]  # {} (override)\n",
            site.display()
        )),
        "{explained}"
    );
    assert!(
        explained.contains("database.password: \"******\""),
        "{explained}"
    );
    assert!(!explained.contains("change-me"), "{explained}");
}
