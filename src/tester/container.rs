//! The container a test runs in: started detached by podman with the
//! keep-alive in place of the app, waited for, exec'd into, removed.

use super::layout::{WORK_DIR_PREFIX, WorkDir};
use super::{
    APP_STATUS, EXEC_WRAPPER, KEEP_ALIVE, LIFELINE, LOG_LINES, POLL_EVERY, RETRY_EVERY, SCRATCH,
    STARTED, TESTS, TOOLS,
};
use crate::names::ImageName;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `tests/wait.sh`, and how it runs in the container.
pub(super) struct WaitScript {
    path: PathBuf,
    command: Vec<String>,
}

impl WaitScript {
    /// Through its own `#!` interpreter (from the image) when it is
    /// executable, else through the toolbox's sh: the rule build scripts
    /// follow too.
    pub(super) fn of(tests: &Path) -> Option<WaitScript> {
        let path = tests.join("wait.sh");
        let metadata = path.metadata().ok().filter(|m| m.is_file())?;
        let inside = format!("{TESTS}/wait.sh");
        let command = if metadata.permissions().mode() & 0o111 != 0 {
            vec![inside]
        } else {
            vec![format!("{TOOLS}/bin/sh"), inside]
        };
        Some(WaitScript { path, command })
    }
}

/// Removes the stopped containers and work directories of `herd test`
/// runs that were killed (their names carry the dead process's id).
/// Best effort: a failure here must not fail this run's test.
pub(super) fn remove_orphans(podman: &Path) {
    let dead = |name: &str| {
        name.strip_prefix(WORK_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<i32>().ok())
            .is_some_and(|pid| {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                    == Err(nix::errno::Errno::ESRCH)
            })
    };
    let listed = Command::new(podman)
        .args(["ps", "--all", "--format", "{{.Names}}", "--filter"])
        .arg(format!("name=^{WORK_DIR_PREFIX}"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(listed) = listed {
        for name in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
            if dead(name) {
                tracing::debug!("removing {name}, left by a killed herd test");
                let mut rm = Command::new(podman);
                rm.args(["rm", "--force", "--time", "0", name]);
                quiet(rm);
            }
        }
    }
    // The names podman gave the killed runs' images (after their layouts).
    let images = Command::new(podman)
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    if let Ok(images) = images {
        for image in String::from_utf8_lossy(&images.stdout).split_whitespace() {
            let orphan = image
                .split('/')
                .any(|part| dead(part.split(':').next().unwrap_or_default()));
            if orphan {
                let mut rmi = Command::new(podman);
                rmi.args(["rmi", image]);
                quiet(rmi);
            }
        }
    }
    for parent in [std::env::temp_dir(), PathBuf::from("/tmp")] {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if dead(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Runs a clean-up command whose failure is of no consequence.
fn quiet(mut command: Command) {
    let _ = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A detached podman container of the image under test. Dropping it
/// removes the container and the name podman gave the image.
pub(super) struct Container {
    podman: PathBuf,
    name: String,
    /// podman's name for the image it loaded from the layout.
    image: Option<String>,
    /// herd's end of the [`LIFELINE`], held as long as the container should run.
    _lifeline: std::fs::File,
    /// `NAME=VALUE` for every command run in the container
    /// (`tester.builder.environment`).
    exec_environment: Vec<String>,
}

impl Container {
    /// Loads the image of `layout` into podman and starts it with the
    /// keep-alive in place of the app `app`, the toolbox and the tests of
    /// `work` mounted read-only.
    pub(super) fn start(
        podman: &Path,
        work: &WorkDir,
        layout: &Path,
        name: &ImageName,
        app: &[String],
        environment: &[crate::manifest::NameValue],
        exec_environment: &[crate::manifest::NameValue],
    ) -> Result<Container> {
        let lifeline = work.path().join("tools").join(LIFELINE);
        nix::unistd::mkfifo(&lifeline, nix::sys::stat::Mode::from_bits_truncate(0o644))
            .with_context(|| format!("creating {}", lifeline.display()))?;
        // Read and write: opening a FIFO for writing alone would block until
        // the container opened it for reading.
        let lifeline = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lifeline)
            .with_context(|| format!("opening {}", lifeline.display()))?;
        let mut container = Container {
            podman: podman.to_path_buf(),
            name: work.name(),
            image: None,
            _lifeline: lifeline,
            exec_environment: exec_environment
                .iter()
                .map(|v| format!("{}={}", v.name, v.value))
                .collect(),
        };
        // Loaded on its own first, to learn the name podman gives it (after
        // the layout's path) and remove that name afterwards.
        let reference = format!("oci:{}:{name}", layout.display());
        let id = container
            .captured(container.command(&["pull", "-q", &reference]))
            .with_context(|| format!("loading {name} into podman"))?;
        let id = id.trim().to_string();
        let tags = container.captured(container.command(&[
            "image",
            "inspect",
            "--format",
            "{{json .RepoTags}}",
            &id,
        ]))?;
        let tags: Vec<String> = serde_json::from_str(tags.trim()).unwrap_or_default();
        container.image = tags.into_iter().find(|t| t.contains(&work.name()));

        let work_dir = work.path().display();
        let mut run = container.command(&["run", "-d", "-q", "--name", &container.name]);
        run.arg("--volume")
            .arg(format!("{work_dir}/tools:{TOOLS}:ro,z"))
            .arg("--volume")
            .arg(format!("{work_dir}/tests:{TESTS}:ro,z"))
            .arg("--tmpfs")
            .arg(format!("{SCRATCH}:rw,mode=1777"));
        // `tester.aci.app.environment`: over the image's own values.
        for variable in environment {
            run.arg("--env")
                .arg(format!("{}={}", variable.name, variable.value));
        }
        run.arg(&id)
            .arg(format!("{TOOLS}/bin/sh"))
            .arg("-c")
            .arg(KEEP_ALIVE)
            .arg("herd-test-app")
            .args(app);
        container
            .captured(run)
            .with_context(|| format!("starting a container of {name}"))?;
        Ok(container)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.podman);
        command.args(args);
        command
    }

    /// `podman exec` of `args` through the wrapper that sets PATH and TMPDIR.
    fn exec(&self, args: &[String]) -> Command {
        let mut command = self.command(&["exec"]);
        for variable in &self.exec_environment {
            command.arg("--env").arg(variable);
        }
        command
            .arg(&self.name)
            .arg(format!("{TOOLS}/bin/sh"))
            .arg("-c")
            .arg(EXEC_WRAPPER)
            .arg("herd-test")
            .args(args);
        command
    }

    /// Runs `command`'s stdout; an error with its output when it fails.
    fn captured(&self, mut command: Command) -> Result<String> {
        let output = command
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", self.podman.display()))?;
        if !output.status.success() {
            bail!(
                "{:?} failed ({}): {}",
                command.get_args().collect::<Vec<_>>(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Waits until herd-init started the keep-alive (prestart scripts ran,
    /// templates rendered), then until `wait` (`tests/wait.sh` and how to
    /// run it) succeeds; both within `timeout`.
    pub(super) fn wait_until_ready(
        &self,
        wait: Option<&WaitScript>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let started_check = vec![format!("{TOOLS}/bin/test"), "-e".into(), STARTED.into()];
        let mut started = false;
        let mut last: Option<(i32, String)> = None;
        loop {
            let check = match (started, wait) {
                (false, _) => &started_check,
                (true, Some(wait)) => &wait.command,
                (true, None) => return Ok(()),
            };
            match run_combined(self.exec(check), deadline)? {
                Some((0, _)) if !started => {
                    started = true;
                    continue;
                }
                Some((0, _)) => return Ok(()),
                Some(result) if started => last = Some(result),
                _ => {}
            }
            self.ensure_running()?;
            let now = Instant::now();
            if now >= deadline {
                let after = humantime::format_duration(timeout);
                let Some(wait) = wait.filter(|_| started) else {
                    bail!(
                        "timed out after {after}: the container did not finish starting (herd-init's prestart scripts and templates); the end of its log:\n{}",
                        self.log_tail()
                    )
                };
                let last = match last {
                    Some((code, output)) => format!(
                        "its last run exited with status {code}{}",
                        if output.trim().is_empty() {
                            String::new()
                        } else {
                            format!(" and printed:\n{}", indent(&output))
                        }
                    ),
                    None => "no run of it finished".into(),
                };
                bail!(
                    "timed out after {after} waiting for {} to succeed (wait longer with --timeout)\n{last}\nthe end of the container's log:\n{}",
                    wait.path.display(),
                    self.log_tail()
                )
            }
            pause(RETRY_EVERY.min(deadline - now))?;
        }
    }

    /// Runs `args` in the container with our stdout and stderr; returns its
    /// exit status.
    pub(super) fn exec_inheriting(&self, args: &[String]) -> Result<i32> {
        let mut child = self
            .exec(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("running {}", self.podman.display()))?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(exit_code(status));
            }
            if let Err(interrupted) = pause(POLL_EVERY) {
                stop(&mut child);
                return Err(interrupted);
            }
        }
    }

    /// An error, with the end of the log, unless the container still runs.
    pub(super) fn ensure_running(&self) -> Result<()> {
        let state = self.captured(self.command(&[
            "inspect",
            "--format",
            "{{.State.Running}} {{.State.ExitCode}}",
            &self.name,
        ]))?;
        match state.trim().split_once(' ') {
            Some(("true", _)) => Ok(()),
            Some((_, code)) => bail!(
                "the container stopped with exit status {code} before the tests finished; the end of its log:\n{}",
                self.log_tail()
            ),
            None => bail!("podman reported the container's state as {state:?}"),
        }
    }

    /// The last lines of the container's log, indented.
    fn log_tail(&self) -> String {
        let lines = LOG_LINES.to_string();
        let logs = self.command(&["logs", "--tail", &lines, &self.name]);
        match run_combined(logs, Instant::now() + Duration::from_secs(10)) {
            Ok(Some((_, output))) if !output.trim().is_empty() => indent(&output),
            _ => "  | (nothing)".into(),
        }
    }

    /// Says so when the app exited with a failure while the tests ran: the
    /// tests decide the verdict, but this is worth knowing.
    pub(super) fn report_app_status(&self, app: &[String]) {
        let read = vec![format!("{TOOLS}/bin/cat"), APP_STATUS.into()];
        let deadline = Instant::now() + Duration::from_secs(10);
        if let Ok(Some((0, status))) = run_combined(self.exec(&read), deadline) {
            let status = status.trim();
            if status != "0" {
                tracing::warn!(
                    "the app ({}) exited with status {status} during the test; its log:\n{}",
                    app.join(" "),
                    self.log_tail()
                );
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        quiet(self.command(&["rm", "--force", "--time", "0", &self.name]));
        if let Some(image) = &self.image {
            // Only the name: the image stays while other names or
            // containers use it.
            quiet(self.command(&["rmi", image]));
        }
    }
}

fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })
}

fn stop(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs `command` with stdout and stderr on one pipe and returns its exit
/// status and output; `None` when it still ran at `deadline` (it is then
/// killed).
fn run_combined(command: Command, deadline: Instant) -> Result<Option<(i32, String)>> {
    let (mut child, mut reader) = crate::runtime::spawn_combined(command)?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut output = Vec::new();
        let _ = reader.read_to_end(&mut output);
        let _ = sender.send(output);
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            stop(&mut child);
            break None;
        }
        if let Err(interrupted) = pause(POLL_EVERY) {
            stop(&mut child);
            return Err(interrupted);
        }
    };
    // A killed podman may leave a helper holding the pipe: do not wait on it
    // for long.
    let output = receiver
        .recv_timeout(Duration::from_secs(2))
        .unwrap_or_default();
    Ok(status.map(|s| (exit_code(s), String::from_utf8_lossy(&output).into_owned())))
}

/// Sleeps for `duration`; an error if the test was interrupted.
fn pause(duration: Duration) -> Result<()> {
    if let Some(signal) = crate::interrupt::received() {
        bail!("interrupted by {signal}; the test container is being removed");
    }
    std::thread::sleep(duration);
    Ok(())
}
