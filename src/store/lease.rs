//! Leases: the blobs a running herd wrote or relies on but has not tagged
//! yet (as containerd's leases). `herd gc` keeps every blob a live lease
//! names; a lease lives as long as its process holds the lock on its file.
//!
//! Each lease is a file in the store's `leases/` with one digest per line.
//! Files are created, locked and appended to under the store's lock, and
//! gc reads them under it too: a blob protected before a build commits or
//! reuses it is either seen by the next gc, or was removed by a gc that
//! already ended (the build then writes it again).

use crate::digest::Digest;
use anyhow::{Context, Result};
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(super) const DIR: &str = "leases";

/// The lease of one process (one `Store` value), made on first use.
pub(super) struct Lease {
    path: PathBuf,
    file: File,
    /// Digests already written to the file: a second protect costs nothing.
    written: HashSet<Digest>,
}

impl Lease {
    /// A new lease file in `dir`, locked. The caller holds the store lock,
    /// so no gc can take the unlocked new file for a dead one.
    pub(super) fn create(dir: &Path) -> Result<Lease> {
        super::create_private_dir(dir)?;
        let (file, path) = tempfile::Builder::new()
            .prefix("lease-")
            .tempfile_in(dir)
            .with_context(|| format!("creating a lease in {}", dir.display()))?
            .keep()
            .context("keeping a lease file")?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Lease {
            path,
            file,
            written: HashSet::new(),
        })
    }

    /// The digests not protected yet.
    pub(super) fn missing<'a>(&self, digests: &'a [Digest]) -> Vec<&'a Digest> {
        digests
            .iter()
            .filter(|d| !self.written.contains(d))
            .collect()
    }

    /// Appends `digests`; the caller holds the store lock.
    pub(super) fn add(&mut self, digests: &[&Digest]) -> Result<()> {
        let mut lines = String::new();
        for digest in digests {
            if self.written.insert((*digest).clone()) {
                lines.push_str(digest.as_str());
                lines.push('\n');
            }
        }
        self.file
            .write_all(lines.as_bytes())
            .with_context(|| format!("writing the lease {}", self.path.display()))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Removed before the lock goes with the file handle.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every digest a live lease in `dir` names. Lease files no process holds
/// (left by a killed herd) are removed. The caller holds the store lock.
pub(super) fn live_digests(dir: &Path) -> Result<HashSet<Digest>> {
    let mut digests = HashSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(digests),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        let Ok(file) = File::open(&path) else {
            continue; // its process just ended and removed it
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                digests.extend(text.lines().filter_map(|l| l.parse().ok()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("checking the lease {}", path.display()));
            }
        }
    }
    Ok(digests)
}
