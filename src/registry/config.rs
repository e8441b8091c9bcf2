//! herd's configuration file (`registries:` section) and the mapping from an
//! image name to the registry endpoint herd actually talks to.
//!
//! ```yaml
//! registries:
//!   aci.example.com: {mirror: "localhost:5000", insecure: true}
//!   registry.internal:5443: {ca: /etc/herd/internal-ca.pem, timeout: 60, retry_times: 3}
//!   127.0.0.1:5000: {insecure: true, trusted_realm: "http://127.0.0.1:5001"}
//! cache: {prefix: "registry.internal:5443/ci", push: false}
//! ```

use crate::names::ImageName;
use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The parsed configuration file; empty when there is none.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub registries: BTreeMap<String, RegistrySettings>,
    /// The registry build cache `herd build` uses without `--cache`.
    pub cache: Option<CacheSettings>,
}

/// `cache:`: what a CI runner sets once instead of `--cache` and
/// `--cache-push` on every build.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSettings {
    /// Images whose names start with this (a registry `host[:port]`, or
    /// `host/path`) are looked up in the registry before being built.
    pub prefix: String,
    /// Publish the cache keys of what is built (only runners trusted to
    /// write the images should).
    #[serde(default)]
    pub push: bool,
}

/// What herd knows about one registry domain.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Talk to this host[:port] instead; the repository path is kept.
    pub mirror: Option<String>,
    /// Plain http instead of https.
    #[serde(default)]
    pub insecure: bool,
    /// A PEM file of CA certificates trusted for this registry, in addition
    /// to the system roots.
    pub ca: Option<PathBuf>,
    /// Seconds herd waits for a connection, for an answer, and for the next
    /// bytes of a body (see [`Endpoint::timeout`]).
    pub timeout: Option<u64>,
    /// How often a failure that may get better is retried.
    pub retry_times: Option<u32>,
    /// The origin (`scheme://host[:port]`) of a token service on another
    /// host or over plain http that may still be sent this registry's
    /// credentials. Without it such a service gets none: credentials go
    /// only to their registry's host and port, or to a token service over
    /// https.
    pub trusted_realm: Option<String>,
}

/// How long herd waits when a registry's settings do not say.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where an image lives on the network: scheme, host and repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as used in URLs and credential lookups.
    pub host: String,
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    /// The repository path on that host: `team/app`.
    pub repository: String,
    /// The connect timeout, the time an answer's head and a small body
    /// may take, and the longest silence within a blob's body.
    pub timeout: std::time::Duration,
    /// Retries of a failure that may get better; `None`: herd's schedule.
    pub retry_times: Option<u32>,
    /// See [`RegistrySettings::trusted_realm`].
    pub trusted_realm: Option<String>,
}

impl Endpoint {
    /// `https://host/v2/<repository>/<rest>`.
    pub fn url(&self, rest: &str) -> String {
        format!("{}/v2/{}/{rest}", self.base_url(), self.repository)
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        format!("{scheme}://{}", self.host)
    }

    /// `host/repository`, for messages.
    pub fn display(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }
}

/// Checks a `host[:port]` the way names.rs checks the domain of a name.
pub fn check_host(host: &str) -> Result<(), String> {
    match format!("{host}/x").parse::<ImageName>() {
        Ok(name) if name.domain() == Some(host) => Ok(()),
        Ok(_) => Err(format!(
            "{host:?} is not a registry host[:port] (it needs a '.' or a ':port', or is localhost)"
        )),
        Err(e) => Err(format!("{host:?}: {e}")),
    }
}

/// Docker Hub's names have no domain (or `docker.io`) and its API lives
/// elsewhere; single-segment paths live under `library/`.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

