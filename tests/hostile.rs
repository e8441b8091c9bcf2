//! herd against registries that misbehave on purpose (tests/common/hostile):
//! credentials stay with their registry, every wait and every body is
//! bounded, what cannot get better is not retried, and what a registry
//! says is printed escaped.

mod common;

use common::hostile::{Hostile, Reply, Request};
use common::{built_digest, run_fails, run_ok, text};
use herd::digest::Digest;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const USER: &str = "ci";
const SECRET: &str = "s3cret-of-registry-a";

/// A store, a config file marking loopback registries as plain http, and
/// a docker config.json holding a login for registry `a`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(a: &Hostile, config: &str) -> Scratch {
        let scratch = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::write(
            scratch.path("config.yml"),
            format!(
                "registries:\n  \"{}\": {{insecure: true{config}}}\n",
                a.host()
            ),
        )
        .unwrap();
        std::fs::create_dir_all(scratch.path("docker")).unwrap();
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{SECRET}"));
        let logins = serde_json::json!({"auths": {a.host(): {"auth": auth}}});
        std::fs::write(scratch.path("docker/config.json"), logins.to_string()).unwrap();
        scratch
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn herd(&self, args: &[&str]) -> Command {
        common::confined_herd(self.dir.path(), args)
    }

    /// Builds a one-file image named `name`.
    fn build(&self, name: &str) -> String {
        let dir = self.path("image");
        std::fs::create_dir_all(dir.join("files/etc")).unwrap();
        std::fs::write(dir.join("aci-manifest.yml"), format!("name: {name}\n")).unwrap();
        std::fs::write(dir.join("files/etc/app.conf"), "app\n").unwrap();
        let stdout = run_ok(self.herd(&["build", "--compression", "none"]).arg(&dir));
        built_digest(&stdout, name)
    }

    /// The store's files, relative to it.
    fn store_files(&self) -> Vec<String> {
        let store = self.path("store");
        walk(&store)
            .into_iter()
            .map(|f| {
                f.trim_start_matches(&format!("{}/", store.display()))
                    .to_string()
            })
            .collect()
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path.display().to_string());
        }
    }
    files
}

/// An image a hostile registry serves: a config and one layer.
struct Image {
    manifest: Vec<u8>,
    config: Vec<u8>,
    layer: Vec<u8>,
}

impl Image {
    /// A small image; its manifest declares the layer `declared_layer_size`
    /// bytes long, or as long as it is.
    fn new(declared_layer_size: Option<u64>) -> Image {
        let layer = b"not really a tar, herd checks only size and digest on pull".to_vec();
        Image::with_layer(layer, declared_layer_size)
    }

    fn with_layer(layer: Vec<u8>, declared_layer_size: Option<u64>) -> Image {
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec();
        let descriptor = |media_type: &str, bytes: &[u8], size: u64| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": size});
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config, config.len() as u64),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer, declared_layer_size.unwrap_or(layer.len() as u64))],
        });
        Image {
            manifest: manifest.to_string().into_bytes(),
            config,
            layer,
        }
    }

    fn layer_digest(&self) -> String {
        Digest::of(&self.layer).to_string()
    }

    /// The manifest, config and layer answers; `None` for other paths.
    fn answer(&self, request: &Request) -> Option<Reply> {
        let target = &request.target;
        if target.ends_with("/manifests/1") {
            return Some(
                Reply::status(200)
                    .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                    .body(&self.manifest),
            );
        }
        for blob in [&self.config, &self.layer] {
            if target.ends_with(&format!("/blobs/{}", Digest::of(blob))) {
                return Some(Reply::status(200).body(blob));
            }
        }
        None
    }
}

fn basic_challenge() -> Reply {
    Reply::json(
        401,
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"log in"}]}"#,
    )
    .header("WWW-Authenticate", "Basic realm=\"a\"")
}

