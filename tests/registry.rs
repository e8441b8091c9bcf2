//! End-to-end push and pull against a real registry: Debian's
//! `docker-registry` (the CNCF distribution registry) on a free loopback
//! port, checked with skopeo and podman. The registry's access log counts
//! the requests herd made.

mod common;

use common::{Registry, built_digest, needs, podman, run_fails, run_ok, text, tool};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Registry {
    /// A registry that wants bearer tokens from `tokens`.
    fn with_tokens(tokens: &TokenServer) -> Registry {
        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: herd-test-registry\n    \
             issuer: herd-test-issuer\n    rootcertbundle: {}\n",
            tokens.port,
            tokens.dir.path().join("cert.pem").display()
        );
        Registry::start_in(tempfile::tempdir().unwrap(), auth)
    }
}

/// A test's scratch space: a store, herd's config file marking the
/// registry as plain http, and empty credential files.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(registry: &Registry) -> Scratch {
        let scratch = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        scratch.write_config(&format!(
            "registries:\n  \"{}\": {{insecure: true}}\n",
            registry.host()
        ));
        std::fs::create_dir_all(scratch.path("docker")).unwrap();
        scratch
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.path("config.yml"), text).unwrap();
    }

    /// `herd` with this scratch's config, credentials and store.
    fn herd(&self, args: &[&str]) -> Command {
        common::confined_herd(self.dir.path(), args)
    }

    /// Writes an image directory and builds it; returns its digest.
    fn build(&self, dir_name: &str, manifest: &str, files: &[(&str, &[u8])]) -> String {
        let dir = self.path(dir_name);
        std::fs::create_dir_all(dir.join("files")).unwrap();
        std::fs::write(dir.join("aci-manifest.yml"), manifest).unwrap();
        for (path, content) in files {
            let path = dir.join("files").join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        let name = manifest
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .unwrap()
            .trim();
        let stdout = run_ok(self.herd(&["build", "--compression", "none"]).arg(&dir));
        built_digest(&stdout, name)
    }

    /// `herd push --json` of `names`; returns the summary.
    fn push(&self, names: &[&str], extra: &[&str]) -> Value {
        let stdout = run_ok(self.herd(&["push", "--json"]).args(extra).args(names));
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("push --json printed no JSON ({e}):\n{stdout}"))
    }
}

fn skopeo_digest(reference: &str, extra: &[&str]) -> String {
    let stdout = run_ok(
        Command::new(tool("skopeo"))
            .args(["inspect", "--tls-verify=false"])
            .args(extra)
            .arg(format!("docker://{reference}")),
    );
    let value: Value = serde_json::from_str(&stdout).unwrap();
    value["Digest"].as_str().unwrap().to_string()
}

fn basic_pair(pair: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pair)
}

/// A docker config.json / containers auth.json holding one login.
fn auth_json(host: &str, user: &str, secret: &str) -> String {
    let auth = basic_pair(&format!("{user}:{secret}"));
    serde_json::json!({"auths": {host: {"auth": auth}}}).to_string()
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {summary}"))
}

