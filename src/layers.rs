//! Layers: tar archives of file trees, written in one streaming pass that
//! also computes the uncompressed digest (diff_id), compresses, and computes
//! the blob digest; and read back to apply them onto a root filesystem.
//!
//! The tar headers are written here rather than through the `tar` crate's
//! builder: its convenient paths normalise modes (losing setuid bits and
//! 0600), take ownership and order from the disk, and do not let us control
//! every byte, which reproducible digests need.

use crate::digest::{Digest, HashingWriter};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

mod gzip;

pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Default)]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => MEDIA_TYPE_GZIP,
            Compression::Zstd => MEDIA_TYPE_ZSTD,
            Compression::None => MEDIA_TYPE_TAR,
        }
    }
}

const ZSTD_LEVEL: i32 = 3;
/// zstd's multithreaded output depends on the worker count, so it is fixed
/// rather than taken from the machine: digests must not depend on cores.
const ZSTD_WORKERS: u32 = 2;
/// Bytes handed from the archiving thread to the compressing thread at once.
const CHUNK: usize = 1 << 20;

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the layer: relative, `/`-separated, no trailing slash.
    pub path: Vec<u8>,
    pub kind: EntryKind,
    /// Permission bits including setuid, setgid and sticky (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    /// A file whose content is read from disk while the layer is written.
    File {
        source: PathBuf,
        size: u64,
    },
    /// A file whose content herd generated.
    Bytes(Vec<u8>),
    Symlink {
        target: Vec<u8>,
    },
    /// A hard link to an earlier entry of the same layer.
    HardLink {
        target: Vec<u8>,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

impl Entry {
    pub fn directory(path: &str, mode: u32, mtime: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::Directory,
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: vec![],
        }
    }

    pub fn bytes(path: &str, content: Vec<u8>, mode: u32, mtime: u64) -> Entry {
        Entry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::Bytes(content),
            mode,
            uid: 0,
            gid: 0,
            mtime,
            xattrs: vec![],
        }
    }

    pub fn path_display(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// How a directory on disk becomes layer entries.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Ownership to give every entry; `None` keeps the numeric owner on disk.
    pub owner: Option<(u32, u32)>,
    /// Modification times later than this are clamped to it
    /// (`SOURCE_DATE_EPOCH`), so builds at different times match.
    pub mtime_clamp: u64,
    /// Whether device nodes and fifos are kept (a root filesystem made by
    /// build scripts) or refused (a directory the user wrote).
    pub allow_special_files: bool,
}

/// Lists the tree under `root` as entries below `prefix` (e.g. `""` for the
/// root, `"herd/templates"`), sorted by path, never following symlinks.
/// `root` itself becomes the entry `prefix` when `prefix` is not empty.
pub fn scan_tree(root: &Path, prefix: &str, options: &ScanOptions) -> Result<Vec<Entry>> {
    // walkdir follows a root that is a symlink: `files -> /etc` would put
    // the host's /etc into the image.
    if root
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        bail!(
            "{} is a symlink; herd does not follow links out of an image directory",
            root.display()
        );
    }
    let mut entries = Vec::new();
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    for item in walker {
        let item = item.with_context(|| format!("reading {}", root.display()))?;
        let relative = item
            .path()
            .strip_prefix(root)
            .expect("walkdir yields paths below its root");
        let path = join_layer_path(prefix, relative.as_os_str());
        if path.is_empty() {
            continue; // the root of the layer itself has no entry
        }
        let metadata = item
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", item.path().display()))?;
        let file_type = metadata.file_type();
        let kind = if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_symlink() {
            let target = std::fs::read_link(item.path())?;
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if file_type.is_file() {
            let key = (metadata.dev(), metadata.ino());
            match first_link.get(&key) {
                Some(target) if metadata.nlink() > 1 => EntryKind::HardLink {
                    target: target.clone(),
                },
                _ => {
                    if metadata.nlink() > 1 {
                        first_link.insert(key, path.clone());
                    }
                    EntryKind::File {
                        source: item.path().to_path_buf(),
                        size: metadata.len(),
                    }
                }
            }
        } else if !options.allow_special_files {
            let what = if file_type.is_socket() {
                "a socket"
            } else if file_type.is_fifo() {
                "a fifo"
            } else {
                "a device node"
            };
            bail!(
                "{} is {what}; image directories may hold only files, directories and symlinks \
                 (create special files in a build script instead)",
                item.path().display()
            );
        } else if file_type.is_fifo() {
            EntryKind::Fifo
        } else if file_type.is_char_device() || file_type.is_block_device() {
            let (major, minor) = (libc::major(metadata.rdev()), libc::minor(metadata.rdev()));
            if file_type.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        } else {
            continue; // sockets are recreated by the programs that own them
        };
        let (uid, gid) = options.owner.unwrap_or((metadata.uid(), metadata.gid()));
        let mtime = u64::try_from(metadata.mtime())
            .unwrap_or(0)
            .min(options.mtime_clamp);
        let xattrs = if file_type.is_symlink() {
            vec![]
        } else {
            read_xattrs(item.path())
        };
        entries.push(Entry {
            path,
            kind,
            mode: metadata.mode() & 0o7777,
            uid,
            gid,
            mtime,
            xattrs,
        });
    }
    Ok(entries)
}

