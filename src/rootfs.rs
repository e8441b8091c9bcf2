//! Root filesystems for build scripts. Each dependency layer is extracted
//! once into the store's cache (whiteouts turned into overlayfs's form);
//! a build stacks them read-only under an overlay mount whose upper
//! directory catches every change the scripts make. That upper directory
//! *is* the new layer: no copy of the base, no tree comparison, so an image
//! that changes 1 MB of a 200 MB base writes a 1 MB layer.
//!
//! Extraction refuses entries that would land outside the target root:
//! `..` components, absolute paths, hard links out of the root, and writes
//! through symlinks.

use crate::digest::{Digest, HashingReader};
use crate::layers::{self, Entry, EntryKind, LayerBlob, ScanOptions};
use crate::store::Store;
use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Inside a cache entry `cache/layers/<diff_id hex>/`: the extracted tree,
/// and the record that it was verified (written before the entry got its
/// name, so an entry without it was not made by this herd).
const CACHE_TREE: &str = "rootfs";
const CACHE_VERIFIED: &str = "verified";

/// How a cache entry was verified.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verified {
    diff_id: String,
    blob: String,
    how: String,
}

fn layer_cache(store: &Store) -> PathBuf {
    store.root().join("cache/layers")
}

/// Whether the cache entry `entry` holds a tree verified against the
/// diff_id it is named after.
fn is_verified(entry: &Path) -> bool {
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    std::fs::read(entry.join(CACHE_VERIFIED))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Verified>(&bytes).ok())
        .is_some_and(|v| v.diff_id.strip_prefix("sha256:") == Some(&*name))
        && entry.join(CACHE_TREE).is_dir()
}

/// The extracted form of `blob`, from the store's cache or made now.
/// `origin` says where the layer comes from (`from NAME`), for errors.
///
/// The tar stream is hashed while it is unpacked: the cache is keyed by
/// diff_id, so a layer whose content does not match the diff_id its
/// image's config claims (another image's layer, herd's init) would define
/// that layer for every later build. Such an extraction is discarded.
pub fn extracted_layer(store: &Store, blob: &LayerBlob, origin: &str) -> Result<PathBuf> {
    let cache = layer_cache(store);
    let target = cache.join(blob.diff_id.hex());
    if is_verified(&target) {
        return Ok(target.join(CACHE_TREE));
    }
    fs::create_dir_all(&cache)?;
    if target.symlink_metadata().is_ok() {
        // Left by an older herd, unverified: moved aside for `herd clean`.
        let aside = tempfile::Builder::new()
            .prefix(".partial-unverified-")
            .tempdir_in(&cache)?
            .keep();
        // Into the fresh directory: a rename onto it would need it empty.
        let _ = fs::rename(&target, aside.join("entry"));
    }
    let partial = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(&cache)?;
    let tree = partial.path().join(CACHE_TREE);
    fs::create_dir(&tree)?;
    // A layer of an image from the registry build cache is fetched now.
    crate::registry::fetch_lazy(store, std::slice::from_ref(&blob.digest))?;
    let mut reader = HashingReader::new(layers::open_decompressed(
        &store.blob_path(&blob.digest),
        blob.media_type,
    )?);
    extract(&mut reader, &tree).with_context(|| format!("extracting layer {}", blob.digest))?;
    let actual = reader
        .finish()
        .with_context(|| format!("extracting layer {}", blob.digest))?;
    if actual != blob.diff_id {
        bail!(
            "refusing layer {} ({origin}): its content has diff_id {actual}, but the image's \
             config claims {}; the image is corrupt or forged",
            blob.digest,
            blob.diff_id
        );
    }
    let verified = Verified {
        diff_id: blob.diff_id.to_string(),
        blob: blob.digest.to_string(),
        how: "sha256 of the uncompressed stream, computed while extracting".into(),
    };
    fs::write(
        partial.path().join(CACHE_VERIFIED),
        serde_json::to_vec(&verified)?,
    )?;
    let partial = partial.keep();
    if let Err(error) = fs::rename(&partial, &target) {
        // Another build extracted the same layer first; use theirs.
        let _ = fs::remove_dir_all(&partial);
        if !is_verified(&target) {
            return Err(error).context("caching an extracted layer");
        }
    }
    Ok(target.join(CACHE_TREE))
}

