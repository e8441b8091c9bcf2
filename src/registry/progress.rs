//! Transfer progress: bars on a terminal, one plain line per finished blob
//! otherwise (CI logs, pipes), so output stays readable in both.

use crate::digest::Digest;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Shows the transfers of one push or pull.
pub struct Progress {
    bars: Option<MultiProgress>,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        let bars = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { bars }
    }

    /// No bars and no lines: transfers too small to be worth a line (the
    /// build cache's configs).
    pub fn quiet() -> Progress {
        Progress { bars: None }
    }

    /// A bar (or a future line) for one blob of `size` bytes.
    pub fn blob(&self, digest: &Digest, size: u64) -> BlobProgress {
        let label = format!("{} {}", short(digest), HumanBytes(size));
        let bar = self.bars.as_ref().map(|bars| {
            let bar = bars.add(ProgressBar::new(size));
            let style = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(short(digest));
            bar
        });
        BlobProgress { bar, label }
    }

    /// A message between the bars: `pushed NAME`.
    pub fn line(&self, message: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(message);
            }
            None => eprintln!("{message}"),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// The progress of one blob; cheap to clone into a request body.
#[derive(Clone)]
pub struct BlobProgress {
    bar: Option<ProgressBar>,
    label: String,
}

impl BlobProgress {
    pub fn add(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    /// True when a bar shows the bytes as they pass.
    pub fn is_drawn(&self) -> bool {
        self.bar.is_some()
    }

    /// Starts over, for a retried transfer.
    pub fn restart(&self) {
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }

    /// Ends the bar, or prints `sha256:0123456789ab 12.3 MiB: uploaded`.
    pub fn finish(&self, outcome: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(outcome.to_string()),
            None => eprintln!("{}: {outcome}", self.label),
        }
    }
}

/// `sha256:0123456789ab`: enough to tell blobs apart in a listing.
fn short(digest: &Digest) -> String {
    digest.as_str().chars().take("sha256:".len() + 12).collect()
}

/// A reader or writer that reports the bytes passing through it.
pub struct Counted<T> {
    pub inner: T,
    pub progress: BlobProgress,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
