//! What a build script may reach and use: its network, its process and
//! memory limits, its time, and the host files hidden from a builder that
//! runs on the host's own system directories. Chosen per build from the
//! command line, else the manifest's `build:` keys, else the defaults here;
//! `runtime` applies them to each script's container.

use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The network a build script is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Its own network namespace with outbound access through
    /// slirp4netns (user-mode NAT): package downloads work, the host's
    /// loopback services (127.0.0.1) are out of reach.
    #[default]
    Private,
    /// The host's network namespace: everything the host reaches,
    /// including its loopback services.
    Host,
}

/// A resource limit: a number, or no limit (`max`, as cgroups write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Max,
    At(u64),
}

impl Limit {
    pub fn value(self) -> Option<u64> {
        match self {
            Limit::Max => None,
            Limit::At(n) => Some(n),
        }
    }

    /// A number of processes, or `max`.
    pub fn parse_pids(text: &str) -> Result<Limit, String> {
        match text.trim() {
            "max" => Ok(Limit::Max),
            number => match number.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Limit::At(n)),
                _ => Err(format!(
                    "{text:?} is not a number of processes (a positive integer, or max)"
                )),
            },
        }
    }

    /// A size (`512MiB`, `4GiB`, `2G`, a number of bytes), or `max`.
    pub fn parse_memory(text: &str) -> Result<Limit, String> {
        let text = text.trim();
        if text == "max" {
            return Ok(Limit::Max);
        }
        match text.parse::<bytesize::ByteSize>() {
            // Below a few MiB a shell cannot even start: surely a unit
            // forgotten, not a wish.
            Ok(size) if size.as_u64() >= MIN_MEMORY => Ok(Limit::At(size.as_u64())),
            Ok(_) => Err(format!("{text:?} is below the smallest memory limit, 4MiB")),
            Err(_) => Err(format!(
                "{text:?} is not a size (like 512MiB or 4GiB, or max)"
            )),
        }
    }
}

const MIN_MEMORY: u64 = 4 << 20;

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Max => f.write_str("max"),
            Limit::At(n) => write!(f, "{n}"),
        }
    }
}

/// The number or text of a limit in a manifest.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

fn limit_with<'de, D: Deserializer<'de>>(
    deserializer: D,
    parse: fn(&str) -> Result<Limit, String>,
) -> Result<Option<Limit>, D::Error> {
    let text = match NumberOrText::deserialize(deserializer)? {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Text(t) => t,
    };
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn pids_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit>, D::Error> {
    limit_with(d, Limit::parse_pids)
}

fn memory_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Limit>, D::Error> {
    limit_with(d, Limit::parse_memory)
}

/// A script timeout: a duration (`90s`, `30m`, `2h`) or a number of seconds.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text)
            .map_err(|e| format!("{text:?} is not a duration (like 90s, 30m or 2h): {e}"))?,
    };
    if duration.is_zero() {
        return Err("a timeout of 0 would stop every script at once".into());
    }
    Ok(duration)
}

fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = match NumberOrText::deserialize(d)? {
        NumberOrText::Number(n) => n.to_string(),
        NumberOrText::Text(t) => t,
    };
    parse_timeout(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A manifest's `build.sandbox`: each key optional, the command line's
/// choice winning over it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestChoices {
    #[serde(default)]
    pub network: Option<Network>,
    #[serde(default, deserialize_with = "timeout")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "pids_limit")]
    pub pids: Option<Limit>,
    #[serde(default, deserialize_with = "memory_limit")]
    pub memory: Option<Limit>,
}

/// What the command line chose; `None` leaves it to the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Choices {
    pub network: Option<Network>,
    pub pids: Option<Limit>,
    pub memory: Option<Limit>,
    pub timeout: Option<Duration>,
}

