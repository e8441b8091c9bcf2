//! The app's life once started (FORMATS.md section 6, "Readiness and
//! graceful stop"), one loop over signals, children and timers:
//!
//! - **ready**: the `readiness` command runs every interval until it
//!   succeeds, then READY=1 goes to `$NOTIFY_SOCKET`, the ready file is
//!   written and a line logged; past its timeout the app is stopped and the
//!   init exits with [`lifecycle::READINESS_TIMEOUT_EXIT`]. Without a
//!   readiness command the app is ready once started.
//! - **stable**: once ready, the `stable` command runs every period; a
//!   failure is logged and sent as `STATUS=`.
//! - **stop**, on SIGTERM or SIGINT: the ready file goes, the `prestop`
//!   scripts run, then `drained` is polled until it succeeds, all within
//!   the drain budget (`HERD_STOP_TIMEOUT` less a margin for the app's own
//!   shutdown); then the stop signal goes to the app's process group, and
//!   the init waits for every child before exiting with the app's status.
//!   A second SIGTERM or SIGINT skips to the app's stop.
//!
//! Every helper (check command, script) runs in a process group of its
//! own, so that one outliving its time is killed with its children.

use super::notify::{self, Notifier};
use super::supervise::{self, Signals};
use super::{Level, Log};
use crate::lifecycle::{self, Lifecycle};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the loop needs besides the app.
pub(super) struct Run<'a> {
    pub root: PathBuf,
    pub log: &'a Log,
    pub signals: &'a mut Signals,
    pub lifecycle: Lifecycle,
    /// The prestop scripts, in stack order.
    pub prestop: Vec<PathBuf>,
    pub notifier: Notifier,
    /// The container's stop timeout (`HERD_STOP_TIMEOUT`).
    pub stop_timeout: Duration,
    pub trace: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    /// Running the prestop script of this index.
    Prestop(usize),
    Draining,
    /// The app got its stop signal.
    Stopping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Readiness,
    Stable,
    Prestop(usize),
    Drained,
}

/// A helper process being waited for.
struct Helper {
    pid: Pid,
    step: Step,
    started: Instant,
    deadline: Instant,
}

/// When the stop was asked for, and its budget.
struct Stop {
    signal: Signal,
    received: Instant,
    drain_end: Instant,
    /// When the runtime kills everything.
    hard_end: Instant,
}

/// Where check commands write, to be shown when they fail.
const CHECK_OUTPUT: &str = "run/herd/check.out";

