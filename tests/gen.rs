//! `herd gen` end to end: the example environments in env/ become units
//! that `systemd-analyze verify` and `kubernetes-validate` accept, placed
//! on their hosts, carrying attributes merged env -> service -> node.

mod common;

use base64::Engine;
use common::units::*;
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("env")
}

/// A copy of `env/` in a temporary directory, to edit freely.
fn copy_of_examples() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let env = work.path().join("env");
    copy_tree(&examples(), &env);
    (work, env)
}

/// Runs `herd gen ENV_DIR --out OUT EXTRA...`, which must fail as errors
/// do (exit status 2) with every one of `needles` in its stderr.
fn gen_error(env_dir: &Path, out: &Path, extra: &[&str], needles: &[&str]) {
    let output = run_fails(
        herd()
            .arg("gen")
            .arg(env_dir)
            .arg("--out")
            .arg(out)
            .args(extra),
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
}

fn gen_into(env_dir: &Path, out: &Path, extra: &[&str]) -> String {
    run_ok(
        herd()
            .arg("gen")
            .arg(env_dir)
            .arg("--out")
            .arg(out)
            .args(extra),
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files of a directory tree relative to it.
fn relative_files(dir: &Path) -> Vec<String> {
    snapshot(dir)
        .keys()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// Every image the example environments run is one `aci/` builds: the
/// names in their generated units against the nodes of `herd graph`.
#[test]
fn the_example_environments_run_images_that_aci_builds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let graph = run_ok(
        herd()
            .arg("graph")
            .arg(root.join("aci"))
            .arg(root.join("aci/debian")),
    );
    let built: Vec<&str> = graph
        .lines()
        .filter(|l| l.contains(" [shape="))
        .filter_map(|l| l.trim().split('"').nth(1))
        .collect();
    assert!(
        built.contains(&"aci.example.com/pod-mysql:10.11-1"),
        "{graph}"
    );
    let work = tempfile::tempdir().unwrap();
    let mut used = std::collections::BTreeSet::new();
    for env in ["prod-dc1", "preprod"] {
        let out = work.path().join(env);
        gen_into(&examples().join(env), &out, &[]);
        for (path, content) in snapshot(&out) {
            if path.extension().is_none_or(|e| e != "service") {
                continue;
            }
            let content = String::from_utf8(content).unwrap();
            // The image is the last word of ExecStart's podman run.
            used.extend(
                content
                    .split(|c: char| c.is_whitespace() || c == '\'')
                    .filter(|w| w.starts_with("aci.example.com/"))
                    .map(str::to_string),
            );
        }
    }
    assert!(used.len() >= 4, "{used:?}");
    let missing: Vec<&String> = used
        .iter()
        .filter(|u| !built.contains(&u.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "env/ runs {missing:?}, which aci/ does not build:\n{graph}"
    );
}

#[test]
fn example_units_pass_systemd_analyze_verify() {
    let work = tempfile::tempdir().unwrap();
    for env in ["prod-dc1", "preprod"] {
        let out = work.path().join(env);
        gen_into(&examples().join(env), &out, &[]);
        let count = verify_units(&out);
        assert!(count >= 6, "{env}: only {count} units");
    }
    // verify does report what it rejects, so the check above can fail.
    let broken = work.path().join("broken/svc");
    std::fs::create_dir_all(&broken).unwrap();
    let unit = read(
        &work
            .path()
            .join("prod-dc1/tripsearch/prod-dc1_tripsearch_front1.service"),
    );
    std::fs::write(
        broken.join("x_svc_h.service"),
        unit.replace("KillMode=mixed", "KillMode=mixed\nKillMod=x"),
    )
    .unwrap();
    let output = Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(broken.join("x_svc_h.service"))
        .output()
        .unwrap();
    assert!(
        text(&output.stderr).contains("KillMod"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn one_unit_per_node_placed_by_its_fleet_lines() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("units");
    gen_into(&examples().join("prod-dc1"), &out, &[]);
    assert_eq!(
        relative_files(&out),
        [
            "mysql-backup/prod-dc1_mysql-backup_mysql-main3.service",
            "mysql-backup/prod-dc1_mysql-backup_mysql-main3.timer",
            "mysql-main/prod-dc1_mysql-main_mysql-main1.service",
            "mysql-main/prod-dc1_mysql-main_mysql-main2.service",
            "mysql-main/prod-dc1_mysql-main_mysql-main3.service",
            "tripsearch/prod-dc1_tripsearch_front1.service",
            "tripsearch/prod-dc1_tripsearch_front2.service",
        ]
    );
    for (host, machine) in [
        ("mysql-main1", "r101-srv1"),
        ("mysql-main2", "r102-srv1"),
        ("mysql-main3", "r103-srv1"),
    ] {
        let unit = read(&out.join(format!("mysql-main/prod-dc1_mysql-main_{host}.service")));
        assert!(
            unit.ends_with(&format!("\n[X-Fleet]\nMachineMetadata=name={machine}\n")),
            "{host}:\n{unit}"
        );
        // Graceful stop: podman gives the app its 120 s, systemd waits longer.
        assert!(
            unit.contains("\nKillMode=mixed\n")
                && unit.contains("--stop-timeout 120 ")
                && unit.contains("\nTimeoutStopSec=150\n"),
            "{unit}"
        );
        assert!(
            unit.contains("--volume /srv/mysql-main/data:/var/lib/mysql "),
            "{unit}"
        );
        assert!(
            unit.contains(" aci.example.com/pod-mysql:10.11-1'"),
            "{unit}"
        );
    }
    let tripsearch = read(&out.join("tripsearch/prod-dc1_tripsearch_front2.service"));
    assert!(
        tripsearch
            .contains("\n[X-Fleet]\nMachineMetadata=role=front\nConflicts=prod-dc1_tripsearch_*\n"),
        "{tripsearch}"
    );
    assert!(
        tripsearch.starts_with("# Generated by herd"),
        "the partial was not included:\n{tripsearch}"
    );
    let timer = read(&out.join("mysql-backup/prod-dc1_mysql-backup_mysql-main3.timer"));
    assert!(
        timer.contains("OnCalendar=*-*-* 03:00:00\n")
            && timer.contains("MachineOf=prod-dc1_mysql-backup_mysql-main3.service\n"),
        "{timer}"
    );
    let backup = read(&out.join("mysql-backup/prod-dc1_mysql-backup_mysql-main3.service"));
    assert!(
        backup.contains("\nRestart=no\n") && !backup.contains("[Install]"),
        "a timer's service runs once:\n{backup}"
    );
}

#[test]
fn attributes_merge_env_then_service_then_node() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("units");
    gen_into(&examples().join("prod-dc1"), &out, &[]);
    let attributes = |path: &str| unit_attributes(&read(&out.join(path)));
    let main1 = attributes("mysql-main/prod-dc1_mysql-main_mysql-main1.service");
    let main3 = attributes("mysql-main/prod-dc1_mysql-main_mysql-main3.service");
    let front = attributes("tripsearch/prod-dc1_tripsearch_front1.service");
    // Environment 1G, service 4G, node mysql-main3 8G.
    assert_eq!(front["mysql"]["innodbBufferPoolSize"], "1G");
    assert_eq!(main1["mysql"]["innodbBufferPoolSize"], "4G");
    assert_eq!(main3["mysql"]["innodbBufferPoolSize"], "8G");
    // Maps merge: the service's keys sit beside the environment's.
    assert_eq!(main3["mysql"]["cluster"], "main");
    assert_eq!(front["log"]["level"], "debug");
    assert_eq!(main1["log"]["level"], "info");
    // The include gives nerve.base's values; the including file adds its own.
    assert_eq!(main1["nerve"]["checkInterval"], 2);
    assert_eq!(
        main1["nerve"]["services"][1]["haproxyServerOptions"],
        "backup"
    );
    assert_eq!(main1["hostname"], "mysql-main1");
    assert_eq!(main1["ip"], "192.168.1.2");
}

/// The shell line of the default unit rebuilds HERD_ATTRIBUTES from the
/// numbered lines, also when they are many: run it with `sh`, as systemd
/// would (`$$` unescaped, the Environment= lines in the environment), with
/// podman swapped for printenv.
#[test]
fn the_default_unit_reassembles_large_attributes() {
    let (work, env) = copy_of_examples();
    let big: String = (0..3000)
        .map(|i| format!("    key{i}: value number {i}\n"))
        .collect();
    std::fs::write(
        env.join("prod-dc1/services/mysql-main/attributes/big.yml"),
        format!("default:\n  big:\n{big}"),
    )
    .unwrap();
    let out = work.path().join("units");
    gen_into(&env.join("prod-dc1"), &out, &["mysql-main"]);
    let unit = read(&out.join("mysql-main/prod-dc1_mysql-main_mysql-main2.service"));
    let variables = environment(&unit);
    assert!(
        variables["HERD_ATTRIBUTES_COUNT"].parse::<usize>().unwrap() > 10,
        "{unit}"
    );
    assert!(
        unit.lines().all(|l| l.len() < 2048),
        "a line is longer than systemd's LINE_MAX"
    );
    let line = unit
        .lines()
        .find(|l| l.starts_with("ExecStartPre=/bin/sh -c '"))
        .unwrap();
    let script = line
        .strip_prefix("ExecStartPre=/bin/sh -c '")
        .unwrap()
        .strip_suffix('\'')
        .unwrap()
        .replace("$$", "$");
    let (assignment, _podman) = script.split_once("; exec ").unwrap();
    let output = run_ok(
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{assignment}; exec printenv HERD_ATTRIBUTES"))
            .env_clear()
            .envs(&variables),
    );
    let value = output
        .trim_end()
        .strip_prefix("base64,")
        .expect("HERD_ATTRIBUTES starts with base64,");
    let attributes: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(attributes["big"]["key2999"], "value number 2999");
    assert_eq!(attributes, unit_attributes(&unit));
    verify_units(&out);
}

#[test]
fn kubernetes_pods_validate_and_are_pinned_to_their_hosts() {
    let work = tempfile::tempdir().unwrap();
    for env in ["prod-dc1", "preprod"] {
        let out = work.path().join(env);
        gen_into(&examples().join(env), &out, &["--target", "kubernetes"]);
        let files = kubernetes_validate(&out);
        assert!(
            files.iter().all(|f| f.extension().unwrap() == "yaml") && files.len() >= 5,
            "{files:?}"
        );
    }
    let pod: Value = serde_yaml_ng::from_str(&read(
        &work
            .path()
            .join("prod-dc1/mysql-main/prod-dc1_mysql-main_mysql-main2.yaml"),
    ))
    .unwrap();
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(
        pod["spec"]["nodeSelector"],
        json!({"kubernetes.io/hostname": "mysql-main2"})
    );
    assert_eq!(
        pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "name", "operator": "In", "values": ["r102-srv1"]}]}])
    );
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "aci.example.com/pod-mysql:10.11-1");
    assert_eq!(container["env"][0]["name"], "HERD_ATTRIBUTES");
    let value = container["env"][0]["value"]
        .as_str()
        .unwrap()
        .strip_prefix("base64,")
        .unwrap();
    let attributes: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(attributes["mysql"]["innodbBufferPoolSize"], "4G");
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 120);
    // The init drains within the same stop timeout; Kubernetes asks it
    // whether the app is ready.
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "HERD_STOP_TIMEOUT", "value": "120"})),
        "{}",
        container["env"]
    );
    assert_eq!(
        container["readinessProbe"]["exec"]["command"],
        json!(["/herd/init", "ready"])
    );

    // The backup service's timer became a CronJob on the same schedule.
    let backups: Vec<Value> = snapshot(&work.path().join("prod-dc1/mysql-backup"))
        .into_values()
        .map(|bytes| serde_yaml_ng::from_slice(&bytes).unwrap())
        .collect();
    assert!(!backups.is_empty());
    for job in backups {
        assert_eq!(job["kind"], "CronJob", "{job}");
        assert_eq!(job["spec"]["schedule"], "0 3 * * *");
        let pod = &job["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert!(pod["nodeSelector"]["kubernetes.io/hostname"].is_string());
    }
}

