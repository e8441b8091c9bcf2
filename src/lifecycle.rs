//! An app's life around its process (FORMATS.md section 6, "Readiness and
//! graceful stop"): when it is ready (`readiness`), whether it stays well
//! once ready (`stable`), when its sessions are gone on the way out
//! (`drained`), and the signal that stops it (`stopSignal`). Written in
//! `aci.app` (or a pod's app), kept in `/herd/app.json` for the init and in
//! the `io.herd.app.lifecycle` label for dependents, units and `inspect`.

use crate::templates::CheckCmd;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The config label holding an image's [`Lifecycle`] as JSON.
pub const LABEL: &str = "io.herd.app.lifecycle";

/// The status the init exits with when the app did not become ready in
/// time, as `timeout(1)` does.
pub const READINESS_TIMEOUT_EXIT: i32 = 124;

/// The stop timeout the init assumes when `HERD_STOP_TIMEOUT` is not set:
/// podman's default.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Stable>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained: Option<Drained>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<StopSignal>,
}

impl Lifecycle {
    pub fn is_empty(&self) -> bool {
        self == &Lifecycle::default()
    }

    /// This one's settings, each falling back to `base`'s (a dependency's).
    pub fn or(self, base: Lifecycle) -> Lifecycle {
        Lifecycle {
            readiness: self.readiness.or(base.readiness),
            stable: self.stable.or(base.stable),
            drained: self.drained.or(base.drained),
            stop_signal: self.stop_signal.or(base.stop_signal),
        }
    }

    /// What `herd inspect` shows: the settings, and what the init does
    /// without them.
    pub fn describe(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if self.readiness.is_none() {
            value["readiness"] = "none: ready once the app started".into();
        }
        if self.drained.is_none() {
            value["drained"] =
                "none: the stop signal goes at once (after any prestop scripts)".into();
        }
        if self.stop_signal.is_none() {
            value["stopSignal"] =
                "the signal the container got (SIGTERM from podman and Kubernetes)".into();
        }
        value
    }

    /// How long the app may take to become ready (zero: ready once started).
    pub fn readiness_timeout(&self) -> Duration {
        self.readiness
            .as_ref()
            .map_or(Duration::ZERO, |r| r.timeout.0)
    }
}

/// The command that says the app is ready, run every `interval` after the
/// app started until it succeeds or `timeout` passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    pub exec: CheckCmd,
    #[serde(default = "Period::one_second")]
    pub interval: Period,
    #[serde(default = "Period::one_minute")]
    pub timeout: Period,
}

/// The command that says a ready app is still well (go-nerve's
/// `enableCheckStableCommand`), run every `period`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stable {
    pub exec: CheckCmd,
    #[serde(default = "Period::one_minute")]
    pub period: Period,
}

/// The command that says no client session is left (go-nerve's
/// `disableGracefullyDoneCommand`), polled every `interval` on stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drained {
    pub exec: CheckCmd,
    #[serde(default = "Period::one_second")]
    pub interval: Period,
}

/// A duration written as `1s`, `500ms`, `2m`, `1h 30m` (humantime's
/// syntax) or a number of seconds; between 10 ms and a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Period {
    fn one_second() -> Period {
        Period(Duration::from_secs(1))
    }
    fn one_minute() -> Period {
        Period(Duration::from_secs(60))
    }

    fn checked(duration: Duration, written: &str) -> Result<Period, String> {
        if duration < Duration::from_millis(10) || duration > Duration::from_secs(86_400) {
            return Err(format!(
                "duration `{written}` is out of range: expected from 10ms to 24h"
            ));
        }
        Ok(Period(duration))
    }

    /// Whole seconds, rounded up (what units and Kubernetes take).
    pub fn ceil_seconds(&self) -> u64 {
        self.0.as_millis().div_ceil(1000) as u64
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Period, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Period;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration like \"1s\", \"500ms\" or \"2m\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Period, E> {
                Period::checked(Duration::from_secs(n.min(u32::MAX as u64)), &n.to_string())
                    .map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Period, E> {
                let duration = humantime::parse_duration(s.trim()).map_err(|e| {
                    E::custom(format!(
                        "invalid duration `{s}` ({e}): expected a duration like \"1s\", \"500ms\" or \"2m\""
                    ))
                })?;
                Period::checked(duration, s).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A signal by name (`SIGQUIT` or `QUIT`), kept as `SIGQUIT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopSignal(pub String);

impl StopSignal {
    pub fn parse(text: &str) -> Result<StopSignal, String> {
        let upper = text.trim().to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        match name.parse::<nix::sys::signal::Signal>() {
            Ok(_) => Ok(StopSignal(name)),
            Err(_) => Err(format!(
                "unknown signal `{text}`: expected a signal name like SIGTERM, SIGQUIT or SIGINT"
            )),
        }
    }

    pub fn signal(&self) -> nix::sys::signal::Signal {
        // Checked when parsed.
        self.0.parse().unwrap_or(nix::sys::signal::Signal::SIGTERM)
    }
}

impl Serialize for StopSignal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for StopSignal {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<StopSignal, D::Error> {
        let text = String::deserialize(deserializer)?;
        StopSignal::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The lifecycle in the config of the image stored under `descriptor`
/// (empty for images without one, or not herd's).
pub fn of_image(
    store: &crate::store::Store,
    descriptor: &oci_spec::image::Descriptor,
) -> anyhow::Result<Lifecycle> {
    let manifest = store.read_manifest(descriptor)?;
    // Read as plain JSON: a config that is not a full OCI image config
    // (another tool's artifact) simply has no lifecycle.
    let bytes = store.read_blob(&crate::store::from_oci_digest(manifest.config().digest()))?;
    let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    Ok(config["config"]["Labels"][LABEL]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default())
}

/// How much of a stop timeout the drain may use: the rest is the app's own
/// shutdown after its stop signal (a third, from 1 s to 60 s).
pub fn drain_budget(stop_timeout: Duration) -> Duration {
    let margin = (stop_timeout / 3).clamp(Duration::from_secs(1), Duration::from_secs(60));
    stop_timeout.saturating_sub(margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_signals_parse_or_say_what_was_expected() {
        let parse = |text: &str| serde_json::from_str::<Period>(text).map(|p| p.0);
        assert_eq!(parse("\"1s\"").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("\"1m 30s\"").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("5").unwrap(), Duration::from_secs(5));
        assert!(
            parse("\"soon\"")
                .unwrap_err()
                .to_string()
                .contains("like \"1s\"")
        );
        assert!(
            parse("\"1ms\"")
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        assert_eq!(StopSignal::parse("quit").unwrap().0, "SIGQUIT");
        assert_eq!(
            StopSignal::parse("SIGINT").unwrap().signal(),
            nix::sys::signal::Signal::SIGINT
        );
        assert!(
            StopSignal::parse("SIGNOPE")
                .unwrap_err()
                .contains("SIGTERM")
        );
        // What is serialized reads back the same.
        let text = serde_json::to_string(&Period(Duration::from_millis(1500))).unwrap();
        assert_eq!(parse(&text).unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn the_drain_leaves_the_app_a_margin() {
        assert_eq!(drain_budget(Duration::from_secs(3)), Duration::from_secs(2));
        assert_eq!(
            drain_budget(Duration::from_secs(30)),
            Duration::from_secs(20)
        );
        assert_eq!(
            drain_budget(Duration::from_secs(600)),
            Duration::from_secs(540)
        );
        assert_eq!(drain_budget(Duration::ZERO), Duration::ZERO);
    }
}
