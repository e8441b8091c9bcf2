//! The error a user sees when an input file is wrong: where, and what.

use std::fmt;
use std::path::{Path, PathBuf};

/// A problem in a file the user wrote: a manifest, an attribute file, a
/// template. Displays as `file:line:column: message`, the form editors and
/// CI logs link to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl InputError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        InputError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub fn at(file: &Path, line: usize, message: impl Into<String>) -> Self {
        InputError {
            line: Some(line),
            ..InputError::new(file, message)
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for InputError {}

/// Several independent problems found in one pass (ten broken manifests in
/// a tree): each is reported, then the command stops, as cargo does, so a
/// user fixes them all in one round instead of one per run.
#[derive(Debug)]
pub struct Problems {
    pub problems: Vec<anyhow::Error>,
    /// Where they are: "the build plan".
    pub what: String,
}

impl Problems {
    /// `Ok` when `problems` is empty; the single error itself when there
    /// is one (its message stays as it was); all of them otherwise.
    pub fn check(mut problems: Vec<anyhow::Error>, what: &str) -> anyhow::Result<()> {
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(Problems {
                problems,
                what: what.to_string(),
            }
            .into()),
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {}, each reported above",
            crate::terminal::count(self.problems.len(), "problem"),
            self.what
        )
    }
}

impl std::error::Error for Problems {}
