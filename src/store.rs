//! The local image store: an OCI image layout directory (`oci-layout`,
//! `index.json`, `blobs/sha256/`), readable by skopeo, umoci and podman.
//!
//! Crash safety: a blob is written to `tmp/` and renamed into `blobs/` only
//! once its digest is known, so a blob file always matches its name;
//! `index.json` is replaced atomically under a file lock, so concurrent
//! builds do not lose each other's tags and `kill -9` leaves the old or the
//! new index, never a torn one.
//!
//! Work in progress is protected from `herd gc` by a lease (`lease`): every
//! blob a process writes or builds on is recorded before it relies on it,
//! and `set_tag` refuses a manifest whose blobs are not all there.
//!
//! Permissions: blobs and `index.json` are readable as the umask allows
//! (skopeo or podman run by another user read the store); `tmp/` (build
//! roots), `cache/` (extracted layers, whose setuid files and device nodes
//! came from images) and `leases/` are the owner's only.

mod lazy;
mod lease;
mod walk;

pub use lazy::Location as LazyLocation;

pub use walk::Walk;

use crate::digest::{Digest, digest_reader};
use crate::names::ImageName;
use anyhow::{Context, Result, anyhow, bail};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The index annotation that names an image (its tag, in OCI layout terms).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct Store {
    root: PathBuf,
    /// This process's lease, made when it first protects a blob.
    lease: Mutex<Option<lease::Lease>>,
    /// The last `index.json` read, as bytes and parsed: a tree build asks
    /// for tags hundreds of times and parsing is most of the cost, while
    /// reading the bytes again (to know they did not change) is cheap.
    /// Compared by content, not by file identity: inode numbers are reused
    /// and timestamps are coarse when several herds write in a burst.
    last_index: Mutex<Option<(Vec<u8>, std::sync::Arc<ImageIndex>)>>,
}

/// A directory in the store's temporary area that a running herd is using:
/// it holds a lock on the directory's `.in-use` file, so `herd clean` (in
/// another process) leaves it alone. Removed on drop.
pub struct WorkDir {
    // Field order matters: the lock is released after the directory is gone.
    dir: tempfile::TempDir,
    _lock: File,
}

impl WorkDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether a directory made by `Store::work_dir` is in use by a live herd.
pub fn is_in_use(dir: &Path) -> bool {
    match File::open(dir.join(IN_USE)) {
        Ok(file) => matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

const IN_USE: &str = ".in-use";

/// Holds the store's lock until dropped.
pub struct StoreLock {
    _file: File,
}

/// One named image of the store.
#[derive(Debug, Clone)]
pub struct Tag {
    pub name: String,
    pub descriptor: Descriptor,
}

/// What `Store::gc` did, and what it found wrong on the way.
#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs: usize,
    pub bytes: u64,
    pub problems: Vec<String>,
}

/// Creates `dir` (and its parents) if needed and makes it the owner's
/// only. A directory another user owns keeps its mode (only they may
/// change it).
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let metadata = dir.metadata()?;
    if metadata.mode() & 0o077 != 0 && metadata.uid() == nix::unistd::geteuid().as_raw() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private", dir.display()))?;
    }
    Ok(())
}