#[test]
fn pushed_images_reach_skopeo_and_podman_and_a_repush_uploads_nothing() {
    let registry = Registry::start();
    let scratch = Scratch::new(&registry);
    let host = registry.host();
    let name = format!("{host}/herd/app:1");
    let digest = scratch.build(
        "app",
        &format!("name: {name}\n"),
        &[("etc/app.conf", b"answer = 42\n")],
    );

    let before = registry.requests();
    let first = scratch.push(&[&name], &[]);
    assert_eq!(first["images"][0]["digest"], digest.as_str(), "{first}");
    assert_eq!(
        count(&first, "blobs_uploaded"),
        3,
        "config, init layer, own layer: {first}"
    );
    assert!(count(&first, "bytes_uploaded") > 0);
    assert_eq!(registry.uploads_since(before), 3);
    assert_eq!(skopeo_digest(&format!("{host}/herd/app:1"), &[]), digest);

    let pulled = run_ok(podman().args(["pull", "--tls-verify=false", "-q", &name]));
    let podman_digest =
        run_ok(podman().args(["image", "inspect", "--format", "{{.Digest}}", pulled.trim()]));
    let _ = podman().args(["rmi", "-f", pulled.trim()]).output();
    assert_eq!(podman_digest.trim(), digest);

    let before = registry.requests();
    let second = scratch.push(&[&name], &[]);
    assert_eq!(count(&second, "blobs_uploaded"), 0, "{second}");
    assert_eq!(count(&second, "bytes_uploaded"), 0, "{second}");
    assert_eq!(
        registry.uploads_since(before),
        0,
        "a re-push started uploads:\n{}",
        registry.log("access.log")
    );

    // Another repository of the same registry: the shared init layer is
    // mounted from the first one, not uploaded again.
    let other = format!("{host}/herd/other:2");
    scratch.build(
        "other",
        &format!("name: {other}\n"),
        &[("etc/other.conf", b"other\n")],
    );
    let third = scratch.push(&[scratch.path("other").to_str().unwrap()], &[]);
    assert_eq!(count(&third, "blobs_mounted"), 1, "{third}");
    assert_eq!(count(&third, "blobs_uploaded"), 2, "{third}");

    // --registry replaces the domain and keeps the path.
    let elsewhere = "aci.example.com/team/mapped:3";
    let mapped = scratch.build("mapped", &format!("name: {elsewhere}\n"), &[]);
    let fourth = scratch.push(&[elsewhere], &["--registry", &host]);
    assert_eq!(
        fourth["images"][0]["destination"],
        format!("{host}/team/mapped:3").as_str()
    );
    assert_eq!(skopeo_digest(&format!("{host}/team/mapped:3"), &[]), mapped);

    // And back: a pull into an empty store gives the same image.
    let fresh = Scratch::new(&registry);
    let stdout = run_ok(&mut fresh.herd(&["pull", &name]));
    assert!(stdout.contains(&digest), "{stdout}");
    let inspect: Value =
        serde_json::from_str(&run_ok(&mut fresh.herd(&["inspect", &name]))).unwrap();
    assert_eq!(inspect["digest"], digest.as_str());
}

