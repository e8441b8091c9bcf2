//! The status line of a long build on a terminal: how many units are done,
//! and for each running one what it is doing (which runlevel script runs,
//! how many layer bytes are written). Without a terminal (or under `-q`)
//! nothing is drawn and every function here does nothing: CI logs get the
//! plain lines herd logs anyway.
//!
//! Anything else printed on stderr while the line is shown goes through
//! [`suspend`], so log lines never mix with the line being redrawn.

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

struct Line {
    bar: ProgressBar,
    /// Running unit -> what it does now.
    running: Mutex<BTreeMap<String, String>>,
}

static LINE: OnceLock<Line> = OnceLock::new();

thread_local! {
    /// The unit this build thread works on, so deep code (a layer writer)
    /// can report without knowing which image it serves.
    static CURRENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Shows the line for a build of `total` units. The caller decides that
/// stderr is a terminal and the user did not ask for quiet.
pub fn start(total: usize) {
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} [{pos}/{len}] {elapsed} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let _ = LINE.set(Line {
        bar,
        running: Mutex::new(BTreeMap::new()),
    });
}

/// `unit` starts on this thread.
pub fn unit_started(unit: &str) {
    CURRENT.with(|c| *c.borrow_mut() = Some(unit.to_string()));
    set(unit, Some("starting".into()));
}

/// `unit` ended (built, cached, failed or skipped).
pub fn unit_finished(unit: &str) {
    set(unit, None);
    if let Some(line) = LINE.get() {
        line.bar.inc(1);
    }
}

/// What the unit of this thread does now: "build script 10-install.sh".
pub fn doing(what: impl FnOnce() -> String) {
    if LINE.get().is_none() {
        return;
    }
    if let Some(unit) = CURRENT.with(|c| c.borrow().clone()) {
        set(&unit, Some(what()));
    }
}

/// Removes the line (at the end of the build).
pub fn finish() {
    if let Some(line) = LINE.get() {
        line.bar.finish_and_clear();
    }
}

/// Runs `print` with the line hidden, then draws it again.
pub fn suspend<R>(print: impl FnOnce() -> R) -> R {
    match LINE.get() {
        Some(line) if !line.bar.is_finished() => line.bar.suspend(print),
        _ => print(),
    }
}

fn set(unit: &str, what: Option<String>) {
    let Some(line) = LINE.get() else { return };
    let mut running = line.running.lock().unwrap_or_else(|e| e.into_inner());
    match what {
        Some(what) => running.insert(unit.to_string(), what),
        None => running.remove(unit),
    };
    let message: Vec<String> = running.iter().map(|(u, w)| format!("{u}: {w}")).collect();
    line.bar.set_message(message.join(" | "));
}

/// While the returned guard lives, the size of the layer being written to
/// `path` is shown for this thread's unit, read from the file twice a
/// second (the layer writer compresses on threads of its own).
pub fn watch_layer(path: &Path) -> Option<LayerWatch> {
    LINE.get()?;
    let unit = CURRENT.with(|c| c.borrow().clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let path = path.to_path_buf();
    let thread = std::thread::spawn({
        let stop = stop.clone();
        move || {
            while !stop.load(Ordering::Relaxed) {
                let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                set(&unit, Some(format!("layer {} written", HumanBytes(bytes))));
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    });
    Some(LayerWatch {
        stop,
        thread: Some(thread),
    })
}

pub struct LayerWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LayerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
