//! dgr's behaviours that images written for it rely on, end to end: a base
//! image templating the files podman bind-mounts (`/etc/resolv.conf`,
//! `/etc/hosts`, `/etc/hostname`), attribute values typed by YAML after
//! resolution, the sprig-like template functions, attribute files that are
//! links (issue 19).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const NAME: &str = "aci.example.com/aci-compat:1";

/// The image directory: a busybox root whose app prints the rendered files.
fn image_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("aci-compat");
    busybox_image(
        &dir,
        &format!(
            "name: {NAME}\naci:\n  app:\n    exec: [/bin/sh, -c, 'cat /etc/resolv.conf /etc/hosts /etc/hostname /etc/app.conf']\n"
        ),
    );
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "attributes/app.yml",
        "default:\n  base_port: 8000\n  port: \"{{ base_port }}\"\n  text_port: \"'{{ base_port }}'\"\n  zk: {hosts: [zk1.dc1.example.com, zk2.dc1.example.com]}\n  hosts: \"{{ zk.hosts }}\"\n  nameserver: 127.0.0.53\n  user: \"app user/é\"\n  stamp: 1764686838\n",
    );
    // The linked file lives outside attributes/, as configuration
    // management puts it; the image must hold its content.
    write(
        "managed/network.yml",
        "default:\n  search: dc1.example.com\n  hostname: compat-host\n",
    );
    std::os::unix::fs::symlink("../managed/network.yml", dir.join("attributes/network.yml"))
        .unwrap();
    write(
        "templates/etc/resolv.conf.tmpl",
        "nameserver {{ nameserver }}\nsearch {{ search }}\n",
    );
    write(
        "templates/etc/hosts.tmpl",
        "127.0.0.1 localhost {{ hostname }}\n{% for h in hosts %}10.0.0.{{ loop.index }} {{ h }}\n{% endfor %}",
    );
    write("templates/etc/hostname.tmpl", "{{ hostname }}\n");
    write(
        "templates/etc/app.tmpl.conf",
        "next_port={{ port + 1 }}\ntext_port={{ text_port ~ '0' }}\nuser64={{ user | b64encode }}\nuser={{ user | b64encode | b64decode }}\nquery={{ user | urlencode }}\nsha={{ 'abc' | sha256 }}\nshort={{ hosts[0] | regex_replace(pattern='^([a-z0-9]+)\\..*$', rep='$1') }}\nday={{ stamp | date(format='%F') }}\nuuid_length={{ uuid() | length }}\nyaml={{ zk | to_yaml | trim | replace(from='\n', to='|') }}\nfrom_json={% set parsed = '{\"k\": [7]}' | from_json %}{{ parsed.k[0] }}\n",
    );
    dir
}

/// `oci:STORE:NAME` of the image, built once for this file's tests.
fn image() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("herd-compat-test");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let dir = image_dir(&work);
        // Building must not depend on the link's target staying there.
        let store = work.join("store");
        run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));
        std::fs::remove_dir_all(dir.join("managed")).unwrap();
        oci_ref(&store, NAME)
    })
}

const APP_CONF: &str = "next_port=8001\ntext_port=80000\nuser64=YXBwIHVzZXIvw6k=\nuser=app user/é\nquery=app%20user%2F%C3%A9\nsha=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\nshort=zk1\nday=2025-12-02\nuuid_length=36\nyaml=hosts:|- zk1.dc1.example.com|- zk2.dc1.example.com\nfrom_json=7\n";

#[test]
fn bind_mounted_etc_files_are_rendered_in_place_inside_podman() {
    let output = podman().args(["run", "--rm", image()]).output().unwrap();
    assert!(
        output.status.success(),
        "the container failed with {}:\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    let expected = format!(
        "nameserver 127.0.0.53\nsearch dc1.example.com\n127.0.0.1 localhost compat-host\n10.0.0.1 zk1.dc1.example.com\n10.0.0.2 zk2.dc1.example.com\ncompat-host\n{APP_CONF}"
    );
    assert_eq!(
        text(&output.stdout),
        expected,
        "stderr:\n{}",
        text(&output.stderr)
    );
}