impl Store {
    /// `$XDG_DATA_HOME/herd/store`, or `~/.local/share/herd/store`.
    pub fn default_path() -> Result<PathBuf> {
        let data = match std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let home = std::env::var_os("HOME").ok_or_else(|| {
                    anyhow!("neither --store, HERD_STORE, XDG_DATA_HOME nor HOME is set")
                })?;
                PathBuf::from(home).join(".local/share")
            }
        };
        Ok(data.join("herd/store"))
    }

    /// Opens the layout at `root`, which must exist: commands that only
    /// read or tidy a store never create one (a mistyped `--store` would
    /// otherwise print an empty list and leave a new store behind).
    pub fn open_existing(root: &Path) -> Result<Store> {
        if !Store::is_store(root) {
            bail!(
                "no herd store at {} (herd build and herd pull create one)",
                root.display()
            );
        }
        Store::open(root)
    }

    /// Whether `root` holds an image layout (its `oci-layout` and
    /// `index.json`).
    pub fn is_store(root: &Path) -> bool {
        root.join("oci-layout").is_file() && root.join("index.json").is_file()
    }

    /// Opens the layout at `root`, creating an empty one if there is none.
    pub fn open(root: &Path) -> Result<Store> {
        // Absolute from here on: blob paths are linked from elsewhere (a
        // test's layout) and handed to tools run in other directories.
        let root = std::path::absolute(root)
            .with_context(|| format!("resolving the store path {}", root.display()))?;
        let root = root.as_path();
        let store = Store {
            root: root.to_path_buf(),
            lease: Mutex::new(None),
            last_index: Mutex::new(None),
        };
        std::fs::create_dir_all(store.root.join("blobs/sha256"))
            .with_context(|| format!("creating the store at {}", root.display()))?;
        create_private_dir(&store.tmp_dir())?;
        create_private_dir(&store.root.join("cache"))?;
        if !store.root.join("oci-layout").exists() || !store.index_path().exists() {
            let _lock = store.lock()?;
            if !store.root.join("oci-layout").exists() {
                crate::fsutil::write_atomic(
                    &store.root.join("oci-layout"),
                    br#"{"imageLayoutVersion":"1.0.0"}"#,
                )?;
            }
            if !store.index_path().exists() {
                store.write_index(&[])?;
            }
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Takes the store's exclusive lock, waiting for other herd processes.
    pub fn lock(&self) -> Result<StoreLock> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(".lock"))
            .with_context(|| format!("opening the lock of {}", self.root.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", self.root.display()))?;
        Ok(StoreLock { _file: file })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A temporary file in the store, on the same file system as `blobs/`
    /// so that committing it is a rename.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        // tempfile makes files 0600; a blob is as readable as the umask
        // lets any file be.
        tempfile::Builder::new()
            .prefix("blob-")
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(self.tmp_dir())
            .context("creating a temporary blob")
    }

    /// A new working directory in the store's temporary area, marked in use
    /// until dropped.
    pub fn work_dir(&self, prefix: &str) -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.tmp_dir())
            .context("creating a working directory in the store")?;
        let lock = File::create(dir.path().join(IN_USE))?;
        lock.lock()?;
        Ok(WorkDir { dir, _lock: lock })
    }

    /// Moves a fully written temporary file into `blobs/` under `digest`.
    /// The caller computed `digest` from the bytes it wrote.
    pub fn commit_blob(&self, temp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        self.protect(std::slice::from_ref(digest))?;
        let target = self.blob_path(digest);
        if target.exists() {
            return Ok(()); // same content already there; the temp file is dropped
        }
        temp.as_file().sync_all()?;
        temp.persist(&target)
            .with_context(|| format!("storing blob {digest}"))?;
        crate::fsutil::sync_dir(target.parent().expect("blob paths have a parent"));
        Ok(())
    }

    /// Stores a small blob (a config or manifest) and returns its digest.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        self.protect(std::slice::from_ref(&digest))?;
        if !self.has_blob(&digest) {
            let mut temp = self.temp_file()?;
            std::io::Write::write_all(&mut temp, bytes)?;
            self.commit_blob(temp, &digest)?;
        }
        Ok(digest)
    }

    /// Keeps `digests` from `herd gc` until this `Store` is dropped (or the
    /// process ends). Called before a blob is written or reused.
    pub fn protect(&self, digests: &[Digest]) -> Result<()> {
        let mut lease = self.lease.lock().expect("lease lock");
        if lease
            .as_ref()
            .is_some_and(|l| l.missing(digests).is_empty())
        {
            return Ok(());
        }
        let _lock = self.lock()?;
        self.add_to_lease(&mut lease, digests)
    }

    /// Protects the image `descriptor` and every blob it needs. The walk is
    /// made under the store lock, as gc's is, so what it finds present
    /// stays: what it calls missing was gone before.
    pub fn protect_image(&self, descriptor: &Descriptor) -> Result<Walk> {
        let mut lease = self.lease.lock().expect("lease lock");
        let _lock = self.lock()?;
        let walk = self.walk(descriptor);
        self.add_to_lease(&mut lease, &walk.blobs)?;
        Ok(walk)
    }

    /// Adds to this process's lease, making it first; the caller holds the
    /// store lock, so no gc sees the new lease file before it is locked.
    fn add_to_lease(&self, lease: &mut Option<lease::Lease>, digests: &[Digest]) -> Result<()> {
        if lease.is_none() {
            *lease = Some(lease::Lease::create(&self.root.join(lease::DIR))?);
        }
        let lease = lease.as_mut().expect("just made");
        let missing = lease.missing(digests);
        lease.add(&missing)
    }

    /// What the image `descriptor` needs, and what of it is missing or
    /// wrong.
    pub fn walk(&self, descriptor: &Descriptor) -> Walk {
        walk::walk(
            self,
            &from_oci_digest(descriptor.digest()),
            descriptor.media_type().as_ref(),
        )
    }

    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        std::fs::read(self.blob_path(digest))
            .with_context(|| format!("reading blob {digest} from {}", self.root.display()))
    }

    /// Stores `value` as canonical JSON (sorted keys, no spaces) and
    /// returns its descriptor.
    pub fn write_json(&self, media_type: MediaType, value: &impl Serialize) -> Result<Descriptor> {
        let bytes = canonical_json(value)?;
        let digest = self.write_blob(&bytes)?;
        Ok(Descriptor::new(
            media_type,
            bytes.len() as u64,
            to_oci_digest(&digest),
        ))
    }

    pub fn read_manifest(&self, descriptor: &Descriptor) -> Result<ImageManifest> {
        let bytes = self.read_blob(&from_oci_digest(descriptor.digest()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing manifest {}", descriptor.digest()))
    }

    pub fn read_config(&self, manifest: &ImageManifest) -> Result<ImageConfiguration> {
        let bytes = self.read_blob(&from_oci_digest(manifest.config().digest()))?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing config {}", manifest.config().digest()))
    }

    /// Every named image, in index order.
    pub fn tags(&self) -> Result<Vec<Tag>> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                let name = d.annotations().as_ref()?.get(REF_NAME)?.clone();
                Some(Tag {
                    name,
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    /// The descriptor stored under `name`, if any. A name pinned by digest
    /// (`NAME@sha256:...`) is found under that very name (as a pull by
    /// digest stores it), else as any tag whose manifest has that digest:
    /// the digest names the content, whatever the tag says.
    pub fn resolve(&self, name: &ImageName) -> Result<Option<Descriptor>> {
        let wanted = name.to_string();
        let manifests = self.read_index()?;
        let named = |d: &&Descriptor| {
            d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) == Some(&wanted)
        };
        if let Some(descriptor) = manifests.manifests().iter().find(named) {
            return Ok(Some(descriptor.clone()));
        }
        let Some(digest) = name.digest() else {
            return Ok(None);
        };
        Ok(self
            .tags()?
            .into_iter()
            .find(|t| from_oci_digest(t.descriptor.digest()) == *digest)
            .map(|t| t.descriptor))
    }

    /// Like `resolve`, but a missing name is an error that lists what the
    /// store has under the same repository, or else the closest name.
    pub fn require(&self, name: &ImageName) -> Result<Descriptor> {
        if let Some(descriptor) = self.resolve(name)? {
            return Ok(descriptor);
        }
        Err(self.not_found(name))
    }

    /// The error for a name the store does not have: the other tags of its
    /// repository, else the closest stored name (a typo), else a hint to
    /// build or pull it.
    pub fn not_found(&self, name: &ImageName) -> anyhow::Error {
        let repository = name.repository();
        let names: Vec<String> = self
            .tags()
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.name)
            .collect();
        let similar: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| n.starts_with(&repository))
            .collect();
        let root = self.root.display();
        if !similar.is_empty() {
            return anyhow::anyhow!(
                "{name} is not in the store {root}; it has {}",
                similar.join(", ")
            );
        }
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        match crate::yaml::closest(&name.to_string(), &all) {
            Some(best) => {
                anyhow::anyhow!("{name} is not in the store {root} (did you mean `{best}`?)")
            }
            None => anyhow::anyhow!("{name} is not in the store {root} (build or pull it first)"),
        }
    }

    /// Points `name` at `descriptor`, replacing what the name pointed at
    /// before and keeping every other name.
    /// Refuses a manifest whose blobs are not all in the store (a gc
    /// removed them, or it was never complete).
    pub fn set_tag(&self, name: &ImageName, descriptor: &Descriptor) -> Result<()> {
        let _lock = self.lock()?;
        let walk = self.walk(descriptor);
        if let Some(problem) = walk.problems.first() {
            bail!("not tagging {name}: {problem}");
        }
        if !walk.missing.is_empty() {
            bail!(
                "not tagging {name}: the store lacks {} of its blobs ({})",
                walk.missing.len(),
                walk.missing
                    .iter()
                    .map(Digest::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let wanted = name.to_string();
        let mut entries: Vec<Descriptor> = self
            .read_index()?
            .manifests()
            .iter()
            .filter(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) != Some(&wanted))
            .cloned()
            .collect();
        let mut tagged = descriptor.clone();
        let mut annotations = tagged.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME.to_string(), wanted);
        tagged.set_annotations(Some(annotations));
        entries.push(tagged);
        self.write_index(&entries)
    }

    /// Removes `name`; true if it was there.
    pub fn remove_tag(&self, name: &ImageName) -> Result<bool> {
        let _lock = self.lock()?;
        let wanted = name.to_string();
        let before = self.read_index()?.manifests().clone();
        let after: Vec<Descriptor> = before
            .iter()
            .filter(|d| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)) != Some(&wanted))
            .cloned()
            .collect();
        if after.len() == before.len() {
            return Ok(false);
        }
        self.write_index(&after)?;
        Ok(true)
    }

    fn read_index(&self) -> Result<std::sync::Arc<ImageIndex>> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut last = self.last_index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last_bytes, index)) = last.as_ref()
            && *last_bytes == bytes
        {
            return Ok(index.clone());
        }
        let index: std::sync::Arc<ImageIndex> = std::sync::Arc::new(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        );
        *last = Some((bytes, index.clone()));
        Ok(index)
    }

    fn write_index(&self, manifests: &[Descriptor]) -> Result<()> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        crate::fsutil::write_atomic(&self.index_path(), &canonical_json(&index)?)
    }

    /// Checks that every blob matches its name and every tag's manifests,
    /// configs and layers are present and readable. Returns every problem
    /// found, one line each; holds the store lock, so no gc or tag change
    /// runs meanwhile.
    pub fn fsck(&self) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let mut problems = Vec::new();
        let blobs = self.root.join("blobs/sha256");
        let entries =
            std::fs::read_dir(&blobs).with_context(|| format!("listing {}", blobs.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", blobs.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let expected: Result<Digest, _> = format!("sha256:{name}").parse();
            let Ok(expected) = expected else {
                problems.push(format!("blobs/sha256/{name}: not a digest name"));
                continue;
            };
            match File::open(entry.path()).and_then(digest_reader) {
                Ok((actual, _)) if actual != expected => {
                    problems.push(format!("blobs/sha256/{name}: content has digest {actual}"))
                }
                Ok(_) => {}
                Err(error) => {
                    problems.push(format!("blobs/sha256/{name}: cannot be read: {error}"))
                }
            }
        }
        let tags = match self.tags() {
            Ok(tags) => tags,
            Err(error) => {
                problems.push(format!("{error:#}"));
                return Ok(problems);
            }
        };
        for tag in tags {
            let walk = self.walk(&tag.descriptor);
            let top = tag.descriptor.digest();
            for problem in &walk.problems {
                problems.push(format!("{} ({top}): {problem}", tag.name));
            }
            for digest in &walk.missing {
                problems.push(format!("{} ({top}): blob {digest} is missing", tag.name));
            }
        }
        Ok(problems)
    }

    /// Deletes blobs that no tag and no running herd (`protect`) needs.
    /// A tag whose manifest is broken keeps what of it can be reached, and
    /// is reported; the rest of the store is collected all the same.
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = self.lock()?;
        let mut report = GcReport::default();
        let mut keep: HashSet<Digest> = lease::live_digests(&self.root.join(lease::DIR))?;
        for tag in self.tags()? {
            let walk = self.walk(&tag.descriptor);
            let top = tag.descriptor.digest();
            for problem in walk.problems {
                report
                    .problems
                    .push(format!("{} ({top}): {problem}", tag.name));
            }
            keep.extend(walk.blobs);
        }
        // Records of lazy blobs no tag reaches go with the blobs.
        self.prune_lazy(&keep)?;
        let blobs = self.root.join("blobs/sha256");
        for entry in
            std::fs::read_dir(&blobs).with_context(|| format!("listing {}", blobs.display()))?
        {
            let entry = entry?;
            let name = format!("sha256:{}", entry.file_name().to_string_lossy());
            if name.parse::<Digest>().is_ok_and(|d| keep.contains(&d)) {
                continue;
            }
            report.bytes += entry.metadata()?.len();
            std::fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            report.blobs += 1;
        }
        Ok(report)
    }

    /// Removes temporary files left by interrupted builds. Takes the lock so
    /// no running build in this store loses its work.
    pub fn clean(&self) -> Result<usize> {
        let _lock = self.lock()?;
        let mut removed = 0;
        for entry in std::fs::read_dir(self.tmp_dir())? {
            removed += usize::from(remove_if_abandoned(&entry?)?);
        }
        // A kill -9 also leaves temporaries outside tmp/: `write_atomic`'s
        // files beside index.json, registry-blobs.json and cache records,
        // and half-extracted layers in the cache. They are made next to
        // their target so that committing them is a rename; same rules.
        for (dir, prefix) in [
            (self.root.clone(), ".herd-tmp-"),
            (self.root.join("cache/builds"), ".herd-tmp-"),
            (self.root.join("cache/dirs"), ".herd-tmp-"),
            (self.root.join(lazy::DIR), ".herd-tmp-"),
            (self.root.join("cache/layers"), ".partial-"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue; // no cache yet
            };
            for entry in entries {
                let entry = entry?;
                if entry
                    .file_name()
                    .as_encoded_bytes()
                    .starts_with(prefix.as_bytes())
                {
                    removed += usize::from(remove_if_abandoned(&entry)?);
                }
            }
        }
        Ok(removed)
    }
}

