//! Where a build script container's cgroup is, and what it says about the
//! limits the script ran into. runc makes the cgroup at the path the
//! runtime config names, on cgroup v2 (one tree) or v1 (a tree per
//! controller), and applies the limits itself; herd reads the kernel's
//! event counters before the container is deleted.

use crate::sandbox::{LimitHit, Sandbox};
use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup path of container `id`, below the hierarchy's root.
pub fn path(id: &str) -> PathBuf {
    PathBuf::from(format!("/{id}"))
}

/// Whether the machine has the unified hierarchy (v2) at /sys/fs/cgroup.
fn unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").is_file()
}

/// The file `name` of `controller` in the cgroup of container `id`.
fn file(id: &str, controller: &str, name: &str) -> PathBuf {
    let mut dir = PathBuf::from(ROOT);
    if !unified() {
        dir.push(controller);
    }
    dir.join(id).join(name)
}

/// The counter `key` in a flat-keyed cgroup file ("key value" lines).
fn counter(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The limits of `sandbox` that container `id` hit: a fork refused at the
/// pids limit (`pids.events` max), a process killed at the memory limit
/// (`memory.events` oom_kill on v2, `memory.oom_control` on v1).
pub fn limits_hit(id: &str, sandbox: &Sandbox) -> Vec<LimitHit> {
    let mut hits = Vec::new();
    if let Some(pids) = sandbox.pids.value()
        && counter(&file(id, "pids", "pids.events"), "max") > 0
    {
        hits.push(LimitHit::Pids(pids));
    }
    let oom_file = if unified() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    if let Some(memory) = sandbox.memory.value()
        && counter(&file(id, "memory", oom_file), "oom_kill") > 0
    {
        hits.push(LimitHit::Memory(memory));
    }
    hits
}