#[test]
fn a_timer_cron_cannot_express_is_refused_for_kubernetes_naming_its_line() {
    let (work, env) = copy_of_examples();
    let backup = env.join("prod-dc1/services/mysql-backup/attributes/backup.yml");
    let changed = read(&backup).replace("*-*-* 03:00:00", "*-*-* 03:00:30");
    std::fs::write(&backup, changed).unwrap();
    let out = work.path().join("kube");
    let output = run_fails(
        herd()
            .arg("gen")
            .arg(env.join("prod-dc1"))
            .arg("--out")
            .arg(&out)
            .args(["--target", "kubernetes"]),
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("mysql-backup/unit.timer.tmpl:6: ")
            && stderr.contains("OnCalendar=*-*-* 03:00:30")
            && stderr.contains("seconds other than 0"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written");
}

#[test]
fn a_broken_template_fails_the_whole_and_leaves_the_output_untouched() {
    let (work, env) = copy_of_examples();
    let out = work.path().join("units");
    gen_into(&env.join("prod-dc1"), &out, &[]);
    let before = snapshot(work.path());
    let template = env.join("prod-dc1/services/tripsearch/unit.tmpl");
    let original = read(&template);
    let cases = [
        // A missing attribute: named with the template's line.
        (
            "[Unit]\n",
            "[Unit]\nDocumentation=https://{{ tripsearch.docs_host }}/\n",
            "tripsearch.docs_host",
        ),
        // A syntax error.
        (
            "[Install]\n",
            "[Install]\n{{ fleet_lines | }}\n",
            "unit.tmpl",
        ),
    ];
    for (anchor, replacement, needle) in cases {
        let broken = original.replacen(anchor, replacement, 1);
        let line = broken
            .lines()
            .position(|l| replacement.lines().last() == Some(l))
            .unwrap()
            + 1;
        std::fs::write(&template, &broken).unwrap();
        let location = format!("services/tripsearch/unit.tmpl:{line}");
        gen_error(&env.join("prod-dc1"), &out, &[], &[&location, needle]);
        let mut after = snapshot(work.path());
        after.remove(&template);
        let mut expected = before.clone();
        expected.remove(&template);
        assert_eq!(after, expected, "something was written");
    }
    // A missing attribute in an included partial names the partial.
    std::fs::write(&template, &original).unwrap();
    std::fs::write(
        env.join("prod-dc1/templates/header.partial"),
        "# {{ owner.team }}\n",
    )
    .unwrap();
    gen_error(
        &env.join("prod-dc1"),
        &out,
        &[],
        &["templates/header.partial:1", "owner.team"],
    );
    let beside: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".units.herd-lock")
        .collect();
    assert_eq!(
        beside.len(),
        2,
        "a temporary directory was left beside the output: {beside:?}"
    );
}

#[test]
fn check_lists_differences_and_exits_1() {
    let (work, env) = copy_of_examples();
    let env_dir = env.join("prod-dc1");
    let out = work.path().join("units");
    gen_into(&env_dir, &out, &[]);
    let check = |extra: &[&str]| {
        herd()
            .arg("gen")
            .arg(&env_dir)
            .arg("--check")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let same = check(&[]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));
    assert!(same.stdout.is_empty());

    // A changed attribute, a node less.
    let attributes = env_dir.join("services/tripsearch/attributes/tripsearch.yml");
    std::fs::write(
        &attributes,
        read(&attributes).replace("port: 8080", "port: 8081"),
    )
    .unwrap();
    let manifest = env_dir.join("services/mysql-main/service-manifest.yml");
    let text_before = read(&manifest);
    let without_node3 = &text_before[..text_before.find("  - hostname: mysql-main3").unwrap()];
    std::fs::write(&manifest, without_node3).unwrap();
    let before = snapshot(&out);
    let differ = check(&[]);
    assert_eq!(differ.status.code(), Some(1), "{}", text(&differ.stderr));
    let stdout = text(&differ.stdout);
    assert!(
        stdout.contains("changed tripsearch/prod-dc1_tripsearch_front1.service"),
        "{stdout}"
    );
    assert!(
        stdout.contains("removed mysql-main/prod-dc1_mysql-main_mysql-main3.service"),
        "{stdout}"
    );
    assert!(!stdout.contains("mysql-main1"), "{stdout}");
    let diff = text(&check(&["--diff"]).stdout);
    assert!(diff.contains("--- a/tripsearch/prod-dc1_tripsearch_front1.service\n+++ b/tripsearch/prod-dc1_tripsearch_front1.service\n"), "{diff}");
    assert!(
        diff.contains("\n-# published on 8080.\n+# published on 8081.\n"),
        "{diff}"
    );
    assert!(
        diff.contains("--- a/mysql-main/prod-dc1_mysql-main_mysql-main3.service\n+++ /dev/null\n"),
        "{diff}"
    );
    assert_eq!(snapshot(&out), before, "--check wrote");

    // A new service shows as added; a missing directory is all added.
    let added = check(&["tripsearch"]);
    assert!(
        !text(&added.stdout).contains("mysql-main"),
        "only the named service is compared"
    );
    let fresh = herd()
        .arg("gen")
        .arg(&env_dir)
        .arg("--check")
        .arg(work.path().join("nothing"))
        .output()
        .unwrap();
    assert_eq!(fresh.status.code(), Some(1));
    assert!(
        text(&fresh.stdout).contains("added   mysql-main/prod-dc1_mysql-main_mysql-main1.service")
    );

    // Errors exit 2.
    std::fs::write(&manifest, format!("{text_before}bogus: 1\n")).unwrap();
    let error = check(&[]);
    assert_eq!(error.status.code(), Some(2));
    assert!(
        text(&error.stderr).contains("service-manifest.yml:"),
        "{}",
        text(&error.stderr)
    );
}

#[test]
fn manifest_errors_name_file_line_and_write_nothing() {
    let (work, env) = copy_of_examples();
    let manifest = env.join("prod-dc1/services/mysql-main/service-manifest.yml");
    let original = read(&manifest);
    let line_of = |needle: &str| original.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let cases = [
        (
            original.replacen("concurrentUpdater", "concurentUpdater", 1),
            line_of("concurrentUpdater"),
            "did you mean `concurrentUpdater`?",
        ),
        (
            original.replacen(
                "  - hostname: mysql-main2\n",
                "  - hostnam: mysql-main2\n",
                1,
            ),
            line_of("mysql-main2"),
            "missing field `hostname`",
        ),
        (
            original.replacen("hostname: mysql-main2", "hostname: mysql-main1", 1),
            line_of("mysql-main2"),
            "`mysql-main1` is used by two nodes",
        ),
        (
            original.replacen("MachineMetadata=name=r102", "MachineMetdata=name=r102", 1),
            line_of("r102"),
            "did you mean `MachineMetadata`?",
        ),
    ];
    let out = work.path().join("units");
    for (broken, line, needle) in cases {
        std::fs::write(&manifest, broken).unwrap();
        let location = format!("service-manifest.yml:{line}");
        gen_error(&env.join("prod-dc1"), &out, &[], &[&location, needle]);
        assert!(!out.exists());
    }
    std::fs::write(&manifest, &original).unwrap();
    let nerve = env.join("prod-dc1/services/mysql-main/attributes/nerve.yml");
    let include_line = read(&nerve)
        .lines()
        .position(|l| l.starts_with("include:"))
        .unwrap()
        + 1;
    std::fs::write(&nerve, read(&nerve).replace("nerve.base", "nerve.bsae")).unwrap();
    let location = format!("attributes/nerve.yml:{include_line}");
    gen_error(
        &env.join("prod-dc1"),
        &out,
        &[],
        &[&location, "include `nerve.bsae`"],
    );
}

#[test]
fn a_store_pins_images_by_digest() {
    let work = tempfile::tempdir().unwrap();
    let store_dir = work.path().join("store");
    let store = herd::store::Store::open(&store_dir).unwrap();
    // The config the units read the image's lifecycle from (it has none).
    store.write_blob(b"{}").unwrap();
    let descriptor = store
        .write_json(
            oci_spec::image::MediaType::ImageManifest,
            // A stand-in for pod-mysql: an image manifest (not a pod
            // artifact, so it is not expanded) with an empty config.
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                    "size": 2
                },
                "layers": []
            }),
        )
        .unwrap();
    store
        .set_tag(
            &"aci.example.com/pod-mysql:10.11-1".parse().unwrap(),
            &descriptor,
        )
        .unwrap();
    let out = work.path().join("units");
    run_ok(
        herd()
            .arg("gen")
            .arg(examples().join("prod-dc1"))
            .arg("--out")
            .arg(&out)
            .env("HERD_STORE", &store_dir),
    );
    let mysql = read(&out.join("mysql-main/prod-dc1_mysql-main_mysql-main1.service"));
    assert!(
        mysql.contains(&format!(
            " aci.example.com/pod-mysql@{}'",
            descriptor.digest()
        )),
        "{mysql}"
    );
    // Not in the store: kept by tag.
    let tripsearch = read(&out.join("tripsearch/prod-dc1_tripsearch_front1.service"));
    assert!(
        tripsearch.contains(" aci.example.com/aci-tripsearch:2.15.0-1'"),
        "{tripsearch}"
    );
    verify_units(&out);
    // A store path that is not a store is an error, not silently unpinned.
    let nope = work.path().join("nope");
    gen_error(
        &examples().join("prod-dc1"),
        &out,
        &["--store", nope.to_str().unwrap()],
        &[&format!("no herd store at {}", nope.display())],
    );
}

