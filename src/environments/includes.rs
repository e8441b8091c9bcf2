//! `include:` of environment attribute files, in ggn's three forms:
//!
//! | include | file |
//! |---|---|
//! | `nerve.base` | `common-attributes/nerve/base.yml` of the environment, else the shared `common-attributes/` beside `env/` |
//! | `env::nerve.base` | `common-attributes/nerve/base.yml` of the environment only |
//! | `env:prod-dc2:nerve.base` | `common-attributes/nerve/base.yml` of the environment directory `prod-dc2` beside this one |
//!
//! An included file's own includes are resolved for the environment it
//! belongs to (`env:prod-dc2:` files include from prod-dc2).

use crate::attributes::AttributeFile;
use crate::error::InputError;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const COMMON: &str = "common-attributes";

/// `files` with the common files they include placed before each of them,
/// so that an including file's own values win over what it includes (the
/// reverse of ggn, see FORMATS.md section 8). Includes nest; a common file
/// included several times in one layer is merged once, at its first
/// include, so a later include does not undo values set in between.
pub(super) fn with_includes(
    files: Vec<AttributeFile>,
    env_dir: &Path,
) -> Result<Vec<AttributeFile>, InputError> {
    let mut walk = Walk {
        out: vec![],
        seen: HashSet::new(),
        stack: vec![],
    };
    for file in files {
        walk.push(file, env_dir)?;
    }
    Ok(walk.out)
}

struct Walk {
    out: Vec<AttributeFile>,
    /// Files merged so far, by canonical path.
    seen: HashSet<PathBuf>,
    /// The including files above the one being read, by canonical path.
    stack: Vec<PathBuf>,
}

impl Walk {
    fn push(&mut self, file: AttributeFile, env_dir: &Path) -> Result<(), InputError> {
        let own = canonical(&file.path);
        for include in &file.includes {
            let (path, its_env) = resolve(&file, include, env_dir)?;
            let key = canonical(&path);
            if self.stack.contains(&key) || key == own {
                return Err(error(
                    &file,
                    include,
                    format!(
                        "include `{include}` includes itself through {}",
                        path.display()
                    ),
                ));
            }
            if !self.seen.insert(key) {
                continue;
            }
            let included = AttributeFile::read(&path)?;
            self.stack.push(own.clone());
            self.push(included, &its_env)?;
            self.stack.pop();
        }
        self.out.push(file);
        Ok(())
    }
}

/// The file an include names, and the environment directory its own
/// includes resolve in.
fn resolve(
    file: &AttributeFile,
    include: &str,
    env_dir: &Path,
) -> Result<(PathBuf, PathBuf), InputError> {
    let expected = "expected `nerve.base` (common-attributes/nerve/base.yml), `env::nerve.base` (this environment's) or `env:ENV:nerve.base` (environment ENV's)";
    let (environment, dotted) = match include.split(':').collect::<Vec<_>>()[..] {
        [dotted] => (None, dotted),
        ["env", environment, dotted] => (Some(environment), dotted),
        _ => {
            return Err(error(
                file,
                include,
                format!("include `{include}`: {expected}"),
            ));
        }
    };
    let parts: Vec<&str> = dotted.split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains(['/', '\\']) || *p == "..")
    {
        return Err(error(
            file,
            include,
            format!("include `{include}`: {expected}"),
        ));
    }
    let relative = parts.join("/");
    let (dirs, its_env) = match environment {
        None => (
            vec![env_dir.join(COMMON), shared_common(env_dir)],
            env_dir.to_path_buf(),
        ),
        Some("") => (vec![env_dir.join(COMMON)], env_dir.to_path_buf()),
        Some(name) => {
            super::check_name(name).map_err(|e| {
                error(
                    file,
                    include,
                    format!("include `{include}`: environment name: {e}"),
                )
            })?;
            let other = sibling(env_dir, name);
            if !other.join(super::CONFIG_FILE).is_file() {
                return Err(error(
                    file,
                    include,
                    format!(
                        "include `{include}`: there is no environment `{name}` beside this one ({} has no {})",
                        other.display(),
                        super::CONFIG_FILE
                    ),
                ));
            }
            (vec![other.join(COMMON)], other)
        }
    };
    let mut looked = vec![];
    for dir in &dirs {
        for extension in ["yml", "yaml"] {
            let candidate = dir.join(format!("{relative}.{extension}"));
            if candidate.is_file() {
                return Ok((candidate, its_env));
            }
        }
        looked.push(dir.join(format!("{relative}.yml")).display().to_string());
    }
    Err(error(
        file,
        include,
        format!(
            "include `{include}`: there is no {} (nor .yaml)",
            looked.join(", nor ")
        ),
    ))
}

/// The `common-attributes/` shared by every environment: beside the `env/`
/// directory holding `env_dir`.
pub(super) fn shared_common(env_dir: &Path) -> PathBuf {
    match (env_dir.file_name(), env_dir.parent()) {
        (Some(_), Some(parent)) if !parent.as_os_str().is_empty() => match parent.parent() {
            Some(root) if !root.as_os_str().is_empty() => root.join(COMMON),
            _ => parent.join("..").join(COMMON),
        },
        _ => env_dir.join("../..").join(COMMON),
    }
}

/// The environment directory `name` beside `env_dir`.
fn sibling(env_dir: &Path, name: &str) -> PathBuf {
    match (env_dir.file_name(), env_dir.parent()) {
        (Some(_), Some(parent)) if !parent.as_os_str().is_empty() => parent.join(name),
        _ => env_dir.join("..").join(name),
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn error(file: &AttributeFile, include: &str, message: String) -> InputError {
    InputError {
        line: super::line_of(&super::read_text(&file.path), include),
        ..InputError::new(&file.path, message)
    }
}
