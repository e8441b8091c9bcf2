//! The store against hostile layers, other users and concurrent commands:
//! a layer whose content contradicts its config's diff_id never enters the
//! extracted-layer cache; setuid files and device nodes from layers give
//! other users nothing while blobs stay readable to them; `herd gc` in a
//! loop never takes what running builds and pulls use; one bad entry is
//! reported by fsck and the rest of the store is still checked and
//! collected.

mod common;

use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

/// The manifest descriptor tagged `name`, from index.json.
fn tagged(store: &Path, name: &str) -> Value {
    read_json(&store.join("index.json"))["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .unwrap_or_else(|| panic!("{name} is not tagged"))
        .clone()
}

fn manifest_of(store: &Path, name: &str) -> Value {
    read_json(&blob(
        store,
        tagged(store, name)["digest"].as_str().unwrap(),
    ))
}

fn config_of(store: &Path, name: &str) -> Value {
    let manifest = manifest_of(store, name);
    read_json(&blob(store, manifest["config"]["digest"].as_str().unwrap()))
}

/// A tar of regular files, written with the tar crate.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, path, *content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn image_dir(dir: &Path, manifest: &str, scripts: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("aci-manifest.yml"), manifest).unwrap();
    for (path, script) in scripts {
        let path = dir.join("runlevels").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, script).unwrap();
    }
}

fn build(dir: &Path, store: &Path) -> Command {
    let mut command = herd();
    command
        .arg("build")
        .arg(dir)
        .arg("--store")
        .arg(store)
        .args(["--compression", "none"]);
    command
}

fn fsck(store: &Path) -> (bool, String) {
    let output = herd()
        .args(["fsck", "--store"])
        .arg(store)
        .output()
        .unwrap();
    (output.status.success(), text(&output.stdout))
}

