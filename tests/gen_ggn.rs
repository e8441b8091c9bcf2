//! ggn's environments as their users wrote them, end to end through the
//! `herd` binary: templated service manifests, the three include forms,
//! `nodes` in unit templates, the leftovers of ggn's config (no envName,
//! `fleet:`, a service directory without manifest), and how secrets are
//! kept out of sight (`--diff`, file modes, a Kubernetes Secret,
//! `--explain`). Units are checked by `systemd-analyze verify`, Kubernetes
//! documents by `kubernetes-validate`.

mod common;

use base64::Engine;
use common::units::{kubernetes_validate, unit_attributes, verify_units};
use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `files` (path, content) below `root`.
fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

fn gen_cmd(env_dir: &Path, out: &Path) -> Command {
    let mut command = herd();
    command.arg("gen").arg(env_dir).arg("--out").arg(out);
    command
}

/// `herd gen` that must fail with status 2; its stderr.
fn gen_fails(command: &mut Command) -> String {
    let output = run_fails(command);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    stderr
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The image a default unit runs (the last word of its `podman create`).
fn unit_image(unit: &str) -> String {
    let line = unit
        .lines()
        .find(|l| l.contains("podman create --pod"))
        .unwrap();
    line.trim_end_matches('\'')
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string()
}

const CONFIG: (&str, &str) = (
    "env/prod/config.yml",
    "envName: prod\nregistry: {domain: aci.example.com}\n",
);

#[test]
fn a_templated_service_manifest_pins_versions_at_generation_time() {
    let work = tempfile::tempdir().unwrap();
    write_tree(
        work.path(),
        &[
            CONFIG,
            (
                "env/prod/attributes/versions.yml",
                "default:\n  versions: {busybox: 1.36-1}\n",
            ),
            (
                "env/prod/services/greeter/service-manifest.yml",
                "# Pinned at generation time.\ncontainers:\n  - aci.example.com/aci-busybox:{{ versions.busybox }}\n  - aci.example.com/aci-greeter:{{ version }}-1\nnodes:\n  - hostname: greeter1\n",
            ),
        ],
    );
    let env_dir = work.path().join("env/prod");
    let out = work.path().join("units");
    let unit_path = out.join("greeter/prod_greeter_greeter1.service");

    // Without a value for `version`: file, line and attribute.
    let stderr = gen_fails(&mut gen_cmd(&env_dir, &out));
    let manifest = env_dir.join("services/greeter/service-manifest.yml");
    assert!(
        stderr.contains(&format!("{}:4:", manifest.display()))
            && stderr.contains("attribute `version` has no value")
            && stderr.contains("herd gen --attributes"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing is written on an error");

    // From the command line, as JSON; the environment's value for the other.
    run_ok(gen_cmd(&env_dir, &out).args(["--attributes", r#"{"version": "2.0"}"#]));
    let unit = read(&unit_path);
    let images: Vec<&str> = unit
        .lines()
        .filter(|l| l.contains("podman create --pod"))
        .map(|l| l.trim_end_matches('\'').rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            "aci.example.com/aci-busybox:1.36-1",
            "aci.example.com/aci-greeter:2.0-1"
        ]
    );
    verify_units(&out);

    // From a YAML file, which also wins over the environment's attributes.
    let file = work.path().join("release.yml");
    std::fs::write(&file, "version: '3.1'\nversions: {busybox: 1.37-1}\n").unwrap();
    run_ok(gen_cmd(&env_dir, &out).arg("--attributes").arg(&file));
    let unit = read(&unit_path);
    assert!(
        unit.contains("aci.example.com/aci-greeter:3.1-1 ")
            || unit.contains("aci.example.com/aci-greeter:3.1-1'"),
        "{unit}"
    );
    assert!(
        unit.contains("aci.example.com/aci-busybox:1.37-1"),
        "{unit}"
    );

    // The example environment pins aci-sessions (built by aci/) this way.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("env/preprod");
    let out = work.path().join("preprod");
    run_ok(gen_cmd(&examples, &out).args([
        "--attributes",
        r#"{"versions": {"sessions": "1-2"}}"#,
        "sessions",
    ]));
    assert_eq!(
        unit_image(&read(
            &out.join("sessions/preprod_sessions_sessions1.service")
        )),
        "aci.example.com/aci-sessions:1-2"
    );
}

#[test]
fn the_three_include_forms_resolve_as_ggn_did() {
    let work = tempfile::tempdir().unwrap();
    write_tree(
        work.path(),
        &[
            CONFIG,
            // Shared by every environment, beside env/.
            (
                "common-attributes/shared/only.yml",
                "default: {shared: {from: shared-dir}}\n",
            ),
            // The environment has its own common-attributes/ (without
            // shared/only.yml: a plain include falls back to the shared one).
            (
                "env/prod/common-attributes/nerve/base.yml",
                "default: {nerve: {weight: 1, from: prod}}\n",
            ),
            ("env/prod-dc2/config.yml", "envName: prod-dc2\n"),
            (
                "env/prod-dc2/common-attributes/zk.yml",
                "include: [env::zk.hosts]\ndefault: {zk: {from: prod-dc2}}\n",
            ),
            (
                "env/prod-dc2/common-attributes/zk/hosts.yml",
                "default: {zk: {hosts: [zk1.dc2:2181]}}\n",
            ),
            (
                "env/prod/services/db/service-manifest.yml",
                "containers: [aci.example.com/aci-busybox:1.36-1]\nnodes: [{hostname: db1}]\n",
            ),
            (
                "env/prod/services/db/attributes/ggn.yml",
                "include:\n  - env:prod-dc2:zk\n  - env::nerve.base\n  - shared.only\n",
            ),
        ],
    );
    let env_dir = work.path().join("env/prod");
    let attributes = |dir: &Path| -> Value {
        serde_json::from_str(&run_ok(
            herd()
                .arg("attributes")
                .arg(dir)
                .args(["db", "db1", "--format", "json"]),
        ))
        .unwrap()
    };
    let value = attributes(&env_dir);
    assert_eq!(
        value["zk"],
        json!({"from": "prod-dc2", "hosts": ["zk1.dc2:2181"]})
    );
    assert_eq!(value["nerve"], json!({"weight": 1, "from": "prod"}));
    assert_eq!(value["shared"], json!({"from": "shared-dir"}));
    // And the unit carries them.
    let out = work.path().join("units");
    run_ok(&mut gen_cmd(&env_dir, &out));
    let unit = read(&out.join("db/prod_db_db1.service"));
    assert_eq!(
        unit_attributes(&unit)["zk"]["hosts"],
        json!(["zk1.dc2:2181"])
    );
    verify_units(&out);

    // Each error names the include, its line, and where it was looked for.
    let ggn = env_dir.join("services/db/attributes/ggn.yml");
    for (include, expected) in [
        (
            "env:prod-dc3:zk",
            "there is no environment `prod-dc3`".to_string(),
        ),
        (
            "env::shared.only",
            format!(
                "there is no {}",
                env_dir.join("common-attributes/shared/only.yml").display()
            ),
        ),
        (
            "nerve.missing",
            format!(
                "there is no {}, nor {}",
                env_dir
                    .join("common-attributes/nerve/missing.yml")
                    .display(),
                work.path()
                    .join("common-attributes/nerve/missing.yml")
                    .display()
            ),
        ),
        ("env:../x:zk", "environment name".to_string()),
        ("a:b", "expected `nerve.base`".to_string()),
    ] {
        std::fs::write(&ggn, format!("# ggn\ninclude:\n  - {include}\n")).unwrap();
        let stderr = gen_fails(&mut gen_cmd(&env_dir, &out));
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains(&format!("{}:3:", ggn.display()))
                && first.contains(&format!("include `{include}`"))
                && first.contains(&expected),
            "{include}: {stderr}"
        );
    }
}

#[test]
fn unit_templates_see_every_node_of_their_service() {
    let work = tempfile::tempdir().unwrap();
    let unit_template = r#"
[Unit]
Description=cassandra {{ hostname }}

[Service]
Environment=SEEDS={% for node in nodes %}{{ node.ip }}{% if not loop.last %},{% endif %}{% endfor %}
Environment="PEERS={% for node in nodes %}{% if node.hostname != hostname %}{{ node.hostname }}:{{ node.rack }} {% endif %}{% endfor %}"
{{ environment_lines | safe }}
ExecStart=/usr/bin/podman run --rm --env SEEDS {{ images.0.reference }}
"#;
    write_tree(
        work.path(),
        &[
            CONFIG,
            (
                "env/prod/services/cassandra/service-manifest.yml",
                "exposeNodesInUnitEnv: true\ncontainers: [aci.example.com/aci-busybox:1.36-1]\nnodes:\n  - {hostname: cass1, ip: 10.0.0.1, rack: r1}\n  - {hostname: cass2, ip: 10.0.0.2, rack: r2}\n  - {hostname: cass3, ip: 10.0.0.3, rack: r3}\n",
            ),
            ("env/prod/services/cassandra/unit.tmpl", unit_template),
            // Without the switch, the containers do not get the list.
            (
                "env/prod/services/web/service-manifest.yml",
                "containers: [aci.example.com/aci-busybox:1.36-1]\nnodes: [{hostname: web1, ip: 10.0.1.1}, {hostname: web2}]\n",
            ),
        ],
    );
    let env_dir = work.path().join("env/prod");
    let out = work.path().join("units");
    run_ok(&mut gen_cmd(&env_dir, &out));
    let unit = read(&out.join("cassandra/prod_cassandra_cass2.service"));
    assert!(
        unit.contains("Environment=SEEDS=10.0.0.1,10.0.0.2,10.0.0.3\n"),
        "{unit}"
    );
    assert!(
        unit.contains("Environment=\"PEERS=cass1:r1 cass3:r3 \"\n"),
        "{unit}"
    );
    // exposeNodesInUnitEnv: the containers get them as `service_nodes`.
    let nodes = &unit_attributes(&unit)["service_nodes"];
    assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes}");
    assert_eq!(
        nodes[0],
        json!({"hostname": "cass1", "ip": "10.0.0.1", "rack": "r1"})
    );
    verify_units(&out);
    let web = read(&out.join("web/prod_web_web1.service"));
    assert_eq!(unit_attributes(&web).get("service_nodes"), None);
}

#[test]
fn ggn_environment_leftovers_are_accepted_with_warnings() {
    let work = tempfile::tempdir().unwrap();
    write_tree(
        work.path(),
        &[
            // ggn's config: no envName (the directory's name), a fleet section.
            (
                "env/prod-dc1/config.yml",
                "fleet:\n  endpoint: http://10.1.0.1:2379\n  driver: etcd\nregistry: {domain: aci.example.com}\n",
            ),
            (
                "env/prod-dc1/services/web/service-manifest.yml",
                "containers: [aci-busybox:1.36-1]\nnodes: [{hostname: web1}]\n",
            ),
            // A service directory without a manifest: ggn skipped it.
            (
                "env/prod-dc1/services/draft/attributes/a.yml",
                "default: {a: 1}\n",
            ),
        ],
    );
    let env_dir = work.path().join("env/prod-dc1");
    let out = work.path().join("units");
    let output = gen_cmd(&env_dir, &out).output().unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:1:", env_dir.join("config.yml").display()))
            && stderr.contains("herd does not talk to fleet"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{}: skipped, it has no service-manifest.yml",
            env_dir.join("services/draft").display()
        )),
        "{stderr}"
    );
    let unit = out.join("web/prod-dc1_web_web1.service");
    assert!(unit.is_file(), "{stderr}");
    assert!(!out.join("draft").exists());
    verify_units(&out);
    // Asking for it by name is an error, not a silent nothing.
    let stderr = gen_fails(gen_cmd(&env_dir, &out).arg("draft"));
    assert!(
        stderr.contains("service `draft` has no service-manifest.yml"),
        "{stderr}"
    );
}

/// A copy of the example environments, to edit.
fn examples_copy() -> (tempfile::TempDir, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let env = work.path().join("env");
    copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("env"), &env);
    (work, env)
}

