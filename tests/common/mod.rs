//! Helpers shared by the end-to-end tests: run the built binaries, make
//! image directories, run podman with the tests' containers.conf, start a
//! registry.
#![allow(dead_code)]

pub mod hostile;
pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn herd_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_herd"))
}

/// A `herd` command with a clean environment for herd's own variables.
pub fn herd() -> Command {
    let mut command = Command::new(herd_binary());
    for variable in [
        "HERD_STORE",
        "HERD_INIT",
        "HERD_CONFIG",
        "HERD_SSH_CONFIG",
        "SOURCE_DATE_EPOCH",
        "LOG_LEVEL",
    ] {
        command.env_remove(variable);
    }
    // Nothing a test does may reach outside the machine (tests/offline.yml).
    command.env(
        "HERD_CONFIG",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/offline.yml"),
    );
    command
}

/// `herd ARGS` confined to `dir`: its store `dir/store`, its config file
/// `dir/config.yml`, credentials only from `dir/docker/config.json` (HOME
/// and XDG_RUNTIME_DIR point into `dir`).
pub fn confined_herd(dir: &Path, args: &[&str]) -> Command {
    let mut command = herd();
    command
        .args(args)
        .arg("--store")
        .arg(dir.join("store"))
        .env("HERD_CONFIG", dir.join("config.yml"))
        .env("HOME", dir)
        .env("DOCKER_CONFIG", dir.join("docker"))
        .env("XDG_RUNTIME_DIR", dir.join("run"))
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("REGISTRY_AUTH_FILE");
    command
}

/// A temporary directory removed on drop. Its path is lowercase digits and
/// dashes only: podman turns the path of an `oci:` reference into an image
/// name, which must be lowercase.
pub struct Workdir(PathBuf);