#[test]
fn a_build_pulls_a_dependency_that_only_the_registry_has() {
    let registry = Registry::start();
    let publisher = Scratch::new(&registry);
    // The dependency's name is not the registry's: a mirror maps it.
    let mirror = format!(
        "registries:\n  aci.example.com: {{mirror: \"{}\", insecure: true}}\n",
        registry.host()
    );
    publisher.write_config(&mirror);
    let base = publisher.build(
        "base",
        "name: aci.example.com/herd/base:1\n",
        &[("etc/base.conf", b"base\n")],
    );
    publisher.push(&["aci.example.com/herd/base:1"], &[]);
    assert_eq!(
        skopeo_digest(&format!("{}/herd/base:1", registry.host()), &[]),
        base
    );

    let builder = Scratch::new(&registry);
    builder.write_config(&mirror);
    builder.build(
        "app",
        "name: aci.example.com/herd/app:1\naci:\n  dependencies: [aci.example.com/herd/base:1]\n",
        &[("etc/app.conf", b"app\n")],
    );
    let images = run_ok(&mut builder.herd(&["images"]));
    assert!(
        images.contains("aci.example.com/herd/base:1") && images.contains(&base),
        "{images}"
    );
    let app: Value = serde_json::from_str(&run_ok(
        &mut builder.herd(&["inspect", "aci.example.com/herd/app:1"]),
    ))
    .unwrap();
    let base_manifest: Value = serde_json::from_str(&run_ok(
        &mut builder.herd(&["inspect", "aci.example.com/herd/base:1"]),
    ))
    .unwrap();
    let base_layer = &base_manifest["manifest"]["layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["digest"];
    assert!(
        app["manifest"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["digest"] == *base_layer),
        "{app}"
    );

    // Without the registry the same build fails and says why.
    let offline = Scratch::new(&registry);
    std::fs::write(offline.path("none.yml"), "{}\n").unwrap();
    let error = text(
        &run_fails(
            offline
                .herd(&["build"])
                .arg(builder.path("app"))
                .env("HERD_CONFIG", offline.path("none.yml")),
        )
        .stderr,
    );
    assert!(
        error.contains("aci.example.com/herd/base:1 is not in the store"),
        "{error}"
    );
}

#[test]
fn basic_auth_uses_docker_and_podman_credentials_and_never_shows_them() {
    let password = "pa55-w0rd-Secret";
    let registry = Registry::with_password("herd", password);
    let scratch = Scratch::new(&registry);
    let host = registry.host();
    let name = format!("{host}/secure/app:1");
    let digest = scratch.build(
        "app",
        &format!("name: {name}\n"),
        &[("etc/app.conf", b"x\n")],
    );
    let auth_entry = |user: &str, secret: &str| auth_json(&host, user, secret);

    let output = run_fails(&mut scratch.herd(&["push", &name]));
    let error = text(&output.stderr);
    assert!(error.contains("no credentials"), "{error}");

    let wrong = "wr0ng-Secret-pw";
    std::fs::write(
        scratch.path("docker/config.json"),
        auth_entry("herd", wrong),
    )
    .unwrap();
    let output = run_fails(&mut scratch.herd(&["push", &name]));
    let all = text(&output.stdout) + &text(&output.stderr);
    assert!(
        all.contains("refused user `herd`") && all.contains("config.json"),
        "{all}"
    );
    let encoded = basic_pair(&format!("herd:{wrong}"));
    for secret in [wrong, password, encoded.as_str()] {
        assert!(!all.contains(secret), "the output shows a secret:\n{all}");
    }
    let verbose = scratch.herd(&["push", "-vv", &name]).output().unwrap();
    let all = text(&verbose.stdout) + &text(&verbose.stderr);
    assert!(!all.contains(wrong), "trace logs show the password:\n{all}");

    // containers' auth.json (REGISTRY_AUTH_FILE) comes before docker's file.
    std::fs::write(scratch.path("auth.json"), auth_entry("herd", password)).unwrap();
    let summary = run_ok(
        scratch
            .herd(&["push", "--json", &name])
            .env("REGISTRY_AUTH_FILE", scratch.path("auth.json")),
    );
    assert!(summary.contains(&digest), "{summary}");
    let creds = format!("herd:{password}");
    assert_eq!(skopeo_digest(&name, &["--creds", &creds]), digest);

    // A credential helper named in credHelpers, asked with the host on stdin.
    let bin = scratch.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-herdtest");
    let mut script = std::fs::File::create(&helper).unwrap();
    writeln!(
        script,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] && [ \"$server\" = \"{host}\" ] || exit 1\n\
         echo '{{\"ServerURL\":\"{host}\",\"Username\":\"herd\",\"Secret\":\"{password}\"}}'"
    )
    .unwrap();
    drop(script);
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        scratch.path("docker/config.json"),
        serde_json::json!({"credHelpers": {host.clone(): "herdtest"}}).to_string(),
    )
    .unwrap();
    let fresh = Scratch::new(&registry);
    std::fs::write(
        fresh.path("docker/config.json"),
        std::fs::read(scratch.path("docker/config.json")).unwrap(),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let stdout = run_ok(fresh.herd(&["pull", &name]).env("PATH", path));
    assert!(stdout.contains(&digest), "{stdout}");
}

#[test]
fn a_push_survives_a_registry_restart() {
    let mut registry = Registry::start();
    let scratch = Scratch::new(&registry);
    let name = format!("{}/herd/big:1", registry.host());
    // Random bytes: the layer is as big as the file, and the upload takes
    // long enough to be cut.
    let mut random = vec![0u8; 192 << 20];
    let mut state = 0x9e3779b97f4a7c15u64;
    for chunk in random.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let digest = scratch.build(
        "big",
        &format!("name: {name}\n"),
        &[("data/random.bin", &random)],
    );
    drop(random);

    let mut push = scratch
        .herd(&["push", "--json", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while registry.bytes_being_uploaded() < 16 << 20 {
        assert!(
            push.try_wait().unwrap().is_none(),
            "the push ended before the registry was stopped"
        );
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    registry.stop();
    std::thread::sleep(Duration::from_millis(1500));
    registry.spawn();
    let output = push.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    if output.status.success() {
        assert!(stderr.contains("retrying"), "{stderr}");
    } else {
        assert!(
            stderr.contains("uploading blob") || stderr.contains("127.0.0.1"),
            "unclear failure:\n{stderr}"
        );
        scratch.push(&[&name], &[]);
    }
    assert_eq!(skopeo_digest(&name, &[]), digest);
}

#[test]
fn a_pod_pushes_its_apps_first_then_its_artifact_manifest() {
    let registry = Registry::start();
    let scratch = Scratch::new(&registry);
    let host = registry.host();
    let app = format!("{host}/herd/pod-web_web:1");
    let app_digest = scratch.build(
        "web",
        &format!("name: {app}\n"),
        &[("etc/web.conf", b"web\n")],
    );

    // A pod as herd stores it: an artifact manifest naming its apps.
    let store = herd::store::Store::open(&scratch.path("store")).unwrap();
    let empty = store
        .write_json(
            oci_spec::image::MediaType::Other("application/vnd.oci.empty.v1+json".into()),
            &serde_json::json!({}),
        )
        .unwrap();
    let layer = store
        .write_json(
            oci_spec::image::MediaType::Other("application/vnd.herd.pod.manifest.v1+json".into()),
            &serde_json::json!({"apps": ["web"]}),
        )
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.herd.pod.v1",
        "config": empty,
        "layers": [layer],
        "annotations": {"io.herd.pod.apps": app},
    });
    let pod = store
        .write_json(oci_spec::image::MediaType::ImageManifest, &manifest)
        .unwrap();
    let pod_name = format!("{host}/herd/pod-web:1");
    store.set_tag(&pod_name.parse().unwrap(), &pod).unwrap();

    let before = registry.requests();
    let summary = scratch.push(&[&pod_name], &[]);
    let destinations: Vec<&str> = summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["destination"].as_str().unwrap())
        .collect();
    assert_eq!(destinations, [app.as_str(), pod_name.as_str()], "{summary}");
    let log = registry.log("access.log");
    let manifest_puts: Vec<&str> = log
        .lines()
        .skip(before)
        .filter(|l| l.contains("\"PUT /v2/") && l.contains("/manifests/"))
        .collect();
    assert!(
        manifest_puts.len() == 2 && manifest_puts[0].contains("pod-web_web"),
        "{manifest_puts:?}"
    );
    assert_eq!(skopeo_digest(&app, &[]), app_digest);
    let raw = run_ok(
        Command::new(tool("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{pod_name}")),
    );
    let raw: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["artifactType"], "application/vnd.herd.pod.v1");
    assert_eq!(raw["annotations"]["io.herd.pod.apps"], app.as_str());
}