#[test]
fn herd_try_renders_typed_values_filters_and_linked_attributes() {
    let work = workdir();
    let dir = image_dir(work.path());
    let out = work.path().join("out");
    run_ok(herd().arg("try").arg(&dir).arg("--out").arg(&out));
    assert_eq!(
        std::fs::read_to_string(out.join("etc/app.conf")).unwrap(),
        APP_CONF
    );
    assert_eq!(
        std::fs::read_to_string(out.join("etc/hostname")).unwrap(),
        "compat-host\n"
    );
    let shown = run_ok(
        herd()
            .arg("attributes")
            .arg(&dir)
            .arg("--resolve")
            .args(["--format", "json"]),
    );
    let value: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(value["port"], serde_json::json!(8000));
    assert_eq!(value["text_port"], serde_json::json!("8000"));
    assert_eq!(
        value["hosts"],
        serde_json::json!(["zk1.dc1.example.com", "zk2.dc1.example.com"])
    );
}

#[test]
fn a_string_used_as_a_list_and_a_dangling_link_are_named() {
    let work = workdir();
    let dir = image_dir(work.path());
    std::fs::write(
        dir.join("attributes/zz.yml"),
        "override:\n  hosts: \"{{ zk.hosts | join(sep=',') }}\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/etc/first.tmpl"),
        "x\nfirst={{ hosts[0] }}\n",
    )
    .unwrap();
    let output = run_fails(
        herd()
            .arg("try")
            .arg(&dir)
            .arg("--out")
            .arg(work.path().join("out")),
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("first.tmpl:2: `hosts[0]`: attribute `hosts` is the string \"zk1.dc1.example.com,zk2.dc1.example.com\", not a list"),
        "{stderr}"
    );
    assert!(!stderr.contains("has no value"), "{stderr}");

    std::fs::remove_file(dir.join("attributes/zz.yml")).unwrap();
    std::fs::remove_file(dir.join("templates/etc/first.tmpl")).unwrap();
    std::fs::remove_dir_all(dir.join("managed")).unwrap();
    let output = run_fails(herd().arg("try").arg(&dir));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("attributes/network.yml: is a dangling link: its target ../managed/network.yml does not exist"),
        "{stderr}"
    );
}

#[test]
fn herd_try_and_attributes_read_dependency_and_pod_attributes_from_the_store() {
    let work = workdir();
    let store = work.path().join("store");
    build_examples(&store, &["aci-busybox"]);
    let out = work.path().join("out");
    let output = herd()
        .arg("try")
        .arg(example("pod-web"))
        .arg("--out")
        .arg(&out)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("web/srv/www/index.html")).unwrap(),
        "greeting: set by the web app\nowner: set by the pod\nservice: web on port 18080\ntimezone: UTC\n"
    );
    assert!(
        stderr.contains("app web: attributes from: aci.example.com/aci-busybox:1.36-1 (1 file), ")
            && stderr.contains("pod-web/attributes (1 file), ")
            && stderr.contains("pod-web/web/attributes (1 file)"),
        "{stderr}"
    );
    // The app directory alone is the same app.
    run_ok(
        herd()
            .arg("try")
            .arg(example("pod-web").join("web"))
            .arg("--out")
            .arg(work.path().join("web"))
            .arg("--store")
            .arg(&store),
    );
    let explained = run_ok(
        herd()
            .arg("attributes")
            .arg(example("pod-web").join("web"))
            .arg("--explain")
            .arg("--store")
            .arg(&store),
    );
    assert!(
        explained.contains(
            "timezone: \"UTC\"  # aci.example.com/aci-busybox:1.36-1: /herd/images/aci-busybox/attributes/base.yml"
        ),
        "{explained}"
    );
    // Without the dependency in the store, the user is told what is left out.
    let output = herd()
        .arg("attributes")
        .arg(example("aci-greeter"))
        .arg("--explain")
        .arg("--store")
        .arg(work.path().join("empty"))
        .output()
        .unwrap();
    assert!(
        text(&output.stderr).contains(
            "warning: dependency aci.example.com/aci-busybox:1.36-1 is not in the store: its attributes are not included"
        ),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn herd_try_renders_the_dependencies_templates_under_the_directorys_own() {
    let work = workdir();
    let store = work.path().join("store");
    let write = |path: PathBuf, content: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    };
    let base = work.path().join("base");
    busybox_image(&base, "name: aci.example.com/aci-tbase:1\n");
    write(
        base.join("attributes/base.yml"),
        "default:\n  greeting: hello\n",
    );
    write(
        base.join("templates/etc/motd.tmpl"),
        "{% include \"header.partial\" %}{{ greeting }}\nfrom {{ who }}\n",
    );
    write(base.join("templates/header.partial"), "# base header\n");
    write(base.join("templates/etc/shared.tmpl"), "base version\n");
    run_ok(herd().arg("build").arg(&base).arg("--store").arg(&store));

    let child = work.path().join("child");
    write(
        child.join("aci-manifest.yml"),
        "name: aci.example.com/aci-tchild:1\naci:\n  dependencies: [aci.example.com/aci-tbase:1]\n",
    );
    // The base's partial, as the container's /herd/templates has it.
    write(
        child.join("templates/etc/child.tmpl"),
        "{% include \"header.partial\" %}child of {{ greeting }}\n",
    );
    write(child.join("templates/etc/shared.tmpl"), "child version\n");
    // `who` is missing: the dependency's template says so, named as the
    // image holds it.
    let output = herd()
        .arg("try")
        .arg(&child)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("aci.example.com/aci-tbase:1: /herd/templates/etc/motd.tmpl:2")
            && stderr.contains("who")
            && stderr.contains("templates from: aci.example.com/aci-tbase:1 (3 files), "),
        "{stderr}"
    );
    write(
        child.join("attributes/child.yml"),
        "default:\n  who: child\n",
    );
    let out = work.path().join("out");
    run_ok(
        herd()
            .arg("try")
            .arg(&child)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&store),
    );
    let read = |path: &str| std::fs::read_to_string(out.join(path)).unwrap();
    assert_eq!(read("etc/motd"), "# base header\nhello\nfrom child\n");
    assert_eq!(read("etc/child"), "# base header\nchild of hello\n");
    assert_eq!(read("etc/shared"), "child version\n");

    // The build accepts the include of the base's partial, and the
    // container renders what herd try did.
    run_ok(herd().arg("build").arg(&child).arg("--store").arg(&store));
    let image = oci_ref(&store, "aci.example.com/aci-tchild:1");
    let rendered = run_ok(podman().args(["run", "--rm"]).arg(&image).args([
        "cat",
        "/etc/motd",
        "/etc/child",
        "/etc/shared",
    ]));
    assert_eq!(
        rendered,
        "# base header\nhello\nfrom child\n# base header\nchild of hello\nchild version\n"
    );
    // A partial neither the directory nor a dependency has is still an
    // error at build, naming the file and line.
    write(
        child.join("templates/etc/child.tmpl"),
        "child\n{% include \"nowhere.partial\" %}\n",
    );
    let output = run_fails(herd().arg("build").arg(&child).arg("--store").arg(&store));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("templates/etc/child.tmpl:2: includes `nowhere.partial`"),
        "{stderr}"
    );
}