fn assert_fsck_ok(store: &Path) {
    let (ok, out) = fsck(store);
    assert!(
        ok && out.trim() == "ok",
        "fsck of {}:\n{out}",
        store.display()
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------
// 1. Verified extraction

#[test]
fn a_layer_contradicting_its_diff_id_is_refused_and_later_builds_stay_clean() {
    let work = workdir();
    let store = work.path().join("store");
    // A trusted base: busybox and herd's init layer (its first layer).
    let base = work.path().join("base");
    busybox_image(&base, "name: aci.example.com/base:1\n");
    run_ok(&mut build(&base, &store));
    let init_diff_id = config_of(&store, "aci.example.com/base:1")["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    // A forged image: its layer replaces herd's init, its config claims
    // the init layer's diff_id.
    const EVIL: &[u8] = b"EVIL-INIT-REPLACEMENT";
    let forged_layer = tar_of(&[("herd/init", EVIL), ("evil-marker", EVIL)]);
    let forged_digest = herd::digest::Digest::of(&forged_layer).to_string();
    let forged = put_one_layer_image(&store, &forged_layer, &init_diff_id);
    put_tag(&store, "aci.example.com/forged:1", forged);
    let victim = work.path().join("on-forged");
    image_dir(
        &victim,
        "name: aci.example.com/on-forged:1\naci:\n  dependencies: [aci.example.com/forged:1]\n",
        &[("build/10.sh", "#!/bin/sh\ntrue\n")],
    );
    let error = text(&run_fails(&mut build(&victim, &store)).stderr);
    for expected in [
        "refusing layer",
        "aci.example.com/forged:1",
        &forged_digest,
        &init_diff_id,
    ] {
        assert!(error.contains(expected), "{expected:?} not in:\n{error}");
    }
    let cache = store.join("cache/layers");
    let entry = cache.join(init_diff_id.trim_start_matches("sha256:"));
    assert!(
        !entry.exists(),
        "the forged layer entered the cache at {}",
        entry.display()
    );
    let leftovers: Vec<String> = std::fs::read_dir(&cache)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "left in the cache: {leftovers:?}");

    // A trusted build on the base copies the init its root has into its
    // own layer: it must be herd's init, not the forged one.
    let trusted = work.path().join("trusted");
    image_dir(
        &trusted,
        "name: aci.example.com/trusted:1\naci:\n  dependencies: [aci.example.com/base:1]\n",
        &[(
            "build/10.sh",
            "#!/bin/sh\nset -e\ncp /herd/init /copy-of-init\nls / > /listing\n",
        )],
    );
    run_ok(&mut build(&trusted, &store));
    let layers = manifest_of(&store, "aci.example.com/trusted:1")["layers"].clone();
    let own = std::fs::read(blob(
        &store,
        layers.as_array().unwrap().last().unwrap()["digest"]
            .as_str()
            .unwrap(),
    ))
    .unwrap();
    assert!(contains(&own, b"copy-of-init"), "the script did not run");
    assert!(
        !contains(&own, EVIL),
        "the trusted layer carries the forgery"
    );
    assert!(!contains(&own, b"evil-marker"));
    let init = std::fs::read(env!("CARGO_BIN_EXE_herd-init")).unwrap();
    let middle = init.len() / 2;
    assert!(
        contains(&own, &init[middle..middle + 4096]),
        "the copy is not herd's init"
    );
    assert_fsck_ok(&store);

    // An entry made by an older herd (or changed) is not verified: fsck
    // names it, clean removes it and keeps the verified ones.
    let verified = std::fs::read_dir(&cache).unwrap().count();
    assert!(verified >= 2, "{verified} cache entries");
    let unverified = cache.join("ab".repeat(32));
    std::fs::create_dir_all(unverified.join("etc")).unwrap();
    std::fs::write(unverified.join("etc/passwd"), "root::0:0::/:/bin/sh\n").unwrap();
    let (ok, out) = fsck(&store);
    assert!(!ok, "fsck passed an unverified cache entry:\n{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(&unverified.display().to_string()) && out.contains("not verified"),
        "{out}"
    );
    run_ok(herd().args(["clean", "--store"]).arg(&store));
    assert!(!unverified.exists());
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), verified);
    assert_fsck_ok(&store);
    // An old-style entry (no record) under the base layer's own name is
    // not used: moved aside, the layer is extracted and verified again
    // (the planted tree has no shell: a build on it would fail).
    let base_diff_id = config_of(&store, "aci.example.com/base:1")["rootfs"]["diff_ids"][1]
        .as_str()
        .unwrap()
        .to_string();
    let planted = cache.join(base_diff_id.trim_start_matches("sha256:"));
    std::fs::remove_dir_all(&planted).unwrap();
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("planted"), "old").unwrap();
    std::fs::write(trusted.join("runlevels/build/20.sh"), "#!/bin/sh\ntrue\n").unwrap();
    run_ok(&mut build(&trusted, &store));
    assert!(planted.join("verified").is_file());
    assert!(planted.join("rootfs/bin/busybox").is_file());
    assert!(!planted.join("planted").exists());
    assert_fsck_ok(&store);
}

// ---------------------------------------------------------------------------
// 2. Permissions

/// `sh -c SCRIPT ARG` as user nobody, without capabilities.
fn as_nobody(script: &str, arg: &Path) -> std::process::Output {
    Command::new(tool("setpriv"))
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "/bin/sh",
            "-c",
            script,
        ])
        .arg(arg)
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

/// Setuid/setgid files and device nodes below `dir`, found as root.
fn dangerous_files(dir: &Path) -> Vec<PathBuf> {
    let out = run_ok(Command::new(tool("find")).arg(dir).args([
        "(", "-perm", "-4000", "-o", "-perm", "-2000", "-o", "-type", "c", "-o", "-type", "b", ")",
        "-print",
    ]));
    out.lines().map(PathBuf::from).collect()
}

/// Every setuid file and device node below `dir` is out of nobody's reach.
fn assert_out_of_reach(dir: &Path) -> usize {
    let found = dangerous_files(dir);
    for path in &found {
        let ran = as_nobody("exec \"$0\" true", path);
        assert!(
            !ran.status.success() && text(&ran.stderr).contains("ermission denied"),
            "nobody could run {}: {ran:?}",
            path.display()
        );
        let opened = as_nobody("exec 3<\"$0\"", path);
        assert!(
            !opened.status.success() && text(&opened.stderr).contains("ermission denied"),
            "nobody could open {}: {opened:?}",
            path.display()
        );
    }
    found.len()
}