fn join_layer_path(prefix: &str, relative: &OsStr) -> Vec<u8> {
    let mut path = prefix.trim_matches('/').as_bytes().to_vec();
    if !relative.is_empty() {
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(relative.as_bytes());
    }
    path
}

/// Extended attributes worth carrying into an image: file capabilities and
/// user attributes. SELinux labels belong to the host, not the image.
fn read_xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let Ok(names) = xattr::list(path) else {
        return vec![];
    };
    let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = names
        .filter(|name| {
            let name = name.as_bytes();
            name.starts_with(b"user.") || name == b"security.capability"
        })
        .filter_map(|name| {
            let value = xattr::get(path, &name).ok().flatten()?;
            Some((name.as_bytes().to_vec(), value))
        })
        .collect();
    xattrs.sort();
    xattrs
}

/// Refuses entries named `.wh.*`: in an OCI layer such a name is a
/// whiteout, so a file a build made under it would delete what the layers
/// below have instead of being stored. `origin` says who made them.
pub fn refuse_whiteout_names(entries: &[Entry], origin: &str) -> Result<()> {
    for entry in entries {
        let name = entry.path.rsplit(|&b| b == b'/').next().unwrap_or_default();
        if name.starts_with(b".wh.") {
            bail!(
                "{origin}: /{}: a name starting with .wh. is a whiteout in an OCI layer \
                 (it would delete files of the layers below rather than be stored); rename it",
                entry.path_display()
            );
        }
    }
    Ok(())
}

/// Adds entries for the parent directories of every entry that lacks one
/// (mode 0755, root-owned), and sorts: a tar lists a directory before what
/// is in it, and sorted paths make the archive independent of disk order.
pub fn complete_and_sort(entries: &mut Vec<Entry>, mtime: u64) {
    let present: std::collections::HashSet<Vec<u8>> =
        entries.iter().map(|e| e.path.clone()).collect();
    let mut missing = std::collections::BTreeSet::new();
    for entry in entries.iter() {
        let mut path = entry.path.as_slice();
        while let Some(slash) = path.iter().rposition(|&b| b == b'/') {
            path = &path[..slash];
            if !present.contains(path) {
                missing.insert(path.to_vec());
            }
        }
    }
    entries.extend(missing.into_iter().map(|path| Entry {
        path,
        kind: EntryKind::Directory,
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: vec![],
    }));
    // Sorting by path components puts "a" before "a/b" before "a.b", so a
    // directory always precedes its contents.
    entries.sort_by(|a, b| {
        a.path
            .split(|&c| c == b'/')
            .cmp(b.path.split(|&c| c == b'/'))
    });
    entries.dedup_by(|later, earlier| later.path == earlier.path);
}

/// The digests and size of a written layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Digest of the compressed blob: its name in a store or registry.
    pub digest: Digest,
    /// Digest of the uncompressed tar: the layer's identity in the config.
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: &'static str,
}

/// Writes `entries` (already complete and sorted) as a layer blob to `out`.
///
/// The archive is produced on this thread and compressed on another, so a
/// build uses two cores; data moves in bounded chunks, so memory stays flat
/// whatever the layer's size.
pub fn write_layer(entries: &[Entry], compression: Compression, out: File) -> Result<LayerBlob> {
    let (sender, receiver) = mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::scope(|scope| {
        let compressor = scope.spawn(move || compress(receiver, compression, out));
        let archived = (|| {
            let mut archive = HashingWriter::new(ChunkSender {
                buffer: Vec::with_capacity(CHUNK),
                sender,
            });
            write_tar(entries, &mut archive)?;
            let (mut chunks, diff_id, _) = archive.finish();
            chunks.flush()?;
            Ok::<_, anyhow::Error>(diff_id)
        })();
        let compressed = compressor
            .join()
            .map_err(|_| anyhow::anyhow!("the compression thread panicked"))?;
        // An archiving error is the cause; a compression error after it is
        // only the closed channel.
        let diff_id = archived?;
        let (digest, size) = compressed.context("compressing the layer")?;
        Ok(LayerBlob {
            digest,
            diff_id,
            size,
            media_type: compression.media_type(),
        })
    })
}

