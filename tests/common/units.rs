//! Generated units as the tests read them: verified by
//! `systemd-analyze`, their environment and the attributes they carry.

use super::{text, tool};
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `systemd-analyze verify` on every unit below `dir`, one service
/// directory at a time (a timer needs its service beside it). Its warnings
/// go to stderr with exit status 0, so stderr must be empty.
pub fn verify_units(dir: &Path) -> usize {
    let analyze = tool("systemd-analyze");
    tool("podman"); // the default unit's ExecStart; verify checks it exists
    let mut count = 0;
    for service in std::fs::read_dir(dir).unwrap() {
        let service = service.unwrap().path();
        let units: Vec<PathBuf> = std::fs::read_dir(&service)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        count += units.len();
        let output = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .args(&units)
            .output()
            .unwrap();
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "systemd-analyze verify {}:\n{}{}",
            service.display(),
            text(&output.stdout),
            text(&output.stderr)
        );
    }
    count
}

/// `Environment=KEY=VALUE` lines of a unit.
pub fn environment(unit: &str) -> BTreeMap<String, String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The attributes a unit hands its containers, rebuilt the documented way:
/// HERD_ATTRIBUTES_0 .. HERD_ATTRIBUTES_<COUNT-1> concatenated, base64 of
/// the JSON.
pub fn unit_attributes(unit: &str) -> Value {
    let env = environment(unit);
    let count: usize = env["HERD_ATTRIBUTES_COUNT"].parse().unwrap();
    let joined: String = (0..count)
        .map(|i| env[&format!("HERD_ATTRIBUTES_{i}")].as_str())
        .collect();
    let json = base64::engine::general_purpose::STANDARD
        .decode(joined)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

/// `kubernetes-validate --strict` on every file below `dir`, which must
/// all pass; their paths.
pub fn kubernetes_validate(dir: &Path) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = super::snapshot(dir).into_keys().collect();
    kubernetes_validate_files(&files);
    files
}

/// `kubernetes-validate --strict` on `files`, which must all pass.
pub fn kubernetes_validate_files(files: &[PathBuf]) {
    let validate = tool("kubernetes-validate");
    let output = Command::new(validate)
        .args(["--strict", "--quiet"])
        .args(files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubernetes-validate:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}