impl Workdir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        forget_podman_images_of(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// podman names an image it reads from `oci:DIR:TAG` after DIR
/// (`localhost/DIR:latest`), so every test store run through podman would
/// leave a name behind. Forgets those of the stores directly under `dir`.
fn forget_podman_images_of(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("index.json").is_file())
        .map(|store| format!("localhost{}:latest", store.display()).to_lowercase())
        .collect();
    if !names.is_empty() {
        let _ = podman()
            .args(["rmi", "--ignore"])
            .args(&names)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn workdir() -> Workdir {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let path = std::env::temp_dir().join(format!("herd-test-{}-{nanos}-{n}", std::process::id()));
    std::fs::create_dir_all(&path).unwrap();
    Workdir(path)
}

/// Runs `command`, panics with its output unless it succeeds, returns stdout.
pub fn run_ok(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed with {}:\nstdout:\n{}\nstderr:\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

/// Runs `command`, panics unless it fails, returns its output.
pub fn run_fails(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        !output.status.success(),
        "{command:?} should have failed:\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    output
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The Debian package of each outside command the tests run (`.ci/install`
/// installs them all; keep the two in step).
const PACKAGES: &[(&str, &str)] = &[
    ("podman", "podman"),
    ("conmon", "conmon"),
    ("catatonit", "catatonit"),
    ("runc", "runc"),
    ("crun", "crun"),
    ("slirp4netns", "slirp4netns"),
    ("skopeo", "skopeo"),
    ("umoci", "umoci"),
    ("docker-registry", "docker-registry"),
    ("htpasswd", "apache2-utils"),
    ("openssl", "openssl"),
    ("bats", "bats"),
    ("dot", "graphviz"),
    ("systemd-analyze", "systemd"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("git", "git"),
    ("busybox", "busybox-static"),
    ("bash-static", "bash-static"),
    ("debootstrap", "debootstrap"),
    ("python3", "python3"),
    ("unshare", "util-linux"),
    ("setpriv", "util-linux"),
    ("flock", "util-linux"),
    ("script", "bsdutils"),
    ("time", "time"),
    ("tar", "tar"),
    ("find", "findutils"),
    ("grep", "grep"),
    ("bash", "bash"),
];

/// What installs `command`: its Debian package, or for kubernetes-validate
/// (from PyPI) `.ci/install`'s virtualenv.
fn install_hint(command: &str) -> String {
    if command == "kubernetes-validate" {
        return "apt-get install python3-venv && bash .ci/install (a virtualenv in /opt/herd-venv)"
            .into();
    }
    let package = PACKAGES
        .iter()
        .find(|(c, _)| *c == command)
        .map_or("coreutils", |(_, p)| p);
    format!("apt-get install {package}")
}

/// Where `command` is: on PATH, in /usr/sbin and /sbin (a user's PATH may
/// lack them), or where podman looks for its helpers (catatonit, conmon).
fn find_command(command: &str) -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain([
            "/usr/sbin",
            "/sbin",
            "/usr/libexec/podman",
            "/usr/lib/podman",
        ])
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|path| path.is_file())
}

/// The running test's name (cargo runs each test on a thread named after
/// it), for `needs`'s message.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("this test");
    name.rsplit("::").next().unwrap_or(name).to_string()
}

/// Fails the test at once, in one line, unless every command of
/// `commands` is installed: `TEST needs CMD: apt-get install PKG`. Tests
/// call it before anything that runs an outside tool, so a missing tool is
/// named instead of surfacing as the tool's own error deep in a test; a
/// skipped check would hide a regression, so nothing skips.
pub fn needs(commands: &[&str]) {
    for command in commands {
        tool(command);
    }
}

/// The path of `command`, which the test needs (see `needs`).
pub fn tool(command: &str) -> PathBuf {
    find_command(command)
        .unwrap_or_else(|| panic!("{} needs {command}: {}", test_name(), install_hint(command)))
}

/// A `podman` command using tests/containers.conf.
pub fn podman() -> Command {
    // tests/containers.conf runs containers with runc, monitored by conmon.
    needs(&["conmon", "runc"]);
    let mut command = Command::new(tool("podman"));
    command.env(
        "CONTAINERS_CONF",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containers.conf"),
    );
    command
}

/// Commands busybox provides that the tests' images use.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "ls", "sleep", "stat", "rm", "mkdir", "touch", "test", "grep", "ps",
    "kill", "id", "true", "false", "wc", "env", "sed", "head", "tail", "readlink", "find", "chmod",
    "date", "printf", "cp", "mv", "seq", "tr", "od",
];

/// An example image or pod directory of the repository (`aci/NAME`).
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("aci").join(name)
}

/// The `oci:` reference of image `name` in the herd store `store`, as
/// skopeo and podman read it.
pub fn oci_ref(store: &Path, name: &str) -> String {
    format!("oci:{}:{name}", store.display())
}

/// `herd build` of the examples `names` (in that order) into `store`; its
/// standard output.
pub fn build_examples(store: &Path, names: &[&str]) -> String {
    needs_build_sandbox();
    let mut command = herd();
    command.arg("build");
    for name in names {
        command.arg(example(name));
    }
    run_ok(command.arg("--store").arg(store))
}

/// What `herd build` runs an image's scripts with by default: runc, and
/// slirp4netns for the scripts' own network.
pub fn needs_build_sandbox() {
    needs(&["runc", "slirp4netns"]);
}

/// What podman needs to run a pod (`podman pod create`, `kube play`, the
/// default unit): its pause process, catatonit.
pub fn needs_podman_pods() {
    needs(&["podman", "conmon", "runc", "catatonit"]);
}

/// Copies the host's static busybox into `files_dir/bin` with a symlink per
/// applet, so an image built from it has a shell and core tools.
pub fn add_busybox(files_dir: &Path) {
    let busybox = tool("busybox");
    let bin = files_dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// Writes an image directory with a busybox root and the given manifest.
pub fn busybox_image(dir: &Path, manifest: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("aci-manifest.yml"), manifest).unwrap();
    add_busybox(&dir.join("files"));
}

/// Every file of a directory tree with its bytes, for "unchanged" checks.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Copies a directory tree, keeping symlinks as symlinks.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        let file_type = entry.file_type();
        if file_type.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else if file_type.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Mount points below `dir`: build roots a build left mounted.
pub fn mounted_under(dir: &Path) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let prefix = format!("{}/", dir.display());
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

/// The names in the store's tmp/ (what a build left there).
pub fn tmp_entries(store: &Path) -> Vec<String> {
    std::fs::read_dir(store.join("tmp")).map_or(vec![], |d| {
        d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    })
}

/// The digest `herd build` printed for `name` ("NAME DIGEST" lines).
pub fn built_digest(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.trim().strip_prefix("sha256:"))
                .map(|d| format!("sha256:{d}"))
        })
        .unwrap_or_else(|| panic!("no digest for {name} in:\n{stdout}"))
}