#[test]
fn setuid_files_and_devices_from_layers_give_other_users_nothing() {
    let work = workdir();
    let store = work.path().join("store");
    // Readable by nobody up to the store.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = work.path().join("setuid-base");
    busybox_image(&base, "name: aci.example.com/setuid-base:1\n");
    image_dir(
        &base,
        "name: aci.example.com/setuid-base:1\n",
        &[(
            "builder/10.sh",
            "set -e\ncp /bin/busybox $ROOTFS/suid-busybox\nchmod 4755 $ROOTFS/suid-busybox\n\
             mknod -m 666 $ROOTFS/null c 1 3\n",
        )],
    );
    let umask_022 = |command: &mut Command| unsafe {
        command.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    };
    let mut command = build(&base, &store);
    umask_022(&mut command);
    run_ok(&mut command);

    // A dependent build extracts the base into the cache; its script
    // waits until the test has probed its build root.
    let dependent = work.path().join("dependent");
    let go = dependent.join("go");
    image_dir(
        &dependent,
        "name: aci.example.com/dependent:1\naci:\n  dependencies: [aci.example.com/setuid-base:1]\n",
        &[(
            "build/10.sh",
            "i=0\nwhile [ ! -e /.herd-build/home/go ] && [ $i -lt 600 ]; do \
             sleep 0.1; i=$((i+1)); done\n",
        )],
    );
    let mut command = build(&dependent, &store);
    umask_022(&mut command);
    let child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let root = loop {
        let roots: Vec<PathBuf> = std::fs::read_dir(store.join("tmp"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("merged"))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(root) = roots.into_iter().find(|r| r.join("suid-busybox").exists()) {
            break root;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no build root appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let in_build_root = assert_out_of_reach(&root);
    std::fs::write(&go, "").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(
        in_build_root >= 2,
        "{in_build_root} found in {}",
        root.display()
    );
    let in_cache = assert_out_of_reach(&store.join("cache"));
    assert!(in_cache >= 2, "{in_cache} found in the cache");
    for private in ["cache", "tmp"] {
        let mode = std::fs::metadata(store.join(private))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{private}");
    }

    // The store itself stays readable: skopeo as nobody reads the image.
    let inspect = as_nobody(
        &format!(
            "exec {} inspect \"oci:$0:aci.example.com/dependent:1\"",
            tool("skopeo").display()
        ),
        &store,
    );
    assert!(inspect.status.success(), "{inspect:?}");
    assert!(text(&inspect.stdout).contains("\"Layers\""), "{inspect:?}");
}

// ---------------------------------------------------------------------------
// 3. gc against work in progress

#[test]
fn gc_in_a_loop_never_takes_what_running_builds_and_pulls_use() {
    let work = workdir();
    let registry = Registry::start();
    let host = registry.host();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("none.yml"), "{}\n").unwrap();
    let with_env = |mut command: Command| {
        command
            .env("HOME", &home)
            .env("HERD_CONFIG", home.join("none.yml"))
            .env("DOCKER_CONFIG", home.join("docker"))
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let small_image = |dir: &Path, name: &str| {
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("aci-manifest.yml"), format!("name: {name}\n")).unwrap();
        std::fs::write(dir.join("files/content"), name.repeat(5000)).unwrap();
    };
    // Ten images pushed from another store, to be pulled.
    let source = work.path().join("source");
    let pulled: Vec<String> = (0..10).map(|i| format!("{host}/gc/pulled-{i}:1")).collect();
    for (i, name) in pulled.iter().enumerate() {
        let dir = work.path().join(format!("pulled-{i}"));
        small_image(&dir, name);
        run_ok(&mut build(&dir, &source));
    }
    let mut push = with_env(herd());
    push.args(["push", "--insecure", "--store"]).arg(&source);
    run_ok(push.args(&pulled));

    let store = work.path().join("store");
    empty_store(&store);
    run_ok(herd().args(["fsck", "--store"]).arg(&store));
    let built: Vec<(PathBuf, String)> = (0..10)
        .map(|i| {
            let dir = work.path().join(format!("built-{i}"));
            let name = format!("aci.example.com/gc-built-{i}:1");
            small_image(&dir, &name);
            (dir, name)
        })
        .collect();

    let stop = AtomicBool::new(false);
    let gc_runs = std::sync::atomic::AtomicUsize::new(0);
    let fsck_runs = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(String, bool, String)> = std::thread::scope(|scope| {
        scope.spawn(|| {
            // Bounded: the builds and pulls end long before.
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                run_ok(herd().args(["gc", "--store"]).arg(&store));
                gc_runs.fetch_add(1, Ordering::Relaxed);
            }
        });
        // fsck meanwhile: it holds the store lock, so it sees every tag
        // whole and never trips over a blob gc is removing.
        scope.spawn(|| {
            for _ in 0..500 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                assert_fsck_ok(&store);
                fsck_runs.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mut jobs = Vec::new();
        // 20 builds (each image twice: the second may be a cache hit)
        // and 10 pulls, four processes at a time.
        for round in 0..2 {
            for (dir, name) in &built {
                jobs.push((name.clone(), build(dir, &store), round));
            }
        }
        for name in &pulled {
            let mut command = with_env(herd());
            command
                .args(["pull", "--insecure", "--store"])
                .arg(&store)
                .arg(name);
            jobs.push((name.clone(), command, 0));
        }
        let jobs = std::sync::Mutex::new(jobs.into_iter());
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|workers| {
            for _ in 0..4 {
                workers.spawn(|| {
                    loop {
                        let Some((name, mut command, _)) = jobs.lock().unwrap().next() else {
                            break;
                        };
                        let output = command.output().unwrap();
                        results.lock().unwrap().push((
                            name,
                            output.status.success(),
                            text(&output.stderr),
                        ));
                    }
                });
            }
        });
        stop.store(true, Ordering::Relaxed);
        results.into_inner().unwrap()
    });
    eprintln!(
        "{} gc and {} fsck runs during {} builds and pulls",
        gc_runs.load(Ordering::Relaxed),
        fsck_runs.load(Ordering::Relaxed),
        results.len()
    );
    assert!(gc_runs.load(Ordering::Relaxed) >= 5);
    assert!(fsck_runs.load(Ordering::Relaxed) >= 2);
    let failed: Vec<&(String, bool, String)> = results.iter().filter(|r| !r.1).collect();
    assert!(failed.is_empty(), "failed under gc: {failed:#?}");
    for (name, _, _) in &results {
        run_ok(
            Command::new(tool("skopeo"))
                .arg("inspect")
                .arg(oci_ref(&store, name)),
        );
    }
    assert_fsck_ok(&store);

    // A cache hit needs the whole image: with a layer gone, it rebuilds.
    let (dir, name) = &built[0];
    let again = text(&run_ok_output(build(dir, &store)).stderr);
    assert!(again.contains(&format!("cached {name}")), "{again}");
    let layer = manifest_of(&store, name)["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(blob(&store, &layer)).unwrap();
    let rebuilt = text(&run_ok_output(build(dir, &store)).stderr);
    assert!(rebuilt.contains(&format!("built {name}")), "{rebuilt}");
    assert!(blob(&store, &layer).is_file());
    assert_fsck_ok(&store);
}

fn run_ok_output(mut command: Command) -> std::process::Output {
    let output = command.output().unwrap();
    assert!(output.status.success(), "{command:?}: {output:?}");
    output
}

// ---------------------------------------------------------------------------
// 4. One bad entry

#[test]
fn one_bad_entry_is_reported_and_the_rest_of_the_store_is_checked_and_collected() {
    let work = workdir();
    let store = work.path().join("store");
    let good = work.path().join("good");
    std::fs::create_dir_all(good.join("files")).unwrap();
    std::fs::write(
        good.join("aci-manifest.yml"),
        "name: aci.example.com/good:1\n",
    )
    .unwrap();
    std::fs::write(good.join("files/hello"), "hello").unwrap();
    run_ok(&mut build(&good, &store));
    let damaged = work.path().join("damaged");
    std::fs::create_dir_all(damaged.join("files")).unwrap();
    std::fs::write(
        damaged.join("aci-manifest.yml"),
        "name: aci.example.com/damaged:1\n",
    )
    .unwrap();
    std::fs::write(damaged.join("files/hello"), "damaged").unwrap();
    run_ok(&mut build(&damaged, &store));
    let lost_layer = manifest_of(&store, "aci.example.com/damaged:1")["layers"][1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(blob(&store, &lost_layer)).unwrap();

    // An image manifest labelled as an index.
    let mut mislabelled = tagged(&store, "aci.example.com/good:1");
    mislabelled["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
    let mislabelled_digest = mislabelled["digest"].as_str().unwrap().to_string();
    put_tag(&store, "aci.example.com/mislabelled:1", mislabelled);
    // An index that lists itself (its file is named after its own digest,
    // which no honest content can be).
    let looping_digest = format!("sha256:{}", "c".repeat(64));
    let looping = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": looping_digest, "size": 1}],
    });
    std::fs::write(
        blob(&store, &looping_digest),
        serde_json::to_vec(&looping).unwrap(),
    )
    .unwrap();
    put_tag(
        &store,
        "aci.example.com/looping:1",
        json!({"mediaType": "application/vnd.oci.image.index.v1+json",
               "digest": looping_digest, "size": 1}),
    );
    // A blob gc should collect.
    let garbage = put_blob(&store, "application/octet-stream", b"garbage");

    let (ok, out) = fsck(&store);
    assert!(!ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let about = |needle: &str| lines.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(about("aci.example.com/good:1"), 0, "{out}");
    assert_eq!(about("aci.example.com/mislabelled:1"), 1, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("aci.example.com/mislabelled:1")
                && l.contains(&mislabelled_digest)
                && l.contains("labelled")),
        "{out}"
    );
    assert_eq!(about("aci.example.com/looping:1"), 1, "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("aci.example.com/looping:1") && l.contains("cycle")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l.contains("aci.example.com/damaged:1")
            && l.contains(&lost_layer)
            && l.contains("missing")),
        "{out}"
    );
    // The looping index's file does not match its name either.
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&"c".repeat(64)) && l.contains("content has digest")),
        "{out}"
    );
    assert_eq!(lines.len(), 4, "{out}");

    let gc = herd().args(["gc", "--store"]).arg(&store).output().unwrap();
    assert!(gc.status.success(), "{gc:?}");
    assert!(
        text(&gc.stderr).contains("aci.example.com/looping:1"),
        "{gc:?}"
    );
    assert!(!blob(&store, garbage["digest"].as_str().unwrap()).exists());
    run_ok(
        Command::new(tool("skopeo"))
            .arg("inspect")
            .arg(oci_ref(&store, "aci.example.com/good:1")),
    );
    let images = run_ok(herd().args(["images", "--store"]).arg(&store));
    for name in ["good", "damaged", "mislabelled", "looping"] {
        assert!(
            images.contains(&format!("aci.example.com/{name}:1")),
            "{images}"
        );
    }
}