/// Fails unless no request `b` received carried an Authorization header.
fn assert_no_credentials(b: &Hostile) {
    let requests = b.requests();
    for request in &requests {
        assert!(
            request.authorization().is_none(),
            "the second server got credentials: {request:?}"
        );
    }
}

fn stderr_of_failure(command: &mut Command) -> String {
    text(&run_fails(command).stderr)
}

#[test]
fn a_token_realm_on_another_port_over_http_gets_no_credentials() {
    let b = Hostile::start(|_| Reply::status(401));
    let realm = format!("http://{}/token", b.host());
    let a = Hostile::start(move |_| {
        Reply::status(401).header(
            "WWW-Authenticate",
            &format!("Bearer realm=\"{realm}\",service=\"a\""),
        )
    });
    let scratch = Scratch::new(&a, "");
    let name = format!("{}/team/app:1", a.host());
    let error = stderr_of_failure(&mut scratch.herd(&["pull", &name]));
    assert!(
        !b.requests().is_empty(),
        "herd never asked the token service"
    );
    assert_no_credentials(&b);
    assert!(
        error.contains("did not send it user `ci`") && error.contains("trusted_realm"),
        "{error}"
    );
    assert!(!error.contains(SECRET), "{error}");

    // Trusted in the config file, the same realm gets them.
    let trusting = Scratch::new(&a, &format!(", trusted_realm: \"http://{}\"", b.host()));
    stderr_of_failure(&mut trusting.herd(&["pull", &name]));
    assert!(
        b.requests().iter().any(|r| r.authorization().is_some()),
        "a trusted realm got no credentials"
    );
}

#[test]
fn a_redirect_to_another_port_gets_no_credentials_and_blob_redirects_still_work() {
    // b stands for blob storage: it serves blobs without credentials, and
    // asks for a token from itself for everything else.
    let image = std::sync::Arc::new(Image::new(None));
    let stored = image.clone();
    let b_port = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
    let port = b_port.clone();
    let b = Hostile::start(move |request| match stored.answer(request) {
        Some(reply) if request.target.contains("/blobs/") => reply,
        // A token service of its own, that would take a's credentials.
        _ => Reply::status(401).header(
            "WWW-Authenticate",
            &format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\"",
                port.load(std::sync::atomic::Ordering::SeqCst)
            ),
        ),
    });
    b_port.store(b.port, std::sync::atomic::Ordering::SeqCst);
    let b_host = b.host();
    let served = image.clone();
    let a = Hostile::start(move |request| {
        if request.authorization().is_none() {
            return basic_challenge();
        }
        if request.target.contains("/redirected/") || request.target.contains("/blobs/") {
            let location = format!("http://{b_host}{}", request.target);
            return Reply::status(307).header("Location", &location);
        }
        served.answer(request).unwrap_or_else(|| Reply::status(404))
    });
    let scratch = Scratch::new(&a, "");

    let error =
        stderr_of_failure(&mut scratch.herd(&["pull", &format!("{}/redirected/app:1", a.host())]));
    assert!(
        error.contains(&format!("http://{} asks for credentials", b.host()))
            && error.contains(&format!("only to http://{}", a.host())),
        "{error}"
    );
    let stdout = run_ok(&mut scratch.herd(&["pull", &format!("{}/team/app:1", a.host())]));
    assert!(
        stdout.contains(&Digest::of(&image.manifest).to_string()),
        "{stdout}"
    );
    assert!(
        a.requests().iter().any(|r| r.authorization().is_some()),
        "registry a never got its own credentials"
    );
    assert!(
        b.requests()
            .iter()
            .any(|r| r.target.ends_with(&image.layer_digest())),
        "the layer was not fetched from the storage server"
    );
    assert_no_credentials(&b);
}

