//! What herd does on a machine, as small `sh` scripts run over SSH. Every
//! value reaches a script as a positional parameter (quoted by
//! `ssh::quote`), never pasted into its text.
//!
//! On each machine:
//!
//! ```text
//! /etc/systemd/system/<unit>.service|.timer        the deployed units
//! /var/lib/herd/deployed/<envName>/<service>/<file> one empty marker per file herd
//!                                                   deployed there (what --prune and
//!                                                   status know as this environment's)
//! /var/lib/herd/previous/<file>                    the version before the last deploy
//! /var/lib/herd/locks/<envName>_<service>          rollout lock (see lock)
//! ```

use super::ssh::Connections;
use anyhow::{Result, bail};
use std::collections::BTreeMap;

pub const UNIT_DIR: &str = "/etc/systemd/system";
pub const STATE_DIR: &str = "/var/lib/herd";

/// What a machine holds of an environment.
#[derive(Debug, Default, Clone)]
pub struct Survey {
    /// Unit file -> sha256 (hex) of the asked-for files that exist.
    pub hashes: BTreeMap<String, String>,
    /// Unit file -> its permission bits, for the same files: a unit that
    /// carries secrets but is world-readable (as an older herd installed
    /// it) is a change to deploy, like different content.
    pub modes: BTreeMap<String, u32>,
    /// service -> files herd deployed there for this environment.
    pub deployed: BTreeMap<String, Vec<String>>,
}

const SURVEY: &str = r#"
env=$1; shift
cd /etc/systemd/system || exit 1
for f; do
  if [ -f "$f" ]; then
    printf 'mode %s %s\n' "$(stat -c %a -- "$f")" "$f" && sha256sum -- "$f" || exit 1
  fi