#[test]
fn check_diff_shows_the_decoded_attribute_changes_with_secrets_masked() {
    let (work, env) = examples_copy();
    let env_dir = env.join("prod-dc1");
    let out = work.path().join("units");
    run_ok(&mut gen_cmd(&env_dir, &out));
    let dc = env_dir.join("attributes/dc.yml");
    std::fs::write(&dc, read(&dc).replace("level: info", "level: warn")).unwrap();
    let mysql = env_dir.join("services/mysql-main/attributes/mysql.yml");
    std::fs::write(
        &mysql,
        read(&mysql).replace("monitorPassword: local_mon", "monitorPassword: n3w-s3cret"),
    )
    .unwrap();
    let output = herd()
        .arg("gen")
        .arg(&env_dir)
        .arg("--check")
        .arg(&out)
        .arg("--diff")
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    // (tripsearch sets its own log.level: its units did not change.)
    let unit = "mysql-backup/prod-dc1_mysql-backup_mysql-main3.service";
    let section = stdout
        .split("changed ")
        .find(|s| s.starts_with(unit))
        .unwrap_or_else(|| panic!("{unit} not changed:\n{stdout}"));
    assert!(
        section.contains("\n- log.level: info\n+ log.level: warn\n"),
        "{section}"
    );
    let mysql_unit = stdout
        .split("changed ")
        .find(|s| s.starts_with("mysql-main/prod-dc1_mysql-main_mysql-main1.service"))
        .unwrap();
    assert!(
        mysql_unit.contains("- mysql.monitorPassword: ******\n+ mysql.monitorPassword: ******\n"),
        "{mysql_unit}"
    );
    // The secret shows nowhere, old or new, decoded or as base64: the
    // attribute lines of a unit holding secrets are hidden in its diff.
    assert!(
        mysql_unit.contains("-Environment=HERD_ATTRIBUTES_0=<")
            && mysql_unit.contains("characters of attributes holding secrets, hidden>"),
        "{mysql_unit}"
    );
    for secret in ["local_mon", "n3w-s3cret"] {
        assert!(!stdout.contains(secret), "{secret} in:\n{stdout}");
    }
    // A unit without secrets keeps its full diff.
    assert!(
        section.contains("+Environment=HERD_ATTRIBUTES_0=eyJ"),
        "{section}"
    );
}

