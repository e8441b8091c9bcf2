//! Running children as PID 1: signals are blocked from the init's first
//! instant and taken with `sigwait`, so none is lost between fork and
//! wait, and no handler runs in the middle of anything. Children must
//! start with an empty mask: see [`unblocked`].

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, signal, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// Signals passed on to the running child.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Signals that, arriving during the start (before the app runs), stop it.
const STOPPING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];

pub struct Signals {
    set: SigSet,
    /// The first stopping signal received, if any.
    stop: Option<Signal>,
}

impl Signals {
    /// Blocks the forwarded signals and SIGCHLD, after restoring their
    /// default disposition: an ignored signal would be discarded even
    /// while blocked, and an ignored SIGCHLD would reap children behind
    /// our back.
    pub fn block() -> nix::Result<Signals> {
        let mut set = SigSet::empty();
        for sig in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
            set.add(*sig);
            // SAFETY: installs no handler, only SIG_DFL.
            unsafe { signal(*sig, SigHandler::SigDfl) }?;
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
        become_subreaper();
        Ok(Signals { set, stop: None })
    }

    /// A stopping signal received so far (SIGTERM, SIGINT, SIGQUIT), also
    /// taking any that is pending now.
    pub fn stop_requested(&mut self) -> Option<Signal> {
        while let Some(sig) = self.poll() {
            self.note(sig);
            if sig == Signal::SIGCHLD {
                reap(None);
            }
        }
        self.stop
    }

    /// Waits for `pid` to end, forwarding every signal to it and reaping
    /// any other child that ends meanwhile (orphans reparented to us).
    /// Returns its status the way a shell shows it: the exit code, or
    /// 128 + N when killed by signal N.
    pub fn wait_for(&mut self, pid: Pid) -> nix::Result<i32> {
        loop {
            if let Some(code) = reap(Some(pid)) {
                return Ok(code);
            }
            let sig = self.set.wait()?;
            if sig != Signal::SIGCHLD {
                self.note(sig);
                // The child may have just ended: ESRCH is fine.
                let _ = kill(pid, sig);
            }
        }
    }

    /// The next signal of the set, waiting at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<Signal> {
        let timeout = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the set is a valid sigset_t, the info pointer may be null.
        let number =
            unsafe { libc::sigtimedwait(self.set.as_ref(), std::ptr::null_mut(), &timeout) };
        Signal::try_from(number).ok()
    }

    /// Records `sig` if it is the first stopping signal.
    pub(super) fn note(&mut self, sig: Signal) {
        if STOPPING.contains(&sig) && self.stop.is_none() {
            self.stop = Some(sig);
        }
    }

    /// A pending signal of the set, without waiting.
    fn poll(&self) -> Option<Signal> {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the set is a valid sigset_t, the info pointer may be null.
        let number = unsafe { libc::sigtimedwait(self.set.as_ref(), std::ptr::null_mut(), &zero) };
        if number < 0 {
            None
        } else {
            Signal::try_from(number).ok()
        }
    }
}

/// Makes `command`'s child start with no signal blocked. std resets the
/// mask only when it spawns with posix_spawn, not when it forks (as it does
/// once a `pre_exec` is set), so this is done explicitly for every child.
///
/// `NOTIFY_SOCKET` is the init's alone: an app that speaks sd_notify
/// itself (MariaDB does) would otherwise say READY=1 before its readiness
/// command agreed.
pub fn unblocked(mut command: std::process::Command) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    command.env_remove("NOTIFY_SOCKET");
    // SAFETY: sigprocmask is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            Ok(())
        });
    }
    command
}

/// Reaps every child that has ended; returns the status of `target` if it
/// was among them.
fn reap(target: Option<Pid>) -> Option<i32> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if Some(pid) == target => return Some(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if Some(pid) == target => {
                return Some(128 + sig as i32);
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return None,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// Reaps every child that has ended: their pids and statuses (as
/// [`Signals::wait_for`] gives them), and whether no child is left.
pub fn reap_all() -> (Vec<(Pid, i32)>, bool) {
    let mut ended = vec![];
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => ended.push((pid, code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => ended.push((pid, 128 + sig as i32)),
            Ok(WaitStatus::StillAlive) => return (ended, false),
            Err(Errno::ECHILD) => return (ended, true),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return (ended, false),
        }
    }
}

/// When the init is not PID 1 (a runtime's own init, a test, the
/// benchmark), orphans of the app would go to the real PID 1; as a
/// subreaper they come to us, and are reaped the same way.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments only; failure is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
}

/// The exit code for a stop requested by `sig` (128 + N).
pub fn code_for(sig: Signal) -> i32 {
    128 + sig as i32
}
