//! Hardening, end to end: hostile image directories and dependency layers,
//! `kill -9` at random moments of `herd build`, `herd push` and `herd gen`,
//! concurrent builds on one store, and secrets in `--explain` output.
//!
//! The kill loops run a few iterations by default; `HERD_SLOW_TESTS=1`
//! runs 50 of each (and the large-file test with bigger files), printing
//! counts and durations (`cargo test --test hardening -- --nocapture`).
//! `HERD_HARDENING_SEED=N` replays the random kill moments of a run.
//!
//! Registry credentials never shown on a failed push are checked by
//! tests/registry.rs (`basic_auth_uses_docker_and_podman_credentials_and_
//! never_shows_them`, `bearer_tokens_are_fetched_with_basic_credentials_
//! and_reused`); not repeated here.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn slow() -> bool {
    std::env::var("HERD_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// Kills a kill loop makes: 50 with HERD_SLOW_TESTS=1, else a few. Runs
/// that end before their kill moment do not count; a loop gives up after
/// `MAX_RUNS_PER_KILL` times as many runs.
fn kills_wanted() -> usize {
    if slow() { 50 } else { 3 }
}

const MAX_RUNS_PER_KILL: usize = 6;

/// A small xorshift generator: the tests need random moments, not a crate.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("HERD_HARDENING_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: HERD_HARDENING_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A duration in [0, max).
    fn below(&mut self, max: Duration) -> Duration {
        let nanos = max.as_nanos().max(1) as u64;
        Duration::from_nanos(self.next() % nanos)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }
}

// ---------------------------------------------------------------------------
// The store, read directly

/// Every tag of the store with its manifest digest, from index.json.
fn tags(store: &Path) -> BTreeMap<String, String> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let name = m["annotations"]["org.opencontainers.image.ref.name"].as_str()?;
            Some((name.to_string(), m["digest"].as_str()?.to_string()))
        })
        .collect()
}

/// The last layer of a tagged image (the image's own) and its diff_id.
fn own_layer(store: &Path, name: &str) -> (PathBuf, String) {
    let manifest = read_json(&blob(store, &tags(store)[name]));
    let config = read_json(&blob(store, manifest["config"]["digest"].as_str().unwrap()));
    let layer = manifest["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let diff_id = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    (blob(store, layer["digest"].as_str().unwrap()), diff_id)
}

/// `herd fsck` must say ok.
fn assert_fsck(store: &Path) {
    let out = run_ok(herd().args(["fsck", "--store"]).arg(store));
    assert_eq!(out.trim(), "ok", "fsck of {}: {out}", store.display());
}

fn build(dir: &Path, store: &Path, extra: &[&str]) -> Command {
    let mut command = herd();
    command
        .arg("build")
        .arg(dir)
        .arg("--store")
        .arg(store)
        .args(extra);
    command
}

/// Builds and returns the digest of `name`.
fn build_ok(dir: &Path, store: &Path, name: &str, extra: &[&str]) -> String {
    built_digest(&run_ok(&mut build(dir, store, extra)), name)
}

/// Whether any blob of the store holds `needle` (grep: fast on big blobs).
fn store_contains(store: &Path, needle: &[u8]) -> bool {
    let status = Command::new(tool("grep"))
        .args([
            "--recursive",
            "--quiet",
            "--fixed-strings",
            "--binary-files=text",
            "--",
        ])
        .arg(OsStr::from_bytes(needle))
        .arg(store.join("blobs/sha256"))
        .status()
        .unwrap();
    status.success()
}

/// A directory tree as a map from relative path bytes to what is there.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
    Other,
}