#[test]
fn units_carrying_secrets_are_not_world_readable() {
    let (work, env) = examples_copy();
    let out = work.path().join("units");
    run_ok(&mut gen_cmd(&env.join("prod-dc1"), &out));
    // mysql-main has a monitorPassword (and DSNs holding it); tripsearch none.
    let secret = out.join("mysql-main/prod-dc1_mysql-main_mysql-main1.service");
    let public = out.join("tripsearch/prod-dc1_tripsearch_front1.service");
    assert_eq!(mode(&secret), 0o640);
    assert_eq!(mode(&public), 0o644);
    verify_units(&out);
    // A rerun puts a wrong mode right, though the content is the same.
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
    run_ok(&mut gen_cmd(&env.join("prod-dc1"), &out));
    assert_eq!(mode(&public), 0o644);
    // A unit that no longer carries a secret becomes readable again.
    let mysql = env.join("prod-dc1/services/mysql-main/attributes/mysql.yml");
    std::fs::write(
        &mysql,
        read(&mysql).replace("monitorPassword", "monitorUser"),
    )
    .unwrap();
    let nerve = env.join("prod-dc1/services/mysql-main/attributes/nerve.yml");
    std::fs::write(&nerve, read(&nerve).replace("local_mon:local_mon@", "")).unwrap();
    run_ok(&mut gen_cmd(&env.join("prod-dc1"), &out));
    assert_eq!(mode(&secret), 0o644);
}

