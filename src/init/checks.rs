//! A template's `checkCmd`, run after rendering: bounded in time (the
//! `.cfg`'s `checkTimeout`, else [`DEFAULT_TIMEOUT`]) and in the output
//! kept, and stopped at once by a stop signal. A check that never ended
//! used to block the start for ever, deaf to `podman stop`'s SIGTERM.

use super::Failure;
use super::supervise::{self, Signals};
use anyhow::anyhow;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a check may run when its `.cfg` does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The tail of a check's output kept to show when it fails.
pub const MAX_OUTPUT: usize = 64 << 10;

/// Runs `argv`, the check of `template`, in a process group of its own;
/// kills that group when the check ends, passes `timeout` or a stop
/// signal arrives.
pub(super) fn run(
    signals: &mut Signals,
    template: &Path,
    argv: &[String],
    timeout: Duration,
) -> Result<(), Failure> {
    let describe = || {
        format!(
            "the checkCmd of {} (`{}`)",
            template.display(),
            argv.join(" ")
        )
    };
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| anyhow!("cannot make a pipe: {e}"))?;
    let child = {
        let mut command = supervise::unblocked(Command::new(&argv[0]));
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .process_group(0);
        command
            .stdout(Stdio::from(writer.try_clone().map_err(|e| anyhow!("{e}"))?))
            .stderr(Stdio::from(writer));
        command
            .spawn()
            .map_err(|e| anyhow!("cannot run {}: {e}", describe()))?
        // `command`, holding the pipe's write ends, is dropped here so
        // that reading sees the end when the check's group is gone.
    };
    let pid = Pid::from_raw(child.id() as i32);
    let tail = Arc::new(Mutex::new(Tail::default()));
    let reading = {
        let tail = tail.clone();
        std::thread::spawn(move || {
            let mut file = std::fs::File::from(reader);
            let mut buffer = [0u8; 8192];
            while let Ok(n) = file.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                tail.lock().expect("not poisoned").push(&buffer[..n]);
            }
        })
    };
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        let (ended, _) = supervise::reap_all();
        if let Some((_, code)) = ended.iter().find(|(p, _)| *p == pid) {
            break Ok(*code);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(None);
        }
        match signals.wait_timeout(left) {
            None | Some(Signal::SIGCHLD) => {}
            Some(sig) => {
                signals.note(sig);
                if let Some(stop) = signals.stop_requested() {
                    break Err(Some(stop));
                }
            }
        }
    };
    // Whatever the check left running goes with it.
    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    if outcome.is_err() {
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    // The pipe closes once the group is gone; a grandchild that left the
    // group may keep it open, so the wait is short.
    let until = Instant::now() + Duration::from_millis(200);
    while !reading.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = tail.lock().expect("not poisoned").text();
    match outcome {
        Ok(0) => Ok(()),
        Ok(code) => Err(anyhow!(
            "{} failed with exit status {code}; its output:\n{output}",
            describe()
        )
        .into()),
        Err(None) => Err(anyhow!(
            "{} did not end within {} and was killed (set `checkTimeout` in the .cfg to allow longer); its output:\n{output}",
            describe(),
            humantime::format_duration(timeout)
        )
        .into()),
        Err(Some(sig)) => Err(Failure {
            message: format!("stopped by {sig} while {} ran", describe()),
            code: supervise::code_for(sig),
        }),
    }
}

/// The last [`MAX_OUTPUT`] bytes written, and whether more came before.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    cut: bool,
}

impl Tail {
    fn push(&mut self, more: &[u8]) {
        self.bytes.extend_from_slice(more);
        if self.bytes.len() > 2 * MAX_OUTPUT {
            let drop = self.bytes.len() - MAX_OUTPUT;
            self.bytes.drain(..drop);
            self.cut = true;
        }
    }

    fn text(&self) -> String {
        let start = self.bytes.len().saturating_sub(MAX_OUTPUT);
        let cut = self.cut || start > 0;
        let text = String::from_utf8_lossy(&self.bytes[start..]);
        let text = text.trim_end();
        if cut {
            format!("[... only the last {} KiB kept]\n{text}", MAX_OUTPUT >> 10)
        } else {
            text.to_string()
        }
    }
}