done
m=/var/lib/herd/deployed/$env
if [ -d "$m" ]; then
  cd "$m" || exit 1
  for f in */*; do if [ -f "$f" ]; then printf 'deployed %s\n' "$f"; fi; done
fi
exit 0
"#;

/// The hashes and modes of `files` on `machine` and this environment's
/// markers.
pub fn survey(conn: &Connections, machine: &str, env: &str, files: &[&str]) -> Result<Survey> {
    let mut args = vec![env];
    args.extend_from_slice(files);
    let out = conn.script(machine, SURVEY, &args, b"")?;
    if !out.success() {
        bail!("reading the units on {machine} failed: {}", out.stderr);
    }
    let mut survey = Survey::default();
    for line in out.stdout_text().lines() {
        if let Some(rest) = line.strip_prefix("deployed ") {
            if let Some((service, file)) = rest.split_once('/') {
                survey
                    .deployed
                    .entry(service.to_string())
                    .or_default()
                    .push(file.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("mode ") {
            let parsed = rest
                .split_once(' ')
                .and_then(|(mode, file)| Some((u32::from_str_radix(mode, 8).ok()?, file)));
            match parsed {
                Some((mode, file)) => survey.modes.insert(file.to_string(), mode),
                None => bail!("reading the units on {machine}: unexpected line {line:?}"),
            };
        } else if let Some((hash, file)) = line.split_once("  ") {
            survey.hashes.insert(file.to_string(), hash.to_string());
        }
    }
    Ok(survey)
}

const UPDATE: &str = r#"
env=$1 service=$2 start=$3; shift 3
d=/etc/systemd/system p=/var/lib/herd/previous m=/var/lib/herd/deployed/$env/$service
# previous/ keeps copies of units that may hold secrets: root's only.
mkdir -p "$p" "$m" && chmod 700 "$p" || exit 2
# First the versions running now become the previous ones, so a rollback
# after any failure below puts back exactly what was there.
i=1; for a; do
  if [ $((i % 3)) = 1 ]; then
    if [ -f "$d/$a" ]; then cp "$d/$a" "$p/.$a.new" && mv -f "$p/.$a.new" "$p/$a" || exit 2
    else rm -f "$p/$a"; fi
  fi
  i=$((i + 1))
done
t=
trap 'rm -f "$t"' EXIT
while [ $# -ge 3 ]; do
  f=$1 n=$2 mode=$3; shift 3
  # mktemp makes the file 0600: a secret is never readable, even while
  # it is being written.
  t=$(mktemp "$d/.herd-XXXXXXXX") || exit 2
  # GNU head -c reads no more than it is asked: the next file follows.
  head -c "$n" >"$t" && [ "$(wc -c <"$t")" -eq "$n" ] || { echo "writing $f failed" >&2; exit 2; }
  chmod "$mode" "$t" && sync "$t" && mv -f "$t" "$d/$f" && : >"$m/$f" || { echo "writing $f failed" >&2; exit 2; }
done
systemctl daemon-reload || { echo "systemctl daemon-reload failed" >&2; exit 1; }
systemctl enable --quiet "$start" 2>/dev/null || true
systemctl restart "$start" || exit 1
systemctl is-active --quiet "$start" || { echo "$start is $(systemctl is-active "$start") after its restart" >&2; exit 1; }
"#;

/// One file of a unit to install: its name, content and mode.
pub struct UnitFile<'a> {
    pub name: &'a str,
    pub content: &'a [u8],
    pub mode: u32,
}

/// Writes each of `files` to `/etc/systemd/system`
/// atomically (a temporary file renamed over the old one, which is kept in
/// `previous/`), then daemon-reload, enable and restart `start` (its
/// readiness is what `systemctl restart` waits for) and checks it is
/// active: one SSH round trip per unit. `Ok(Err)` is the unit failing, as
/// opposed to the machine not answering.
pub fn update(
    conn: &Connections,
    machine: &str,
    env: &str,
    service: &str,
    start: &str,
    files: &[UnitFile],
) -> Result<Result<(), String>> {
    // Each file's length and mode (octal, for chmod) as arguments.
    let numbers: Vec<(String, String)> = files
        .iter()
        .map(|f| (f.content.len().to_string(), format!("{:o}", f.mode)))
        .collect();
    let mut args = vec![env, service, start];
    let mut input = vec![];
    for (file, (length, mode)) in files.iter().zip(&numbers) {
        args.push(file.name);
        args.push(length);
        args.push(mode);
        input.extend_from_slice(file.content);
    }
    let out = conn.script(machine, UPDATE, &args, &input)?;
    Ok(match out.success() {
        true => Ok(()),
        false => Err(out.stderr),
    })
}

const ROLLBACK: &str = r#"
env=$1 service=$2 start=$3; shift 3
d=/etc/systemd/system p=/var/lib/herd/previous m=/var/lib/herd/deployed/$env/$service
if [ -f "$p/$1" ]; then
  for f; do
    if [ -f "$p/$f" ]; then cp "$p/$f" "$d/.herd-rollback" && mv -f "$d/.herd-rollback" "$d/$f"; fi
  done
  systemctl daemon-reload && systemctl restart "$start" && systemctl is-active --quiet "$start"
else
  systemctl stop -- "$@"; systemctl disable --quiet -- "$@" 2>/dev/null
  for f; do rm -f "$d/$f" "$m/$f"; done
  systemctl daemon-reload; systemctl reset-failed -- "$@" 2>/dev/null
  echo removed
fi
"#;

/// What a rollback did.
#[derive(Debug, PartialEq, Eq)]
pub enum RolledBack {
    /// The previous version is back and active.
    Restored,
    /// There was none: the new unit was stopped and removed.
    Removed,
    /// The previous version is back but did not start.
    Failed(String),
}

/// Puts the previous version of `files` (the `.service` first) back and
/// restarts `start`; a unit that had no previous version is removed.
pub fn rollback(
    conn: &Connections,
    machine: &str,
    env: &str,
    service: &str,
    start: &str,
    files: &[&str],
) -> Result<RolledBack> {
    let mut args = vec![env, service, start];
    args.extend_from_slice(files);
    let out = conn.script(machine, ROLLBACK, &args, b"")?;
    Ok(if !out.success() {
        RolledBack::Failed(out.stderr)
    } else if out.stdout_text().trim() == "removed" {
        RolledBack::Removed
    } else {
        RolledBack::Restored
    })
}

const REMOVE: &str = r#"
env=$1 service=$2; shift 2
d=/etc/systemd/system p=/var/lib/herd/previous m=/var/lib/herd/deployed/$env/$service
systemctl stop -- "$@" || exit 1
systemctl disable --quiet -- "$@" 2>/dev/null
for f; do rm -f "$d/$f" "$m/$f" "$p/$f"; done
rmdir "$m" 2>/dev/null
systemctl daemon-reload && systemctl reset-failed -- "$@" 2>/dev/null
exit 0
"#;

/// Stops, disables and removes `files` of `service` (`--prune`).
pub fn remove(
    conn: &Connections,
    machine: &str,
    env: &str,
    service: &str,
    files: &[&str],
) -> Result<()> {
    let mut args = vec![env, service];
    args.extend_from_slice(files);
    let out = conn.script(machine, REMOVE, &args, b"")?;
    if !out.success() {
        bail!(
            "removing {} on {machine} failed: {}",
            files.join(" "),
            out.stderr
        );
    }
    Ok(())
}

/// The last `lines` journal lines of `unit`.
pub fn journal(conn: &Connections, machine: &str, unit: &str, lines: u32) -> Result<String> {
    let lines = lines.to_string();
    let out = conn.run(
        machine,
        &[
            "journalctl",
            "--no-pager",
            "-o",
            "short-iso",
            "-n",
            &lines,
            "-u",
            unit,
        ],
        b"",
    )?;
    Ok(out.stdout_text())
}

/// A unit's state as systemd reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    /// `active`, `inactive`, `failed`, `activating`...
    pub active: String,
    /// `running`, `dead`, `exited`...
    pub sub: String,
    /// When it last became active (systemd's format), empty if never.
    pub since: String,
    /// Automatic restarts systemd made (`NRestarts`).
    pub restarts: u32,
}

/// The states of `units` on `machine`.
pub fn states(
    conn: &Connections,
    machine: &str,
    units: &[&str],
) -> Result<BTreeMap<String, UnitState>> {
    if units.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = vec![
        "systemctl",
        "show",
        "-p",
        "Id",
        "-p",
        "ActiveState",
        "-p",
        "SubState",
        "-p",
        "ActiveEnterTimestamp",
        "-p",
        "NRestarts",
        "--",
    ];
    args.extend_from_slice(units);
    let out = conn.run(machine, &args, b"")?;
    if !out.success() {
        bail!("systemctl show on {machine} failed: {}", out.stderr);
    }
    let mut states = BTreeMap::new();
    for block in out.stdout_text().split("\n\n") {
        let mut id = None;
        let mut state = UnitState::default();
        for line in block.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            match key {
                "Id" => id = Some(value.to_string()),
                "ActiveState" => state.active = value.to_string(),
                "SubState" => state.sub = value.to_string(),
                "ActiveEnterTimestamp" => state.since = value.to_string(),
                "NRestarts" => state.restarts = value.parse().unwrap_or(0),
                _ => {}
            }
        }
        if let Some(id) = id {
            states.insert(id, state);
        }
    }
    Ok(states)
}
