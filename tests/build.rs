//! `herd build` end to end: images checked by umoci, skopeo and podman.

mod common;

use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const NAME: &str = "aci.example.com/aci-hello:1.0";

fn hello_image(dir: &Path) {
    busybox_image(
        dir,
        &format!(
            "name: {NAME}\naci:\n  app:\n    exec: [/bin/sh, -c, 'echo hello from herd; stat -c \"%a %n\" /secret /bin/suid; readlink /link']\n    environment: [{{name: GREETING, value: hi}}]\n    ports: [{{name: http, port: 8080}}]\n    mountPoints: [{{name: data, path: /data}}]\n  annotations: [{{name: team, value: platform}}]\n"
        ),
    );
    let files = dir.join("files");
    std::fs::write(files.join("secret"), "s3cret\n").unwrap();
    std::fs::set_permissions(files.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::copy(files.join("bin/busybox"), files.join("bin/suid")).unwrap();
    std::fs::set_permissions(
        files.join("bin/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/hostname", files.join("link")).unwrap();
}

#[test]
fn an_image_directory_becomes_an_image_that_umoci_skopeo_and_podman_accept() {
    let work = workdir();
    let (dir, store) = (work.path().join("hello"), work.path().join("store"));
    hello_image(&dir);
    let out = run_ok(herd().arg("build").arg(&dir).arg("--store").arg(&store));
    let digest = built_digest(&out, NAME);

    let inspect = run_ok(
        std::process::Command::new(tool("skopeo"))
            .arg("inspect")
            .arg(oci_ref(&store, NAME)),
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Labels"]["team"], "platform");
    assert!(
        inspect["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hi".into()),
        "{inspect}"
    );

    let config = run_ok(
        std::process::Command::new(tool("skopeo"))
            .arg("inspect")
            .arg("--config")
            .arg(oci_ref(&store, NAME)),
    );
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}})
    );
    assert_eq!(
        config["config"]["Volumes"],
        serde_json::json!({"/data": {}})
    );
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/herd/init"])
    );

    let bundle = work.path().join("bundle");
    run_ok(
        std::process::Command::new(tool("umoci"))
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{NAME}", store.display()))
            .arg(&bundle),
    );
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::metadata(rootfs.join("secret")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("bin/suid")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::read_link(rootfs.join("link")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(std::fs::metadata(rootfs.join("secret")).unwrap().uid(), 0);

    let output = run_ok(podman().args(["run", "--rm"]).arg(oci_ref(&store, NAME)));
    assert!(output.contains("hello from herd"), "{output}");
    assert!(output.contains("600 /secret"), "{output}");
    assert!(output.contains("4755 /bin/suid"), "{output}");
    assert!(output.contains("/etc/hostname"), "{output}");
}

#[test]
fn copies_at_different_paths_and_times_give_the_same_digest() {
    let work = workdir();
    let one = work.path().join("one/hello");
    hello_image(&one);
    let two = work.path().join("elsewhere/deeper/hello");
    copy_tree(&one, &two);
    // Different modification times on every file of the second copy.
    for entry in walkdir::WalkDir::new(&two)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let file = std::fs::File::options()
            .append(true)
            .open(entry.path())
            .unwrap();
        file.set_modified(
            std::time::SystemTime::now() - std::time::Duration::from_secs(86_400 * 365),
        )
        .unwrap();
    }
    let first = run_ok(
        herd()
            .arg("build")
            .arg(&one)
            .arg("--store")
            .arg(work.path().join("s1")),
    );
    let second = run_ok(
        herd()
            .arg("build")
            .arg(&two)
            .arg("--store")
            .arg(work.path().join("s2")),
    );
    assert_eq!(built_digest(&first, NAME), built_digest(&second, NAME));
    // And SOURCE_DATE_EPOCH does change it: the check above can fail.
    let third = run_ok(
        herd()
            .arg("build")
            .arg(&two)
            .arg("--store")
            .arg(work.path().join("s3"))
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    assert_ne!(built_digest(&first, NAME), built_digest(&third, NAME));
}

#[test]
fn bad_manifests_fail_with_file_and_line_and_leave_the_store_unchanged() {
    let work = workdir();
    let store = work.path().join("store");
    let good = work.path().join("good");
    busybox_image(&good, "name: aci.example.com/good:1\n");
    run_ok(herd().arg("build").arg(&good).arg("--store").arg(&store));
    let before = snapshot(&store);

    let cases: &[(&str, &str)] = &[
        (
            "name: aci.example.com/bad:1\naci:\n  ap:\n    exec: [/bin/true]\n",
            ":3:3: aci: unknown field `ap`, expected one of `dependencies`, `app`, `annotations` (did you mean `app`?)",
        ),
        ("aci:\n  app: {}\n", ":1:1: missing field `name`"),
        (
            "name: aci.example.com/Bad:1\n",
            ":1: `name`: in \"aci.example.com/Bad:1\": the repository path component \"Bad\" is not valid",
        ),
        (
            "name: bad:1\n",
            ":1: `name`: \"bad:1\" has no registry domain",
        ),
        (
            "name: aci.example.com/bad:1\naci:\n  app:\n    exec: /bin/true\n",
            ":4:11: aci.app.exec: invalid type: string \"/bin/true\", expected a sequence",
        ),
        (
            "name: aci.example.com/bad:{{ version }}\n",
            ":1: attribute `version` has no value",
        ),
        (
            "name: aci.example.com/bad:1\naci:\n  app:\n    ports: [{name: http, port: 80, protocol: tcpp}]\n",
            ":4: port `http`: protocol \"tcpp\" is not tcp, udp or sctp",
        ),
        (
            "name: aci.example.com/bad:1\naci:\n  app:\n    mountPoints: [{name: d, path: data}]\n",
            ":4: mount point `d`: path \"data\" must be absolute",
        ),
        (
            "name: aci.example.com/bad:1\naci:\n  dependencies: [aci.example.com/missing:1]\n",
            "aci.example.com/missing:1 is not in the store",
        ),
        (
            "name: [a, b]\n",
            ":1:7: name: invalid type: sequence, expected a string",
        ),
        ("name: aci.example.com/bad:1\n  x: : y\n", ":2:"),
    ];
    for (manifest, expected) in cases {
        let dir = work.path().join("bad");
        let _ = std::fs::remove_dir_all(&dir);
        busybox_image(&dir, manifest);
        let output = run_fails(herd().arg("build").arg(&dir).arg("--store").arg(&store));
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(expected),
            "manifest {manifest:?}\nexpected {expected:?} in:\n{stderr}"
        );
        if expected.starts_with(':') {
            assert!(
                stderr.contains(&format!(
                    "{}{}",
                    dir.join("aci-manifest.yml").display(),
                    &expected[..3]
                )),
                "{stderr}"
            );
        }
        assert_eq!(output.status.code(), Some(2));
        assert!(!stderr.contains("panicked"), "{stderr}");
        let after = snapshot(&store);
        assert_eq!(
            before.keys().collect::<Vec<_>>(),
            after.keys().collect::<Vec<_>>(),
            "store changed for {manifest:?}"
        );
        assert!(before == after, "store content changed for {manifest:?}");
    }
}