#[test]
fn an_upload_location_on_another_port_gets_no_credentials() {
    let b = Hostile::start(|request| match request.method.as_str() {
        "PUT" => Reply::status(201),
        _ => Reply::status(405),
    });
    let b_host = b.host();
    let a = Hostile::start(move |request| {
        if request.authorization().is_none() {
            return basic_challenge();
        }
        match (request.method.as_str(), request.target.as_str()) {
            ("HEAD", _) => Reply::status(404),
            ("POST", target) if target.contains("/blobs/uploads/") => {
                let location = format!("http://{b_host}/upload/{}", request.body_len);
                Reply::status(202).header("Location", &location)
            }
            ("PUT", target) if target.contains("/manifests/") => Reply::status(201),
            _ => Reply::status(404),
        }
    });
    let scratch = Scratch::new(&a, "");
    let name = format!("{}/team/app:1", a.host());
    scratch.build(&name);
    run_ok(&mut scratch.herd(&["push", &name]));
    let puts = b.requests().iter().filter(|r| r.method == "PUT").count();
    assert!(puts >= 2, "the blobs did not go to the upload location");
    assert_no_credentials(&b);
}

/// `herd pull` with a 2 s timeout and no retries (from the flags, or else
/// the config file), timed.
fn pull_with_timeout(a: &Hostile, from_flags: bool) -> (String, Duration) {
    let (config, flags) = if from_flags {
        ("", &["--timeout", "2", "--retry-times", "0"][..])
    } else {
        (", timeout: 2, retry_times: 0", &[][..])
    };
    let scratch = Scratch::new(a, config);
    let name = format!("{}/team/app:1", a.host());
    let started = Instant::now();
    let error = stderr_of_failure(scratch.herd(&["pull"]).args(flags).arg(&name));
    (error, started.elapsed())
}

#[test]
fn silent_and_trickling_registries_fail_within_the_timeout() {
    let image = Image::new(None);
    let manifest = image.manifest.clone();
    type Script = Box<dyn Fn(&Request) -> Reply + Send + Sync>;
    let cases: Vec<(&str, Script)> = vec![
        (
            "silent",
            Box::new(|_| Reply::Silence {
                for_: Duration::from_secs(30),
            }),
        ),
        (
            "trickling its head",
            Box::new(move |_| Reply::Trickle {
                reply: Box::new(Reply::status(200).body(&manifest)),
                interval: Duration::from_secs(1),
            }),
        ),
        (
            "trickling a blob",
            Box::new(move |request| {
                let reply = image.answer(request).unwrap_or_else(|| Reply::status(404));
                if request.target.ends_with(&image.layer_digest()) {
                    Reply::TrickleBody {
                        reply: Box::new(reply),
                        interval: Duration::from_secs(1),
                    }
                } else {
                    reply
                }
            }),
        ),
    ];
    for (i, (case, script)) in cases.into_iter().enumerate() {
        let a = Hostile::start(script);
        let (error, took) = pull_with_timeout(&a, i != 0);
        assert!(
            took < Duration::from_secs(6),
            "{case}: took {took:?}: {error}"
        );
        assert!(
            error.contains(&a.host()) && error.contains("--timeout"),
            "{case}: {error}"
        );
        let what = if case.contains("blob") {
            "downloading blob"
        } else {
            "fetching manifest"
        };
        assert!(error.contains(what), "{case}: {error}");
    }
}