/// A writer that hands full chunks to the compression thread.
struct ChunkSender {
    buffer: Vec<u8>,
    sender: mpsc::SyncSender<Vec<u8>>,
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buffer.len();
        let taken = room.min(data.len());
        self.buffer.extend_from_slice(&data[..taken]);
        if self.buffer.len() == CHUNK {
            self.flush()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let full = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
            self.sender
                .send(full)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "compression stopped"))?;
        }
        Ok(())
    }
}

fn compress(
    chunks: mpsc::Receiver<Vec<u8>>,
    compression: Compression,
    out: File,
) -> Result<(Digest, u64)> {
    let sink = HashingWriter::new(BufWriter::with_capacity(
        CHUNK,
        crate::fsutil::WritebackFile::new(out),
    ));
    let sink = match compression {
        Compression::Gzip => gzip::parallel_gzip(chunks, sink)?,
        Compression::Zstd => {
            let mut encoder = zstd::Encoder::new(sink, ZSTD_LEVEL)?;
            encoder.multithread(ZSTD_WORKERS)?;
            chunks
                .iter()
                .try_for_each(|chunk| encoder.write_all(&chunk))?;
            encoder.finish()?
        }
        Compression::None => {
            let mut sink = sink;
            chunks.iter().try_for_each(|chunk| sink.write_all(&chunk))?;
            sink
        }
    };
    let (buffered, digest, size) = sink.finish();
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((digest, size))
}

/// Writes a whole tar stream: every entry, then the two zero blocks.
pub fn write_tar(entries: &[Entry], out: &mut impl Write) -> Result<()> {
    let mut buffer = vec![0u8; 256 * 1024];
    for entry in entries {
        write_entry(entry, out, &mut buffer)
            .with_context(|| format!("archiving {}", entry.path_display()))?;
    }
    out.write_all(&[0u8; 1024])?;
    Ok(())
}

fn write_entry(entry: &Entry, out: &mut impl Write, buffer: &mut [u8]) -> Result<()> {
    let (type_flag, size, link): (u8, u64, &[u8]) = match &entry.kind {
        EntryKind::Directory => (b'5', 0, b""),
        EntryKind::File { size, .. } => (b'0', *size, b""),
        EntryKind::Bytes(content) => (b'0', content.len() as u64, b""),
        EntryKind::Symlink { target } => (b'2', 0, target),
        EntryKind::HardLink { target } => (b'1', 0, target),
        EntryKind::CharDevice { .. } => (b'3', 0, b""),
        EntryKind::BlockDevice { .. } => (b'4', 0, b""),
        EntryKind::Fifo => (b'6', 0, b""),
    };
    let mut name = entry.path.clone();
    if type_flag == b'5' {
        name.push(b'/');
    }
    let header = Header {
        name: &name,
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        size,
        mtime: entry.mtime,
        type_flag,
        link,
    };
    let (major, minor) = match entry.kind {
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            (major, minor)
        }
        _ => (0, 0),
    };
    let pax = header.pax_records(&entry.xattrs);
    if !pax.is_empty() {
        write_pax_header(&pax, out)?;
    }
    out.write_all(&header.encode(major, minor))?;
    match &entry.kind {
        EntryKind::File { source, size } => copy_file(source, *size, out, buffer)?,
        EntryKind::Bytes(content) => out.write_all(content)?,
        _ => {}
    }
    pad_to_block(size, out)
}

fn copy_file(source: &Path, size: u64, out: &mut impl Write, buffer: &mut [u8]) -> Result<()> {
    let mut file = File::open(source).with_context(|| format!("opening {}", source.display()))?;
    let mut remaining = size;
    while remaining > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let read = file.read(&mut buffer[..want])?;
        if read == 0 {
            bail!("{} shrank while it was being archived", source.display());
        }
        out.write_all(&buffer[..read])?;
        remaining -= read as u64;
    }
    if file.read(&mut buffer[..1])? != 0 {
        bail!("{} grew while it was being archived", source.display());
    }
    Ok(())
}

fn pad_to_block(size: u64, out: &mut impl Write) -> Result<()> {
    let padding = (512 - (size % 512) as usize) % 512;
    out.write_all(&[0u8; 512][..padding])?;
    Ok(())
}

struct Header<'a> {
    name: &'a [u8],
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    type_flag: u8,
    link: &'a [u8],
}

/// Largest values the ustar octal fields hold; beyond them a PAX record
/// carries the value.
const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;

