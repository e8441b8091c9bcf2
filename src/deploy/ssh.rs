//! Commands on the machines through the system's OpenSSH client, with the
//! user's configuration, keys and agent. One master connection per
//! machine (ControlMaster, socket in a private temporary directory) carries
//! every command; it is closed when the `Connections` are dropped, and
//! ControlPersist ends it anyway a minute after a killed herd's last use.

use crate::environments::Machine;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// What a remote command returned.
#[derive(Debug)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == 0
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The SSH side of a deployment: how to run commands on each machine.
pub struct Connections {
    machines: BTreeMap<String, Machine>,
    config: Option<PathBuf>,
    connect_timeout: Duration,
    /// Private (0700) directory holding the master sockets.
    dir: tempfile::TempDir,
    /// Per machine: whether its master came up (the error otherwise),
    /// decided once (a second caller waits for the first).
    masters: BTreeMap<String, OnceLock<Result<(), String>>>,
}

impl Connections {
    pub fn new(
        machines: &[Machine],
        config: Option<PathBuf>,
        connect_timeout: Duration,
    ) -> Result<Connections> {
        // Sockets have a short path limit (108 bytes): /tmp rather than a
        // long TMPDIR, and %C (a hash) as the file name.
        let base = if std::path::Path::new("/tmp").is_dir() {
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix(".herd-ssh-")
            .tempdir_in(&base)
            .context("creating a directory for ssh connections")?;
        if let Some(config) = &config
            && !config.exists()
        {
            bail!("ssh config {} does not exist", config.display());
        }
        Ok(Connections {
            machines: machines
                .iter()
                .map(|m| (m.name.clone(), m.clone()))
                .collect(),
            masters: machines
                .iter()
                .map(|m| (m.name.clone(), OnceLock::new()))
                .collect(),
            config,
            connect_timeout,
            dir,
        })
    }

    /// `ssh` with the options every invocation shares, for `machine`.
    fn ssh(&self, machine: &Machine) -> Command {
        let mut command = Command::new("ssh");
        if let Some(config) = &self.config {
            command.arg("-F").arg(config);
        }
        let destination = machine.destination();
        let timeout = self.connect_timeout.as_secs().max(1);
        command
            .args(["-o", "BatchMode=yes"])
            .args(["-o", &format!("ConnectTimeout={timeout}")])
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            .arg("-o")
            .arg(format!("ControlPath={}/%C", self.dir.path().display()));
        if let Some(port) = destination.port {
            command.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &destination.user {
            command.arg("-l").arg(user);
        }
        // Children of herd, not of the terminal's Ctrl-C: a step under way
        // finishes, then herd stops (see rollout).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        command
    }

    fn machine(&self, name: &str) -> Result<&Machine> {
        self.machines
            .get(name)
            .ok_or_else(|| anyhow!("no machine `{name}` in config.yml"))
    }

    /// Opens the master connection of `name` once; later calls return
    /// the first outcome.
    fn master(&self, name: &str) -> Result<()> {
        let machine = self.machine(name)?;
        let once = &self.masters[name];
        let outcome = once.get_or_init(|| {
            let mut command = self.ssh(machine);
            command
                .args(["-o", "ControlMaster=yes", "-o", "ControlPersist=60"])
                .args(["-N", "--"])
                .arg(machine.destination().host)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            tracing::debug!("connecting to {name} ({})", machine.ssh);
            match command.output() {
                Ok(out) if out.status.success() => Ok(()),
                Ok(out) => {
                    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    let timed_out = stderr.contains("timed out");
                    Err(format!(
                        "cannot reach machine {name} ({}) over ssh{}: {}",
                        machine.ssh,
                        if timed_out {
                            format!(
                                " within {} s (ConnectTimeout)",
                                self.connect_timeout.as_secs()
                            )
                        } else {
                            String::new()
                        },
                        if stderr.is_empty() {
                            format!("ssh exited with {}", out.status)
                        } else {
                            stderr
                        }
                    ))
                }
                Err(e) => Err(format!(
                    "cannot run ssh (Debian package openssh-client): {e}"
                )),
            }
        });
        outcome.clone().map_err(|e| anyhow!(e))
    }

    /// Runs `args` on `machine`, each argument shell-quoted, with `stdin`
    /// as its standard input.
    pub fn run(&self, machine: &str, args: &[&str], stdin: &[u8]) -> Result<Output> {
        self.master(machine)?;
        let m = self.machine(machine)?;
        let remote = quote(args)?;
        let mut command = self.ssh(m);
        command
            .args(["-o", "ControlMaster=no", "-T", "--"])
            .arg(m.destination().host)
            .arg(remote)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("running ssh to {machine}"))?;
        let mut input = child.stdin.take();
        let data = stdin.to_vec();
        // Written on a thread: a command that writes much before reading
        // its input would otherwise deadlock against us.
        let writer = std::thread::spawn(move || {
            if let Some(input) = input.as_mut() {
                let _ = input.write_all(&data);
            }
        });
        let out = child
            .wait_with_output()
            .with_context(|| format!("running ssh to {machine}"))?;
        let _ = writer.join();
        let status = out.status.code().unwrap_or(255);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if status == 255 {
            bail!(
                "ssh to machine {machine} failed: {}",
                if stderr.is_empty() {
                    "connection lost"
                } else {
                    &stderr
                }
            );
        }
        Ok(Output {
            status,
            stdout: out.stdout,
            stderr,
        })
    }

    /// `sh -c SCRIPT herd ARGS...` on `machine`: scripts take their values
    /// as positional parameters, never pasted into their text.
    pub fn script(
        &self,
        machine: &str,
        script: &str,
        args: &[&str],
        stdin: &[u8],
    ) -> Result<Output> {
        let mut all = vec!["sh", "-c", script, "herd"];
        all.extend_from_slice(args);
        self.run(machine, &all, stdin)
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        for (name, once) in &self.masters {
            if let (Some(Ok(())), Some(machine)) = (once.get(), self.machines.get(name)) {
                let _ = self
                    .ssh(machine)
                    .args(["-O", "exit", "--"])
                    .arg(machine.destination().host)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// One shell word per argument: ssh hands the remote side a single
/// string, which its shell splits again.
pub fn quote(args: &[&str]) -> Result<String> {
    let words: Vec<String> = args
        .iter()
        .map(|a| {
            shlex::try_quote(a)
                .map(|q| q.into_owned())
                .map_err(|_| anyhow!("a remote command argument holds a NUL byte"))
        })
        .collect::<Result<_>>()?;
    Ok(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_survive_the_remote_shell() {
        let quoted = quote(&["printf", "%s|", "a b", "$(rm -rf /)", "it's", "`x`;&"]).unwrap();
        let out = Command::new("sh").arg("-c").arg(&quoted).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a b|$(rm -rf /)|it's|`x`;&|"
        );
        assert!(quote(&["a\0b"]).is_err());
    }
}