fn tree(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(Result::unwrap)
        .map(|entry| {
            let relative = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let kind = entry.file_type();
            let node = if kind.is_dir() {
                Node::Dir
            } else if kind.is_symlink() {
                Node::Link(
                    std::fs::read_link(entry.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if kind.is_file() {
                Node::File(std::fs::read(entry.path()).unwrap())
            } else {
                Node::Other
            };
            (relative, node)
        })
        .collect()
}

/// `tree` without herd's own directory (`/herd`, which `files/` cannot hold).
fn tree_without_herd(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut all = tree(root);
    all.retain(|path, _| path != b"herd" && !path.starts_with(b"herd/"));
    all
}

fn assert_same_tree(expected: &BTreeMap<Vec<u8>, Node>, actual: &BTreeMap<Vec<u8>, Node>) {
    let show = |p: &Vec<u8>| String::from_utf8_lossy(p).escape_debug().to_string();
    for (path, node) in expected {
        match actual.get(path) {
            Some(found) => assert_eq!(found, node, "{} differs", show(path)),
            None => panic!("{} is missing", show(path)),
        }
    }
    let extra: Vec<String> = actual
        .keys()
        .filter(|p| !expected.contains_key(*p))
        .map(show)
        .collect();
    assert!(extra.is_empty(), "unexpected entries: {extra:?}");
}

// ---------------------------------------------------------------------------
// 1. Hostile image directories

#[test]
fn symlinks_in_files_are_stored_as_links_and_never_followed() {
    let work = workdir();
    let (dir, store) = (work.path().join("links"), work.path().join("store"));
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let marker = format!("host-only-content-{}", std::process::id());
    std::fs::write(outside.join("secret"), &marker).unwrap();

    let name = "aci.example.com/links:1";
    std::fs::create_dir_all(dir.join("files/sub/deeper")).unwrap();
    std::fs::write(dir.join("aci-manifest.yml"), format!("name: {name}\n")).unwrap();
    let links: &[(&str, PathBuf)] = &[
        ("abs-file", outside.join("secret")),
        ("abs-dir", outside.clone()),
        ("etc-shadow", "/etc/shadow".into()),
        ("sub/up", "../../outside/secret".into()),
        (
            "sub/deeper/far-up",
            "../../../../../../../../etc/passwd".into(),
        ),
    ];
    for (link, target) in links {
        std::os::unix::fs::symlink(target, dir.join("files").join(link)).unwrap();
    }
    build_ok(&dir, &store, name, &["--compression", "none"]);

    // The layer holds the links as written, nothing they point at.
    let (layer, _) = own_layer(&store, name);
    let listing = run_ok(
        Command::new(tool("tar"))
            .args(["--list", "--verbose", "--file"])
            .arg(&layer),
    );
    for (link, target) in links {
        let line = format!("{link} -> {}", target.display());
        assert!(listing.contains(&line), "no `{line}` in:\n{listing}");
    }
    assert!(
        !store_contains(&store, marker.as_bytes()),
        "host content leaked"
    );
    let shadow = std::fs::read("/etc/shadow").unwrap_or_default();
    let root_entry = shadow.split(|&b| b == b'\n').next().unwrap_or_default();
    assert!(root_entry.is_empty() || !store_contains(&store, root_entry));

    // A directory of the image that is itself a link out is refused, not
    // followed (it used to put the host directory into the image).
    for which in ["files", "templates", "attributes"] {
        let dir = work.path().join(format!("linked-{which}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("aci-manifest.yml"),
            format!("name: aci.example.com/linked-{which}:1\n"),
        )
        .unwrap();
        std::os::unix::fs::symlink(&outside, dir.join(which)).unwrap();
        let before = tags(&store);
        let output = run_fails(&mut build(&dir, &store, &["--compression", "none"]));
        let error = text(&output.stderr);
        // templates/ is refused by the template loader's own rule (a
        // link out of the image directory), the others by the build's.
        assert!(
            error.contains(&format!("{which} is a symlink"))
                || (which == "templates" && error.contains("outside the image directory")),
            "{which}: {error}"
        );
        assert_eq!(tags(&store), before);
        assert!(
            !store_contains(&store, marker.as_bytes()),
            "host content leaked"
        );
    }
    assert_fsck(&store);
}

#[test]
fn a_build_script_link_out_of_the_root_is_not_written_through() {
    // The build script runs in a container, but herd copies files/ into
    // the build root on the host afterwards: links the script made to host
    // paths must be replaced, not written through.
    let work = workdir();
    let (dir, store) = (work.path().join("linker"), work.path().join("store"));
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let base = work.path().join("base");
    busybox_image(&base, "name: aci.example.com/linker-base:1\n");
    build_ok(
        &base,
        &store,
        "aci.example.com/linker-base:1",
        &["--compression", "none"],
    );
    let name = "aci.example.com/linker:1";
    std::fs::create_dir_all(dir.join("runlevels/build")).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!("name: {name}\naci:\n  dependencies: [aci.example.com/linker-base:1]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("runlevels/build/10-link.sh"),
        format!(
            "#!/bin/sh\nset -e\nln -s {0} /victim-dir\nln -s {0}/file /victim-file\n",
            outside.display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("files/victim-dir")).unwrap();
    std::fs::write(dir.join("files/victim-dir/pwned"), "x").unwrap();
    std::fs::write(dir.join("files/victim-file"), "y").unwrap();
    build_ok(&dir, &store, name, &["--compression", "none"]);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written outside"
    );
    let (layer, _) = own_layer(&store, name);
    let listing = run_ok(
        Command::new(tool("tar"))
            .args(["--list", "--verbose", "--file"])
            .arg(&layer),
    );
    for (line_start, path) in [
        ("d", "victim-dir/"),
        ("-", "victim-dir/pwned"),
        ("-", "victim-file"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(line_start) && l.ends_with(&format!(" {path}"))),
            "{path} in:\n{listing}"
        );
    }
    assert_fsck(&store);
}

#[test]
fn special_files_in_an_image_directory_are_refused() {
    let work = workdir();
    let store = work.path().join("store");
    type Make = fn(&Path);
    let cases: &[(&str, &str, Make)] = &[
        ("files", "is a fifo", |p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
        }),
        ("files", "is a socket", |p| {
            std::mem::forget(std::os::unix::net::UnixListener::bind(p).unwrap())
        }),
        ("files", "is a device node", |p| {
            // /dev/null's numbers: 1, 3.
            nix::sys::stat::mknod(
                p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap()
        }),
        ("files", "is a device node", |p| {
            nix::sys::stat::mknod(
                p,
                nix::sys::stat::SFlag::S_IFBLK,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                nix::sys::stat::makedev(7, 0),
            )
            .unwrap()
        }),
        ("templates", "is a fifo", |p| {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap()
        }),
    ];
    for (index, (under, message, make)) in cases.iter().enumerate() {
        let dir = work.path().join(format!("special-{index}"));
        std::fs::create_dir_all(dir.join(under).join("etc")).unwrap();
        std::fs::write(
            dir.join("aci-manifest.yml"),
            format!("name: aci.example.com/special-{index}:1\n"),
        )
        .unwrap();
        let special = dir.join(under).join("etc/special");
        make(&special);
        let output = run_fails(&mut build(&dir, &store, &["--compression", "none"]));
        let error = text(&output.stderr);
        assert!(
            error.contains(&format!("{} {message}", special.display())),
            "{under} {message}: {error}"
        );
        assert!(tags(&store).is_empty(), "{message}: a tag was set");
    }
    assert_fsck(&store);
}

/// Names every layer writer and reader must carry unchanged.
fn hostile_names() -> Vec<Vec<u8>> {
    let long = "n".repeat(150);
    let longest = "L".repeat(255);
    vec![
        b"with space".to_vec(),
        b" leading and trailing ".to_vec(),
        b"new\nline".to_vec(),
        b"tab\there".to_vec(),
        b"bad\xff\xfeutf8".to_vec(),
        b"\xe9t\xe9-latin1".to_vec(),
        "unicode-\u{1f600}-\u{301}".as_bytes().to_vec(),
        b"-dash".to_vec(),
        b"quote\"and'back\\slash".to_vec(),
        long.clone().into_bytes(),
        longest.into_bytes(),
        format!("{0}/{0}/{0}/file", "p".repeat(150)).into_bytes(),
        b".wh-not-a-whiteout".to_vec(),
        b"a.b".to_vec(),
        b"a/b".to_vec(),
    ]
}

/// `deep/0/1/.../9/0/...`: 500 directories below `deep`.
fn deep_path() -> String {
    let levels: Vec<String> = (0..500).map(|level| (level % 10).to_string()).collect();
    format!("deep/{}", levels.join("/"))
}

fn write_hostile_tree(files: &Path) {
    for name in hostile_names() {
        let path = files.join(OsStr::from_bytes(&name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut content = b"content of ".to_vec();
        content.extend_from_slice(&name);
        std::fs::write(&path, content).unwrap();
    }
    let links = files.join("links");
    std::fs::create_dir_all(&links).unwrap();
    let long_target = format!("../{}/{}", "t".repeat(120), "x".repeat(120));
    std::os::unix::fs::symlink(&long_target, links.join("long-target")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"../bad\xff\xfeutf8"), links.join("bad"))
        .unwrap();
    std::os::unix::fs::symlink("../new\nline", links.join("new\nline link")).unwrap();
    std::fs::hard_link(
        files.join("with space"),
        links.join(format!("hard {}", "h".repeat(120))),
    )
    .unwrap();
    let deep = files.join(deep_path());
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), "500 levels down").unwrap();
}

#[test]
fn hostile_names_and_500_deep_directories_round_trip_through_the_layer() {
    let work = workdir();
    let (dir, store) = (work.path().join("names"), work.path().join("store"));
    let name = "aci.example.com/names:1";
    busybox_image(&dir, &format!("name: {name}\n"));
    write_hostile_tree(&dir.join("files"));
    let expected = tree(&dir.join("files"));
    build_ok(&dir, &store, name, &["--compression", "none"]);

    // GNU tar reads the layer back as it was written.
    let (layer, diff_id) = own_layer(&store, name);
    let by_tar = work.path().join("by-tar");
    std::fs::create_dir_all(&by_tar).unwrap();
    run_ok(
        Command::new(tool("tar"))
            .arg("--extract")
            .arg("--file")
            .arg(&layer)
            .arg("--directory")
            .arg(&by_tar),
    );
    assert_same_tree(&expected, &tree_without_herd(&by_tar));
    let hard = |root: &Path| {
        root.join("links")
            .join(format!("hard {}", "h".repeat(120)))
            .metadata()
            .unwrap()
            .ino()
            == root.join("with space").metadata().unwrap().ino()
    };
    assert!(hard(&by_tar), "the hard link was not kept");

    // umoci unpacks the whole image the same way.
    let bundle = work.path().join("bundle");
    run_ok(
        Command::new(tool("umoci"))
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:{name}", store.display()))
            .arg(&bundle),
    );
    assert_same_tree(&expected, &tree_without_herd(&bundle.join("rootfs")));
    assert!(hard(&bundle.join("rootfs")));

    // herd's own reader: an image with a build script on this one gets it
    // extracted into the store's layer cache.
    let child = work.path().join("child");
    busybox_image(
        &child,
        "name: aci.example.com/names-child:1\naci:\n  dependencies: [aci.example.com/names:1]\n",
    );
    std::fs::remove_dir_all(child.join("files")).unwrap();
    std::fs::create_dir_all(child.join("runlevels/build")).unwrap();
    std::fs::write(
        child.join("runlevels/build/10-check.sh"),
        format!(
            "#!/bin/sh\nset -e\ntest -f '/with space'\ncat /{}/bottom\n",
            deep_path()
        ),
    )
    .unwrap();
    build_ok(
        &child,
        &store,
        "aci.example.com/names-child:1",
        &["--compression", "none"],
    );
    let cached = store
        .join("cache/layers")
        .join(diff_id.trim_start_matches("sha256:"))
        .join("rootfs");
    assert_same_tree(&expected, &tree_without_herd(&cached));
    assert!(hard(&cached));
    assert_fsck(&store);
}

/// Peak resident memory of a command, from `/usr/bin/time -v`, in KiB.
fn peak_rss_kib(command: &mut Command) -> (u64, Duration) {
    let mut timed = Command::new(tool("time"));
    timed
        .arg("-v")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => timed.env(key, value),
            None => timed.env_remove(key),
        };
    }
    let started = Instant::now();
    let output = timed.output().unwrap();
    let elapsed = started.elapsed();
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{command:?} failed:\n{stderr}");
    let kib = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .unwrap_or_else(|| panic!("no peak RSS in:\n{stderr}"))
        .parse()
        .unwrap();
    (kib, elapsed)
}

