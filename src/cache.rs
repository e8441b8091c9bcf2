//! The build cache: an image whose inputs did not change is not rebuilt.
//!
//! The key is a digest over everything a build reads: the directory's
//! content (names, modes, symlink targets, file bytes), the digests the
//! dependencies resolve to, herd's version and its init, and the build
//! options. A record under that key lists the tags the build produced; a
//! hit re-points those tags if needed and does nothing else, so a no-op
//! rebuild only reads its inputs.

use crate::build::BuildOptions;
use crate::digest::{Digest, HashingWriter};
use crate::names::ImageName;
use crate::store::Store;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a build produced: each tag and the manifest digest it points at.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub tags: Vec<(String, String)>,
    /// The cache key of the build (in directory records), so a later
    /// `herd push DIR` can publish it to the registry build cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Computes the cache key of building `dir` with dependencies that resolve
/// to `dependency_digests` (in manifest order).
/// `extra` is anything else the caller knows the output depends on.
pub fn key(
    dir: &Path,
    dependency_digests: &[String],
    options: &BuildOptions,
    epoch: u64,
    extra: &str,
) -> Result<Digest> {
    let mut hasher = HashingWriter::new(std::io::sink());
    writeln!(hasher, "herd {}", env!("CARGO_PKG_VERSION"))?;
    // The init is part of every image: a new one must rebuild. Its bytes,
    // not its mtime: a fresh CI runner builds the same init anew, and its
    // keys must still find the shared cache's entries.
    if let Ok(digest) =
        crate::build::init_binary(options).and_then(|init| crate::build::init_digest(&init))
    {
        writeln!(hasher, "init {digest}")?;
    }
    writeln!(
        hasher,
        "options {:?} {:?} {:?} epoch {epoch} {extra}",
        options.compression, options.isolation, options.runtime
    )?;
    for digest in dependency_digests {
        writeln!(hasher, "dependency {digest}")?;
    }
    hash_tree(dir, &mut hasher).with_context(|| format!("reading {}", dir.display()))?;
    let (_, digest, _) = hasher.finish();
    Ok(digest)
}

/// Feeds every entry under `dir` into `hasher`, in sorted order: its
/// path, mode, symlink target, and the length and digest of its bytes.
///
/// The tree is walked first, then the files are hashed on every core (a
/// big tree's bytes are most of a cold build's time before its layer is
/// written); each file's digest goes into the key in walk order, so the
/// key does not depend on the core count.
fn hash_tree(dir: &Path, hasher: &mut impl Write) -> Result<()> {
    use rayon::prelude::*;
    struct Walked {
        record: Vec<u8>,
        content: Option<PathBuf>,
    }
    let mut walked = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry?;
        let relative = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let metadata = entry.path().symlink_metadata()?;
        let mut record = relative.as_os_str().as_bytes().to_vec();
        write!(record, "\0{:o}\0", metadata.mode())?;
        // A linked attribute file is stored as the file it names
        // (`build::store_linked_attributes`), so its content is an input.
        let linked_yaml = metadata.file_type().is_symlink()
            && matches!(
                entry.path().extension().and_then(|e| e.to_str()),
                Some("yml" | "yaml")
            )
            && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
        if metadata.file_type().is_symlink() {
            record.extend_from_slice(std::fs::read_link(entry.path())?.as_os_str().as_bytes());
        }
        let content = (linked_yaml || metadata.is_file()).then(|| entry.path().to_path_buf());
        walked.push(Walked { record, content });
    }
    let digests: Vec<Option<(u64, Digest)>> = walked
        .par_iter()
        .map(|entry| entry.content.as_deref().map(hash_file).transpose())
        .collect::<Result<_>>()?;
    for (entry, content) in walked.iter().zip(digests) {
        hasher.write_all(&entry.record)?;
        if let Some((len, digest)) = content {
            write!(hasher, "{len}\0{digest}")?;
        }
        hasher.write_all(b"\n")?;
    }
    Ok(())
}

/// The length and digest of the file at `path` (following a symlink).
fn hash_file(path: &Path) -> Result<(u64, Digest)> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let (digest, len) =
        crate::digest::digest_reader(std::io::BufReader::with_capacity(256 * 1024, file))
            .with_context(|| format!("reading {}", path.display()))?;
    Ok((len, digest))
}

fn record_path(store: &Store, key: &Digest) -> PathBuf {
    store.root().join("cache/builds").join(key.hex())
}

/// The record under `key`, if its tags still resolve (re-pointing a tag
/// that another build moved, as long as the image is still whole).
pub fn lookup(store: &Store, key: &Digest) -> Result<Option<Record>> {
    let Ok(bytes) = std::fs::read(record_path(store, key)) else {
        return Ok(None);
    };
    let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
        return Ok(None);
    };
    for (name, digest) in &record.tags {
        let name: ImageName = name.parse().map_err(anyhow::Error::msg)?;
        let digest: Digest = digest.parse().map_err(anyhow::Error::msg)?;
        // A hit needs every blob of the image, not only its manifest: a gc
        // may have taken some. Protected from here on, for the re-tagging.
        let recorded = oci_spec::image::Descriptor::new(
            oci_spec::image::MediaType::ImageManifest,
            0,
            crate::store::to_oci_digest(&digest),
        );
        let walk = store.protect_image(&recorded)?;
        if !walk.missing.is_empty() || !walk.problems.is_empty() {
            return Ok(None); // collected since; build again
        }
        match store.resolve(&name)? {
            Some(current) if current.digest().to_string() == digest.to_string() => {}
            _ => {
                let manifest = store.read_blob(&digest)?;
                let descriptor = oci_spec::image::Descriptor::new(
                    oci_spec::image::MediaType::ImageManifest,
                    manifest.len() as u64,
                    crate::store::to_oci_digest(&digest),
                );
                store.set_tag(&name, &descriptor)?;
            }
        }
    }
    Ok(Some(record))
}

/// Where the last build of `dir` is recorded: by its canonical path.
fn dir_record_path(store: &Store, dir: &Path) -> Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let key = Digest::of(dir.as_os_str().as_bytes());
    Ok(store.root().join("cache/dirs").join(key.hex()))
}

/// Records that the last build of `dir` produced `record` (its own name
/// last), so `herd push DIR` pushes what was built: a manifest name may
/// need attributes only a build evaluates. Unchanged, nothing is written.
pub fn remember_dir(store: &Store, dir: &Path, record: &Record) -> Result<()> {
    let path = dir_record_path(store, dir)?;
    let bytes = serde_json::to_vec(record)?;
    if std::fs::read(&path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    crate::fsutil::write_atomic(&path, &bytes)
}

/// What the last build of `dir` in this store recorded, if anything.
pub fn last_record(store: &Store, dir: &Path) -> Result<Option<Record>> {
    let Ok(bytes) = std::fs::read(dir_record_path(store, dir)?) else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Record>(&bytes).ok())
}

/// The name the last build of `dir` in this store produced, if recorded
/// and still in the store.
pub fn last_built(store: &Store, dir: &Path) -> Result<Option<ImageName>> {
    let Some(record) = last_record(store, dir)? else {
        return Ok(None);
    };
    let Some(name) = record
        .tags
        .last()
        .and_then(|(name, _)| name.parse::<ImageName>().ok())
    else {
        return Ok(None);
    };
    Ok(store.resolve(&name)?.map(|_| name))
}

/// Remembers what the build under `key` produced.
pub fn remember(store: &Store, key: &Digest, record: &Record) -> Result<()> {
    crate::fsutil::write_atomic(&record_path(store, key), &serde_json::to_vec(record)?)
}
