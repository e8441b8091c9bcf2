//! `herd doctor`: what herd's commands need on this host, each item found
//! or not, with the fix. One place that knows the host requirements, so a
//! new machine learns them in one run instead of one failed command at a
//! time.

use crate::runtime::find_executable;
use std::path::{Path, PathBuf};

/// How an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Missing and needed by herd's commands: `herd doctor` exits 1.
    Missing,
    /// Missing or short, but only some commands or uses need it.
    Warning,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warning => "warning",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub item: &'static str,
    pub status: Status,
    /// What was found, or why it matters.
    pub detail: String,
    /// What to do when the status is not ok.
    pub fix: Option<String>,
}

/// Free space under which the store's filesystem gets a warning: a build
/// holds its dependencies' extracted layers, its new layer and the blobs.
const LOW_SPACE: u64 = 2 << 30;

/// Every check, in the order a new machine should fix them; `store` is the
/// store directory the commands would use.
pub fn checks(store: &Path) -> Vec<Check> {
    let mut checks = vec![root(), runtime(), overlayfs()];
    checks.extend(PROGRAMS.iter().map(program));
    checks.push(store_dir(store));
    checks.push(credentials());
    checks
}

/// Whether every needed item is there (warnings aside).
pub fn all_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Missing)
}

/// A program herd runs: its name, the Debian package, what needs it, and
/// whether missing it fails the doctor.
struct Program {
    name: &'static str,
    package: &'static str,
    why: &'static str,
    needed: bool,
}

const PROGRAMS: &[Program] = &[
    Program {
        name: "podman",
        package: "podman",
        why: "runs images for herd test, herd install's users and the default unit",
        needed: true,
    },
    Program {
        name: "conmon",
        package: "conmon",
        why: "podman's container monitor",
        needed: true,
    },
    Program {
        name: "catatonit",
        package: "catatonit",
        why: "podman's pause process: pods (podman kube play, the default unit) need it",
        needed: true,
    },
    Program {
        name: "slirp4netns",
        package: "slirp4netns",
        why: "the build sandbox's own network (else build with --network host)",
        needed: true,
    },
    Program {
        name: "skopeo",
        package: "skopeo",
        why: "herd install copies images into podman's storage with it",
        needed: true,
    },
    Program {
        name: "bats",
        package: "bats",
        why: "herd test runs an image's tests/*.bats with it",
        needed: true,
    },
    Program {
        name: "git",
        package: "git",
        why: "generated versions come from the image directory's last commit",
        needed: false,
    },
    Program {
        name: "ssh",
        package: "openssh-client",
        why: "herd deploy and herd status reach the machines with it",
        needed: false,
    },
];