#[test]
fn rebuilding_replaces_its_tag_and_keeps_the_others() {
    let work = workdir();
    let store = work.path().join("store");
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    busybox_image(&a, "name: aci.example.com/a:1\n");
    busybox_image(&b, "name: aci.example.com/b:1\n");
    run_ok(
        herd()
            .arg("build")
            .arg(&a)
            .arg(&b)
            .arg("--store")
            .arg(&store),
    );
    std::fs::write(a.join("files/new-file"), "changed").unwrap();
    let rebuilt = built_digest(
        &run_ok(herd().arg("build").arg(&a).arg("--store").arg(&store)),
        "aci.example.com/a:1",
    );
    let listing = run_ok(herd().arg("images").env("HERD_STORE", &store));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert!(lines[0].starts_with("NAME"), "{listing}");
    assert!(listing.contains("aci.example.com/b:1"), "{listing}");
    assert!(
        listing.contains(&format!("aci.example.com/a:1  {rebuilt}")),
        "{listing}"
    );
    let inspect = run_ok(
        herd()
            .args(["inspect", "aci.example.com/a:1", "--store"])
            .arg(&store),
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["digest"], rebuilt.as_str());
    assert_eq!(inspect["config"]["config"]["Entrypoint"][0], "/herd/init");
}

#[test]
fn special_files_in_an_image_directory_are_refused() {
    let work = workdir();
    let dir = work.path().join("fifo");
    busybox_image(&dir, "name: aci.example.com/fifo:1\n");
    run_ok(std::process::Command::new(tool("mkfifo")).arg(dir.join("files/pipe")));
    let output = run_fails(
        herd()
            .arg("build")
            .arg(&dir)
            .arg("--store")
            .arg(work.path().join("store")),
    );
    assert!(
        text(&output.stderr).contains("files/pipe is a fifo"),
        "{}",
        text(&output.stderr)
    );
}
