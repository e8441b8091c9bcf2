//! Rendered files that cannot be replaced by a rename: podman and
//! Kubernetes bind-mount `/etc/hosts`, `/etc/resolv.conf` and
//! `/etc/hostname` into the container, and a rename onto a mount point
//! fails (EBUSY, or EXDEV across file systems). dgr's base images templated
//! exactly these files, so such a target is rewritten in place instead:
//! owner and mode first (a secret never sits readable with new content),
//! then truncated and written. Only ever called once every template has
//! rendered, so a failed render still leaves the mounted file as it was.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// True when `path` is a mount point of its own: a file bound from
/// elsewhere lives on another device than its directory. (A bind from the
/// same file system is not seen here; the rename then fails and
/// [`rename_refused`] sends it here all the same.)
pub(super) fn is_mount_point(path: &Path, existing: &std::fs::Metadata) -> bool {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::metadata(parent).is_ok_and(|dir| dir.dev() != existing.dev())
}

/// True when a rename onto the target failed because the target is a
/// mount point (EBUSY) or on another file system (EXDEV).
pub(super) fn rename_refused(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV))
}

/// Rewrites the existing file at `path` in place with `content`, owner and
/// mode set on the open file before its content changes.
pub(super) fn write_in_place(
    path: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NOFOLLOW: a symbolic link put where the mount was is not followed
    // to a file elsewhere; O_NONBLOCK: a FIFO there does not hang the start.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    super::dir::set_owner_and_mode(&file, mode, owner)?;
    file.set_len(0)?;
    file.write_all(content)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_keeps_the_inode_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 10.0.0.1\nsearch a.very.long.example\n").unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, b"nameserver 127.0.0.1\n", 0o640, None).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.ino(), before);
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!(std::fs::read(&path).unwrap(), b"nameserver 127.0.0.1\n");
        assert!(!is_mount_point(&path, &after));
    }

    #[test]
    fn in_place_refuses_links_and_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("hosts");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_in_place(&link, b"x", 0o644, None).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(write_in_place(dir.path(), b"x", 0o644, None).is_err());
        assert!(rename_refused(&std::io::Error::from_raw_os_error(
            libc::EBUSY
        )));
        assert!(!rename_refused(&std::io::Error::from_raw_os_error(
            libc::EACCES
        )));
    }
}