#[test]
fn unreachable_and_misconfigured_registries_fail_clearly() {
    let registry = Registry::start();
    let scratch = Scratch::new(&registry);
    let name = format!("{}/herd/app:1", registry.host());
    scratch.build("app", &format!("name: {name}\n"), &[]);
    // https against a plain-http registry.
    scratch.write_config("");
    let error = text(&run_fails(&mut scratch.herd(&["push", &name])).stderr);
    assert!(error.contains(&registry.host()), "{error}");
    // A typo in the config file names the file and the closest key.
    scratch.write_config("registries:\n  x.io: {insecur: true}\n");
    let error = text(&run_fails(&mut scratch.herd(&["push", &name])).stderr);
    assert!(
        error.contains("config.yml") && error.contains("insecure"),
        "{error}"
    );
    let error =
        text(&run_fails(&mut scratch.herd(&["pull", "--registry", "not a host", &name])).stderr);
    assert!(error.contains("not a host"), "{error}");
}

/// A token service for the registry's `auth: token`: checks basic
/// credentials, then answers a JWT signed (with openssl) by a key whose
/// certificate the registry trusts, granting the scopes asked for.
struct TokenServer {
    dir: tempfile::TempDir,
    port: u16,
    /// Token requests answered, and refused.
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TokenServer {
    fn start(user: &str, password: &str) -> TokenServer {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        run_ok(Command::new(tool("openssl")).current_dir(dir.path()).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=herd-test-token",
        ]));
        let der = Command::new(tool("openssl"))
            .current_dir(dir.path())
            .args(["x509", "-in", "cert.pem", "-outform", "DER"])
            .output()
            .unwrap()
            .stdout;
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let expected = format!("Basic {}", basic_pair(&format!("{user}:{password}")));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let key = dir.path().join("key.pem");
        let (issued_count, refused_count) = (issued.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n")
                    && std::io::Read::read(&mut stream, &mut byte).unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let authorized = head.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l[14..].trim() == expected
                });
                let answer = if authorized {
                    issued_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let target = head.split_whitespace().nth(1).unwrap_or_default();
                    let jwt = sign_token(&key, &x5c, &scopes_of(target));
                    let body = serde_json::json!({"token": jwt}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    refused_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        TokenServer {
            dir,
            port,
            issued,
            refused,
        }
    }
}