// ---------------------------------------------------------------------------
// 5. Layer fidelity

/// The content of `path` in the root of image `name`, unpacked by umoci.
fn file_in_image(work: &Path, store: &Path, name: &str, path: &str) -> Vec<u8> {
    let bundle = work.join(format!("bundle-{name}-{path}").replace(['/', ':'], "-"));
    run_ok(
        Command::new(tool("umoci"))
            .args(["unpack", "--image"])
            .arg(format!("{}:{name}", store.display()))
            .arg(&bundle),
    );
    std::fs::read(bundle.join("rootfs").join(path)).unwrap_or_default()
}

#[test]
fn fifos_repeated_layers_and_whiteout_names_keep_their_meaning() {
    let work = workdir();
    let store = work.path().join("store");
    let busybox = work.path().join("busybox");
    busybox_image(&busybox, "name: aci.example.com/busybox:1\n");
    run_ok(&mut build(&busybox, &store));

    // A FIFO made by a build script, extracted again by a dependent build.
    let fifo = work.path().join("fifo");
    image_dir(
        &fifo,
        "name: aci.example.com/fifo:1\naci:\n  dependencies: [aci.example.com/busybox:1]\n",
        &[("build/10.sh", "set -e\nmkdir -p /opt\nmkfifo /opt/fifo\n")],
    );
    run_ok(&mut build(&fifo, &store));
    let on_fifo = work.path().join("on-fifo");
    image_dir(
        &on_fifo,
        "name: aci.example.com/on-fifo:1\naci:\n  dependencies: [aci.example.com/fifo:1]\n  \
         app:\n    exec: [/bin/sh, -c, 'test -p /opt/fifo && echo fifo-in-podman']\n",
        &[(
            "build/10.sh",
            "set -e\ntest -p /opt/fifo\necho seen > /fifo-seen\n",
        )],
    );
    run_ok(&mut build(&on_fifo, &store));
    assert_eq!(
        file_in_image(
            work.path(),
            &store,
            "aci.example.com/on-fifo:1",
            "fifo-seen"
        ),
        b"seen\n"
    );
    let run = |name: &str| run_ok(podman().args(["run", "--rm"]).arg(oci_ref(&store, name)));
    let out = run("aci.example.com/on-fifo:1");
    assert!(out.contains("fifo-in-podman"), "{out}");

    // A base whose manifest lists one layer twice: the second application
    // wins over the layer between them.
    let one = put_blob(
        &store,
        "application/vnd.oci.image.layer.v1.tar",
        &tar_of(&[("etc/which", b"one")]),
    );
    let two = put_blob(
        &store,
        "application/vnd.oci.image.layer.v1.tar",
        &tar_of(&[("etc/which", b"two")]),
    );
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [one["digest"], two["digest"], one["digest"]]},
    });
    let config = put_blob(
        &store,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [one, two, one],
    });
    let manifest = put_blob(
        &store,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    put_tag(&store, "aci.example.com/repeated:1", manifest);
    let on_repeated = work.path().join("on-repeated");
    image_dir(
        &on_repeated,
        "name: aci.example.com/on-repeated:1\naci:\n  dependencies:\n  \
         - aci.example.com/busybox:1\n  - aci.example.com/repeated:1\n  \
         app:\n    exec: [/bin/cat, /etc/which]\n",
        &[("build/10.sh", "set -e\ncat /etc/which > /seen-by-build\n")],
    );
    run_ok(&mut build(&on_repeated, &store));
    let layers: Vec<Value> = manifest_of(&store, "aci.example.com/on-repeated:1")["layers"]
        .as_array()
        .unwrap()
        .clone();
    let ones = layers
        .iter()
        .filter(|l| l["digest"] == one["digest"])
        .count();
    assert_eq!(ones, 2, "{layers:#?}");
    for path in ["seen-by-build", "etc/which"] {
        assert_eq!(
            file_in_image(work.path(), &store, "aci.example.com/on-repeated:1", path),
            b"one",
            "{path}"
        );
    }
    assert_eq!(run("aci.example.com/on-repeated:1").trim(), "one");

    // A build script's file named like a whiteout is refused, named.
    let whiteout = work.path().join("whiteout");
    image_dir(
        &whiteout,
        "name: aci.example.com/whiteout:1\naci:\n  dependencies: [aci.example.com/busybox:1]\n",
        &[(
            "build/10.sh",
            "set -e\nmkdir -p /data\ntouch /data/.wh.oops\n",
        )],
    );
    let error = text(&run_fails(&mut build(&whiteout, &store)).stderr);
    assert!(
        error.contains("/data/.wh.oops") && error.contains("whiteout"),
        "{error}"
    );
    assert_fsck_ok(&store);
}

