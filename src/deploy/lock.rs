//! One rollout of a service at a time, whoever starts it: a lock on each
//! of the service's machines, `/var/lib/herd/locks/<envName>_<service>`,
//! a symbolic link whose target is the owner (`user@host pid N since
//! TIME`). `ln -s` creates it atomically with its content, so a reader
//! always finds who holds it. herd never breaks another owner's lock: it
//! reports it, and `herd deploy --unlock` removes it on the user's word.

use super::ssh::Connections;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

const TAKE: &str = r#"
mkdir -p /var/lib/herd/locks || exit 2
l=/var/lib/herd/locks/$1
if ln -sT -- "$2" "$l" 2>/dev/null; then exit 0; fi
readlink -- "$l" && exit 1
exit 2
"#;

const RELEASE: &str = r#"
l=/var/lib/herd/locks/$1
if [ "$(readlink -- "$l")" = "$2" ]; then rm -f -- "$l"; fi
exit 0
"#;

const BREAK: &str = r#"
l=/var/lib/herd/locks/$1
o=$(readlink -- "$l") || exit 1
rm -f -- "$l" && printf '%s\n' "$o"
"#;

/// The locks this run holds, released on drop (also after Ctrl-C, which
/// the rollout turns into an orderly stop).
pub struct Lock<'a> {
    conn: &'a Connections,
    name: String,
    owner: String,
    held: Vec<String>,
}

/// Who this run is, as written into its locks.
pub fn owner() -> String {
    let user = std::env::var("USER")
        .ok()
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "?".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let since = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    // Only characters a symbolic link target and a message can carry.
    let clean = |s: String| -> String {
        s.chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect()
    };
    format!(
        "{}@{} pid {} since {since}",
        clean(user),
        clean(host),
        std::process::id()
    )
}

impl<'a> Lock<'a> {
    /// Takes `<env>_<service>` on every machine of `machines` (in name
    /// order, so two runs cannot each hold half). When one is held by
    /// another owner, waits up to `wait`, then gives back what it took and
    /// fails naming the owner.
    pub fn take(
        conn: &'a Connections,
        env: &str,
        service: &str,
        machines: &[String],
        wait: Duration,
    ) -> Result<Lock<'a>> {
        let mut lock = Lock {
            conn,
            name: format!("{env}_{service}"),
            owner: owner(),
            held: vec![],
        };
        let deadline = Instant::now() + wait;
        let mut sorted = machines.to_vec();
        sorted.sort();
        sorted.dedup();
        for machine in sorted {
            loop {
                let out = conn.script(&machine, TAKE, &[&lock.name, &lock.owner], b"")?;
                match out.status {
                    0 => {
                        lock.held.push(machine.clone());
                        break;
                    }
                    1 if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    1 => bail!(
                        "service {service} is being deployed: its lock on {machine} is held by {} (if that deploy is gone: herd deploy ENV --unlock {service})",
                        out.stdout_text().trim()
                    ),
                    _ => bail!(
                        "cannot take the lock of {service} on {machine}: {}",
                        out.stderr
                    ),
                }
            }
        }
        Ok(lock)
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        for machine in &self.held {
            match self
                .conn
                .script(machine, RELEASE, &[&self.name, &self.owner], b"")
            {
                Ok(out) if out.success() => {}
                Ok(out) => tracing::warn!(
                    "releasing the lock {} on {machine}: {}",
                    self.name,
                    out.stderr
                ),
                Err(e) => tracing::warn!("releasing the lock {} on {machine}: {e:#}", self.name),
            }
        }
    }
}

/// Removes the lock of `service` on `machines`, whoever holds it; returns
/// (machine, former owner) for each lock that was there.
pub fn unlock(
    conn: &Connections,
    env: &str,
    service: &str,
    machines: &[String],
) -> Result<Vec<(String, String)>> {
    let name = format!("{env}_{service}");
    let mut broken = vec![];
    for machine in machines {
        let out = conn.script(machine, BREAK, &[&name], b"")?;
        if out.success() {
            broken.push((machine.clone(), out.stdout_text().trim().to_string()));
        }
    }
    Ok(broken)
}
