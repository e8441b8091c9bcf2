//! Registry credentials, found where docker and podman keep them, and the
//! `WWW-Authenticate` challenges that say how to use them.
//!
//! Secrets live only in [`Secret`], whose `Debug` and `Display` print
//! nothing, so no log line, error message or image can carry one by
//! accident.

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A password or token. Never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Credentials for one registry, and where they came from (for messages).
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub secret: Secret,
    /// The secret is an OAuth2 refresh token (`identitytoken`), exchanged
    /// at the token service, not a password.
    pub identity_token: bool,
    pub source: String,
}

impl Credentials {
    /// The `Authorization` value for HTTP basic auth.
    pub fn basic_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.secret.expose());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// "user `name` from FILE", for messages.
    pub fn describe(&self) -> String {
        if self.identity_token {
            format!("the identity token from {}", self.source)
        } else {
            format!("user `{}` from {}", self.username, self.source)
        }
    }
}

/// A docker `config.json` or containers `auth.json`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The files searched, in podman's order, then docker's. Build scripts
/// must not read them (`sandbox::masked_host_paths`).
pub(crate) fn credential_files() -> Vec<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("HOME");
    let mut files = Vec::new();
    files.extend(var("REGISTRY_AUTH_FILE"));
    files.extend(var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(
        var("XDG_CONFIG_HOME")
            .or_else(|| home.as_ref().map(|h| h.join(".config")))
            .map(|d| d.join("containers/auth.json")),
    );
    files.extend(
        var("DOCKER_CONFIG")
            .or_else(|| home.as_ref().map(|h| h.join(".docker")))
            .map(|d| d.join("config.json")),
    );
    files
}

/// The registries credential file `path` has entries or helpers for
/// (`herd doctor`): names only, never a secret.
pub(crate) fn registries_in(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading credentials from {}", path.display()))?;
    let file: AuthFile =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut names: Vec<String> = file
        .auths
        .keys()
        .chain(file.cred_helpers.keys())
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    if let Some(store) = file.creds_store {
        names.push(format!("any other through docker-credential-{store}"));
    }
    Ok(names)
}

/// The names a registry host may be filed under: `docker.io` has several.
fn host_keys(host: &str) -> Vec<&str> {
    match host {
        "registry-1.docker.io" | "docker.io" | "index.docker.io" => {
            vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
        }
        _ => vec![host],
    }
}

/// `https://index.docker.io/v1/` -> `index.docker.io`; containers'
/// `host/namespace` keys stay as they are.
fn normalize_key(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    key.strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key)
}

/// Finds credentials for `repository` on `host`, or `None`.
pub fn lookup(host: &str, repository: &str) -> Result<Option<Credentials>> {
    for path in credential_files() {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading credentials from {}", path.display()));
            }
        };
        // serde_json's message names a position, never the file's content.
        let file: AuthFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(found) = lookup_in(&file, &path, host, repository)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn lookup_in(
    file: &AuthFile,
    path: &std::path::Path,
    host: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let keys = host_keys(host);
    if let Some(helper) = keys.iter().find_map(|k| file.cred_helpers.get(*k)) {
        return run_helper(helper, host);
    }
    // The most specific `host/namespace/...` key wins (containers-auth.json(5)).
    let full = format!("{host}/{repository}");
    let best = file
        .auths
        .iter()
        .map(|(key, entry)| (normalize_key(key), entry))
        .filter(|(key, _)| {
            keys.contains(key) || (full.starts_with(key) && full[key.len()..].starts_with('/'))
        })
        .max_by_key(|(key, _)| key.len());
    if let Some((key, entry)) = best {
        let source = format!("{} ({key})", path.display());
        if let Some(credentials) = entry_credentials(entry, source)? {
            return Ok(Some(credentials));
        }
    }
    match &file.creds_store {
        Some(helper) => run_helper(helper, host),
        None => Ok(None),
    }
}

fn entry_credentials(entry: &AuthEntry, source: String) -> Result<Option<Credentials>> {
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        let username = entry.username.clone().unwrap_or_else(|| "<token>".into());
        return Ok(Some(Credentials {
            username,
            secret: Secret(token.clone()),
            identity_token: true,
            source,
        }));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        let Some((username, password)) = decoded else {
            bail!("the `auth` value in {source} is not base64 of `user:password`");
        };
        return Ok(Some(Credentials {
            username,
            secret: Secret(password),
            identity_token: false,
            source,
        }));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: username.clone(),
            secret: Secret(password.clone()),
            identity_token: false,
            source,
        }));
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` with the server on stdin.
fn run_helper(helper: &str, host: &str) -> Result<Option<Credentials>> {
    let program = format!("docker-credential-{helper}");
    let server = if host_keys(host).len() > 1 {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running the credential helper {program} for {host}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(server.as_bytes())?;
    let output = child
        .wait_with_output()
        .with_context(|| format!("running {program}"))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_string()
            + &String::from_utf8_lossy(&output.stderr);
        if said.to_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // What a helper prints on failure is a message, not the secret, but
        // keep it short.
        let said: String = said.trim().chars().take(200).collect();
        bail!(
            "the credential helper {program} failed for {host} ({}): {said}",
            output.status
        );
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct HelperAnswer {
        username: String,
        secret: String,
    }
    let answer: HelperAnswer = serde_json::from_slice(&output.stdout).map_err(|e| {
        anyhow::anyhow!(
            "{program} answered something that is not {{\"Username\",\"Secret\"}} JSON: {e}"
        )
    })?;
    let identity_token = answer.username == "<token>";
    Ok(Some(Credentials {
        username: answer.username,
        secret: Secret(answer.secret),
        identity_token,
        source: program,
    }))
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses `Bearer realm="https://auth/token",service="reg",scope="..."`
    /// or `Basic realm="..."`; `None` for schemes herd cannot answer.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let params = parse_params(rest);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
        })
    }
}

/// `key="value", key=value` pairs; values may be quoted and contain commas.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim_start();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_and_basic_challenges() {
        let challenge = Challenge::parse(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(
            challenge,
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(
            Challenge::parse("Bearer service=x"),
            None,
            "a bearer challenge needs a realm"
        );
    }

    #[test]
    fn finds_the_most_specific_entry_and_never_shows_the_secret() {
        let encode = |pair: &str| base64::engine::general_purpose::STANDARD.encode(pair);
        let text = serde_json::json!({"auths": {
            "https://reg.example.com/v1/": {"auth": encode("wide:s3cret-wide")},
            "reg.example.com/team": {"auth": encode("team:s3cret-team")},
            "other.example.com": {"identitytoken": "refresh-s3cret"},
        }})
        .to_string();
        let file: AuthFile = serde_json::from_str(&text).unwrap();
        let path = std::path::Path::new("auth.json");
        let team = lookup_in(&file, path, "reg.example.com", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!(
            (team.username.as_str(), team.secret.expose()),
            ("team", "s3cret-team")
        );
        let wide = lookup_in(&file, path, "reg.example.com", "teams/app")
            .unwrap()
            .unwrap();
        assert_eq!(wide.username, "wide");
        let token = lookup_in(&file, path, "other.example.com", "x")
            .unwrap()
            .unwrap();
        assert!(token.identity_token);
        assert!(
            lookup_in(&file, path, "none.example.com", "x")
                .unwrap()
                .is_none()
        );
        let shown = format!(
            "{team:?} {} {wide:?} {token:?} {}",
            team.describe(),
            token.describe()
        );
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