impl Config {
    /// `HERD_CONFIG`, else `$XDG_CONFIG_HOME/herd/config.yml`, else
    /// `~/.config/herd/config.yml`. A missing file is an empty config; a
    /// file that does not parse is an error naming the line.
    pub fn load() -> Result<Config> {
        let Some(path) = Config::path() else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&path, &text),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::env::var_os("HERD_CONFIG").is_none() =>
            {
                Ok(Config::default())
            }
            Err(e) => {
                Err(e).with_context(|| format!("reading herd's configuration {}", path.display()))
            }
        }
    }

    fn path() -> Option<PathBuf> {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(path) = var("HERD_CONFIG") {
            return Some(path);
        }
        let config_home =
            var("XDG_CONFIG_HOME").or_else(|| var("HOME").map(|home| home.join(".config")))?;
        Some(config_home.join("herd/config.yml"))
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config: Config = crate::yaml::parse(path, text)?;
        for (domain, settings) in &config.registries {
            for host in std::iter::once(domain).chain(&settings.mirror) {
                check_host(host).map_err(|e| anyhow!("{}: registries: {e}", path.display()))?;
            }
            if settings.timeout == Some(0) {
                anyhow::bail!(
                    "{}: registries: {domain}: timeout 0: expected a number of seconds above 0",
                    path.display()
                );
            }
            if let Some(realm) = &settings.trusted_realm
                && reqwest::Url::parse(realm).map_or(true, |u| u.host_str().is_none())
            {
                anyhow::bail!(
                    "{}: registries: {domain}: trusted_realm {realm:?} is not a URL like http://host:port",
                    path.display()
                );
            }
        }
        Ok(config)
    }

    /// The endpoint for `name`: its domain, or `registry_override` when
    /// given, then the config file's mirror for that domain.
    pub fn endpoint(
        &self,
        name: &ImageName,
        registry_override: Option<&str>,
        insecure: bool,
    ) -> Endpoint {
        let domain = registry_override.or(name.domain()).unwrap_or(DOCKER_HUB);
        let settings = self.registries.get(domain).cloned().unwrap_or_default();
        let host = settings
            .mirror
            .clone()
            .unwrap_or_else(|| domain.to_string());
        // A mirror's own entry may also say how to reach it.
        let mirror_settings = settings
            .mirror
            .as_ref()
            .and_then(|m| self.registries.get(m))
            .cloned()
            .unwrap_or_default();
        let (host, repository) = if host == DOCKER_HUB {
            let path = if name.path().contains('/') {
                name.path().to_string()
            } else {
                format!("library/{}", name.path())
            };
            (DOCKER_HUB_API.to_string(), path)
        } else {
            (host, name.path().to_string())
        };
        Endpoint {
            host,
            insecure: insecure || settings.insecure || mirror_settings.insecure,
            ca: settings.ca.or(mirror_settings.ca),
            repository,
            timeout: settings
                .timeout
                .or(mirror_settings.timeout)
                .map_or(DEFAULT_TIMEOUT, std::time::Duration::from_secs),
            retry_times: settings.retry_times.or(mirror_settings.retry_times),
            trusted_realm: settings.trusted_realm.or(mirror_settings.trusted_realm),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(Path::new("config.yml"), text).unwrap()
    }

    fn name(text: &str) -> ImageName {
        text.parse().unwrap()
    }

    #[test]
    fn a_mirror_keeps_the_repository_path_and_its_settings_apply() {
        let config = config(
            "registries:\n  aci.example.com: {mirror: \"localhost:5000\", insecure: true, ca: /ca.pem}\n",
        );
        let endpoint = config.endpoint(&name("aci.example.com/team/app:1"), None, false);
        assert_eq!(endpoint.host, "localhost:5000");
        assert_eq!(endpoint.repository, "team/app");
        assert!(endpoint.insecure);
        assert_eq!(endpoint.ca.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(
            endpoint.url("manifests/1"),
            "http://localhost:5000/v2/team/app/manifests/1"
        );
    }

    #[test]
    fn the_registry_option_replaces_the_domain_before_mirrors_apply() {
        let config = config("registries:\n  127.0.0.1:5000: {insecure: true}\n");
        let endpoint = config.endpoint(
            &name("aci.example.com/app:1"),
            Some("127.0.0.1:5000"),
            false,
        );
        assert_eq!(endpoint.display(), "127.0.0.1:5000/app");
        assert!(endpoint.insecure);
        let plain = config.endpoint(&name("other.example.com/app:1"), None, false);
        assert_eq!(
            plain.url("tags/list"),
            "https://other.example.com/v2/app/tags/list"
        );
    }

    #[test]
    fn names_without_a_domain_are_docker_hub() {
        let endpoint = Config::default().endpoint(&name("busybox:1"), None, false);
        assert_eq!(endpoint.host, "registry-1.docker.io");
        assert_eq!(endpoint.repository, "library/busybox");
    }

    #[test]
    fn timeouts_retries_and_trusted_realms_come_from_the_registry_or_its_mirror() {
        let config = config(
            "registries:\n  a.io: {mirror: \"m.io:5000\", retry_times: 2}\n  m.io:5000: {timeout: 5, trusted_realm: \"http://auth.m.io\"}\n",
        );
        let endpoint = config.endpoint(&name("a.io/app:1"), None, false);
        assert_eq!(endpoint.timeout, std::time::Duration::from_secs(5));
        assert_eq!(endpoint.retry_times, Some(2));
        assert_eq!(endpoint.trusted_realm.as_deref(), Some("http://auth.m.io"));
        let plain = config.endpoint(&name("b.io/app:1"), None, false);
        assert_eq!(plain.timeout, DEFAULT_TIMEOUT);
        assert_eq!(plain.retry_times, None);
        for bad in ["{timeout: 0}", "{trusted_realm: \"not a url\"}"] {
            let error = Config::parse(Path::new("c.yml"), &format!("registries:\n  a.io: {bad}\n"))
                .unwrap_err();
            assert!(
                format!("{error:#}").contains("c.yml: registries: a.io"),
                "{error:#}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_hosts_are_errors() {
        let error =
            Config::parse(Path::new("c.yml"), "registries:\n  a.io: {mirorr: x}\n").unwrap_err();
        assert!(format!("{error:#}").contains("mirror"), "{error:#}");
        let error = Config::parse(
            Path::new("c.yml"),
            "registries:\n  a.io: {mirror: \"bad host\"}\n",
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("bad host"), "{error:#}");
    }
}