/// `name` on PATH (and /usr/sbin, /sbin); podman also looks for its
/// helpers in its own directories.
fn find_program(name: &str) -> Option<PathBuf> {
    find_executable(Path::new(name)).or_else(|| {
        ["/usr/libexec/podman", "/usr/lib/podman"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
    })
}

fn program(program: &Program) -> Check {
    match find_program(program.name) {
        Some(path) => Check {
            item: program.name,
            status: Status::Ok,
            detail: path.display().to_string(),
            fix: None,
        },
        None => Check {
            item: program.name,
            status: if program.needed {
                Status::Missing
            } else {
                Status::Warning
            },
            detail: format!("not found on PATH; {}", program.why),
            fix: Some(format!("apt-get install {}", program.package)),
        },
    }
}

fn root() -> Check {
    let root = nix::unistd::geteuid().is_root();
    Check {
        item: "root",
        status: if root { Status::Ok } else { Status::Missing },
        detail: if root {
            "running as root".into()
        } else {
            "not root: builds mount overlays and run scripts in containers, podman runs \
             rootful"
                .into()
        },
        fix: (!root).then(|| "run herd as root (sudo herd ...)".into()),
    }
}

fn runtime() -> Check {
    match find_program("runc").or_else(|| find_program("crun")) {
        Some(path) => Check {
            item: "OCI runtime",
            status: Status::Ok,
            detail: path.display().to_string(),
            fix: None,
        },
        None => Check {
            item: "OCI runtime",
            status: Status::Missing,
            detail: "neither runc nor crun on PATH; build scripts and podman run with it".into(),
            fix: Some(
                "apt-get install runc (or crun; --isolation chroot builds without one)".into(),
            ),
        },
    }
}

/// overlayfs is in the kernel or its module can be loaded (mount loads it
/// on first use).
fn overlayfs() -> Check {
    let listed = std::fs::read_to_string("/proc/filesystems").is_ok_and(|text| {
        text.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    let loadable = !listed && overlay_module();
    let detail = match (listed, loadable) {
        (true, _) => "in /proc/filesystems".into(),
        (false, true) => "a loadable module (loaded on first mount)".into(),
        (false, false) => {
            "not in /proc/filesystems nor a module of this kernel; build roots are overlays".into()
        }
    };
    Check {
        item: "overlayfs",
        status: if listed || loadable {
            Status::Ok
        } else {
            Status::Missing
        },
        detail,
        fix: (!listed && !loadable)
            .then(|| "a kernel with overlayfs (CONFIG_OVERLAY_FS), or modprobe overlay".into()),
    }
}

fn overlay_module() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let modules = Path::new("/lib/modules").join(release.trim());
    ["modules.dep", "modules.builtin"].iter().any(|file| {
        std::fs::read_to_string(modules.join(file))
            .is_ok_and(|text| text.lines().any(|l| l.contains("/overlay.ko")))
    })
}

/// The store's directory (or, before the first build, the directory it
/// will be created in) is writable, and its filesystem's free space.
fn store_dir(store: &Path) -> Check {
    let existing = store
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let created = if existing == store {
        String::new()
    } else {
        format!(
            " (not created yet: herd build or pull creates it in {})",
            existing.display()
        )
    };
    let writable = nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
    let free = nix::sys::statvfs::statvfs(existing)
        .ok()
        .map(|s| s.blocks_available() * s.fragment_size());
    let space = free.map_or("free space unknown".into(), |bytes| {
        format!("{} free", bytesize::ByteSize(bytes).display().iec())
    });
    let (status, fix) = if !writable {
        (
            Status::Missing,
            Some(format!(
                "make {} writable, or choose another store (--store DIR or HERD_STORE)",
                existing.display()
            )),
        )
    } else if free.is_some_and(|bytes| bytes < LOW_SPACE) {
        (
            Status::Warning,
            Some("free space there (herd gc, herd clean), or another --store".into()),
        )
    } else {
        (Status::Ok, None)
    };
    Check {
        item: "store",
        status,
        detail: format!(
            "{}{created}: {}, {space}",
            store.display(),
            if writable { "writable" } else { "not writable" }
        ),
        fix,
    }
}

/// Which credential files push and pull would read, and for which
/// registries; never a secret.
fn credentials() -> Check {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for path in crate::registry::auth::credential_files() {
        if !path.exists() {
            continue;
        }
        match crate::registry::auth::registries_in(&path) {
            Ok(names) if names.is_empty() => {
                found.push(format!("{} (no registries)", path.display()))
            }
            Ok(names) => found.push(format!("{} ({})", path.display(), names.join(", "))),
            Err(error) => problems.push(format!("{error:#}")),
        }
    }
    let item = "registry credentials";
    if !problems.is_empty() {
        return Check {
            item,
            status: Status::Warning,
            detail: problems.join("; "),
            fix: Some("fix the file, or podman login REGISTRY again".into()),
        };
    }
    match found.is_empty() {
        true => Check {
            item,
            status: Status::Warning,
            detail: "none found: push and pull go anonymously".into(),
            fix: Some("podman login REGISTRY (or docker login)".into()),
        },
        false => Check {
            item,
            status: Status::Ok,
            detail: found.join("; "),
            fix: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_not_yet_made_is_checked_where_it_will_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let check = store_dir(&dir.path().join("a/b/store"));
        assert_ne!(check.status, Status::Missing, "{check:?}");
        assert!(
            check.detail.contains("not created yet")
                && check.detail.contains(&dir.path().display().to_string()),
            "{check:?}"
        );
    }
}
