//! Work of the start that runs in the init's own process (resolving
//! attribute values, rendering templates) done on a thread, while the
//! init keeps taking signals: a long render then ends at `podman stop`'s
//! SIGTERM instead of running until SIGKILL. Nothing is written before
//! the work is done, so leaving it half done is safe; the process exits
//! with the thread still running.

use super::Failure;
use super::supervise::{self, Signals};
use anyhow::anyhow;
use nix::sys::signal::Signal;
use std::sync::mpsc;
use std::time::Duration;

/// Runs `work` on a thread and waits for it, or for a stop signal, which
/// fails the start naming `what` was being done.
pub(super) fn run<T: Send + 'static>(
    signals: &mut Signals,
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    // SAFETY: pthread_self has no preconditions.
    let waiter = unsafe { libc::pthread_self() };
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(work());
        // Wakes the waiting sigtimedwait below at once (the thread was
        // made with the init's mask: every signal of the set blocked).
        // SAFETY: `waiter` is the init's main thread, alive: it waits.
        unsafe { libc::pthread_kill(waiter, libc::SIGCHLD) };
    });
    loop {
        match result.try_recv() {
            Ok(value) => return Ok(value),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(anyhow!("{what} failed unexpectedly").into());
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        match signals.wait_timeout(Duration::from_secs(1)) {
            None | Some(Signal::SIGCHLD) => {}
            Some(sig) => {
                signals.note(sig);
                if let Some(stop) = signals.stop_requested() {
                    return Err(Failure {
                        message: format!("stopped by {stop} while {what}"),
                        code: supervise::code_for(stop),
                    });
                }
            }
        }
    }
}