/// Removes a temporary file or directory that no live herd is using; true
/// if it did. A directory a running build holds (`is_in_use`) stays, and so
/// does anything younger than a minute: a blob being written right now
/// (blob writes take no lock), a directory between its creation and its
/// lock.
fn remove_if_abandoned(entry: &std::fs::DirEntry) -> Result<bool> {
    let path = entry.path();
    let is_dir = entry.file_type()?.is_dir();
    if is_dir && is_in_use(&path) {
        return Ok(false);
    }
    let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
    if age.as_secs() < 60 {
        return Ok(false);
    }
    if is_dir {
        std::fs::remove_dir_all(&path)?
    } else {
        std::fs::remove_file(&path)?
    }
    Ok(true)
}

/// JSON with object keys sorted and no insignificant whitespace: the same
/// value always gives the same bytes, and so the same digest. (oci-spec
/// keeps annotations and labels in HashMaps, whose order varies by run.)
pub fn canonical_json(value: &impl Serialize) -> Result<Vec<u8>> {
    // serde_json's Map is a BTreeMap (herd does not enable preserve_order),
    // so going through Value sorts every object's keys.
    let value = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&value)?)
}

pub fn to_oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    digest
        .as_str()
        .parse()
        .expect("herd digests are valid sha256 digests")
}