#[test]
fn a_huge_file_streams_through_a_build_in_little_memory() {
    let work = workdir();
    let (dir, store) = (work.path().join("huge"), work.path().join("store"));
    let name = "aci.example.com/huge:1";
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("aci-manifest.yml"), format!("name: {name}\n")).unwrap();
    // Sparse: it costs no disk to make, but herd reads every byte of it.
    let gib: u64 = 1 << 30;
    let runs: Vec<(u64, &str)> = if slow() {
        vec![(2 * gib, "none"), (gib, "gzip"), (25 * gib, "zstd")]
    } else {
        vec![(gib, "none")]
    };
    for (size, compression) in runs {
        let file = std::fs::File::create(dir.join("files/huge")).unwrap();
        file.set_len(size).unwrap();
        drop(file);
        let (kib, elapsed) = peak_rss_kib(&mut build(
            &dir,
            &store,
            &["--compression", compression, "--no-cache"],
        ));
        eprintln!(
            "huge file: {} GiB, --compression {compression}: peak RSS {} MiB, {:.1} s",
            size / gib,
            kib / 1024,
            elapsed.as_secs_f64()
        );
        assert!(kib < 100 * 1024, "herd build peaked at {kib} KiB");
        let (layer, _) = own_layer(&store, name);
        if compression == "none" {
            assert!(std::fs::metadata(&layer).unwrap().len() > size);
            let listing = run_ok(
                Command::new(tool("tar"))
                    .args(["--list", "--verbose", "--file"])
                    .arg(&layer),
            );
            let line = listing.lines().find(|l| l.ends_with(" huge")).unwrap();
            assert!(line.contains(&format!(" {size} ")), "{line}");
        }
        // Keep the disk free for the next size.
        run_ok(herd().args(["gc", "--store"]).arg(&store));
    }
    assert_fsck(&store);
}

// ---------------------------------------------------------------------------
// 2. Hostile dependency layers

/// One entry of a hand-made tar: path, type flag, link target, content.
type TarEntry<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