/// The entries of the extracted-layer cache that were not verified against
/// their diff_id (made by an older herd, or changed since), one line each.
pub fn check_layer_cache(store: &Store) -> Vec<String> {
    unverified_layers(store)
        .iter()
        .map(|path| {
            format!(
                "{}: an extracted layer not verified against its diff_id (made by an older herd \
                 or changed); `herd clean` removes it",
                path.display()
            )
        })
        .collect()
}

/// Removes the cache entries `check_layer_cache` reports; how many.
pub fn remove_unverified_layers(store: &Store) -> Result<usize> {
    let unverified = unverified_layers(store);
    for path in &unverified {
        remove_any(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(unverified.len())
}

fn unverified_layers(store: &Store) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(layer_cache(store)) else {
        return vec![]; // no cache yet
    };
    let mut unverified: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().as_bytes().starts_with(b".partial-"))
        .map(|e| e.path())
        .filter(|path| !is_verified(path))
        .collect();
    unverified.sort();
    unverified
}

/// Extracts a tar stream into `root` in overlayfs form: a whiteout becomes
/// a 0/0 character device, an opaque marker an xattr on its directory.
pub fn extract(reader: impl Read, root: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_path = entry.path_bytes().into_owned();
        let relative = safe_relative_path(&raw_path)?;
        let Some(relative) = relative else { continue }; // "./" itself
        let name = relative
            .file_name()
            .map(OsStr::as_bytes)
            .unwrap_or_default()
            .to_vec();
        let parent = root.join(relative.parent().unwrap_or(Path::new("")));
        ensure_inside(root, &parent)?;
        fs::create_dir_all(&parent)?;
        if name == OPAQUE_WHITEOUT.as_bytes() {
            xattr::set(&parent, OVERLAY_OPAQUE_XATTR, b"y")
                .context("marking an opaque directory")?;
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if matches!(hidden, b"" | b"." | b"..") {
                bail!(
                    "layer entry {:?} is a whiteout of its own directory or its parent",
                    relative.display().to_string()
                );
            }
            let target = parent.join(OsStr::from_bytes(hidden));
            remove_any(&target)?;
            nix::sys::stat::mknod(
                &target,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .context("creating a whiteout (building images with scripts needs root)")?;
            continue;
        }
        let target = root.join(&relative);
        let header = entry.header().clone();
        let mode = header.mode()? & 0o7777;
        let entry_type = header.entry_type();
        if entry_type.is_dir() {
            if !target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                remove_any(&target)?;
                fs::create_dir(&target)?;
            }
        } else {
            if is_pax_sparse(&mut entry)? {
                // The tar crate expands old-style GNU sparse entries (type
                // S) but not the PAX form, whose data starts with the map:
                // extracting it as a file would be silently wrong.
                bail!(
                    "layer entry {} is a PAX-format GNU sparse file, which herd does not \
                     extract; make the layer without tar --sparse (or with --format=gnu)",
                    relative.display()
                );
            }
            remove_any(&target)?;
            if entry_type.is_symlink() {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)?;
            } else if entry_type.is_hard_link() {
                let link = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let Some(link) = safe_relative_path(&link)? else {
                    bail!("hard link {} points at the root", relative.display())
                };
                let source = root.join(link);
                ensure_inside(root, &source)?;
                fs::hard_link(&source, &target)?;
                continue; // shares the metadata of its target
            } else if entry_type.is_file()
                || entry_type == tar::EntryType::Continuous
                || entry_type == tar::EntryType::GNUSparse
            {
                // A GNU sparse entry reads as its whole content, holes as
                // zeros.
                let mut file = fs::File::options()
                    .write(true)
                    .create_new(true)
                    .open(&target)?;
                std::io::copy(&mut entry, &mut file)?;
            } else if entry_type.is_character_special()
                || entry_type.is_block_special()
                || entry_type.is_fifo()
            {
                let (kind, device) = if entry_type.is_fifo() {
                    // Some writers leave a FIFO's device fields empty.
                    (nix::sys::stat::SFlag::S_IFIFO, 0)
                } else {
                    let kind = if entry_type.is_character_special() {
                        nix::sys::stat::SFlag::S_IFCHR
                    } else {
                        nix::sys::stat::SFlag::S_IFBLK
                    };
                    let number = |field: std::io::Result<Option<u32>>, what: &str| {
                        field.map(Option::unwrap_or_default).with_context(|| {
                            format!("layer entry {}: its {what} number", relative.display())
                        })
                    };
                    let major = number(header.device_major(), "major device")?;
                    let minor = number(header.device_minor(), "minor device")?;
                    (kind, nix::sys::stat::makedev(major.into(), minor.into()))
                };
                nix::sys::stat::mknod(&target, kind, nix::sys::stat::Mode::empty(), device)?;
            } else {
                continue; // PAX and GNU extension headers are consumed by the reader
            }
        }
        let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
        std::os::unix::fs::lchown(&target, Some(uid), Some(gid)).ok();
        if !entry_type.is_symlink() {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
            if let Some(extensions) = entry.pax_extensions()? {
                for extension in extensions {
                    let extension = extension?;
                    if let Some(name) = extension.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                        xattr::set(&target, OsStr::from_bytes(name), extension.value_bytes()).ok();
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether a regular-looking entry is a PAX-format GNU sparse file.
fn is_pax_sparse<R: Read>(entry: &mut tar::Entry<R>) -> Result<bool> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(false);
    };
    Ok(extensions
        .filter_map(Result::ok)
        .any(|e| e.key_bytes().starts_with(b"GNU.sparse.")))
}

/// The entry's path as a relative path, or an error when it would escape
/// the root. `None` for the root itself.
fn safe_relative_path(raw: &[u8]) -> Result<Option<PathBuf>> {
    let path = Path::new(OsStr::from_bytes(raw));
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                bail!(
                    "layer entry {:?} has an absolute path; layers hold relative paths",
                    path.display().to_string()
                )
            }
            Component::ParentDir => bail!(
                "layer entry {:?} climbs out of the root with '..'",
                path.display().to_string()
            ),
        }
    }
    Ok((!clean.as_os_str().is_empty()).then_some(clean))
}