#[test]
fn isolators_and_ports_become_podman_limits_and_kubernetes_resources() {
    needs(&["kubernetes-validate"]);
    let work = workdir();
    let name = "aci.example.com/aci-limited:1";
    busybox_image(
        &work.path().join("image"),
        &format!(
            "name: {name}\naci:\n  app:\n    exec: [/bin/sleep, '1000']\n    ports: [{{name: http, protocol: tcp, port: 8080}}]\n    isolators:\n      - {{name: resource/memory, value: {{limit: 256Mi, request: 128Mi}}}}\n      - {{name: resource/cpu, value: {{limit: 500m, request: '0.25'}}}}\n      - {{name: os/linux/capabilities-retain-set, value: {{set: [CAP_NET_BIND_SERVICE]}}}}\n"
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
    let env_dir = work.path().join("env/limits");
    std::fs::create_dir_all(env_dir.join("services/web")).unwrap();
    std::fs::write(env_dir.join("config.yml"), "envName: limits\n").unwrap();
    std::fs::write(
        env_dir.join("services/web/service-manifest.yml"),
        format!("containers: [{name}]\nnodes: [{{hostname: host1}}]\n"),
    )
    .unwrap();
    let generate = |target: &str, out: &Path| {
        let output = herd()
            .arg("gen")
            .arg(&env_dir)
            .arg("--out")
            .arg(out)
            .args(["--target", target, "--store"])
            .arg(&store)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stderr)
    };
    let units = work.path().join("units");
    let warnings = generate("systemd", &units);
    assert!(
        warnings
            .contains("isolator \"os/linux/capabilities-retain-set\" is not used by herd's units"),
        "{warnings}"
    );
    let unit = std::fs::read_to_string(units.join("web/limits_web_host1.service")).unwrap();
    assert!(
        unit.contains("--sdnotify=container --memory 268435456 --cpus 0.500 "),
        "{unit}"
    );
    let kube = work.path().join("kube");
    generate("kubernetes", &kube);
    let file = kube.join("web/limits_web_host1.yaml");
    let pod: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["resources"],
        serde_json::json!({"limits": {"memory": "268435456", "cpu": "500m"}, "requests": {"memory": "134217728", "cpu": "250m"}})
    );
    assert_eq!(
        container["ports"],
        serde_json::json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    common::units::kubernetes_validate_files(&[file]);
}