#[test]
fn naming_services_replaces_only_theirs_and_the_default_output_is_beside_env() {
    let (work, env) = copy_of_examples();
    let env_dir = env.join("prod-dc1");
    run_ok(herd().arg("gen").arg(&env_dir));
    let out = work.path().join("units/prod-dc1");
    let before = snapshot(&out);
    assert_eq!(before.len(), 7);
    let attributes = env_dir.join("attributes/dc.yml");
    std::fs::write(
        &attributes,
        read(&attributes).replace("level: info", "level: warn"),
    )
    .unwrap();
    run_ok(herd().arg("gen").arg(&env_dir).arg("mysql-main"));
    let after = snapshot(&out);
    assert_eq!(after.len(), 7);
    for (path, content) in &after {
        let changed = before[path] != *content;
        assert_eq!(
            changed,
            path.to_string_lossy().contains("/mysql-main/"),
            "{}",
            path.display()
        );
    }
    gen_error(
        &env_dir,
        &out,
        &["mysql-mian"],
        &["did you mean `mysql-main`?"],
    );
}

#[test]
fn an_output_directory_with_foreign_files_is_not_replaced() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("important.txt"), "mine").unwrap();
    gen_error(
        &examples().join("preprod"),
        work.path(),
        &[],
        &["important.txt"],
    );
    assert_eq!(read(&work.path().join("important.txt")), "mine");
}