/// Default limits: far above what a package install needs (apt, a
/// compiler: a few hundred processes, a GiB or two), far below what a
/// runaway script takes from the host.
pub const DEFAULT_PIDS: Limit = Limit::At(4096);
pub const DEFAULT_MEMORY: Limit = Limit::At(4 << 30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The box every script of one build runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub network: Network,
    pub pids: Limit,
    pub memory: Limit,
    pub timeout: Duration,
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox {
            network: Network::default(),
            pids: DEFAULT_PIDS,
            memory: DEFAULT_MEMORY,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl Sandbox {
    /// The command line's choices, else the manifest's, else the defaults.
    pub fn choose(flags: &Choices, manifest: &ManifestChoices) -> Sandbox {
        let defaults = Sandbox::default();
        Sandbox {
            network: flags
                .network
                .or(manifest.network)
                .unwrap_or(defaults.network),
            pids: flags.pids.or(manifest.pids).unwrap_or(defaults.pids),
            memory: flags.memory.or(manifest.memory).unwrap_or(defaults.memory),
            timeout: flags
                .timeout
                .or(manifest.timeout)
                .unwrap_or(defaults.timeout),
        }
    }
}

/// A limit a script's container ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHit {
    /// A fork failed: the container had `pids` processes.
    Pids(u64),
    /// The kernel killed a process of the container at `memory` bytes.
    Memory(u64),
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Pids(n) => write!(
                f,
                "it reached the pids limit of {n} processes (a fork failed; raise it with --pids-limit or build.sandbox.pids)"
            ),
            LimitHit::Memory(n) => write!(
                f,
                "it reached the memory limit of {} (the kernel killed a process; raise it with --memory-limit or build.sandbox.memory)",
                bytesize::ByteSize::b(*n).display().iec()
            ),
        }
    }
}

/// Host directories a builder without its own root sees read-only.
pub const HOST_SYSTEM_DIRS: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt",
];

/// Host files a builder without dependencies must not read, though it
/// sees the host's /etc, /usr and /opt (read-only) as its system: password
/// hashes, host keys, TLS private keys, and the registry credentials herd
/// itself reads (`auth_files`) when they lie in those directories. /root,
/// /home, /run and /tmp are not shown at all (empty tmpfs instead).
pub fn masked_host_paths(auth_files: &[PathBuf]) -> Vec<String> {
    let mut paths: Vec<String> = [
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/etc/security/opasswd",
        "/etc/ssl/private",
        "/etc/containers/auth.json",
        "/etc/docker",
        "/etc/herd",
    ]
    .map(String::from)
    .into();
    // Host keys: ssh_host_*_key and their .pub, and any other *key* there.
    if let Ok(entries) = std::fs::read_dir("/etc/ssh") {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().contains("key") {
                paths.push(entry.path().display().to_string());
            }
        }
    }
    for file in auth_files {
        if let Some(path) = visible_host_path(file) {
            paths.push(path);
        }
    }
    paths.sort();
    paths.dedup();
    paths
}

/// `file` as a builder would see it, when it lies in a host directory a
/// builder sees (symlinks resolved, as the builder's bind mounts do).
fn visible_host_path(file: &Path) -> Option<String> {
    let real = file.canonicalize().ok()?;
    let first = real.components().nth(1)?;
    let first = first.as_os_str().to_str()?;
    HOST_SYSTEM_DIRS
        .contains(&first)
        .then(|| real.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_numbers_sizes_and_max() {
        assert_eq!(Limit::parse_pids("100"), Ok(Limit::At(100)));
        assert_eq!(Limit::parse_pids("max"), Ok(Limit::Max));
        assert!(Limit::parse_pids("0").is_err());
        assert!(Limit::parse_pids("many").is_err());
        assert_eq!(Limit::parse_memory("1GiB"), Ok(Limit::At(1 << 30)));
        assert_eq!(Limit::parse_memory("512MiB"), Ok(Limit::At(512 << 20)));
        assert_eq!(Limit::parse_memory("max"), Ok(Limit::Max));
        assert!(Limit::parse_memory("512").is_err(), "bytes, surely a slip");
        assert!(Limit::parse_memory("lots").is_err());
        assert_eq!(parse_timeout("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn the_command_line_wins_over_the_manifest_which_wins_over_defaults() {
        let manifest = ManifestChoices {
            network: Some(Network::Host),
            timeout: Some(Duration::from_secs(5)),
            pids: Some(Limit::At(10)),
            memory: None,
        };
        let flags = Choices {
            pids: Some(Limit::Max),
            ..Choices::default()
        };
        let chosen = Sandbox::choose(&flags, &manifest);
        assert_eq!(chosen.network, Network::Host);
        assert_eq!(chosen.timeout, Duration::from_secs(5));
        assert_eq!(chosen.pids, Limit::Max);
        assert_eq!(chosen.memory, DEFAULT_MEMORY);
    }
}