impl Header<'_> {
    /// PAX records for whatever does not fit the ustar header.
    fn pax_records(&self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut records = Vec::new();
        if self.name.len() > 100 {
            pax_record(&mut records, b"path", self.name);
        }
        if self.link.len() > 100 {
            pax_record(&mut records, b"linkpath", self.link);
        }
        if self.size > MAX_OCTAL_11 {
            pax_record(&mut records, b"size", self.size.to_string().as_bytes());
        }
        if u64::from(self.uid) > MAX_OCTAL_7 {
            pax_record(&mut records, b"uid", self.uid.to_string().as_bytes());
        }
        if u64::from(self.gid) > MAX_OCTAL_7 {
            pax_record(&mut records, b"gid", self.gid.to_string().as_bytes());
        }
        if self.mtime > MAX_OCTAL_11 {
            pax_record(&mut records, b"mtime", self.mtime.to_string().as_bytes());
        }
        for (key, value) in xattrs {
            let mut full_key = b"SCHILY.xattr.".to_vec();
            full_key.extend_from_slice(key);
            pax_record(&mut records, &full_key, value);
        }
        records
    }

    fn encode(&self, major: u32, minor: u32) -> [u8; 512] {
        let mut block = [0u8; 512];
        // Fields too long for the header were put in PAX records; here they
        // are cut, as tar does.
        put_bytes(&mut block[0..100], self.name);
        put_octal(&mut block[100..108], u64::from(self.mode));
        put_octal(&mut block[108..116], u64::from(self.uid).min(MAX_OCTAL_7));
        put_octal(&mut block[116..124], u64::from(self.gid).min(MAX_OCTAL_7));
        put_octal(&mut block[124..136], self.size.min(MAX_OCTAL_11));
        put_octal(&mut block[136..148], self.mtime.min(MAX_OCTAL_11));
        block[156] = self.type_flag;
        put_bytes(&mut block[157..257], self.link);
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        // uname and gname stay empty: no host user names leak into images.
        // A FIFO gets zero device numbers too, as GNU tar writes them:
        // readers (the tar crate) refuse empty numeric fields.
        if matches!(self.type_flag, b'3' | b'4' | b'6') {
            put_octal(&mut block[329..337], u64::from(major));
            put_octal(&mut block[337..345], u64::from(minor));
        }
        set_checksum(&mut block);
        block
    }
}

fn write_pax_header(records: &[u8], out: &mut impl Write) -> Result<()> {
    // The extended header's own name is fixed so archives stay reproducible.
    let header = Header {
        name: b"././@PaxHeader",
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: records.len() as u64,
        mtime: 0,
        type_flag: b'x',
        link: b"",
    };
    out.write_all(&header.encode(0, 0))?;
    out.write_all(records)?;
    pad_to_block(records.len() as u64, out)
}

/// Appends one `"<len> <key>=<value>\n"` record, where len counts the
/// whole record including its own digits.
fn pax_record(records: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let digits = |n: usize| n.to_string().len();
    let mut length = body + digits(body);
    while body + digits(length) != length {
        length = body + digits(length);
    }
    records.extend_from_slice(length.to_string().as_bytes());
    records.push(b' ');
    records.extend_from_slice(key);
    records.push(b'=');
    records.extend_from_slice(value);
    records.push(b'\n');
}

fn put_bytes(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Zero-padded octal digits, NUL-terminated, filling the field.
fn put_octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    field[..width].copy_from_slice(digits.as_bytes());
    field[width] = 0;
}

fn set_checksum(block: &mut [u8; 512]) {
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    let digits = format!("{sum:06o}\0 ");
    block[148..156].copy_from_slice(digits.as_bytes());
}