/// Removes the test's pod and image name however the test ends.
struct PodGuard(String, String);

impl Drop for PodGuard {
    fn drop(&mut self) {
        let _ = podman()
            .args(["pod", "rm", "--force", "--ignore", &self.0])
            .output();
        let _ = podman().args(["untag", &self.1]).output();
    }
}

/// The default unit's commands, run in systemd's order (ExecStartPre,
/// ExecStart, later ExecStop, ExecStopPost) with real podman, as systemd
/// would run them: `%t` and `%n` replaced, `$$` unescaped, the
/// `Environment=` lines in the environment, a `-` prefix allowing failure.
/// Its lines quote only with '...', which systemd and sh read alike.
fn run_unit_commands(unit: &str, key: &str, runtime_dir: &Path, unit_name: &str) {
    let mut environment = environment(unit);
    // What systemd gives the commands of a Type=notify, NotifyAccess=all unit.
    environment.insert(
        "NOTIFY_SOCKET".into(),
        runtime_dir.join("notify.sock").display().to_string(),
    );
    environment.insert(
        "CONTAINERS_CONF".into(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/containers.conf")
            .display()
            .to_string(),
    );
    for line in unit
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
    {
        let (may_fail, line) = match line.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let command = line
            .replace("%t", &runtime_dir.display().to_string())
            .replace("%n", unit_name)
            .replace("$$", "$");
        let output = Command::new("/bin/sh")
            .arg("-c")
            .arg(&command)
            .envs(&environment)
            .output()
            .unwrap();
        assert!(
            may_fail || output.status.success(),
            "{key}={line}\nfailed: {}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
}

#[test]
fn the_default_unit_runs_its_pod_with_podman() {
    needs_podman_pods();
    let work = tempfile::tempdir().unwrap();
    let name = "aci.example.com/aci-herd-gen-test:1.0";
    busybox_image(
        &work.path().join("image"),
        &format!(
            "name: {name}\naci:\n  app:\n    exec: [/bin/sh, -c, 'echo started; sleep 1; touch /warm; exec sleep 1000']\n    readiness: {{exec: [test, -e, /warm], interval: 100ms, timeout: 1000s}}\n"
        ),
    );
    let store = work.path().join("store");
    run_ok(
        herd()
            .arg("build")
            .arg(work.path().join("image"))
            .arg("--store")
            .arg(&store),
    );
    let env_name = format!("t{}", std::process::id());
    let unit_name = format!("{env_name}_hello_host1");
    let _guard = PodGuard(unit_name.clone(), name.into());
    // The unit runs the image by digest: podman must have it under its name
    // (as `podman pull` from the registry would leave it).
    run_ok(
        Command::new(tool("skopeo"))
            .arg("copy")
            .arg(oci_ref(&store, name))
            .arg(format!("containers-storage:{name}")),
    );
    let env_dir = work.path().join("env").join(&env_name);
    let data = work.path().join("data/vol");
    std::fs::create_dir_all(env_dir.join("services/hello/attributes")).unwrap();
    std::fs::write(env_dir.join("config.yml"), format!("envName: {env_name}\n")).unwrap();
    std::fs::write(
        env_dir.join("services/hello/service-manifest.yml"),
        format!("containers: [{name}]\nstopTimeout: 5\nmountPoints: [{{name: data, path: /data, from: {}}}]\nnodes: [{{hostname: host1}}]\n", data.display()),
    )
    .unwrap();
    std::fs::write(
        env_dir.join("services/hello/attributes/a.yml"),
        "default: {greeting: hello}\n",
    )
    .unwrap();
    let out = work.path().join("units");
    run_ok(
        herd()
            .arg("gen")
            .arg(&env_dir)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&store),
    );
    let unit = read(&out.join(format!("hello/{unit_name}.service")));
    verify_units(&out);
    // Started once ready: systemd waits for READY=1 as long as the
    // readiness timeout, and a minute more.
    assert!(
        unit.contains("\nType=notify\n")
            && unit.contains("\nNotifyAccess=all\n")
            && unit.contains("\nTimeoutStartSec=1060\n")
            && unit.contains(" --sdnotify=container ")
            && unit.contains(" --env HERD_STOP_TIMEOUT=5 "),
        "{unit}"
    );

    let runtime_dir = work.path().join("run");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    let notify = std::os::unix::net::UnixDatagram::bind(runtime_dir.join("notify.sock")).unwrap();
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let service = format!("{unit_name}.service");
    run_unit_commands(&unit, "ExecStartPre", &runtime_dir, &service);
    let starting = std::time::Instant::now();
    run_unit_commands(&unit, "ExecStart", &runtime_dir, &service);
    // Type=notify: podman names conmon the main process, then the init's
    // READY=1 comes once the readiness command succeeded.
    let mut messages = vec![];
    while !messages.iter().any(|m: &String| m.contains("READY=1")) {
        let mut buffer = [0u8; 4096];
        let n = notify
            .recv(&mut buffer)
            .unwrap_or_else(|e| panic!("no READY=1 ({e}); received {messages:?}"));
        messages.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    assert!(
        starting.elapsed() >= std::time::Duration::from_millis(900),
        "READY=1 before the app was ready: {messages:?}"
    );
    let pid: i32 = messages
        .iter()
        .find_map(|m| m.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID= in {messages:?}"))
        .trim()
        .parse()
        .unwrap();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the MAINPID process is not running"
    );
    let container = format!("{unit_name}-aci-herd-gen-test");
    let inspect: Value =
        serde_json::from_str(&run_ok(podman().args(["container", "inspect", &container]))).unwrap();
    let config = &inspect[0]["Config"];
    let attributes = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find_map(|e| e.strip_prefix("HERD_ATTRIBUTES=base64,"))
        .expect("HERD_ATTRIBUTES in the container");
    let attributes: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(attributes)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        attributes,
        json!({"greeting": "hello", "hostname": "host1"})
    );
    assert!(
        inspect[0]["ImageName"]
            .as_str()
            .unwrap()
            .starts_with("aci.example.com/aci-herd-gen-test@sha256:"),
        "{}",
        inspect[0]["ImageName"]
    );
    assert_eq!(config["StopTimeout"], 5);
    let mounts = inspect[0]["Mounts"].to_string();
    assert!(
        mounts.contains(&data.display().to_string()) && mounts.contains("\"/data\""),
        "{mounts}"
    );
    let mut logs = String::new();
    for _ in 0..100 {
        logs = run_ok(podman().args(["logs", &container]));
        if logs.contains("started") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(logs.contains("started"), "the app did not start: {logs}");

    let stopping = std::time::Instant::now();
    run_unit_commands(&unit, "ExecStop", &runtime_dir, &service);
    assert!(
        stopping.elapsed() < std::time::Duration::from_secs(5),
        "the app was killed, not stopped: {:?}",
        stopping.elapsed()
    );
    run_unit_commands(&unit, "ExecStopPost", &runtime_dir, &service);
    let pods = run_ok(podman().args(["pod", "ps", "--format", "{{.Name}}"]));
    assert!(!pods.lines().any(|p| p == unit_name), "{pods}");
}