impl Run<'_> {
    /// Supervises the app `app` (leader of its process group) until it and
    /// every other child ended; returns the status to exit with.
    pub fn supervise(self, app: Pid) -> i32 {
        let started = Instant::now();
        let readiness = self.lifecycle.readiness.clone();
        let readiness_end = started + self.lifecycle.readiness_timeout();
        let mut phase = Phase::Starting;
        let mut next_check = started;
        let mut helper: Option<Helper> = None;
        let mut stop: Option<Stop> = None;
        let mut app_status: Option<i32> = None;
        let mut timed_out = false;
        let mut unstable = false;
        if readiness.is_none() {
            self.become_ready(started, "the app started");
            phase = Phase::Ready;
            next_check = self.next_stable(started);
        }
        loop {
            let (ended, none_left) = supervise::reap_all();
            for (pid, code) in ended {
                if pid == app {
                    app_status = Some(code);
                    match &stop {
                        Some(request) if phase == Phase::Stopping => self.log.at(
                            Level::Info,
                            format!(
                                "stop: the app exited with status {code}, {} after the stop request",
                                seconds(request.received.elapsed())
                            ),
                        ),
                        _ => self
                            .log
                            .at(Level::Debug, format!("app exited with status {code}")),
                    }
                } else if let Some(done) = helper.take_if(|h| h.pid == pid) {
                    let now = Instant::now();
                    let took = now - done.started;
                    let passed = code == 0;
                    match done.step {
                        Step::Readiness if phase == Phase::Starting => {
                            if passed {
                                self.become_ready(started, "the readiness command succeeded");
                                phase = Phase::Ready;
                                next_check = self.next_stable(now);
                            } else {
                                self.log.at(
                                    Level::Debug,
                                    format!("readiness: not yet (status {code})"),
                                );
                                next_check = done.started + self.interval(Step::Readiness);
                            }
                        }
                        Step::Stable if phase == Phase::Ready => {
                            if passed && unstable {
                                self.log.at(Level::Info, "stable: the app is stable again");
                                self.notify("STATUS=ready, stable");
                            } else if !passed {
                                let output = self.check_output();
                                self.log.at(
                                    Level::Warn,
                                    format!(
                                        "stable: the stable command failed with status {code}{}",
                                        last_line(&output)
                                    ),
                                );
                                self.notify(&format!(
                                    "STATUS=unstable: the stable command failed with status {code}"
                                ));
                            }
                            unstable = !passed;
                            next_check = done.started + self.interval(Step::Stable);
                        }
                        Step::Prestop(i) if phase == Phase::Prestop(i) => {
                            let script = self.prestop[i].display().to_string();
                            let level = if passed { Level::Info } else { Level::Warn };
                            self.log.at(
                                level,
                                format!(
                                    "stop: prestop {script} ended with status {code} after {}",
                                    seconds(took)
                                ),
                            );
                            phase = Phase::Prestop(i + 1);
                        }
                        Step::Drained if phase == Phase::Draining => {
                            if passed {
                                let since = stop.as_ref().map_or(took, |s| now - s.received);
                                self.log.at(
                                    Level::Info,
                                    format!("stop: drained after {}", seconds(since)),
                                );
                                self.stop_app(app, stop.as_ref());
                                phase = Phase::Stopping;
                            } else {
                                next_check = done.started + self.interval(Step::Drained);
                            }
                        }
                        // A helper of a phase already left.
                        _ => {}
                    }
                }
            }
            if let Some(code) = app_status {
                if phase != Phase::Stopping {
                    // The app ended on its own (or during the drain):
                    // nothing left to wait for.
                    if let Some(helper) = helper.take() {
                        let _ = killpg(helper.pid, Signal::SIGKILL);
                    }
                    if stop.is_some() {
                        self.log.at(
                            Level::Warn,
                            format!(
                                "stop: the app exited with status {code} before its stop signal"
                            ),
                        );
                    }
                    return code;
                }
                if none_left {
                    let since = stop
                        .as_ref()
                        .map_or(Duration::ZERO, |s| s.received.elapsed());
                    self.log.at(
                        Level::Info,
                        format!(
                            "stop: every process ended, {} after the stop request",
                            seconds(since)
                        ),
                    );
                    return if timed_out {
                        lifecycle::READINESS_TIMEOUT_EXIT
                    } else {
                        code
                    };
                }
            }

            let now = Instant::now();
            // A helper past its time is killed; its end is reaped above.
            if let Some(late) = helper.as_ref().filter(|h| now >= h.deadline) {
                self.log.at(
                    Level::Debug,
                    format!(
                        "{:?}: killed after {}",
                        late.step,
                        seconds(now - late.started)
                    ),
                );
                let _ = killpg(late.pid, Signal::SIGKILL);
                let step = late.step;
                helper = None;
                match step {
                    Step::Prestop(i) if phase == Phase::Prestop(i) => {
                        self.log.at(
                            Level::Warn,
                            format!(
                                "stop: prestop {} killed at the end of the drain budget",
                                self.prestop[i].display()
                            ),
                        );
                        phase = Phase::Prestop(i + 1);
                    }
                    _ => next_check = now,
                }
            }
            if phase == Phase::Starting && now >= readiness_end && app_status.is_none() {
                let output = self.check_output();
                self.log.at(
                    Level::Error,
                    format!(
                        "error: the app was not ready after {}: the readiness command `{}` never succeeded; stopping it (exit status {}){}",
                        seconds(self.lifecycle.readiness_timeout()),
                        readiness.as_ref().map(|r| r.exec.argv().join(" ")).unwrap_or_default(),
                        lifecycle::READINESS_TIMEOUT_EXIT,
                        if output.trim().is_empty() {
                            String::new()
                        } else {
                            format!("; its last output:\n{}", output.trim_end())
                        }
                    ),
                );
                self.notify("STATUS=not ready in time, stopping");
                timed_out = true;
                if let Some(h) = helper.take() {
                    let _ = killpg(h.pid, Signal::SIGKILL);
                }
                let request = self.stop_request(Signal::SIGTERM, now);
                self.stop_app(app, Some(&request));
                stop = Some(request);
                phase = Phase::Stopping;
            }
            if let (Some(request), Phase::Prestop(_) | Phase::Draining) = (&stop, phase)
                && now >= request.drain_end
            {
                self.log.at(
                    Level::Warn,
                    format!(
                        "stop: the drain budget of {} is spent",
                        seconds(request.drain_end - request.received)
                    ),
                );
                if let Some(h) = helper.take() {
                    let _ = killpg(h.pid, Signal::SIGKILL);
                }
                self.stop_app(app, Some(request));
                phase = Phase::Stopping;
            }
            if let Phase::Prestop(i) = phase
                && i >= self.prestop.len()
            {
                phase = Phase::Draining;
                next_check = now;
                if let Some(drained) = &self.lifecycle.drained {
                    self.log.at(
                        Level::Info,
                        format!(
                            "stop: waiting until `{}` succeeds (every {})",
                            drained.exec.argv().join(" "),
                            seconds(drained.interval.0)
                        ),
                    );
                } else {
                    self.stop_app(app, stop.as_ref());
                    phase = Phase::Stopping;
                }
            }
            if phase == Phase::Stopping
                && let Some(request) = &stop
                && now >= request.hard_end
            {
                // Children that outlive the stop timeout would be killed
                // by the runtime anyway; do it and keep the app's status.
                self.log.at(
                    Level::Warn,
                    "stop: the stop timeout is ending; killing what is left",
                );
                if std::process::id() == 1 {
                    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
                } else {
                    let _ = killpg(app, Signal::SIGKILL);
                }
                if let Some(code) = app_status {
                    return if timed_out {
                        lifecycle::READINESS_TIMEOUT_EXIT
                    } else {
                        code
                    };
                }
            }

            // Start the helper that is due.
            if helper.is_none() && app_status.is_none() {
                let step = match phase {
                    Phase::Starting if now >= next_check => Some(Step::Readiness),
                    Phase::Ready if self.lifecycle.stable.is_some() && now >= next_check => {
                        Some(Step::Stable)
                    }
                    Phase::Prestop(i) => Some(Step::Prestop(i)),
                    Phase::Draining if now >= next_check => Some(Step::Drained),
                    _ => None,
                };
                if let Some(step) = step {
                    let end = match (step, &stop) {
                        (Step::Readiness, _) => readiness_end,
                        (Step::Prestop(_) | Step::Drained, Some(request)) => request.drain_end,
                        _ => now + self.interval(step).max(Duration::from_secs(1)),
                    };
                    match self.spawn(step) {
                        Ok(pid) => {
                            helper = Some(Helper {
                                pid,
                                step,
                                started: now,
                                deadline: end,
                            })
                        }
                        Err(e) => {
                            self.log.at(Level::Warn, e);
                            match step {
                                Step::Prestop(i) => phase = Phase::Prestop(i + 1),
                                _ => next_check = now + self.interval(step),
                            }
                        }
                    }
                }
            }

            // Sleep until the next signal or the next thing to do.
            let mut wake = vec![];
            if let Some(h) = &helper {
                wake.push(h.deadline);
            } else if matches!(phase, Phase::Starting | Phase::Draining)
                || (phase == Phase::Ready && self.lifecycle.stable.is_some())
            {
                wake.push(next_check);
            }
            if phase == Phase::Starting {
                wake.push(readiness_end);
            }
            if let Some(request) = &stop {
                wake.push(if phase == Phase::Stopping {
                    request.hard_end
                } else {
                    request.drain_end
                });
            }
            let timeout = wake
                .into_iter()
                .min()
                .map_or(Duration::from_secs(3600), |t| {
                    t.saturating_duration_since(Instant::now())
                });
            let Some(sig) = self.signals.wait_timeout(timeout) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => {}
                Signal::SIGTERM | Signal::SIGINT => match phase {
                    Phase::Starting | Phase::Ready => {
                        let request = self.stop_request(sig, Instant::now());
                        if let Some(h) = helper.take() {
                            let _ = killpg(h.pid, Signal::SIGKILL);
                        }
                        if let Err(e) = notify::mark_not_ready(&self.root) {
                            self.log
                                .at(Level::Warn, format!("cannot remove the ready file: {e}"));
                        }
                        self.notify("STOPPING=1\nSTATUS=stopping");
                        stop = Some(request);
                        phase = Phase::Prestop(0);
                    }
                    Phase::Prestop(_) | Phase::Draining => {
                        self.log.at(
                            Level::Info,
                            format!("stop: {sig} again: skipping to the app's stop"),
                        );
                        if let Some(h) = helper.take() {
                            let _ = killpg(h.pid, Signal::SIGKILL);
                        }
                        self.stop_app(app, stop.as_ref());
                        phase = Phase::Stopping;
                    }
                    Phase::Stopping => {
                        let _ = killpg(app, sig).or_else(|_| kill(app, sig));
                    }
                },
                // Others go to the app itself, as before the app had a group.
                other => {
                    let _ = kill(app, other);
                }
            }
        }
    }

    fn become_ready(&self, started: Instant, why: &str) {
        if let Err(e) = notify::mark_ready(&self.root) {
            self.log.at(
                Level::Warn,
                format!(
                    "cannot write the ready file {}: {e}",
                    image_paths_ready(&self.root)
                ),
            );
        }
        self.notify("READY=1\nSTATUS=ready");
        // Every container is ready; only a readiness command makes it news.
        let level = if self.lifecycle.readiness.is_some() {
            Level::Info
        } else {
            Level::Debug
        };
        self.log.at(
            level,
            format!("ready after {}: {why}", seconds(started.elapsed())),
        );
    }

    fn next_stable(&self, now: Instant) -> Instant {
        now + self.interval(Step::Stable)
    }

    fn notify(&self, state: &str) {
        if let Err(e) = self.notifier.send(state) {
            self.log.at(Level::Warn, e);
        }
    }

    fn interval(&self, step: Step) -> Duration {
        let l = &self.lifecycle;
        match step {
            Step::Readiness => l.readiness.as_ref().map(|r| r.interval.0),
            Step::Stable => l.stable.as_ref().map(|s| s.period.0),
            Step::Drained => l.drained.as_ref().map(|d| d.interval.0),
            Step::Prestop(_) => None,
        }
        .unwrap_or(Duration::from_secs(1))
    }

    /// What a stop asked for by `sig` at `now` may spend.
    fn stop_request(&self, sig: Signal, now: Instant) -> Stop {
        let budget = lifecycle::drain_budget(self.stop_timeout);
        let signal = self
            .lifecycle
            .stop_signal
            .as_ref()
            .map_or(sig, |s| s.signal());
        self.log.at(
            Level::Info,
            format!(
                "stop: {sig} received; prestop scripts and drain within {}, then {signal} to the app, which has {} more of the {} stop timeout",
                seconds(budget),
                seconds(self.stop_timeout - budget),
                seconds(self.stop_timeout)
            ),
        );
        Stop {
            signal,
            received: now,
            drain_end: now + budget,
            // Just before the runtime's SIGKILL, so that the init still
            // exits with the app's status.
            hard_end: now + self.stop_timeout
                - (self.stop_timeout / 10).min(Duration::from_millis(250)),
        }
    }

    /// Sends the stop signal to the app's process group.
    fn stop_app(&self, app: Pid, stop: Option<&Stop>) {
        let (signal, since) = match stop {
            Some(s) => (s.signal, s.received.elapsed()),
            None => (Signal::SIGTERM, Duration::ZERO),
        };
        self.log.at(
            Level::Info,
            format!(
                "stop: {signal} to the app's process group, {} after the stop request",
                seconds(since)
            ),
        );
        let _ = killpg(app, signal).or_else(|_| kill(app, signal));
    }

    fn spawn(&self, step: Step) -> Result<Pid, String> {
        let l = &self.lifecycle;
        let mut command = match step {
            Step::Prestop(i) => {
                let script = &self.prestop[i];
                self.log
                    .at(Level::Info, format!("stop: prestop {}", script.display()));
                super::script_command(script, self.trace)
            }
            _ => {
                let exec = match step {
                    Step::Readiness => l.readiness.as_ref().map(|r| &r.exec),
                    Step::Stable => l.stable.as_ref().map(|s| &s.exec),
                    _ => l.drained.as_ref().map(|d| &d.exec),
                };
                let argv = exec.map(|e| e.argv()).unwrap_or_default();
                let Some((program, args)) = argv.split_first() else {
                    return Err(format!("{step:?}: no command"));
                };
                if step == Step::Drained {
                    self.log
                        .at(Level::Debug, format!("stop: drained? `{}`", argv.join(" ")));
                }
                let mut command = supervise::unblocked(Command::new(program));
                command.args(args).stdin(Stdio::null());
                match self.output_file() {
                    Some((out, err)) => command.stdout(out).stderr(err),
                    None => command.stdout(Stdio::null()).stderr(Stdio::null()),
                };
                command
            }
        };
        command.process_group(0);
        command
            .spawn()
            .map(|child| Pid::from_raw(child.id() as i32))
            .map_err(|e| format!("cannot run the {step:?} command: {e}"))
    }

    /// The check output file, truncated, for stdout and stderr.
    fn output_file(&self) -> Option<(std::fs::File, std::fs::File)> {
        let path = self.root.join(CHECK_OUTPUT);
        let _ = std::fs::create_dir_all(path.parent()?);
        let file = std::fs::File::create(&path).ok()?;
        Some((file.try_clone().ok()?, file))
    }

    /// The end of what the last check command wrote (at most 2 KiB).
    fn check_output(&self) -> String {
        let bytes = std::fs::read(self.root.join(CHECK_OUTPUT)).unwrap_or_default();
        let tail = &bytes[bytes.len().saturating_sub(2048)..];
        String::from_utf8_lossy(tail).into_owned()
    }
}

fn image_paths_ready(root: &std::path::Path) -> String {
    notify::ready_file(root).display().to_string()
}

/// `: <last line>` of a command's output, or nothing.
fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or(String::new(), |l| format!(": {}", l.trim()))
}

/// A duration as the log shows it: `2.31 s`.
fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}