/// A tar stream of `entries`, with headers written by hand so hostile
/// names reach the reader unchanged.
fn raw_tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link, content) in entries {
        let mut header = [0u8; 512];
        header[..path.len()].copy_from_slice(path);
        header[100..107].copy_from_slice(b"0000644");
        header[108..115].copy_from_slice(b"0000000");
        header[116..123].copy_from_slice(b"0000000");
        header[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
        header[136..147].copy_from_slice(b"00000000000");
        header[156] = *kind;
        header[157..157 + link.len()].copy_from_slice(link);
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// Puts an image whose only layer is `layer` (an uncompressed tar) into
/// the store under `name`, the way a registry or another tool could.
fn put_image(store: &Path, name: &str, layer: &[u8]) {
    let diff_id = herd::digest::Digest::of(layer).to_string();
    put_tag(store, name, put_one_layer_image(store, layer, &diff_id));
}

/// Names of every entry below `dir`, for "nothing appeared" checks.
fn names_below(dir: &Path) -> Vec<String> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn hostile_dependency_layers_are_refused_and_nothing_lands_outside() {
    let work = workdir();
    let store = work.path().join("store");
    empty_store(&store);
    run_ok(herd().args(["fsck", "--store"]).arg(&store));
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let absolute = std::env::temp_dir().join(format!("herd-hostile-abs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&absolute);
    let outside_bytes = outside.as_os_str().as_bytes().to_vec();
    let absolute_file = absolute.join("pwned");
    let absolute_bytes = absolute_file.as_os_str().as_bytes().to_vec();
    let relative_out = format!(
        "{}{}",
        "../".repeat(12),
        outside.display().to_string().trim_start_matches('/')
    );
    // An earlier extracted layer in the cache: a hostile layer must not
    // take it (or anything else of the cache) away.
    // (A verified entry: its tree in rootfs/, the record beside it.)
    let canary_entry = store.join("cache/layers").join("c".repeat(64));
    let canary = canary_entry.join("rootfs");
    std::fs::create_dir_all(&canary).unwrap();
    std::fs::write(canary.join("keep"), "keep").unwrap();
    std::fs::write(
        canary_entry.join("verified"),
        json!({"diffId": format!("sha256:{}", "c".repeat(64)), "blob": "", "how": "test"})
            .to_string(),
    )
    .unwrap();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[(b"../escape-dotdot", b'0', b"", b"x")]),
            "climbs out of the root with '..'",
        ),
        (
            "deep-dotdot",
            raw_tar(&[(b"a/../../../escape-deep", b'0', b"", b"x")]),
            "'..'",
        ),
        (
            "absolute",
            raw_tar(&[(&absolute_bytes, b'0', b"", b"x")]),
            "absolute path",
        ),
        (
            "through-absolute-link",
            raw_tar(&[
                (b"link", b'2', &outside_bytes, b""),
                (b"link/pwned", b'0', b"", b"x"),
            ]),
            "goes through the symlink",
        ),
        (
            "through-relative-link",
            raw_tar(&[
                (b"rel", b'2', relative_out.as_bytes(), b""),
                (b"rel/pwned", b'0', b"", b"x"),
            ]),
            "goes through the symlink",
        ),
        (
            "dir-through-link",
            raw_tar(&[
                (b"d", b'2', &outside_bytes, b""),
                (b"d/sub/", b'5', b"", b""),
            ]),
            "goes through the symlink",
        ),
        (
            "hard-link-out",
            raw_tar(&[(b"hard", b'1', b"../../../../etc/passwd", b"")]),
            "'..'",
        ),
        (
            "hard-link-absolute",
            raw_tar(&[(b"hard", b'1', b"/etc/passwd", b"")]),
            "absolute path",
        ),
        (
            "hard-link-through-link",
            raw_tar(&[
                (b"l", b'2', b"/etc/passwd", b""),
                (b"hard", b'1', b"l", b""),
            ]),
            "goes through the symlink",
        ),
        (
            "whiteout-of-parent",
            raw_tar(&[(b".wh...", b'0', b"", b"")]),
            "whiteout",
        ),
        (
            "whiteout-of-self",
            raw_tar(&[(b"a/.wh..", b'0', b"", b"")]),
            "whiteout",
        ),
    ];
    let passwd = std::fs::read("/etc/passwd").unwrap();
    for (case, layer, message) in &cases {
        let base = format!("aci.example.com/hostile-{case}:1");
        put_image(&store, &base, layer);
        let dir = work.path().join(format!("on-{case}"));
        std::fs::create_dir_all(dir.join("runlevels/build")).unwrap();
        std::fs::write(
            dir.join("aci-manifest.yml"),
            format!("name: aci.example.com/on-{case}:1\naci:\n  dependencies: [{base}]\n"),
        )
        .unwrap();
        std::fs::write(dir.join("runlevels/build/10.sh"), "#!/bin/sh\ntrue\n").unwrap();
        let output = run_fails(&mut build(&dir, &store, &["--compression", "none"]));
        let error = text(&output.stderr);
        assert!(
            error.contains(message),
            "{case}: expected {message:?} in:\n{error}"
        );
        assert!(error.contains("extracting layer"), "{case}: {error}");

        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "{case}: wrote outside"
        );
        assert!(!absolute.exists(), "{case}: wrote {}", absolute.display());
        let escaped: Vec<String> = names_below(work.path())
            .into_iter()
            .filter(|n| n.starts_with("escape-") || n == "pwned")
            .collect();
        assert!(escaped.is_empty(), "{case}: {escaped:?} appeared");
        assert_eq!(
            std::fs::read(canary.join("keep")).unwrap(),
            b"keep",
            "{case}"
        );
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd, "{case}");
        let partial: Vec<String> = names_below(&store.join("cache/layers"))
            .into_iter()
            .filter(|n| n.starts_with(".partial-"))
            .collect();
        assert!(partial.is_empty(), "{case}: left {partial:?}");
        assert!(!tags(&store).contains_key(&format!("aci.example.com/on-{case}:1")));
    }
    assert_fsck(&store);
}

/// `herd try` of a directory on the image `base` (one hostile `layer`,
/// put into a new store): it must fail; its stderr, once checked that it
/// wrote no output.
fn try_on_hostile_base(base: &str, layer: &[u8]) -> (Workdir, String) {
    let work = workdir();
    let store = work.path().join("store");
    empty_store(&store);
    put_image(&store, base, layer);
    let dir = work.path().join("on-hostile");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("aci-manifest.yml"),
        format!("name: aci.example.com/on-hostile:1\naci:\n  dependencies: [{base}]\n"),
    )
    .unwrap();
    let out = work.path().join("out");
    let output = run_fails(
        herd()
            .arg("try")
            .arg(&dir)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(&store),
    );
    assert!(!out.exists(), "herd try wrote {}", out.display());
    (work, text(&output.stderr))
}

