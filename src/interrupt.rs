//! SIGINT, SIGTERM and SIGHUP while herd has something to clean up: build
//! script containers, mounted build roots, temporaries, a test container.
//!
//! While a `Catch` lives, the first of these signals only records itself;
//! the loops that wait (for a script, for a test) look at the record, stop
//! what they wait for, and return an error that unwinds through the
//! destructors that unmount and remove. The command then exits with
//! 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as shells
//! expect. A second signal ends herd at once with that status: the user
//! asked twice, and `herd clean` removes what is left.

use anyhow::{Context, Result, bail};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
use std::sync::atomic::{AtomicI32, Ordering};

/// The number of the first signal received while caught; 0 for none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(signal: libc::c_int) {
    if RECEIVED
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + RECEIVED.load(Ordering::SeqCst)) };
    }
}

/// Catches the signals until dropped, then restores what was there.
pub struct Catch(Vec<(Signal, SigAction)>);

impl Catch {
    pub fn signals() -> Result<Catch> {
        let action = SigAction::new(
            SigHandler::Handler(note),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut previous = Catch(vec![]);
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only touches an atomic and calls _exit,
            // both async-signal-safe.
            let old = unsafe { sigaction(signal, &action) }
                .with_context(|| format!("catching {signal}"))?;
            previous.0.push((signal, old));
        }
        Ok(previous)
    }
}

impl Drop for Catch {
    fn drop(&mut self) {
        for (signal, old) in &self.0 {
            // SAFETY: puts back the disposition that was there before.
            let _ = unsafe { sigaction(*signal, old) };
        }
    }
}

/// The signal received since herd started catching, if any.
pub fn received() -> Option<Signal> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// The exit status for a run ended by `signal`.
pub fn exit_status(signal: Signal) -> u8 {
    128 + signal as u8
}

/// An error once a signal was received: what waits calls this to stop.
pub fn check() -> Result<()> {
    if let Some(signal) = received() {
        bail!("interrupted by {signal}");
    }
    Ok(())
}