#[test]
fn a_docker_schema_2_image_is_pulled_as_oci_and_readable_by_every_tool() {
    let work = workdir();
    let registry = Registry::start();
    let source = work.path().join("source");
    let busybox = work.path().join("busybox");
    busybox_image(&busybox, "name: aci.example.com/busybox:1\n");
    run_ok(&mut build(&busybox, &source));
    let name = format!("{}/docker/busybox:1", registry.host());
    run_ok(
        Command::new(tool("skopeo"))
            .args([
                "copy",
                "--quiet",
                "--format",
                "v2s2",
                "--dest-tls-verify=false",
            ])
            .arg(oci_ref(&source, "aci.example.com/busybox:1"))
            .arg(format!("docker://{name}")),
    );
    let raw = run_ok(
        Command::new(tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{name}")),
    );
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{raw}"
    );
    // And as a Docker manifest list of that image.
    let mut child = tagged(&source, "aci.example.com/busybox:1");
    child.as_object_mut().unwrap().remove("annotations");
    child["platform"] = json!({"os": "linux", "architecture": herd::build::host_architecture()});
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [child],
    });
    let index = put_blob(
        &source,
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );
    put_tag(&source, "aci.example.com/busybox:list", index);
    let list_name = format!("{}/docker/busybox:list", registry.host());
    run_ok(
        Command::new(tool("skopeo"))
            .args(["copy", "--quiet", "--all", "--format", "v2s2"])
            .arg("--dest-tls-verify=false")
            .arg(oci_ref(&source, "aci.example.com/busybox:list"))
            .arg(format!("docker://{list_name}")),
    );
    let raw = run_ok(
        Command::new(tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{list_name}")),
    );
    assert!(
        raw.contains("application/vnd.docker.distribution.manifest.list.v2+json"),
        "{raw}"
    );

    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.yml"), "{}\n").unwrap();
    let store = work.path().join("store");
    run_ok(
        herd()
            .args(["pull", "--insecure", "--store"])
            .arg(&store)
            .arg(&name)
            .arg(&list_name)
            .env("HOME", &home)
            .env("HERD_CONFIG", home.join("config.yml"))
            .env("DOCKER_CONFIG", home.join("docker"))
            .env_remove("REGISTRY_AUTH_FILE"),
    );
    assert_eq!(
        tagged(&store, &name)["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(tagged(&store, &list_name), {
        let mut same = tagged(&store, &name);
        same["annotations"] = tagged(&store, &list_name)["annotations"].clone();
        same
    });
    let manifest = manifest_of(&store, &name);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }
    run_ok(
        Command::new(tool("skopeo"))
            .arg("inspect")
            .arg(oci_ref(&store, &name)),
    );
    assert!(!file_in_image(work.path(), &store, &name, "bin/busybox").is_empty());
    // herd builds on it, and podman runs the result.
    let dependent = work.path().join("dependent");
    image_dir(
        &dependent,
        &format!(
            "name: aci.example.com/on-docker:1\naci:\n  dependencies: [{name}]\n  \
             app:\n    exec: [/bin/cat, /seen]\n"
        ),
        &[("build/10.sh", "echo built-on-docker > /seen\n")],
    );
    run_ok(&mut build(&dependent, &store));
    let out = run_ok(
        podman()
            .args(["run", "--rm"])
            .arg(oci_ref(&store, "aci.example.com/on-docker:1")),
    );
    assert!(out.contains("built-on-docker"), "{out}");
    assert_fsck_ok(&store);
}