/// Refuses a path whose existing components under `root` include a
/// symlink: writing there would follow it, possibly out of the root.
fn ensure_inside(root: &Path, path: &Path) -> Result<()> {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match current.symlink_metadata() {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                bail!(
                    "layer entry goes through the symlink {}; refusing to write outside the root",
                    relative.display()
                )
            }
            Ok(_) => {}
            Err(_) => break, // does not exist yet: nothing below it can be a link
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path)?,
        Ok(_) => fs::remove_file(path)?,
        Err(_) => {}
    }
    Ok(())
}

/// A mounted overlay: the dependency layers read-only below, an upper
/// directory catching changes. Unmounted on drop.
pub struct Overlay {
    pub merged: PathBuf,
    pub upper: PathBuf,
    _work: crate::store::WorkDir,
    mounted: bool,
}

impl Overlay {
    /// Mounts `lowers` (lowest first) under a new upper directory inside
    /// the store's temporary area.
    pub fn mount(store: &Store, lowers: &[PathBuf]) -> Result<Overlay> {
        let work = store.work_dir("build-")?;
        let (merged, upper, scratch) = (
            work.path().join("merged"),
            work.path().join("upper"),
            work.path().join("work"),
        );
        for dir in [&merged, &upper, &scratch] {
            fs::create_dir(dir)?;
        }
        // overlayfs needs at least one lower directory.
        let empty = work.path().join("empty");
        fs::create_dir(&empty)?;
        let mut lower_list: Vec<String> = lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        if lower_list.is_empty() {
            lower_list.push(empty.display().to_string());
        }
        // metacopy and redirect_dir off: every change must be a full file or
        // directory in the upper dir, so the upper dir alone is the layer.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},metacopy=off,redirect_dir=off,index=off",
            lower_list.join(":"),
            upper.display(),
            scratch.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .context("mounting the build root (overlayfs; building images with scripts needs root)")?;
        Ok(Overlay {
            merged,
            upper,
            _work: work,
            mounted: true,
        })
    }