#[test]
fn herd_try_refuses_a_dependency_template_path_that_climbs_out() {
    let base = "aci.example.com/hostile-templates:1";
    let (work, error) = try_on_hostile_base(
        base,
        &raw_tar(&[
            (b"herd/templates/etc/fine.tmpl", b'0', b"", b"fine\n"),
            (
                b"herd/templates/../../../../../../escape-try.tmpl",
                b'0',
                b"",
                b"x",
            ),
        ]),
    );
    assert!(
        error.contains(base) && error.contains("expected a plain relative path"),
        "{error}"
    );
    assert!(!Path::new("/escape-try.tmpl").exists() && !Path::new("/escape-try").exists());
    let escaped: Vec<String> = names_below(work.path())
        .into_iter()
        .filter(|n| n.starts_with("escape-"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?} appeared");
}

/// Many dependency templates each under the per-file bound are stopped at
/// the layer's total (64 MiB), not read into memory whole.
#[test]
fn herd_try_refuses_a_dependency_layer_with_too_many_template_bytes() {
    let base = "aci.example.com/hostile-many-templates:1";
    let content = vec![b'x'; 4 << 20];
    let names: Vec<String> = (0..17).map(|i| format!("herd/templates/t{i:02}")).collect();
    let entries: Vec<TarEntry> = names
        .iter()
        .map(|n| (n.as_bytes(), b'0', &b""[..], content.as_slice()))
        .collect();
    let (_work, error) = try_on_hostile_base(base, &raw_tar(&entries));
    assert!(
        error.contains(&format!(
            "{base}: a layer holds more than {} bytes",
            64 << 20
        )),
        "{error}"
    );
}

/// A template that doubles a variable in a loop (2^40 bytes) would take
/// the machine's memory: herd stops it at its render budget with a
/// message, in well under a gigabyte, whether herd try or a unit
/// template of herd gen renders it.
#[test]
fn a_template_whose_variables_grow_without_bound_is_stopped_with_a_message() {
    let work = workdir();
    let doubling = "{% set_global s = \"xxxxxxxx\" %}{% for i in range(end=40) %}{% set_global s = s ~ s %}{% endfor %}{{ s | length }}\n";
    let image = work.path().join("image");
    std::fs::create_dir_all(image.join("templates")).unwrap();
    std::fs::write(
        image.join("aci-manifest.yml"),
        "name: aci.example.com/doubling:1\n",
    )
    .unwrap();
    std::fs::write(image.join("templates/grow.tmpl"), doubling).unwrap();
    let env = work.path().join("env/grow");
    std::fs::create_dir_all(env.join("services/web")).unwrap();
    std::fs::write(env.join("config.yml"), "envName: grow\n").unwrap();
    std::fs::write(
        env.join("services/web/service-manifest.yml"),
        "containers: [aci.example.com/doubling:1]\nnodes: [{hostname: host1}]\n",
    )
    .unwrap();
    std::fs::write(env.join("services/web/unit.tmpl"), doubling).unwrap();
    let out = work.path().join("out");
    for (args, template) in [
        (vec!["try".into(), image.display().to_string()], "grow.tmpl"),
        (
            vec![
                "gen".into(),
                env.display().to_string(),
                "--out".into(),
                out.display().to_string(),
            ],
            "services/web/unit.tmpl",
        ),
    ] {
        let output = Command::new(tool("time"))
            .args(["-f", "peak %M KiB"])
            .arg(herd_binary())
            .args(&args)
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("herd: rendering the template {template}"))
                && stderr.contains("needed more than 512 MiB of memory"),
            "{args:?}: {stderr}"
        );
        let peak: u64 = stderr
            .lines()
            .find_map(|l| l.strip_prefix("peak ")?.strip_suffix(" KiB")?.parse().ok())
            .unwrap_or_else(|| panic!("no peak in {stderr}"));
        assert!(peak < 1 << 20, "{args:?}: peak {peak} KiB");
    }
    assert!(!out.exists(), "herd gen wrote {}", out.display());
}

// ---------------------------------------------------------------------------
// 3. Crash safety: kill -9 at random moments

/// Starts `command` and SIGKILLs it after `delay` unless it ended first.
/// `None` when it was killed, else how long it ran (a whole run). A run
/// that ended by itself must have succeeded.
fn kill_after(command: &mut Command, delay: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = started + delay;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{command:?} failed by itself: {status}");
            return Some(started.elapsed());
        }
        if Instant::now() >= deadline {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(2).min(delay / 4 + Duration::from_micros(100)));
    }
}

/// How long `command` takes when left alone.
fn duration_of(command: &mut Command) -> Duration {
    let started = Instant::now();
    run_ok(command);
    started.elapsed()
}

/// Unmounts what `mounted_under` finds, so a failed test's work directory
/// can still be removed; returns how many there were.
fn unmount_leftovers(store: &Path) -> usize {
    let mut points = mounted_under(store);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in &points {
        let _ = nix::mount::umount2(point.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    points.len()
}

/// Files under the store's tmp/ (leftovers `herd clean` removes).
fn tmp_leftovers(store: &Path) -> usize {
    tmp_entries(store).len()
}

/// Temporary files and directories outside tmp/ that an interrupted write
/// leaves: `.herd-tmp-*` beside index.json or a cache record, and
/// `.partial-*` layer extractions in the cache.
fn stray_temporaries(store: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(store)
        .max_depth(3)
        .into_iter()
        .filter_entry(|e| e.path() != store.join("tmp") && e.path() != store.join("blobs"))
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name().to_string_lossy();
            name.starts_with(".herd-tmp-") || name.starts_with(".partial-")
        })
        .map(|e| e.into_path())
        .collect()
}

/// Makes `path` look two hours old (`herd clean` leaves young files: they
/// may belong to a running herd).
fn backdate(path: &Path) {
    run_ok(
        Command::new(tool("touch"))
            .args(["-h", "-d", "2 hours ago"])
            .arg(path),
    );
}