#[test]
fn a_blob_longer_than_declared_stops_at_its_size_and_leaves_nothing() {
    let image = std::sync::Arc::new(Image::new(Some(20)));
    let served = image.clone();
    let a = Hostile::start(move |request| {
        if request.target.ends_with(&served.layer_digest()) {
            return Reply::Chunked {
                status: 200,
                headers: Vec::new(),
                total: 512 << 20,
            };
        }
        served.answer(request).unwrap_or_else(|| Reply::status(404))
    });
    let scratch = Scratch::new(&a, "");
    let error =
        stderr_of_failure(&mut scratch.herd(&["pull", &format!("{}/team/app:1", a.host())]));
    assert!(error.contains("more than the 20 bytes"), "{error}");
    // One attempt: the registry's answer will not get better.
    let layer_gets = a
        .requests()
        .iter()
        .filter(|r| r.target.ends_with(&image.layer_digest()))
        .count();
    assert_eq!(layer_gets, 1);
    assert!(a.sent.load(std::sync::atomic::Ordering::SeqCst) < 64 << 20);
    let left: Vec<String> = scratch
        .store_files()
        .into_iter()
        .filter(|f| {
            f.starts_with("tmp/") || f.contains(image.layer_digest().trim_start_matches("sha256:"))
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_chunked_manifest_is_capped_without_reading_it_all() {
    let a = Hostile::start(|_| Reply::Chunked {
        status: 200,
        headers: vec![(
            "Content-Type".into(),
            "application/vnd.oci.image.manifest.v1+json".into(),
        )],
        total: 200 << 20,
    });
    let scratch = Scratch::new(&a, "");
    let error =
        stderr_of_failure(&mut scratch.herd(&["pull", &format!("{}/team/app:1", a.host())]));
    assert!(error.contains("the manifest is larger than"), "{error}");
    let sent = a.sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 64 << 20, "the server got to send {sent} bytes");
}

#[test]
fn refused_connections_fail_fast_and_retries_follow_the_flag() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let a = Hostile::start(|_| Reply::status(503));
    let scratch = Scratch::new(&a, "");
    let started = Instant::now();
    let error = stderr_of_failure(&mut scratch.herd(&[
        "pull",
        "--insecure",
        &format!("127.0.0.1:{port}/team/app:1"),
    ]));
    assert!(started.elapsed() < Duration::from_secs(3), "{error}");
    assert!(error.contains("gave up after 2 attempts"), "{error}");

    // 503 may get better: retried as often as asked, then given up.
    let error = stderr_of_failure(&mut scratch.herd(&[
        "pull",
        "--retry-times",
        "2",
        &format!("{}/team/app:1", a.host()),
    ]));
    assert_eq!(a.requests().len(), 3, "{error}");
    assert!(error.contains("gave up after 3 attempts"), "{error}");
}

#[test]
fn control_characters_a_registry_sends_are_printed_escaped() {
    let a = Hostile::start(|_| Reply::status(403).body(b"\x1b]0;owned\x07\x1b[2Jdenied\r\n"));
    let scratch = Scratch::new(&a, "");
    let output = run_fails(&mut scratch.herd(&["pull", &format!("{}/team/app:1", a.host())]));
    let stderr = text(&output.stderr);
    assert!(!output.stderr.contains(&0x1b), "{stderr:?}");
    assert!(
        stderr.contains("\\x1b]0;owned\\x07\\x1b[2Jdenied"),
        "{stderr}"
    );
}

#[test]
fn a_full_disk_is_not_retried() {
    let image = std::sync::Arc::new(Image::with_layer(vec![7u8; 4 << 20], None));
    let served = image.clone();
    let a =
        Hostile::start(move |request| served.answer(request).unwrap_or_else(|| Reply::status(404)));
    let scratch = Scratch::new(&a, "");
    std::fs::create_dir_all(scratch.path("store")).unwrap();
    // A 1 MiB store, mounted in a mount namespace of this command only.
    let herd = scratch.herd(&["pull", &format!("{}/team/app:1", a.host())]);
    let mut command = Command::new(common::tool("unshare"));
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=1m herd-test "$0" && exec "$@""#)
        .arg(scratch.path("store"))
        .arg(herd.get_program())
        .args(herd.get_args());
    for (key, value) in herd.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let error = stderr_of_failure(&mut command);
    assert!(
        error.contains("No space left on device") && error.contains("downloading blob"),
        "{error}"
    );
    assert!(!error.contains("retrying"), "{error}");
    let layer_gets = a
        .requests()
        .iter()
        .filter(|r| r.target.ends_with(&image.layer_digest()))
        .count();
    assert_eq!(layer_gets, 1, "{error}");
}
