//! `herd init`: a new image directory (FORMATS.md section 2) that builds
//! and passes its own test as it is, to start from.
//!
//! The scaffold is self-contained: its builder runlevel installs the host's
//! static busybox (the same script as aci/aci-busybox's), rather than
//! depending on a base image the store may not have. It has one attribute
//! file, one template, one build script (installing a small app and its
//! user), `tests/wait.sh` and a bats file checking the rendered template
//! and the running app.
//!
//! An existing directory is only written to when empty, so nothing of the
//! user's is ever overwritten; a failure part way removes what was written.

use crate::names::ImageName;
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The files of the scaffold: path (with `@TINY@` for the image's tiny
/// name), content (with `@NAME@` and `@TINY@`), whether it is executable.
const FILES: &[(&str, &str, bool)] = &[
    (
        "aci-manifest.yml",
        include_str!("scaffold/aci-manifest.yml"),
        false,
    ),
    (
        "attributes/@TINY@.yml",
        include_str!("scaffold/attributes.yml"),
        false,
    ),
    (
        "templates/etc/@TINY@/@TINY@.conf.tmpl",
        include_str!("scaffold/template.conf.tmpl"),
        false,
    ),
    (
        "runlevels/builder/10-install-busybox.sh",
        include_str!("../aci/aci-busybox/runlevels/builder/10-install-busybox.sh"),
        true,
    ),
    (
        "runlevels/build/10-install.sh",
        include_str!("scaffold/install.sh"),
        true,
    ),
    ("tests/wait.sh", include_str!("scaffold/wait.sh"), true),
    (
        "tests/@TINY@.bats",
        include_str!("scaffold/test.bats"),
        false,
    ),
];

/// The domain and version of the default name.
const DEFAULT_DOMAIN: &str = "aci.example.com";
const DEFAULT_VERSION: &str = "0.1-1";

/// What `scaffold` wrote.
#[derive(Debug, Clone)]
pub struct Scaffold {
    pub name: ImageName,
    /// Paths relative to the directory, in the order written.
    pub files: Vec<PathBuf>,
}

/// Writes a new image directory at `dir`, which must not exist or be
/// empty. `name` defaults to `aci.example.com/<directory name>:0.1-1`.
pub fn scaffold(dir: &Path, name: Option<&str>) -> Result<Scaffold> {
    let existed = match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{}: the directory is not empty; herd init writes only into a new or empty directory",
                    dir.display()
                );
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!(
                "{}: a file is in the way; herd init needs a new or empty directory",
                dir.display()
            )
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let name = match name {
        Some(text) => parse_name(text).with_context(|| format!("--name {text:?}"))?,
        None => default_name(dir)?,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let written = write_files(dir, &name);
    if written.is_err() {
        // Leave the directory as it was found: empty, or absent.
        if existed {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir_all(entry.path())
                    .or_else(|_| std::fs::remove_file(entry.path()));
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Ok(Scaffold {
        files: written?,
        name,
    })
}

fn write_files(dir: &Path, name: &ImageName) -> Result<Vec<PathBuf>> {
    let fill = |text: &str| {
        text.replace("@NAME@", &name.to_string())
            .replace("@TINY@", name.tiny_name())
    };
    let mut files = vec![];
    for (path, content, executable) in FILES {
        let relative = PathBuf::from(fill(path));
        let target = dir.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, fill(content))
            .with_context(|| format!("writing {}", target.display()))?;
        if *executable {
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
        }
        files.push(relative);
    }
    Ok(files)
}

/// A name given with `--name`: a full reference with a registry domain, as
/// image manifests need.
fn parse_name(text: &str) -> Result<ImageName> {
    let name: ImageName = text.parse().map_err(anyhow::Error::msg)?;
    if name.domain().is_none() {
        bail!("the name has no registry domain; expected a name like {DEFAULT_DOMAIN}/{text}");
    }
    Ok(name)
}

/// `aci.example.com/<directory name>:0.1-1`.
fn default_name(dir: &Path) -> Result<ImageName> {
    let base = dir
        .file_name()
        .map(PathBuf::from)
        .or_else(|| dir.canonicalize().ok()?.file_name().map(PathBuf::from))
        .with_context(|| {
            format!(
                "{}: cannot name an image after this path; give --name",
                dir.display()
            )
        })?;
    let base = base.to_string_lossy();
    format!("{DEFAULT_DOMAIN}/{base}:{DEFAULT_VERSION}")
        .parse()
        .map_err(|e: String| {
            anyhow::anyhow!(
                "{}: the directory name {base:?} cannot be an image name ({e}); give one with --name, e.g. --name {DEFAULT_DOMAIN}/my-app:{DEFAULT_VERSION}",
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_file_named_after_the_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("aci-hello");
        let made = scaffold(&dir, None).unwrap();
        assert_eq!(made.name.to_string(), "aci.example.com/aci-hello:0.1-1");
        assert!(made.files.contains(&PathBuf::from("tests/aci-hello.bats")));
        let manifest = std::fs::read_to_string(dir.join("aci-manifest.yml")).unwrap();
        assert!(manifest.contains("name: aci.example.com/aci-hello:0.1-1\n"));
        assert!(manifest.contains("/usr/local/bin/aci-hello"));
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("runlevels/build/10-install.sh"), 0o755);
        assert_eq!(
            mode("templates/etc/aci-hello/aci-hello.conf.tmpl") & 0o111,
            0
        );
        for (path, _, _) in FILES {
            let path = path.replace("@TINY@", "aci-hello");
            let text = std::fs::read_to_string(dir.join(&path)).unwrap();
            assert!(
                !text.contains("@TINY@") && !text.contains("@NAME@"),
                "{path}"
            );
        }
    }

    #[test]
    fn the_scaffold_parses_as_an_image_directory() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("app");
        scaffold(&dir, Some("registry.example.com/team/app:2.0-1")).unwrap();
        let source = crate::build::ImageSource::read(&dir).unwrap();
        let manifest = source.provisional_manifest().unwrap();
        assert_eq!(manifest.name, "registry.example.com/team/app:2.0-1");
        crate::templates::check_dir(&dir.join("templates"), &Default::default()).unwrap();
    }

    #[test]
    fn an_existing_empty_directory_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let made = scaffold(dir.path(), Some("aci.example.com/x:1")).unwrap();
        assert!(dir.path().join("aci-manifest.yml").is_file());
        assert_eq!(made.files.len(), FILES.len());
    }

    #[test]
    fn refuses_a_non_empty_directory_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = scaffold(dir.path(), Some("aci.example.com/x:1")).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn bad_names_are_explained() {
        let parent = tempfile::tempdir().unwrap();
        let err = scaffold(&parent.path().join("My App"), None).unwrap_err();
        assert!(format!("{err:#}").contains("--name"), "{err:#}");
        assert!(!parent.path().join("My App").exists());
        let err = scaffold(&parent.path().join("a"), Some("no-domain:1")).unwrap_err();
        assert!(format!("{err:#}").contains("registry domain"), "{err:#}");
        assert!(!parent.path().join("a").exists());
    }
}