#[test]
fn builds_killed_at_random_moments_leave_the_store_consistent() {
    let work = workdir();
    let store = work.path().join("store");
    let mut rng = Rng::new("build kill loop");

    // An earlier image that must survive every kill unchanged.
    let base = work.path().join("base");
    busybox_image(&base, "name: aci.example.com/crash-base:1\n");
    build_ok(
        &base,
        &store,
        "aci.example.com/crash-base:1",
        &["--compression", "none"],
    );
    // A files-only image with 32 MB to archive, and one with a build
    // script that runs in runc on the base.
    let files = work.path().join("files-image");
    std::fs::create_dir_all(files.join("files")).unwrap();
    std::fs::write(
        files.join("aci-manifest.yml"),
        "name: aci.example.com/crash-files:1\n",
    )
    .unwrap();
    std::fs::write(files.join("files/data"), rng.bytes(32 << 20)).unwrap();
    let scripted = work.path().join("scripted-image");
    std::fs::create_dir_all(scripted.join("runlevels/build-late")).unwrap();
    std::fs::write(
        scripted.join("aci-manifest.yml"),
        "name: aci.example.com/crash-scripted:1\naci:\n  dependencies: [aci.example.com/crash-base:1]\n",
    )
    .unwrap();
    std::fs::write(
        scripted.join("runlevels/build-late/10.sh"),
        "#!/bin/sh\nset -e\ncat /stamp > /copy\nhead -c 4000000 /bin/busybox > /blob\n",
    )
    .unwrap();
    std::fs::create_dir_all(scripted.join("files")).unwrap();

    let images = [
        (&scripted, "aci.example.com/crash-scripted:1", "none"),
        (&files, "aci.example.com/crash-files:1", "none"),
        (&files, "aci.example.com/crash-files:1", "zstd"),
    ];
    let mut typical = Vec::new();
    for (dir, _, compression) in images {
        std::fs::write(dir.join("files/stamp"), "warm-up").unwrap();
        typical.push(duration_of(&mut build(
            dir,
            &store,
            &["--compression", compression],
        )));
    }
    let started = Instant::now();
    let (mut killed, mut runs) = (0, 0);
    // Where the kills landed, told by what each left behind.
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    while killed < kills_wanted() && runs < kills_wanted() * MAX_RUNS_PER_KILL {
        let (iteration, which) = (runs, runs % images.len());
        let (dir, name, compression) = images[which];
        std::fs::write(dir.join("files/stamp"), format!("run {iteration}")).unwrap();
        let before = tags(&store);
        let tmp_before = tmp_entries(&store);
        let delay = rng.below(typical[which]);
        let outcome = kill_after(
            &mut build(dir, &store, &["--compression", compression]),
            delay,
        );
        runs += 1;

        assert_fsck(&store);
        let after = tags(&store);
        for (tag, digest) in &before {
            if tag != name {
                assert_eq!(
                    after.get(tag),
                    Some(digest),
                    "{tag} changed (run {iteration})"
                );
            }
        }
        let next_started = Instant::now();
        let next = build_ok(dir, &store, name, &["--compression", compression]);
        match outcome {
            // A run that finished was a whole build: the window the next
            // kill of this image is chosen in.
            Some(whole) => typical[which] = whole,
            None => {
                killed += 1;
                let left: Vec<String> = tmp_entries(&store)
                    .into_iter()
                    .filter(|e| !tmp_before.contains(e))
                    .collect();
                let phase = if after.get(name) != before.get(name) {
                    "after the tag was set"
                } else if left.iter().any(|e| e.starts_with("blob-")) {
                    "mid-write of a blob"
                } else if left.iter().any(|e| e.starts_with("build-")) {
                    "with the build root mounted"
                } else {
                    "before writing anything"
                };
                *phases.entry(phase).or_default() += 1;
                // Unless the killed build got as far as its tag (and maybe
                // its cache record), the next one was a whole build.
                if after.get(name) == before.get(name) {
                    typical[which] = next_started.elapsed();
                }
            }
        }
        if let Some(left) = after.get(name) {
            assert!(
                Some(left) == before.get(name) || *left == next,
                "{name} pointed at {left}: neither the old nor the new image"
            );
        }
        assert_fsck(&store);
        assert_eq!(
            tags(&store)["aci.example.com/crash-base:1"],
            before["aci.example.com/crash-base:1"]
        );
    }
    assert!(
        killed >= kills_wanted(),
        "only {killed} of {runs} builds were killed"
    );

    // What the killed builds left: build roots still mounted, temporary
    // files. `herd clean` takes them away (it leaves what is younger than a
    // minute, so they are made older first).
    let (mounts, leftovers) = (mounted_under(&store).len(), tmp_leftovers(&store));
    let stray_before = stray_temporaries(&store);
    for entry in tmp_entries(&store)
        .into_iter()
        .map(|e| store.join("tmp").join(e))
        .chain(stray_before.iter().cloned())
    {
        backdate(&entry);
    }
    run_ok(herd().args(["clean", "--store"]).arg(&store));
    let still_mounted = mounted_under(&store);
    let unmounted = unmount_leftovers(&store);
    assert!(
        still_mounted.is_empty(),
        "herd clean left {still_mounted:?} mounted"
    );
    assert_eq!(unmounted, 0);
    assert_eq!(tmp_leftovers(&store), 0, "herd clean left files in tmp/");
    let stray = stray_temporaries(&store);
    assert!(stray.is_empty(), "herd clean left {stray:?}");
    assert_fsck(&store);
    build_ok(
        &scripted,
        &store,
        "aci.example.com/crash-scripted:1",
        &["--compression", "none"],
    );
    eprintln!(
        "build kill loop: {runs} runs, {killed} killed mid-build ({phases:?}), {} finished first; \
         store consistent after every one; {} s; killed builds left {leftovers} entries in tmp/, \
         {mounts} build roots mounted and {} temporary files elsewhere, all removed by herd clean",
        runs - killed,
        started.elapsed().as_secs(),
        stray_before.len(),
    );
}