// ---------------------------------------------------------------------------
// 6. Names pinned by digest

#[test]
fn names_pinned_by_digest_work_for_pull_inspect_push_install_and_dependencies() {
    let work = workdir();
    let registry = Registry::start();
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("config.yml"), "{}\n").unwrap();
    let herd_here = || {
        let mut command = herd();
        command
            .env("HOME", &home)
            .env("HERD_CONFIG", home.join("config.yml"))
            .env("DOCKER_CONFIG", home.join("docker"))
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let source = work.path().join("source");
    let name = format!("{}/pinned/busybox:1", registry.host());
    let dir = work.path().join("busybox");
    busybox_image(&dir, &format!("name: {name}\n"));
    run_ok(&mut build(&dir, &source));
    let pushed = run_ok(
        herd_here()
            .args(["push", "--insecure", "--store"])
            .arg(&source)
            .arg(&name),
    );
    let digest = pushed.split_whitespace().nth(1).unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{pushed}");
    let repository = name.trim_end_matches(":1");
    let pinned = format!("{repository}@{digest}");
    let tagged_and_pinned = format!("{name}@{digest}");

    let store = work.path().join("store");
    let pulled = run_ok(
        herd_here()
            .args(["pull", "--insecure", "--store"])
            .arg(&store)
            .arg(&pinned),
    );
    assert!(pulled.contains(&digest), "{pulled}");
    for reference in [&pinned, &tagged_and_pinned] {
        let inspect = run_ok(
            herd()
                .args(["inspect", "--store"])
                .arg(&store)
                .arg(reference),
        );
        let value: Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(value["digest"], digest.as_str(), "{reference}");
    }
    // A digest the store does not have is not taken for the tag's image.
    let other = format!("{name}@sha256:{}", "0".repeat(64));
    let error =
        text(&run_fails(herd().args(["inspect", "--store"]).arg(&store).arg(&other)).stderr);
    assert!(error.contains("not in the store"), "{error}");

    // Pushed again by digest: the registry has it, nothing is uploaded.
    let before = registry.requests();
    let pushed = run_ok(
        herd_here()
            .args(["push", "--insecure", "--store"])
            .arg(&store)
            .arg(&pinned),
    );
    assert!(pushed.contains(&format!("@{digest}")), "{pushed}");
    assert_eq!(registry.uploads_since(before), 0);

    // A dependency pinned by digest.
    let dependent = work.path().join("dependent");
    image_dir(
        &dependent,
        &format!(
            "name: aci.example.com/on-pinned:1\naci:\n  dependencies: [{tagged_and_pinned}]\n"
        ),
        &[("build/10.sh", "echo on-pinned > /seen\n")],
    );
    run_ok(&mut build(&dependent, &store));
    assert_eq!(
        file_in_image(work.path(), &store, "aci.example.com/on-pinned:1", "seen"),
        b"on-pinned\n"
    );

    // Installed into containers-storage under the name without the digest.
    needs(&["skopeo"]); // herd install
    let installed = run_ok(
        herd()
            .args(["install", "--store"])
            .arg(&store)
            .arg(&tagged_and_pinned),
    );
    assert!(installed.contains(&tagged_and_pinned), "{installed}");
    let id = run_ok(podman().args(["image", "inspect", "--format", "{{.Digest}}", &name]));
    let _ = podman().args(["rmi", "--force", &name]).output();
    assert!(!id.trim().is_empty());

    // A name being built cannot carry a digest.
    let wrong = work.path().join("wrong");
    image_dir(
        &wrong,
        &format!("name: aci.example.com/wrong:1@{digest}\n"),
        &[],
    );
    let error = text(&run_fails(&mut build(&wrong, &store)).stderr);
    assert!(error.contains("no digest yet"), "{error}");
}