/// Opens a layer blob for reading its uncompressed tar stream.
pub fn open_decompressed(path: &Path, media_type: &str) -> Result<Box<dyn Read>> {
    let file = io::BufReader::with_capacity(
        CHUNK,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    Ok(match media_type {
        MEDIA_TYPE_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Box::new(flate2::read::MultiGzDecoder::new(file))
        }
        MEDIA_TYPE_ZSTD => Box::new(zstd::Decoder::with_buffer(file)?),
        MEDIA_TYPE_TAR => Box::new(file),
        other => bail!("layer media type {other:?} is not supported"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        write_tar(entries, &mut out).unwrap();
        out
    }

    #[test]
    fn pax_record_length_counts_itself() {
        for value_len in [0usize, 5, 88, 89, 90, 95, 990, 995] {
            let mut records = Vec::new();
            pax_record(&mut records, b"path", &vec![b'a'; value_len]);
            let (length, _) = std::str::from_utf8(&records)
                .unwrap()
                .split_once(' ')
                .unwrap();
            assert_eq!(length.parse::<usize>().unwrap(), records.len());
        }
    }

    #[test]
    fn the_tar_crate_reads_back_modes_owners_links_and_long_names() {
        let long = format!("dir/{}", "x".repeat(150));
        let mut entries = vec![
            Entry {
                uid: 1000,
                gid: 27,
                ..Entry::bytes("dir/secret", b"s".to_vec(), 0o600, 5)
            },
            Entry::bytes("dir/suid", b"#!/bin/sh\n".to_vec(), 0o4755, 5),
            Entry::bytes(&long, b"long".to_vec(), 0o644, 5),
            Entry {
                kind: EntryKind::Symlink {
                    target: b"/etc/passwd".to_vec(),
                },
                ..Entry::bytes("dir/link", vec![], 0o777, 5)
            },
            Entry {
                kind: EntryKind::HardLink {
                    target: b"dir/suid".to_vec(),
                },
                ..Entry::bytes("dir/hard", vec![], 0o4755, 5)
            },
            Entry {
                xattrs: vec![(b"user.k".to_vec(), b"v".to_vec())],
                ..Entry::bytes("dir/x", vec![], 0o644, 5)
            },
        ];
        complete_and_sort(&mut entries, 5);
        let bytes = archive(&entries);
        let mut reader = tar::Archive::new(bytes.as_slice());
        let mut seen = HashMap::new();
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let header = entry.header().clone();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let xattr = entry
                .pax_extensions()
                .unwrap()
                .and_then(|mut p| p.next())
                .map(|e| e.unwrap().key().unwrap().to_string());
            let mut content = String::new();
            entry.read_to_string(&mut content).unwrap();
            seen.insert(
                path,
                (
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    header.entry_type(),
                    link,
                    content,
                    xattr,
                ),
            );
        }
        assert_eq!(seen["dir/"].0, 0o755);
        assert_eq!(seen["dir/secret"].0, 0o600);
        assert_eq!(seen["dir/secret"].1, 1000);
        assert_eq!(seen["dir/suid"].0, 0o4755);
        assert_eq!(seen[&long].4, "long");
        assert_eq!(seen["dir/link"].3.as_deref(), Some("/etc/passwd"));
        assert!(seen["dir/hard"].2.is_hard_link());
        assert_eq!(seen["dir/x"].5.as_deref(), Some("SCHILY.xattr.user.k"));
    }

    #[test]
    fn directories_precede_their_contents_and_parents_are_added() {
        let mut entries = vec![
            Entry::bytes("a.b", vec![], 0o644, 0),
            Entry::bytes("a/b/c", vec![], 0o644, 0),
        ];
        complete_and_sort(&mut entries, 0);
        let paths: Vec<String> = entries.iter().map(Entry::path_display).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/c", "a.b"]);
    }

    #[test]
    fn same_entries_give_the_same_digests_and_compression_round_trips() {
        let mut entries = vec![Entry::bytes("f", vec![7u8; 3 * CHUNK + 17], 0o644, 0)];
        complete_and_sort(&mut entries, 0);
        let dir = tempfile::tempdir().unwrap();
        for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
            let blobs: Vec<LayerBlob> = (0..2)
                .map(|i| {
                    let path = dir.path().join(format!("{compression:?}{i}"));
                    write_layer(&entries, compression, File::create(&path).unwrap()).unwrap()
                })
                .collect();
            assert_eq!(blobs[0], blobs[1]);
            let path = dir.path().join(format!("{compression:?}0"));
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(blobs[0].digest, Digest::of(&bytes));
            assert_eq!(blobs[0].size, bytes.len() as u64);
            let mut plain = Vec::new();
            open_decompressed(&path, compression.media_type())
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(blobs[0].diff_id, Digest::of(&plain));
        }
    }

    #[test]
    fn scanning_refuses_a_root_that_is_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/host-file"), b"host").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), dir.path().join("files")).unwrap();
        let options = ScanOptions {
            owner: Some((0, 0)),
            mtime_clamp: 0,
            allow_special_files: false,
        };
        let err = scan_tree(&dir.path().join("files"), "", &options).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
    }

    #[test]
    fn scanning_refuses_fifos_in_user_directories() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let options = ScanOptions {
            owner: Some((0, 0)),
            mtime_clamp: 0,
            allow_special_files: false,
        };
        let err = scan_tree(dir.path(), "", &options).unwrap_err();
        assert!(err.to_string().contains("is a fifo"), "{err}");
    }
}