    /// The layer entries for what changed: the upper directory with
    /// overlayfs whiteouts turned into OCI ones.
    pub fn changes(&self, mtime_clamp: u64) -> Result<Vec<Entry>> {
        let options = ScanOptions {
            owner: None,
            mtime_clamp,
            allow_special_files: true,
        };
        let mut entries = Vec::new();
        let upper = layers::scan_tree(&self.upper, "", &options)?;
        layers::refuse_whiteout_names(&upper, "made by a build script")?;
        for entry in upper {
            let on_disk = self.upper.join(OsStr::from_bytes(&entry.path));
            match entry.kind {
                EntryKind::CharDevice { major: 0, minor: 0 } => {
                    let (parent, name) = match entry.path.iter().rposition(|&b| b == b'/') {
                        Some(slash) => (&entry.path[..=slash], &entry.path[slash + 1..]),
                        None => (&b""[..], &entry.path[..]),
                    };
                    let whiteout = [parent, WHITEOUT_PREFIX.as_bytes(), name].concat();
                    entries.push(Entry {
                        path: whiteout,
                        kind: EntryKind::Bytes(vec![]),
                        mode: 0o644,
                        uid: 0,
                        gid: 0,
                        xattrs: vec![],
                        ..entry
                    });
                }
                EntryKind::Directory => {
                    let opaque = xattr::get(&on_disk, OVERLAY_OPAQUE_XATTR)
                        .ok()
                        .flatten()
                        .is_some_and(|v| v == b"y");
                    let marker = [&entry.path[..], b"/", OPAQUE_WHITEOUT.as_bytes()].concat();
                    let mtime = entry.mtime;
                    entries.push(entry);
                    if opaque {
                        entries.push(Entry {
                            path: marker,
                            kind: EntryKind::Bytes(vec![]),
                            mode: 0o644,
                            uid: 0,
                            gid: 0,
                            mtime,
                            xattrs: vec![],
                        });
                    }
                }
                _ => entries.push(entry),
            }
        }
        layers::complete_and_sort(&mut entries, mtime_clamp);
        Ok(entries)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
            self.mounted = false;
        }
    }
}

/// Unmounts the build roots that interrupted builds left mounted in the
/// store's temporary area, so that `Store::clean` can remove them. Returns
/// how many it unmounted.
pub fn unmount_stale(store: &Store) -> Result<usize> {
    let mut unmounted = 0;
    for entry in fs::read_dir(store.root().join("tmp"))? {
        let dir = entry?.path();
        let merged = dir.join("merged");
        if merged.is_dir()
            && !crate::store::is_in_use(&dir)
            && nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).is_ok()
        {
            unmounted += 1;
        }
    }
    Ok(unmounted)
}

/// Writes `entries` (as made for a layer) into the directory `root`, the way
/// extracting that layer would: used to put the image's own files into the
/// build root before `build-late` runs.
pub fn materialize(entries: &[Entry], root: &Path) -> Result<()> {
    for entry in entries {
        let Some(relative) = safe_relative_path(&entry.path)? else {
            continue;
        };
        let target = root.join(&relative);
        ensure_inside(root, target.parent().unwrap_or(root))?;
        match &entry.kind {
            EntryKind::Directory => {
                if !target.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    remove_any(&target)?;
                    fs::create_dir_all(&target)?;
                }
            }
            EntryKind::File { source, .. } => {
                remove_any(&target)?;
                fs::copy(source, &target)
                    .with_context(|| format!("copying {}", source.display()))?;
            }
            EntryKind::Bytes(content) => {
                remove_any(&target)?;
                fs::write(&target, content)?;
            }
            EntryKind::Symlink { target: link } => {
                remove_any(&target)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(link), &target)?;
                continue;
            }
            EntryKind::HardLink { target: link } => {
                remove_any(&target)?;
                fs::hard_link(root.join(OsStr::from_bytes(link)), &target)?;
                continue;
            }
            EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } | EntryKind::Fifo => {
                bail!(
                    "{}: special files cannot be copied into a build root",
                    entry.path_display()
                )
            }
        }
        std::os::unix::fs::lchown(&target, Some(entry.uid), Some(entry.gid))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode))?;
    }
    Ok(())
}