/// The `scope` parameters of a token request: `repository:a/b:pull,push`.
fn scopes_of(target: &str) -> Vec<String> {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(percent_decode)
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// An RS256 JWT in the form distribution's token auth checks: issuer,
/// audience, validity, the certificate chain in `x5c`, the access granted.
fn sign_token(key: &std::path::Path, x5c: &str, scopes: &[String]) -> String {
    use base64::Engine;
    let url = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let access: Vec<Value> = scopes
        .iter()
        .flat_map(|s| s.split(' '))
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "herd-test-issuer", "sub": "herd", "aud": "herd-test-registry",
        "exp": now + 600, "nbf": now - 10, "iat": now - 10, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url(header.to_string().as_bytes()),
        url(claims.to_string().as_bytes())
    );
    let mut openssl = Command::new(tool("openssl"))
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    openssl
        .stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())
        .unwrap();
    let signature = openssl.wait_with_output().unwrap().stdout;
    format!("{signing_input}.{}", url(&signature))
}

#[test]
fn bearer_tokens_are_fetched_with_basic_credentials_and_reused() {
    let password = "t0ken-Secret-pw";
    let tokens = TokenServer::start("herd", password);
    let registry = Registry::with_tokens(&tokens);
    let scratch = Scratch::new(&registry);
    let host = registry.host();
    let name = format!("{host}/tokens/app:1");
    // The token service is on another port over plain http: it gets the
    // registry's credentials only when herd's config trusts it.
    let trusting = format!(
        "registries:\n  \"{host}\": {{insecure: true, trusted_realm: \"http://127.0.0.1:{}\"}}\n",
        tokens.port
    );
    let digest = scratch.build(
        "app",
        &format!("name: {name}\n"),
        &[("etc/app.conf", b"t\n")],
    );
    let auth_file = |secret: &str| auth_json(&host, "herd", secret);

    std::fs::write(scratch.path("docker/config.json"), auth_file(password)).unwrap();
    let error = text(&run_fails(&mut scratch.herd(&["push", &name])).stderr);
    assert!(
        error.contains("refused anonymous access (herd did not send it user `herd`"),
        "{error}"
    );
    assert_eq!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst), 0);
    scratch.write_config(&trusting);

    std::fs::write(
        scratch.path("docker/config.json"),
        auth_file("wr0ng-t0ken-pw"),
    )
    .unwrap();
    let output = run_fails(&mut scratch.herd(&["push", &name]));
    let error = text(&output.stderr);
    assert!(
        error.contains("token service refused user `herd`"),
        "{error}"
    );
    assert!(
        !error.contains("wr0ng-t0ken-pw") && !error.contains(password),
        "{error}"
    );
    assert!(tokens.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    std::fs::write(scratch.path("docker/config.json"), auth_file(password)).unwrap();
    let summary = scratch.push(&[&name], &[]);
    assert_eq!(summary["images"][0]["digest"], digest.as_str(), "{summary}");
    // One token for the push scope serves every request of the push.
    assert_eq!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst), 1);
    let fresh = Scratch::new(&registry);
    fresh.write_config(&trusting);
    std::fs::write(fresh.path("docker/config.json"), auth_file(password)).unwrap();
    let stdout = run_ok(&mut fresh.herd(&["pull", &name]));
    assert!(stdout.contains(&digest), "{stdout}");
}