#[test]
fn pushes_killed_at_random_moments_leave_the_store_consistent() {
    let registry = Registry::start();
    let work = workdir();
    let store = work.path().join("store");
    let config = work.path().join("herd-config.yml");
    std::fs::write(
        &config,
        format!(
            "registries:\n  \"{}\": {{insecure: true}}\n",
            registry.host()
        ),
    )
    .unwrap();
    let herd_with = |args: &[&str]| {
        let mut command = herd();
        command
            .args(args)
            .arg("--store")
            .arg(&store)
            .env("HERD_CONFIG", &config)
            .env("HOME", work.path())
            .env("DOCKER_CONFIG", work.path().join("docker"))
            .env("XDG_RUNTIME_DIR", work.path().join("run"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("REGISTRY_AUTH_FILE");
        command
    };
    let mut rng = Rng::new("push kill loop");
    let dir = work.path().join("app");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let earlier = format!("{}/crash/earlier:1", registry.host());
    std::fs::write(dir.join("aci-manifest.yml"), format!("name: {earlier}\n")).unwrap();
    std::fs::write(dir.join("files/data"), rng.bytes(16 << 20)).unwrap();
    let earlier_digest = build_ok(&dir, &store, &earlier, &["--compression", "none"]);
    // A whole push of an image like the ones the loop pushes: the first
    // window the kills are chosen in.
    let started_push = Instant::now();
    run_ok(&mut herd_with(&["push", &earlier]));
    let mut typical = started_push.elapsed();
    let inspect = |name: &str| -> Value {
        let out = run_ok(
            Command::new(tool("skopeo"))
                .args(["inspect", "--tls-verify=false"])
                .arg(format!("docker://{name}")),
        );
        serde_json::from_str(&out).unwrap()
    };
    // The registry's storage, to tell where a kill landed: uploads it
    // started and never finished, tags it has.
    let repository = registry
        .storage()
        .join("docker/registry/v2/repositories/crash/app");
    let uploads = || std::fs::read_dir(repository.join("_uploads")).map_or(0, |d| d.count());

    let started = Instant::now();
    let (mut killed, mut runs) = (0, 0);
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    while killed < kills_wanted() && runs < kills_wanted() * MAX_RUNS_PER_KILL {
        let iteration = runs;
        // New content each time, so the push has blobs to upload.
        let name = format!("{}/crash/app:{iteration}", registry.host());
        std::fs::write(dir.join("aci-manifest.yml"), format!("name: {name}\n")).unwrap();
        std::fs::write(dir.join("files/data"), rng.bytes(16 << 20)).unwrap();
        let digest = build_ok(&dir, &store, &name, &["--compression", "none"]);
        let before = tags(&store);
        let uploads_before = uploads();
        let outcome = kill_after(&mut herd_with(&["push", &name]), rng.below(typical));
        runs += 1;

        assert_fsck(&store);
        assert_eq!(tags(&store), before, "a push changed tags");
        if let Ok(bytes) = std::fs::read(store.join("registry-blobs.json")) {
            serde_json::from_slice::<Value>(&bytes).expect("registry-blobs.json is torn");
        }
        match outcome {
            Some(whole) => typical = whole,
            None => {
                killed += 1;
                let tagged = repository
                    .join("_manifests/tags")
                    .join(iteration.to_string())
                    .exists();
                let phase = if tagged {
                    "after the manifest was pushed"
                } else if uploads() > uploads_before {
                    "mid-upload of a blob"
                } else {
                    "between uploads (or before the first)"
                };
                *phases.entry(phase).or_default() += 1;
            }
        }
        let out = run_ok(&mut herd_with(&["push", &name]));
        assert!(out.contains(&digest), "{out}");
        assert_eq!(inspect(&name)["Digest"], digest.as_str());
    }
    assert!(
        killed >= kills_wanted(),
        "only {killed} of {runs} pushes were killed"
    );
    // The image pushed before the loop is still there, whole: skopeo
    // copies it back out and the digest is the same.
    assert_eq!(inspect(&earlier)["Digest"], earlier_digest.as_str());
    run_ok(
        Command::new(tool("skopeo"))
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{earlier}"))
            .arg(oci_ref(&work.path().join("copy"), "earlier")),
    );
    eprintln!(
        "push kill loop: {runs} runs, {killed} killed mid-push ({phases:?}), {} finished first; \
         store consistent and the next push complete after every one; {} s",
        runs - killed,
        started.elapsed().as_secs()
    );
}

/// An environment whose one service has `nodes` nodes; `version` changes
/// every unit.
fn write_environment(env: &Path, nodes: usize, version: &str) {
    std::fs::create_dir_all(env.join("attributes")).unwrap();
    std::fs::create_dir_all(env.join("services/web/attributes")).unwrap();
    std::fs::write(
        env.join("config.yml"),
        "envName: crash\nregistry: {domain: aci.example.com}\n",
    )
    .unwrap();
    std::fs::write(
        env.join("attributes/env.yml"),
        format!("default: {{version: \"{version}\"}}\n"),
    )
    .unwrap();
    let mut manifest = String::from("containers: [aci.example.com/web:1]\nnodes:\n");
    for node in 0..nodes {
        manifest.push_str(&format!("  - hostname: web{node}\n"));
    }
    std::fs::write(env.join("services/web/service-manifest.yml"), manifest).unwrap();
}

#[test]
fn gen_killed_at_random_moments_leaves_the_old_or_the_new_units() {
    let work = workdir();
    let mut rng = Rng::new("gen kill loop");
    let nodes = if slow() { 3000 } else { 1000 };
    let env = work.path().join("env/crash");
    let gen_into = |out: &Path| {
        let mut command = herd();
        command.arg("gen").arg(&env).arg("--out").arg(out);
        command
    };
    // The two complete outputs a reader may see.
    let mut expected = vec![];
    for version in ["a", "b"] {
        write_environment(&env, nodes, version);
        let reference = work.path().join(format!("reference-{version}"));
        run_ok(&mut gen_into(&reference));
        let files: BTreeMap<PathBuf, Vec<u8>> = snapshot(&reference)
            .into_iter()
            .map(|(p, c)| (p.strip_prefix(&reference).unwrap().to_path_buf(), c))
            .collect();
        expected.push(files);
    }
    assert_ne!(expected[0], expected[1]);
    let out = work.path().join("units/crash");
    write_environment(&env, nodes, "a");
    let mut typical = duration_of(&mut gen_into(&out));
    let relative = |dir: &Path| -> BTreeMap<PathBuf, Vec<u8>> {
        snapshot(dir)
            .into_iter()
            .map(|(p, c)| (p.strip_prefix(dir).unwrap().to_path_buf(), c))
            .collect()
    };
    let temporaries = || -> Vec<String> {
        std::fs::read_dir(out.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "crash" && n != ".crash.herd-lock")
            .collect()
    };
    let started = Instant::now();
    let (mut killed, mut runs) = (0, 0);
    let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
    let mut current = 0;
    while killed < kills_wanted() && runs < kills_wanted() * MAX_RUNS_PER_KILL {
        let wanted = 1 - current;
        write_environment(&env, nodes, ["a", "b"][wanted]);
        let temporaries_before = temporaries();
        // A little past the typical run, to catch the end as well: the
        // swap and the removal of the old units.
        let outcome = kill_after(&mut gen_into(&out), rng.below(typical.mul_f64(1.1)));
        runs += 1;
        let seen = relative(&out);
        assert!(
            seen == expected[current] || seen == expected[wanted],
            "the output is neither the old nor the new units ({} files)",
            seen.len()
        );
        let complete = seen == expected[wanted];
        if outcome.is_none() {
            killed += 1;
            let left_one = temporaries().len() > temporaries_before.len();
            let phase = match (complete, left_one) {
                (true, true) => "after the swap, removing the old units",
                (true, false) => "after the swap and the removal",
                (false, true) => "mid-write of the new units",
                (false, false) => "before writing (reading, rendering)",
            };
            *phases.entry(phase).or_default() += 1;
        }
        let next_started = Instant::now();
        run_ok(&mut gen_into(&out));
        match outcome {
            Some(whole) => typical = whole,
            // The next run wrote everything unless the killed one swapped.
            None if !complete => typical = next_started.elapsed(),
            None => {}
        }
        assert!(
            relative(&out) == expected[wanted],
            "the next gen did not write the new units"
        );
        current = wanted;
    }
    assert!(
        killed >= kills_wanted(),
        "only {killed} of {runs} runs were killed"
    );
    // The last run finished: it removed what the killed ones left.
    let leftovers = temporaries();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!(
        "gen kill loop: {runs} runs of {nodes} units, {killed} killed ({phases:?}), {} finished \
         first; the old or the new units, complete, after every one; {} s; \
         no temporary directory left beside the output",
        runs - killed,
        started.elapsed().as_secs(),
    );
}

// ---------------------------------------------------------------------------
// 4. Concurrent builds on one store

#[test]
fn concurrent_builds_on_one_store_all_succeed_and_leave_it_consistent() {
    let work = workdir();
    let store = work.path().join("store");
    let base = work.path().join("base");
    busybox_image(&base, "name: aci.example.com/shared-base:1\n");
    build_ok(
        &base,
        &store,
        "aci.example.com/shared-base:1",
        &["--compression", "none"],
    );
    let scripted = |name: &str| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(dir.join("runlevels/build-late")).unwrap();
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(
            dir.join("aci-manifest.yml"),
            format!(
                "name: aci.example.com/{name}:1\naci:\n  dependencies: [aci.example.com/shared-base:1]\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("runlevels/build-late/10.sh"),
            "#!/bin/sh\nset -e\ncat /stamp > /copy\nls /bin > /listing\n",
        )
        .unwrap();
        dir
    };
    let same = scripted("same");
    let other = scripted("other");
    let plain = work.path().join("plain");
    std::fs::create_dir_all(plain.join("files")).unwrap();
    std::fs::write(
        plain.join("aci-manifest.yml"),
        "name: aci.example.com/plain:1\n",
    )
    .unwrap();

    let rounds = if slow() { 10 } else { 2 };
    let started = Instant::now();
    for round in 0..rounds {
        for dir in [&same, &other, &plain] {
            std::fs::write(dir.join("files/stamp"), format!("round {round}")).unwrap();
        }
        // A fresh layer cache each round: the three scripted builds race to
        // extract the base's layers.
        let _ = std::fs::remove_dir_all(store.join("cache/layers"));
        let jobs = [
            (&same, "aci.example.com/same:1"),
            (&same, "aci.example.com/same:1"),
            (&other, "aci.example.com/other:1"),
            (&plain, "aci.example.com/plain:1"),
        ];
        let children: Vec<(Child, &str)> = jobs
            .iter()
            .map(|(dir, name)| {
                let child = build(dir, &store, &["--compression", "none", "--no-cache"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (child, *name)
            })
            .collect();
        let mut digests = vec![];
        for (child, name) in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "round {round}, {name}:\n{}",
                text(&output.stderr)
            );
            digests.push(built_digest(&text(&output.stdout), name));
        }
        assert_eq!(digests[0], digests[1], "identical builds differ");
        assert_fsck(&store);
        let tags = tags(&store);
        for (index, (_, name)) in jobs.iter().enumerate() {
            assert_eq!(
                tags.get(*name),
                Some(&digests[index]),
                "round {round}: {name}"
            );
        }
        assert!(tags.contains_key("aci.example.com/shared-base:1"));
    }
    eprintln!(
        "concurrent builds: {rounds} rounds of 4 processes on one store, all consistent; {} s",
        started.elapsed().as_secs()
    );
}

// ---------------------------------------------------------------------------
// 6. Secrets

const SECRETS: &[&str] = &[
    "hunter2-db-password",
    "tok-3x4mple",
    "api-k3y-value",
    "root-pw-in-a-map",
    "listed-credential",
    "node-passwd-value",
];

fn assert_no_secret(what: &str, output: &str) {
    for secret in SECRETS {
        assert!(!output.contains(secret), "{what} shows {secret}:\n{output}");
    }
}

#[test]
fn explain_and_logs_never_show_secret_attributes() {
    let work = workdir();
    let image = work.path().join("image");
    std::fs::create_dir_all(image.join("attributes")).unwrap();
    std::fs::write(
        image.join("aci-manifest.yml"),
        "name: aci.example.com/secretive:1\n",
    )
    .unwrap();
    std::fs::write(
        image.join("attributes/app.yml"),
        "default:\n  db:\n    user: app-user\n    password: hunter2-db-password\n  \
         auth_token: tok-3x4mple\n  API_KEY: api-k3y-value\n  passwords:\n    root: root-pw-in-a-map\n  \
         credentials: [listed-credential]\n  port: 8080\n",
    )
    .unwrap();
    for format in ["yaml", "json"] {
        let out =
            run_ok(
                herd()
                    .arg("attributes")
                    .arg(&image)
                    .args(["--explain", "--format", format]),
            );
        assert_no_secret("herd attributes DIR --explain", &out);
        for shown in [
            "app-user",
            "8080",
            "db.password",
            "passwords.root",
            "******",
        ] {
            assert!(out.contains(shown), "{format}: no {shown} in:\n{out}");
        }
    }
    // A build's logs, at the most verbose.
    let store = work.path().join("store");
    let output = build(&image, &store, &["-vv", "--compression", "none"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_no_secret(
        "herd build -vv",
        &(text(&output.stdout) + &text(&output.stderr)),
    );

    // An environment: secrets from the environment, the service and the node.
    let env = work.path().join("env/prod");
    std::fs::create_dir_all(env.join("attributes")).unwrap();
    std::fs::create_dir_all(env.join("services/db/attributes")).unwrap();
    std::fs::write(
        env.join("config.yml"),
        "envName: prod\nregistry: {domain: aci.example.com}\n",
    )
    .unwrap();
    std::fs::write(
        env.join("attributes/env.yml"),
        "default:\n  db: {user: app-user, password: hunter2-db-password}\n  passwords: {root: root-pw-in-a-map}\n",
    )
    .unwrap();
    std::fs::write(
        env.join("services/db/attributes/svc.yml"),
        "override:\n  auth_token: tok-3x4mple\n  API_KEY: api-k3y-value\n  credentials: [listed-credential]\n",
    )
    .unwrap();
    std::fs::write(
        env.join("services/db/service-manifest.yml"),
        "containers: [aci.example.com/db:1]\nnodes:\n  - hostname: db1\n    passwd: node-passwd-value\n    port: 8080\n",
    )
    .unwrap();
    for format in ["yaml", "json"] {
        let out = run_ok(herd().arg("attributes").arg(&env).args([
            "db",
            "db1",
            "--explain",
            "--format",
            format,
        ]));
        assert_no_secret("herd attributes ENV SERVICE HOST --explain", &out);
        for shown in ["app-user", "8080", "passwd", "auth_token", "******"] {
            assert!(out.contains(shown), "{format}: no {shown} in:\n{out}");
        }
    }
    let output = herd()
        .args(["gen", "-vv"])
        .arg(&env)
        .arg("--out")
        .arg(work.path().join("units"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_no_secret(
        "herd gen -vv",
        &(text(&output.stdout) + &text(&output.stderr)),
    );
}