#[test]
fn kubernetes_puts_secret_attributes_in_a_secret() {
    let (work, env) = examples_copy();
    let out = work.path().join("kube");
    run_ok(gen_cmd(&env.join("prod-dc1"), &out).args(["--target", "kubernetes"]));
    kubernetes_validate(&out);
    let pod_path = out.join("mysql-main/prod-dc1_mysql-main_mysql-main1.yaml");
    let secret_path = out.join("mysql-main/prod-dc1_mysql-main_mysql-main1.secret.yaml");
    let pod_text = read(&pod_path);
    let pod: Value = serde_yaml_ng::from_str(&pod_text).unwrap();
    let env_list = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    let by_name = |name: &str| env_list.iter().find(|e| e["name"] == name).unwrap();
    let decode = |b64: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    };
    let public = decode(
        by_name("HERD_ATTRIBUTES")["value"]
            .as_str()
            .unwrap()
            .strip_prefix("base64,")
            .unwrap(),
    );
    // The Pod (readable, reviewable) holds no secret, even base64-encoded.
    assert_eq!(public["mysql"]["cluster"], "main");
    assert_eq!(public["mysql"].get("monitorPassword"), None);
    assert_eq!(public["nerve"].get("services"), None, "{public}");
    let reference = &by_name("HERD_ATTRIBUTES_0")["valueFrom"]["secretKeyRef"];
    let secret: Value = serde_yaml_ng::from_str(&read(&secret_path)).unwrap();
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], reference["name"]);
    let hidden = decode(
        secret["data"][reference["key"].as_str().unwrap()]
            .as_str()
            .unwrap(),
    );
    assert_eq!(hidden["mysql"]["monitorPassword"], "local_mon");
    assert!(hidden["nerve"]["services"].is_array(), "{hidden}");
    assert_eq!(mode(&secret_path), 0o640);
    assert_eq!(mode(&pod_path), 0o644);
    // A unit without secrets has no Secret.
    assert!(
        !out.join("tripsearch/prod-dc1_tripsearch_front1.secret.yaml")
            .exists()
    );
}

#[test]
fn explain_masks_a_secret_wherever_it_appears() {
    let (_work, env) = examples_copy();
    let nerve = env.join("prod-dc1/services/mysql-main/attributes/nerve.yml");
    // A URL password no key names, beside the DSNs repeating monitorPassword.
    std::fs::write(
        &nerve,
        format!(
            "{}\n  monitorUrl: \"mysql://mon:url-pass@127.0.0.1:3306/\"\n",
            read(&nerve)
        ),
    )
    .unwrap();
    let stdout = run_ok(herd().arg("attributes").arg(env.join("prod-dc1")).args([
        "mysql-main",
        "mysql-main1",
        "--explain",
    ]));
    for secret in ["local_mon", "url-pass"] {
        assert!(!stdout.contains(secret), "{secret} in:\n{stdout}");
    }
    assert!(
        stdout.contains("mysql.monitorPassword: \"******\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("mysql://mon:******@127.0.0.1:3306/"),
        "{stdout}"
    );
    assert!(
        stdout.contains("******:******@tcp(127.0.0.1:3306)/"),
        "{stdout}"
    );
}