#[test]
fn a_pulled_pod_comes_with_its_apps_and_installs() {
    let registry = Registry::start();
    let scratch = Scratch::new(&registry);
    let host = registry.host();
    let dependency = format!("{host}/herd/pulled-dep:1");
    scratch.build(
        "dep",
        &format!("name: {dependency}\n"),
        &[("etc/dep.conf", b"dep\n")],
    );
    let pod = format!("{host}/herd/pulled-pod:1");
    let pod_dir = scratch.path("pod");
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(
        pod_dir.join("pod-manifest.yml"),
        format!("name: {pod}\npod:\n  apps:\n    - dependencies: [{dependency}]\n"),
    )
    .unwrap();
    run_ok(scratch.herd(&["build"]).arg(&pod_dir));
    scratch.push(&[&pod], &[]);

    let fresh = Scratch::new(&registry);
    let app = format!("{host}/herd/pulled-pod_pulled-dep:1");
    let stdout = run_ok(&mut fresh.herd(&["pull", &pod]));
    assert!(stdout.contains(&pod), "{stdout}");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(fresh.path("store/index.json")).unwrap())
            .unwrap();
    let pulled = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == pod.as_str())
        .unwrap_or_else(|| panic!("{pod} is not in {index}"));
    assert_eq!(
        pulled["artifactType"], "application/vnd.herd.pod.v1",
        "{index}"
    );
    assert_eq!(run_ok(&mut fresh.herd(&["fsck"])).trim(), "ok");

    needs(&["skopeo"]); // herd install
    let installed = run_ok(&mut fresh.herd(&["install", &pod]));
    let _ = podman().args(["rmi", "--ignore", &app]).output();
    assert!(
        installed.contains(&format!("installed {app}")),
        "{installed}"
    );

    // Without its app, the pod is reported.
    let store = herd::store::Store::open(&fresh.path("store")).unwrap();
    store.remove_tag(&app.parse().unwrap()).unwrap();
    let output = run_fails(&mut fresh.herd(&["fsck"]));
    let report = text(&output.stdout);
    assert!(
        report.contains(&format!("{pod}: its app image {app} is missing")),
        "{report}"
    );
}

#[test]
fn pushing_a_directory_pushes_the_name_its_last_build_produced() {
    let registry = Registry::start();
    let scratch = Scratch::new(&registry);
    let host = registry.host();
    let greeter = common::example("aci-greeter");
    let greeter = greeter.to_str().unwrap();
    // Its name needs the version its build scripts write: a store that
    // has never built it says how to push it.
    scratch.build(
        "other",
        "name: aci.example.com/other:1\n",
        &[("hello", b"hello")],
    );
    let error = text(&run_fails(&mut scratch.herd(&["push", "--registry", &host, greeter])).stderr);
    assert!(
        error.contains("has no build recorded") && error.contains(&format!("herd build {greeter}")),
        "{error}"
    );

    let built = run_ok(
        scratch
            .herd(&["build"])
            .arg(common::example("aci-busybox"))
            .arg(greeter),
    );
    let summary = scratch.push(&[greeter], &["--registry", &host]);
    let pushed = summary["images"].as_array().unwrap().last().unwrap();
    let name = pushed["name"].as_str().unwrap();
    assert!(
        name.starts_with("aci.example.com/aci-greeter:"),
        "{summary}"
    );
    let digest = pushed["digest"].as_str().unwrap();
    assert!(
        built.contains(&format!("{name} {digest}")),
        "{built}\n{summary}"
    );
    let destination = pushed["destination"].as_str().unwrap();
    assert_eq!(skopeo_digest(destination, &[]), digest);
}
