//! Reading and sending bodies within bounds: no more than expected, no
//! longer than allowed, and local write errors kept apart from the
//! registry's.

use super::failure::Failure;
use super::progress::{BlobProgress, Counted};
use anyhow::{Context, Result, anyhow, bail};
use reqwest::blocking::Response;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// What herd reads of an error answer's body to quote it.
pub const MAX_ERROR_BYTES: u64 = 4000;

/// The slowest transfer herd waits for: a blob of N bytes may take the
/// timeout plus N / this many seconds. Far below any working link, far
/// above a registry that trickles a byte at a time to hold herd.
pub const SLOWEST_BYTES_PER_SECOND: u64 = 64 << 10;

/// Copies a body into `sink`: `None` once it passes `limit` bytes
/// (reading stops there), else the bytes copied. Each read waits at most
/// the request's timeout; the whole body must arrive by `deadline`, so a
/// registry trickling a byte at a time cannot hold herd either. A failed
/// write is a local error (disk full, permissions): never retried.
pub fn read_body(
    response: &mut Response,
    sink: &mut dyn Write,
    limit: u64,
    deadline: Instant,
    what: &str,
) -> Result<Option<u64>, Failure> {
    let started = Instant::now();
    let mut buffer = vec![0u8; 64 << 10];
    let mut copied = 0u64;
    loop {
        let n = match response.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // A connection cut mid-body is worth another attempt.
            Err(e) => return Err(Failure::transport_io(e, what)),
        };
        let room = limit - copied;
        if n as u64 > room {
            // What fits is kept: enough of an error body to quote.
            let _ = sink.write_all(&buffer[..room as usize]);
            return Ok(None);
        }
        sink.write_all(&buffer[..n])
            .map_err(|e| Failure::fatal(anyhow!("{what}: writing what arrived: {e}")))?;
        copied += n as u64;
        if Instant::now() > deadline {
            return Err(Failure {
                retriable: true,
                ..Failure::fatal(anyhow!(
                    "{what}: the registry sent only {copied} bytes in {:.0?}, too slow (--timeout SECONDS or `timeout:` in herd's config sets how long herd waits)",
                    started.elapsed()
                ))
            });
        }
    }
    Ok(Some(copied))
}

/// A small body (manifest, token, error) in memory, read by [`read_body`]
/// within `timeout`.
pub fn read_small(
    response: &mut Response,
    limit: u64,
    timeout: Duration,
    what: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    let mut bytes = Vec::new();
    let read = read_body(response, &mut bytes, limit, Instant::now() + timeout, what)?;
    Ok(read.map(|_| bytes))
}

/// The body of a blob upload. With a progress bar, the file is read
/// through a counter so the bar moves. Without one, the file is mapped and
/// handed over whole: the HTTP stack then writes it straight from the page
/// cache in large writes, instead of copying it 8 KiB at a time through
/// reqwest's reader pipe, which costs more CPU than the registry's hashing.
pub fn blob_body(
    path: &std::path::Path,
    size: u64,
    progress: &BlobProgress,
) -> Result<reqwest::blocking::Body> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if progress.is_drawn() {
        let counted = Counted {
            inner: file,
            progress: progress.clone(),
        };
        return Ok(reqwest::blocking::Body::sized(counted, size));
    }
    if size == 0 {
        return Ok(reqwest::blocking::Body::from(Vec::new()));
    }
    // SAFETY: store blobs are immutable once committed (they are written
    // to tmp/ and renamed into place, never rewritten), so the mapping
    // cannot change under us; removing the file keeps the mapping valid.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    if map.len() as u64 != size {
        bail!(
            "{} has {} bytes, expected {size}",
            path.display(),
            map.len()
        );
    }
    Ok(reqwest::blocking::Body::from(bytes::Bytes::from_owner(map)))
}