pub fn from_oci_digest(digest: &oci_spec::image::Digest) -> Digest {
    digest
        .to_string()
        .parse()
        .unwrap_or_else(|_| Digest::of(digest.to_string().as_bytes()))
}

/// Annotations as a HashMap, as oci-spec wants them.
pub fn annotations<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> HashMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ImageName {
        text.parse().unwrap()
    }

    /// A small complete image: a config and a manifest naming it.
    fn image(store: &Store, config: &[u8]) -> Descriptor {
        let digest = store.write_blob(config).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digest.to_string(), "size": config.len()},
            "layers": [],
        });
        store
            .write_json(MediaType::ImageManifest, &manifest)
            .unwrap()
    }

    #[test]
    fn tags_replace_their_own_name_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = image(&store, b"a");
        let b = image(&store, b"b");
        store.set_tag(&name("x.io/app:1"), &a).unwrap();
        store.set_tag(&name("x.io/app:2"), &a).unwrap();
        store.set_tag(&name("x.io/app:1"), &b).unwrap();
        let tags: Vec<(String, String)> = store
            .tags()
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.descriptor.digest().to_string()))
            .collect();
        assert_eq!(
            tags,
            vec![
                ("x.io/app:2".into(), a.digest().to_string()),
                ("x.io/app:1".into(), b.digest().to_string())
            ]
        );
        assert!(store.resolve(&name("x.io/app:3")).unwrap().is_none());
        let err = store.require(&name("x.io/app:3")).unwrap_err().to_string();
        assert!(err.contains("x.io/app:2"), "{err}");
    }

    #[test]
    fn a_work_dir_is_in_use_while_it_lives() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let work = store.work_dir("build-").unwrap();
        let path = work.path().to_path_buf();
        assert!(is_in_use(&path));
        drop(work);
        assert!(!path.exists());
        assert!(!is_in_use(&path));
    }

    #[test]
    fn clean_removes_old_temporaries_outside_tmp_and_keeps_young_ones() {
        // What `kill -9` leaves outside tmp/: write_atomic's temp files
        // beside index.json and cache records, a half-extracted layer.
        // `herd clean` used to look in tmp/ only.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("cache/builds")).unwrap();
        std::fs::create_dir_all(root.join("cache/layers/.partial-abc/usr")).unwrap();
        std::fs::create_dir_all(root.join("cache/layers/0123")).unwrap();
        let old = [
            root.join(".herd-tmp-index"),
            root.join("cache/builds/.herd-tmp-record"),
        ];
        for file in &old {
            std::fs::write(file, b"torn").unwrap();
        }
        std::fs::write(root.join("cache/builds/.herd-tmp-young"), b"in use").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for path in old.iter().chain([&root.join("cache/layers/.partial-abc")]) {
            File::open(path)
                .unwrap()
                .set_modified(two_hours_ago)
                .unwrap();
        }
        assert_eq!(store.clean().unwrap(), 3);
        assert!(old.iter().all(|f| !f.exists()));
        assert!(!root.join("cache/layers/.partial-abc").exists());
        assert!(root.join("cache/builds/.herd-tmp-young").exists());
        assert!(root.join("cache/layers/0123").exists());
        assert!(root.join("index.json").exists());
    }

    #[test]
    fn fsck_notices_a_corrupted_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = store.write_blob(b"content").unwrap();
        assert!(store.fsck().unwrap().is_empty());
        std::fs::write(store.blob_path(&digest), b"tampered").unwrap();
        assert_eq!(store.fsck().unwrap().len(), 1);
    }

    #[test]
    fn gc_keeps_what_a_live_lease_protects_and_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let building = Store::open(dir.path()).unwrap();
        let kept = building.write_blob(b"written by a running build").unwrap();
        // Another Store stands for another herd: its lock is its own.
        let collector = Store::open(dir.path()).unwrap();
        let loose = collector.blob_path(&Digest::of(b"loose"));
        std::fs::write(&loose, b"loose").unwrap();
        let report = collector.gc().unwrap();
        assert_eq!(report.blobs, 1);
        assert!(building.has_blob(&kept) && !loose.exists());
        drop(building); // the build ended without tagging its blob
        assert_eq!(collector.gc().unwrap().blobs, 1);
        assert!(!collector.has_blob(&kept));
        assert_eq!(
            std::fs::read_dir(dir.path().join("leases"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let map: HashMap<&str, i32> = [("b", 1), ("a", 2), ("c", 3)].into_iter().collect();
        assert_eq!(canonical_json(&map).unwrap(), br#"{"a":2,"b":1,"c":3}"#);
    }
}