/// Removes from the upper directory what only the runtime created (mount
/// targets such as /proc or /etc/resolv.conf), when it did not exist in the
/// image before the scripts ran and is still empty.
pub fn remove_mount_targets(overlay: &Overlay, targets: &[&str], existed_before: &[bool]) {
    for (target, existed) in targets.iter().zip(existed_before) {
        if *existed {
            continue;
        }
        let path = overlay.upper.join(target.trim_start_matches('/'));
        let Ok(metadata) = path.symlink_metadata() else {
            continue;
        };
        if metadata.is_dir() {
            // Mount points nest (/.herd-build/home): remove the empty
            // directories from the inside out; a file stops the removal.
            for entry in walkdir::WalkDir::new(&path)
                .contents_first(true)
                .into_iter()
                .filter_map(Result::ok)
            {
                if entry.file_type().is_dir() {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        } else if metadata.len() == 0 && metadata.nlink() == 1 {
            let _ = fs::remove_file(&path);
        }
    }
}

/// A digest naming the stack of layers a root is made of.
pub fn chain_id(layers: &[LayerBlob]) -> Digest {
    let joined: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    Digest::of(joined.join(" ").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of one empty entry. The name and link target go into the
    /// header's fields as they are: the tar crate's `set_path` and
    /// `set_link_name` refuse the hostile ones these tests need.
    fn tar_with(path: &[u8], kind: u8, link: &[u8]) -> Vec<u8> {
        let mut header = tar::Header::new_ustar();
        let fields = header.as_ustar_mut().unwrap();
        fields.name[..path.len()].copy_from_slice(path);
        fields.linkname[..link.len()].copy_from_slice(link);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_entry_type(tar::EntryType::new(kind));
        header.set_cksum();
        // The entry, then the two zero blocks that end an archive.
        [header.as_bytes(), &[0u8; 1024][..]].concat()
    }

    #[test]
    fn refuses_entries_that_escape_the_root() {
        for (path, kind, link, message) in [
            (&b"../escape"[..], b'0', &b""[..], "'..'"),
            (b"/etc/escape", b'0', b"", "absolute"),
            (b"a/../../escape", b'0', b"", "'..'"),
            (b"hard", b'1', b"../../etc/passwd", "'..'"),
        ] {
            let root = tempfile::tempdir().unwrap();
            let err = extract(tar_with(path, kind, link).as_slice(), root.path()).unwrap_err();
            assert!(format!("{err:#}").contains(message), "{path:?}: {err:#}");
        }
    }

    #[test]
    fn refuses_whiteouts_naming_the_directory_or_its_parent() {
        // ".wh..." hides "..": removing it would delete the directory
        // holding the root.
        for path in [&b".wh..."[..], b".wh..", b".wh.", b"a/.wh...", b"a/.wh."] {
            let sandbox = tempfile::tempdir().unwrap();
            let root = sandbox.path().join("root");
            fs::create_dir_all(root.join("a")).unwrap();
            fs::write(sandbox.path().join("canary"), b"x").unwrap();
            let err = extract(tar_with(path, b'0', b"").as_slice(), &root).unwrap_err();
            assert!(format!("{err:#}").contains("whiteout"), "{path:?}: {err:#}");
            assert!(sandbox.path().join("canary").is_file(), "{path:?}");
            assert!(root.join("a").is_dir(), "{path:?}");
        }
    }

    #[test]
    fn a_fifo_extracts_with_or_without_device_numbers() {
        // Without: as some writers leave them. With: as herd writes them.
        let written = {
            let mut entries = vec![Entry {
                kind: EntryKind::Fifo,
                ..Entry::bytes("opt/fifo", vec![], 0o644, 0)
            }];
            layers::complete_and_sort(&mut entries, 0);
            let mut out = Vec::new();
            layers::write_tar(&entries, &mut out).unwrap();
            out
        };
        for (tar, path) in [
            (tar_with(b"fifo", b'6', b""), "fifo"),
            (written, "opt/fifo"),
        ] {
            let root = tempfile::tempdir().unwrap();
            extract(tar.as_slice(), root.path()).unwrap();
            let metadata = root.path().join(path).symlink_metadata().unwrap();
            assert!(std::os::unix::fs::FileTypeExt::is_fifo(
                &metadata.file_type()
            ));
        }
    }

    #[test]
    fn refuses_to_write_through_a_symlink() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let err = extract(tar_with(b"link/file", b'0', b"").as_slice(), root.path()).unwrap_err();
        assert!(format!("{err:#}").contains("symlink"), "{err:#}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