#[test]
fn gnu_sparse_layers_are_extracted_whole_and_the_pax_form_is_refused() {
    let work = workdir();
    let store = work.path().join("store");
    let busybox = work.path().join("busybox");
    busybox_image(&busybox, "name: aci.example.com/busybox:1\n");
    run_ok(&mut build(&busybox, &store));
    // A 4 MiB file that is a hole but for its last bytes.
    let content = work.path().join("content");
    std::fs::create_dir_all(&content).unwrap();
    let holes = std::fs::File::create(content.join("holes")).unwrap();
    holes.set_len(4 << 20).unwrap();
    std::os::unix::fs::FileExt::write_at(&holes, b"the-end\n", (4 << 20) - 8).unwrap();
    drop(holes);
    for (format, works) in [("gnu", true), ("posix", false)] {
        let tar = work.path().join(format!("{format}.tar"));
        run_ok(
            Command::new(tool("tar"))
                .args(["--create", "--sparse", "--numeric-owner"])
                .arg(format!("--format={format}"))
                .arg("--file")
                .arg(&tar)
                .arg("--directory")
                .arg(&content)
                .arg("holes"),
        );
        let layer = std::fs::read(&tar).unwrap();
        assert!(
            layer.len() < 1 << 20,
            "{format}: tar did not make it sparse"
        );
        let diff_id = herd::digest::Digest::of(&layer).to_string();
        let sparse = format!("aci.example.com/sparse-{format}:1");
        put_tag(
            &store,
            &sparse,
            put_one_layer_image(&store, &layer, &diff_id),
        );
        let dir = work.path().join(format!("on-{format}"));
        image_dir(
            &dir,
            &format!(
                "name: aci.example.com/on-sparse-{format}:1\naci:\n  dependencies:\n  \
                 - aci.example.com/busybox:1\n  - {sparse}\n"
            ),
            &[(
                "build/10.sh",
                "set -e\nwc -c < /holes > /size\ntail -c 8 /holes > /tail\n",
            )],
        );
        let output = build(&dir, &store).output().unwrap();
        let name = format!("aci.example.com/on-sparse-{format}:1");
        if works {
            assert!(output.status.success(), "{format}: {output:?}");
            // (umoci cannot unpack the sparse base: read the own layer.)
            let layers = manifest_of(&store, &name)["layers"].clone();
            let own = std::fs::read(blob(
                &store,
                layers.as_array().unwrap().last().unwrap()["digest"]
                    .as_str()
                    .unwrap(),
            ))
            .unwrap();
            let size = format!("{}\n", 4 << 20);
            assert!(contains(&own, size.as_bytes()), "{format}: size");
            assert!(contains(&own, b"the-end\n"), "{format}: tail");
        } else {
            let error = text(&output.stderr);
            assert!(!output.status.success(), "{format}: {error}");
            assert!(
                error.contains("GNU sparse") && error.contains("holes"),
                "{format}: {error}"
            );
        }
    }
    assert_fsck_ok(&store);
}
