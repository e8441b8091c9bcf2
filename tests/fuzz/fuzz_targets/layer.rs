//! The layer reader: `rootfs::extract` of a tar stream into a directory.
//! Whatever the stream holds, nothing outside the target root may be
//! created, changed or removed: the root sits in a sandbox beside a canary
//! file, and both are checked after every run.
//!
//! Input: a first byte of 0 passes the rest as raw tar bytes; otherwise the
//! input is read as a list of entries (type, path, link, content) made into
//! a well-formed tar (valid checksums, PAX records for long names), so the
//! fuzzer spends its time on hostile names and orders rather than on
//! checksums. Path pieces come from a dictionary of dangerous ones
//! (`..`, `/`, whiteouts, the canary's name) mixed with raw bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const ESCAPE: &str = "/tmp/herd-fuzz-escape";

const PIECES: &[&[u8]] = &[
    b"..",
    b".",
    b"",
    b"/",
    b"a",
    b"b",
    b"canary",
    b"root",
    b".wh.",
    b".wh..wh..opq",
    b".wh..",
    b".wh...",
    b"../canary",
    b"../../",
    b"/tmp/herd-fuzz-escape",
    b"link",
    b"dir",
    b"\xff\xfe",
];

const TYPES: &[u8] = b"0125346 7xgLKS";

/// Reads bytes off the front of the input.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        taken.to_vec()
    }

    /// A path: up to 4 pieces joined by `/`, each from the dictionary or
    /// raw bytes.
    fn path(&mut self) -> Vec<u8> {
        let count = self.byte().unwrap_or(0) % 5;
        let mut path = Vec::new();
        for i in 0..count {
            if i > 0 {
                path.push(b'/');
            }
            let choice = self.byte().unwrap_or(0);
            if usize::from(choice) < PIECES.len() {
                path.extend_from_slice(PIECES[usize::from(choice)]);
            } else {
                let len = usize::from(choice % 16);
                path.extend(self.bytes(len));
            }
        }
        path
    }
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    let digits = &digits.as_bytes()[digits.len().saturating_sub(width)..];
    field[..digits.len()].copy_from_slice(digits);
}

fn header(name: &[u8], kind: u8, link: &[u8], size: u64, mode: u32) -> [u8; 512] {
    let mut block = [0u8; 512];
    let n = name.len().min(100);
    block[..n].copy_from_slice(&name[..n]);
    octal(&mut block[100..108], u64::from(mode));
    octal(&mut block[108..116], 0);
    octal(&mut block[116..124], 0);
    octal(&mut block[124..136], size);
    octal(&mut block[136..148], 0);
    block[156] = kind;
    let l = link.len().min(100);
    block[157..157 + l].copy_from_slice(&link[..l]);
    block[257..263].copy_from_slice(b"ustar\0");
    block[263..265].copy_from_slice(b"00");
    block[148..156].fill(b' ');
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    block
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut length = body + body.to_string().len();
    while body + length.to_string().len() != length {
        length = body + length.to_string().len();
    }
    [length.to_string().as_bytes(), b" ", key, b"=", value, b"\n"].concat()
}

fn build_tar(mut input: Input) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..16 {
        let Some(kind) = input.byte() else { break };
        let kind = TYPES[usize::from(kind) % TYPES.len()];
        let path = input.path();
        let link = input.path();
        let mode = u32::from(input.byte().unwrap_or(0)) * 0o41 & 0o7777;
        let size = usize::from(input.byte().unwrap_or(0) % 64);
        let content = input.bytes(size);
        let mut pax = Vec::new();
        if path.len() > 100 {
            pax.extend(pax_record(b"path", &path));
        }
        if link.len() > 100 {
            pax.extend(pax_record(b"linkpath", &link));
        }
        if !pax.is_empty() {
            out.extend(header(
                b"././@PaxHeader",
                b'x',
                b"",
                pax.len() as u64,
                0o644,
            ));
            out.extend(&pax);
            pad(&mut out);
        }
        out.extend(header(&path, kind, &link, content.len() as u64, mode));
        out.extend(&content);
        pad(&mut out);
    }
    out.extend([0u8; 1024]);
    out
}

fuzz_target!(|data: &[u8]| {
    let tar = match data.split_first() {
        Some((0, raw)) => raw.to_vec(),
        _ => build_tar(Input(data)),
    };
    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let canary = sandbox.path().join("canary");
    std::fs::write(&canary, b"canary").unwrap();
    let mode = canary.metadata().unwrap().mode();
    let _ = herd::rootfs::extract(tar.as_slice(), &root);

    let mut names: Vec<_> = std::fs::read_dir(sandbox.path())
        .expect("the sandbox is still there")
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["canary", "root"],
        "something was written beside the root"
    );
    let metadata = canary.symlink_metadata().unwrap();
    assert!(metadata.is_file(), "the canary was replaced");
    assert_eq!(
        metadata.nlink(),
        1,
        "the canary was hard-linked into the root"
    );
    assert_eq!(metadata.mode(), mode, "the canary's mode changed");
    assert_eq!(std::fs::read(&canary).unwrap(), b"canary");
    assert!(
        !Path::new(ESCAPE).exists(),
        "an absolute path was written: {ESCAPE}"
    );
});
