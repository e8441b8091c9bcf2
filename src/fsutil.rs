//! File writes that are all or nothing: a reader sees the old file or the
//! new one, never a half-written one, even after `kill -9` or a power cut.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// synced and then renamed over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // As readable as any file the umask allows (tempfile makes 0600):
    // index.json is read by skopeo and podman run as other users.
    let mut temp = tempfile::Builder::new()
        .prefix(".herd-tmp-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    temp.write_all(bytes)?;
    temp.as_file().sync_all()?;
    temp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename durable. Failure is ignored: some file systems refuse to
/// sync directories, and the rename itself already happened.
pub fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// The regular files directly in `dir` (symlinks to files included), in
/// lexical order of name; none when `dir` does not exist. Runlevel scripts
/// and test suites run in this order.
pub fn files_in(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    let mut files = vec![];
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// A file being written that asks the kernel to start writing each few
/// MiB to disk as soon as they are written (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`, which does not wait), so that the `fsync` that
/// makes the whole file durable at the end finds little left to do. A
/// 200 MB layer otherwise spends about half a second in that last fsync,
/// after all the compression is over. Hints only: durability still comes
/// from `sync_all`, and a refused hint is ignored.
pub struct WritebackFile {
    file: std::fs::File,
    written: u64,
    flushed_to: u64,
}

/// How much is written before writeback is started for it.
const WRITEBACK_EVERY: u64 = 8 << 20;

impl WritebackFile {
    pub fn new(file: std::fs::File) -> WritebackFile {
        WritebackFile {
            file,
            written: 0,
            flushed_to: 0,
        }
    }

    /// Waits for everything written to reach the disk, and gives the file
    /// back.
    pub fn sync_all(self) -> std::io::Result<std::fs::File> {
        self.file.sync_all()?;
        Ok(self.file)
    }

    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let (offset, length) = (self.flushed_to, self.written - self.flushed_to);
        // SAFETY: a plain system call on a descriptor this value owns; it
        // reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset as libc::off64_t,
                length as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.flushed_to = self.written;
    }
}

impl Write for WritebackFile {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(data)?;
        self.written += n as u64;
        if self.written - self.flushed_to >= WRITEBACK_EVERY {
            self.start_writeback();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
