//! Hostile inputs end to end (issue 18): attribute files, templates,
//! environment directories and container overrides written by an attacker
//! cannot leak herd's environment, inject unit lines, exhaust memory,
//! stack or time, or hang a container start.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SECRET: &str = "ci-secret-4e1f9a";

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Every file below `dir`.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if entry.file_type().unwrap().is_file() {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Every file below `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    all_files(dir)
        .into_iter()
        .filter(|path| {
            std::fs::read(path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
        })
        .collect()
}

/// Layers are compressed: a secret in one would not show by grep, so the
/// image's own text (manifest, config) is what is searched, after
/// `herd build` reported the annotation it rendered.
#[test]
fn build_time_templates_read_only_herd_env_variables() {
    let work = workdir();
    let dir = work.path().join("leaky");
    busybox_image(
        &dir,
        "name: aci.example.com/leaky:1\naci:\n  annotations:\n    - {name: secret, value: \"{{ get_env(name='CI_SECRET', default='unset') }}\"}\n    - {name: proxy, value: \"{{ get_env(name='PROXY') }}\"}\n",
    );
    let store = work.path().join("store");
    run_ok(
        herd()
            .args(["build"])
            .arg(&dir)
            .arg("--store")
            .arg(&store)
            .env("CI_SECRET", SECRET)
            .env("HERD_ENV_PROXY", "http://proxy.example:3128"),
    );
    assert_eq!(files_holding(&store, SECRET), Vec::<PathBuf>::new());
    assert!(
        !files_holding(&store, "http://proxy.example:3128").is_empty(),
        "HERD_ENV_PROXY, passed on purpose, is in the image's annotations"
    );
    assert!(!files_holding(&store, "\"unset\"").is_empty());

    // Without a default, the variable missing is an error that says how
    // to pass it.
    let output = run_fails(
        herd()
            .args(["build"])
            .arg(&dir)
            .arg("--store")
            .arg(&store)
            .env("PROXY", "http://proxy.example:3128")
            .env_remove("HERD_ENV_PROXY"),
    );
    let stderr = text(&output.stderr);
    assert!(stderr.contains("HERD_ENV_PROXY is not set"), "{stderr}");

    // Unit templates and `herd try` read the same way.
    let env = work.path().join("env/e1");
    write(
        &env,
        &[
            (
                "config.yml",
                "envName: e1\nregistry: {domain: aci.example.com}\n",
            ),
            (
                "services/web/service-manifest.yml",
                "containers: [aci.example.com/web:1]\nnodes:\n  - hostname: h1\n",
            ),
            (
                "services/web/unit.tmpl",
                "[Unit]\nDescription={{ get_env(name='CI_SECRET', default='unset') }}\n[Service]\nExecStart=/bin/true\n",
            ),
        ],
    );
    let out = work.path().join("units");
    run_ok(
        herd()
            .arg("gen")
            .arg(&env)
            .arg("--out")
            .arg(&out)
            .env("CI_SECRET", SECRET),
    );
    assert_eq!(files_holding(&out, SECRET), Vec::<PathBuf>::new());
    assert_eq!(files_holding(&out, "Description=unset").len(), 1);

    let image = work.path().join("tried");
    write(
        &image,
        &[
            ("aci-manifest.yml", "name: aci.example.com/tried:1\n"),
            (
                "templates/etc/x.tmpl",
                "{{ get_env(name='CI_SECRET', default='unset') }}\n",
            ),
        ],
    );
    let tried = work.path().join("tried-out");
    run_ok(
        herd()
            .arg("try")
            .arg(&image)
            .arg("--out")
            .arg(&tried)
            .env("CI_SECRET", SECRET),
    );
    assert_eq!(
        std::fs::read_to_string(tried.join("etc/x")).unwrap(),
        "unset\n"
    );
}

/// An environment with one service `web` on node `h1`: `manifest` is its
/// service-manifest.yml, `attributes` its attributes/a.yml, `unit` its
/// unit.tmpl if any.
fn environment(root: &Path, manifest: &str, attributes: &str, unit: Option<&str>) -> PathBuf {
    let env = root.join("env/e1");
    let _ = std::fs::remove_dir_all(&env);
    write(
        &env,
        &[
            (
                "config.yml",
                "envName: e1\nregistry: {domain: aci.example.com}\n",
            ),
            ("services/web/service-manifest.yml", manifest),
            ("services/web/attributes/a.yml", attributes),
        ],
    );
    if let Some(unit) = unit {
        write(&env, &[("services/web/unit.tmpl", unit)]);
    }
    env
}

fn gen_fails(env: &Path, out: &Path) -> String {
    let output = herd()
        .arg("gen")
        .arg(env)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(!output.status.success(), "herd gen succeeded");
    assert!(!out.exists(), "nothing is written");
    text(&output.stderr)
}

#[test]
fn unit_lines_cannot_be_injected_by_fleet_lines_or_attributes() {
    let work = workdir();
    let out = work.path().join("units");
    let web = "containers: [aci.example.com/web:1]\nnodes:\n  - hostname: h1\n";

    // A fleet line holding a newline.
    let env = environment(
        work.path(),
        "containers: [aci.example.com/web:1]\nnodes:\n  - hostname: h1\n    fleet:\n      - \"MachineMetadata=name=r1\\n[Service]\\nExecStartPre=/bin/evil\"\n",
        "default: {}\n",
        None,
    );
    let stderr = gen_fails(&env, &out);
    assert!(
        stderr.contains("service-manifest.yml:5") && stderr.contains("newline"),
        "{stderr}"
    );

    // An attribute holding a newline, in a unit template.
    let unit = "[Unit]\nDescription=web {{ motd }}\n[Service]\nExecStart=/bin/echo {{ motd }}\n";
    let env = environment(
        work.path(),
        web,
        "default:\n  motd: \"hi\\nExecStartPre=/bin/evil\"\n",
        Some(unit),
    );
    let stderr = gen_fails(&env, &out);
    assert!(
        stderr.contains("unit.tmpl") && stderr.contains("line 2") && stderr.contains("| safe"),
        "{stderr}"
    );

    // `%` is doubled: systemd reads `%h` back as the text, not the
    // specifier; `| safe` opts out.
    let unit = "[Unit]\nDescription=web {{ motd }}\n[Service]\nExecStart=/bin/echo {{ motd }} {{ spec | safe }}\n";
    let env = environment(
        work.path(),
        web,
        "default:\n  motd: \"50%h\"\n  spec: \"%n\"\n",
        Some(unit),
    );
    run_ok(herd().arg("gen").arg(&env).arg("--out").arg(&out));
    let written = std::fs::read_to_string(out.join("web/e1_web_h1.service")).unwrap();
    assert!(
        written.contains("Description=web 50%%h\n")
            && written.contains("ExecStart=/bin/echo 50%%h %n\n"),
        "{written}"
    );

    // The default unit, with attributes full of newlines, `%`, `$` and
    // quotes: they travel base64-encoded, never as unit text.
    let env = environment(
        work.path(),
        web,
        "default:\n  evil: \"x\\n[Service]\\nExecStartPre=/bin/evil %h $HOME '\\\"\"\n",
        None,
    );
    let _ = std::fs::remove_dir_all(&out);
    run_ok(herd().arg("gen").arg(&env).arg("--out").arg(&out));
    for file in all_files(&out) {
        let content = std::fs::read_to_string(&file).unwrap();
        assert!(
            !content
                .lines()
                .any(|l| l.starts_with("ExecStartPre=/bin/evil")),
            "{}:\n{content}",
            file.display()
        );
    }
    let analyze = tool("systemd-analyze");
    tool("podman");
    let verified = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(out.join("web/e1_web_h1.service"))
        .output()
        .unwrap();
    assert!(
        verified.status.success() && verified.stderr.is_empty(),
        "systemd-analyze verify:\n{}{}",
        text(&verified.stdout),
        text(&verified.stderr)
    );
}

/// `herd try DIR` run with at most `megabytes` of data memory; its output
/// and how long it took.
fn try_bounded(dir: &Path, megabytes: u64) -> (Output, Duration) {
    let mut command = herd();
    command.arg("try").arg(dir);
    let limit = megabytes << 20;
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let output = command.output().unwrap();
    (output, started.elapsed())
}

fn image_with(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join(name);
    write(
        &dir,
        &[(
            "aci-manifest.yml",
            &format!("name: aci.example.com/{name}:1\n"),
        )],
    );
    write(&dir, files);
    dir
}

#[test]
fn doubling_attribute_values_fail_within_seconds_and_300_mb() {
    let work = workdir();
    let mut file = String::from("default:\n  l0: \"0123456789abcdef0123456789abcdef\"\n");
    for level in 1..=22 {
        let previous = level - 1;
        file.push_str(&format!(
            "  l{level}: \"{{{{ l{previous} }}}}{{{{ l{previous} }}}}\"\n"
        ));
    }
    let dir = image_with(
        work.path(),
        "doubling",
        &[
            ("attributes/a.yml", &file),
            ("templates/etc/x.tmpl", "{{ l22 }}\n"),
        ],
    );
    let (output, took) = try_bounded(&dir, 300);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        stderr.contains("attribute `l16`: resolves to more than 1 MiB"),
        "{stderr}"
    );

    // A template that renders gigabytes stops at the file limit.
    let dir = image_with(
        work.path(),
        "huge",
        &[(
            "templates/etc/x.tmpl",
            "{% for i in range(end=100000) %}{% for j in range(end=100000) %}0123456789{% endfor %}{% endfor %}",
        )],
    );
    let (output, took) = try_bounded(&dir, 300);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        stderr.contains("x.tmpl") && stderr.contains("renders more than 16 MiB"),
        "{stderr}"
    );

    // Recursive macros would overflow the stack.
    let dir = image_with(
        work.path(),
        "recursive",
        &[
            (
                "templates/m.partial",
                "{% macro f(n) %}{{ self::f(n=n) }}{% endmacro f %}",
            ),
            (
                "templates/etc/x.tmpl",
                "{% import \"m.partial\" as m %}{{ m::f(n=1) }}",
            ),
        ],
    );
    let (output, _) = try_bounded(&dir, 300);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("m.partial") && stderr.contains("a macro calls itself"),
        "{stderr}"
    );
}

#[test]
fn yaml_files_are_bounded_and_keys_unique() {
    let work = workdir();
    let deep = format!(
        "default:\n  x: {}1{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let dir = image_with(work.path(), "deep", &[("attributes/a.yml", &deep)]);
    let (output, took) = try_bounded(&dir, 300);
    let stderr = text(&output.stderr);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        stderr.contains("attributes/a.yml:2: nesting is") && stderr.contains("at most 64 levels"),
        "{stderr}"
    );

    let dir = image_with(
        work.path(),
        "twice",
        &[(
            "attributes/a.yml",
            "default:\n  db:\n    host: a\n    port: 1\n    host: b\n",
        )],
    );
    let (output, _) = try_bounded(&dir, 300);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "attributes/a.yml:5: key `host` appears twice in the same map (first on line 3)"
        ),
        "{stderr}"
    );

    let big = format!("default:\n  x: \"{}\"\n", "a".repeat(5 << 20));
    let dir = image_with(work.path(), "big", &[("attributes/a.yml", &big)]);
    let (output, _) = try_bounded(&dir, 300);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("attributes/a.yml: is larger than 4 MiB"),
        "{stderr}"
    );
}

#[test]
fn try_keeps_its_output_private_and_refuses_links_out_of_the_image() {
    let work = workdir();
    let secret = work.path().join("host-key");
    std::fs::write(&secret, "PRIVATE KEY").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dir = image_with(work.path(), "linked", &[("templates/etc/ok.tmpl", "ok\n")]);
    std::os::unix::fs::symlink(&secret, dir.join("templates/etc/key")).unwrap();
    let output = run_fails(herd().arg("try").arg(&dir));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("templates/etc/key: is a symbolic link to")
            && stderr.contains(&secret.display().to_string())
            && stderr.contains("outside the image directory"),
        "{stderr}"
    );
    let output = run_fails(
        herd()
            .arg("build")
            .arg(&dir)
            .arg("--store")
            .arg(work.path().join("store")),
    );
    assert!(
        text(&output.stderr).contains("outside the image directory"),
        "{}",
        text(&output.stderr)
    );

    // A link within the image is fine; the output directory is private.
    std::fs::remove_file(dir.join("templates/etc/key")).unwrap();
    std::os::unix::fs::symlink("ok.tmpl", dir.join("templates/etc/again.tmpl")).unwrap();
    let stdout = run_ok(herd().arg("try").arg(&dir));
    let first = PathBuf::from(stdout.lines().next().unwrap());
    let out = first.ancestors().nth(2).unwrap().to_path_buf();
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert!(
        out.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("herd-try-"),
        "{}",
        out.display()
    );
    assert_eq!(mode, 0o700, "{}", out.display());
    std::fs::remove_dir_all(&out).unwrap();
    let given = work.path().join("given/out");
    run_ok(herd().arg("try").arg(&dir).arg("--out").arg(&given));
    assert_eq!(
        std::fs::metadata(&given).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

const CHECKED: &str = "aci.example.com/checked:1";

/// An image whose two templates have checks that hang when the container
/// says so: `a` with a 2 s `checkTimeout`, `b` with the default.
fn checked_image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("herd-inputs-test");
        let _ = std::fs::remove_dir_all(&work);
        let dir = work.join("checked");
        busybox_image(
            &dir,
            &format!("name: {CHECKED}\naci:\n  app:\n    exec: [/bin/sh, -c, 'echo app started; exec sleep 1000']\n"),
        );
        write(
            &dir,
            &[
                ("attributes/a.yml", "default: {name: web}\n"),
                ("templates/etc/a.tmpl", "{{ name }}\n"),
                (
                    "templates/etc/a.tmpl.cfg",
                    "checkCmd: 'test -z \"$HANG_A\" || { echo hanging; exec sleep 1000; }'\ncheckTimeout: 2s\n",
                ),
                ("templates/etc/b.tmpl", "{{ name }}\n"),
                (
                    "templates/etc/b.tmpl.cfg",
                    "checkCmd: 'test -z \"$HANG_B\" || exec sleep 1000'\n",
                ),
            ],
        );
        let store = work.join("store");
        run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));
        oci_ref(&store, CHECKED)
    })
}

#[test]
fn a_hung_check_fails_at_its_timeout() {
    let image = checked_image();
    let started = Instant::now();
    let output = podman()
        .args(["run", "--rm", "--env", "HANG_A=1", image])
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("etc/a.tmpl")
            && stderr.contains("did not end within 2s")
            && stderr.contains("hanging"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn podman_stop_ends_a_hung_check_by_sigterm() {
    let image = checked_image();
    let name = format!("herd-inputs-hung-{}", std::process::id());
    let _ = podman().args(["rm", "-f", &name]).output();
    run_ok(podman().args(["run", "-d", "--name", &name, "--env", "HANG_B=1", image]));
    // The start reaches the check: the templates are written.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !text(&podman().args(["logs", &name]).output().unwrap().stderr)
        .contains("rendered 2 templates")
    {
        assert!(
            Instant::now() < deadline,
            "the start never reached the checks"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    run_ok(podman().args(["stop", "-t", "30", &name]));
    let took = started.elapsed();
    let code = run_ok(podman().args(["inspect", "--format", "{{.State.ExitCode}}", &name]));
    let logs = text(&podman().args(["logs", &name]).output().unwrap().stderr);
    let _ = podman().args(["rm", "-f", "-t", "0", &name]).output();
    assert!(
        took < Duration::from_secs(10),
        "podman stop took {took:?}: SIGTERM was ignored"
    );
    assert_eq!(code.trim(), "143", "{logs}");
    assert!(
        logs.contains("stopped by SIGTERM while the checkCmd of /herd/templates/etc/b.tmpl"),
        "{logs}"
    );
}

/// Run as the init of no image (no /herd here: no stack, no templates)
/// on this machine: podman would hand the container a valid UTF-8
/// replacement of the bytes (its OCI config is JSON), so the bytes must
/// reach the init directly.
#[test]
fn an_override_that_is_not_utf8_stops_the_start() {
    use std::os::unix::ffi::OsStrExt;
    let init = PathBuf::from(env!("CARGO_BIN_EXE_herd-init"));
    for variable in ["HERD_ATTRIBUTES", "TEMPLATER_OVERRIDE"] {
        let output = Command::new(&init)
            .args(["/bin/echo", "app started"])
            .env_clear()
            .env(
                variable,
                std::ffi::OsStr::from_bytes(b"{\"name\": \"\xff\"}"),
            )
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("{variable} is not valid UTF-8 text")),
            "{stderr}"
        );
        assert!(!text(&output.stdout).contains("app started"));
    }
    // The same override as text starts the app.
    let output = Command::new(&init)
        .args(["/bin/echo", "app started"])
        .env_clear()
        .env("HERD_ATTRIBUTES", "{\"name\": \"x\"}")
        .output()
        .unwrap();
    assert!(
        text(&output.stdout).contains("app started"),
        "{}",
        text(&output.stderr)
    );
}