/// Debian's `docker-registry` (the CNCF distribution registry) on a free
/// loopback port, with its own storage, stopped when dropped. Plain http;
/// its access log (`access.log`) records every request.
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    /// A registry anyone may push to and pull from.
    pub fn start() -> Registry {
        Registry::start_in(tempfile::tempdir().unwrap(), String::new())
    }

    /// A registry that wants basic auth from `user` with `password`.
    pub fn with_password(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = run_ok(Command::new(tool("htpasswd")).args(["-Bbn", user, password]));
        std::fs::write(dir.path().join("htpasswd"), htpasswd).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: herd-test\n    path: {}\n",
            dir.path().join("htpasswd").display()
        );
        Registry::start_in(dir, auth)
    }

    /// A registry keeping its files in `dir`, with `auth` (an `auth:`
    /// section of its configuration, or nothing) added to its
    /// configuration.
    pub fn start_in(dir: tempfile::TempDir, auth: String) -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: herd-test-secret\n{auth}",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let mut registry = Registry {
            dir,
            port,
            child: None,
        };
        registry.spawn();
        registry
    }

    /// Starts the registry process (again, after `stop`) and waits until
    /// it accepts connections.
    pub fn spawn(&mut self) {
        let log = |name| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .unwrap()
        };
        let child = Command::new(tool("docker-registry"))
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log("access.log"))
            .stderr(log("registry.log"))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                self.log("registry.log")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the registry process; its storage stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:PORT`, the registry part of image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage directory (`docker/registry/v2/...` below).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's `access.log` or `registry.log` so far.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Access log lines so far; pass the count to `uploads_since`.
    pub fn requests(&self) -> usize {
        self.log("access.log").lines().count()
    }

    /// Blob uploads started (POSTs without `mount=`) after line `since`.
    pub fn uploads_since(&self, since: usize) -> usize {
        let log = self.log("access.log");
        log.lines()
            .skip(since)
            .filter(|l| l.contains("\"POST /v2/") && l.contains("/blobs/uploads/ HTTP"))
            .count()
    }

    /// Bytes in upload sessions under way: how far a big PUT got.
    pub fn bytes_being_uploaded(&self) -> u64 {
        walkdir::WalkDir::new(self.storage())
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_name() == "data" && e.path().to_string_lossy().contains("_uploads"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------
// The store, read and written directly (as another tool or an attacker could)

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The file of blob `digest` in `store`.
pub fn blob(store: &Path, digest: &str) -> PathBuf {
    store
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Stores a blob by hand; returns its descriptor.
pub fn put_blob(store: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let digest = herd::digest::Digest::of(bytes);
    std::fs::write(store.join("blobs/sha256").join(digest.hex()), bytes).unwrap();
    serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": bytes.len()})
}

/// Adds `descriptor` to index.json under `name`, as another tool could.
pub fn put_tag(store: &Path, name: &str, mut descriptor: serde_json::Value) {
    descriptor["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": name});
    let mut index = read_json(&store.join("index.json"));
    index["manifests"].as_array_mut().unwrap().push(descriptor);
    std::fs::write(
        store.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
}

/// A one-layer image (`layer` an uncompressed tar) whose config claims
/// `diff_id` for it; returns the manifest's descriptor.
pub fn put_one_layer_image(store: &Path, layer: &[u8], diff_id: &str) -> serde_json::Value {
    let layer = put_blob(store, "application/vnd.oci.image.layer.v1.tar", layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = put_blob(
        store,
        "application/vnd.oci.image.config.v1+json",
        &serde_json::to_vec(&config).unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    put_blob(
        store,
        "application/vnd.oci.image.manifest.v1+json",
        &serde_json::to_vec(&manifest).unwrap(),
    )
}

/// `tests/tools/testhosts.sh`, which starts named test hosts (podman
/// containers running systemd and sshd on 127.0.0.1), or the script
/// `HERD_TESTHOSTS` names.
pub fn testhosts_script() -> PathBuf {
    match std::env::var_os("HERD_TESTHOSTS") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/testhosts.sh"),
    }
}

/// Test hosts started by `testhosts.sh up` for one test, removed on drop.
/// Each test names its own hosts, so tests run in parallel.
pub struct TestHosts {
    script: PathBuf,
    pub names: Vec<String>,
    /// An ssh configuration with a `Host` entry per running host.
    pub ssh_config: PathBuf,
}

impl TestHosts {
    /// Starts fresh hosts `names` (any left by an earlier run are removed
    /// first) and writes their ssh configuration into `dir`.
    pub fn up(names: &[&str], dir: &Path) -> TestHosts {
        needs(&[
            "ssh",
            "ssh-keygen",
            "podman",
            "runc",
            "debootstrap",
            "flock",
        ]);
        let script = testhosts_script();
        let hosts = TestHosts {
            script,
            names: names.iter().map(|n| n.to_string()).collect(),
            ssh_config: dir.join("ssh_config"),
        };
        hosts.down();
        run_ok(
            Command::new("bash")
                .arg(&hosts.script)
                .arg("up")
                .args(names),
        );
        let config = run_ok(Command::new("bash").arg(&hosts.script).arg("ssh-config"));
        std::fs::write(&hosts.ssh_config, config).unwrap();
        hosts
    }

    /// Runs the shell command `command` on host `name` (with ssh and the
    /// hosts' configuration: `testhosts.sh ssh` asks podman for the port
    /// each time, which is slow on a busy machine).
    pub fn ssh(&self, name: &str, command: &str) -> Output {
        Command::new(tool("ssh"))
            .arg("-F")
            .arg(&self.ssh_config)
            .args(["-o", "BatchMode=yes", name, command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Like `ssh`, which must succeed; its standard output.
    pub fn ssh_ok(&self, name: &str, command: &str) -> String {
        let out = self.ssh(name, command);
        assert!(
            out.status.success(),
            "on {name}: {command}: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn down(&self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("down")
            .args(&self.names)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        self.down();
    }
}

/// An empty OCI image layout at `store`, as `umoci init` makes it: a store
/// herd's read-only commands accept (they never create one).
pub fn empty_store(store: &Path) {
    std::fs::create_dir_all(store.join("blobs/sha256")).unwrap();
    std::fs::write(
        store.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    std::fs::write(
        store.join("index.json"),
        r#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .unwrap();
}
