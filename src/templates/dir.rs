//! A `templates/` directory: which file renders where, the `.cfg` beside a
//! template, partials, and rendering the whole directory at once.

use super::{RenderError, as_context, classify, line_of, line_using, render_collecting, walk};
use crate::error::InputError;
use crate::manifest::UserOrId;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tera::ast::Node;

const TEMPLATE_MARK: &str = ".tmpl";
const PARTIAL_SUFFIX: &str = ".partial";
const CONFIG_SUFFIX: &str = ".cfg";

/// What a file under `templates/` is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A template, rendered to this path (relative, like the template's).
    Template(PathBuf),
    /// A fragment other templates include by its file name.
    Partial,
    /// The `.cfg` of the template at this relative path.
    Config(PathBuf),
    /// Not a template: copied as it is.
    Plain,
}

/// Classifies the file at `relative` (a path below `templates/`).
pub fn kind(relative: &Path) -> Kind {
    let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if let Some(target) = name.strip_suffix(CONFIG_SUFFIX).filter(|t| !t.is_empty()) {
        return Kind::Config(relative.with_file_name(target));
    }
    if name.ends_with(PARTIAL_SUFFIX) {
        return Kind::Partial;
    }
    match output_path(relative) {
        Some(output) => Kind::Template(output),
        None => Kind::Plain,
    }
}

/// Where a template renders: `etc/my.cnf.tmpl` -> `etc/my.cnf`,
/// `etc/app.tmpl.yml` -> `etc/app.yml`. `None` for a file whose name has no
/// `.tmpl` part, which is not a template.
pub fn output_path(relative: &Path) -> Option<PathBuf> {
    let name = relative.file_name()?.to_str()?;
    let output = match name.strip_suffix(TEMPLATE_MARK) {
        Some(stem) => stem.to_string(),
        None => {
            let at = name.rfind(".tmpl.")?;
            format!("{}{}", &name[..at], &name[at + TEMPLATE_MARK.len()..])
        }
    };
    (!output.is_empty()).then(|| relative.with_file_name(output))
}

/// `<template>.cfg`: owner, mode and a check of the rendered file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileConfig {
    /// Owner, by number or by a name of the image's /etc/passwd.
    pub uid: Option<UserOrId>,
    /// Group, by number or by a name of the image's /etc/group.
    pub gid: Option<UserOrId>,
    /// Permission bits, written in octal: `"0600"`, `0600` or `600`.
    pub mode: Option<Mode>,
    /// Run after every template was rendered; a failure stops the start.
    pub check_cmd: Option<CheckCmd>,
    /// How long `checkCmd` may run before it is killed and the start
    /// fails (the init's default: 60 s).
    pub check_timeout: Option<crate::lifecycle::Period>,
}

/// Permission bits. YAML reads `0600` as the decimal number 600, so numbers
/// are taken digit by digit as octal, the way everyone writes modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl Mode {
    fn parse(digits: &str) -> Result<Mode, String> {
        let digits = digits.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o7777 => Ok(Mode(mode)),
            _ => Err(format!(
                "invalid mode `{digits}`: expected octal permission bits like \"0644\""
            )),
        }
    }
}

// A visitor rather than an untagged enum: serde_yaml can then point at the
// line of a bad mode.
impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Mode, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("octal permission bits like \"0644\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Mode, E> {
                Mode::parse(&n.to_string()).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Mode, E> {
                Mode::parse(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A command: a list is run as is, a string by `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum CheckCmd {
    Argv(Vec<String>),
    Shell(String),
}

impl CheckCmd {
    pub fn argv(&self) -> Vec<String> {
        match self {
            CheckCmd::Argv(argv) => argv.clone(),
            CheckCmd::Shell(line) => vec!["/bin/sh".into(), "-c".into(), line.clone()],
        }
    }
}

/// One file of a loaded template directory.
#[derive(Debug)]
struct Entry {
    relative: PathBuf,
    output: PathBuf,
    /// The template text; `None` for a plain file, copied as `bytes`.
    text: Option<String>,
    bytes: Vec<u8>,
    config: FileConfig,
}

/// A template directory, parsed and checked: every template is valid Tera,
/// every `include` names a partial that exists, every `.cfg` is valid and
/// belongs to a template.
pub struct TemplateDir {
    dir: PathBuf,
    tera: tera::Tera,
    entries: Vec<Entry>,
    /// Relative path and text of each partial, to find the line of a
    /// missing attribute a partial uses.
    partials: Vec<(PathBuf, String)>,
}

/// A rendered file, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderedFile {
    /// The template it came from (below the loaded directory).
    pub template: PathBuf,
    /// Where it goes, relative to the root it is written into.
    pub output: PathBuf,
    pub content: Vec<u8>,
    pub config: FileConfig,
}

/// Checks a template directory the way the container start will read it,
/// so syntax errors, missing partials and invalid `.cfg` files fail
/// `herd build` with the file and line. A missing directory is fine.
/// `inherited` names the partials the dependency images' templates bring
/// (the container renders them all from one `/herd/templates`), which the
/// directory's templates may include. Gives the directory's own partials.
pub fn check_dir(
    templates_dir: &Path,
    inherited: &BTreeSet<String>,
) -> Result<Vec<String>, InputError> {
    let loaded = TemplateDir::load_over(templates_dir, inherited)?;
    Ok(loaded
        .partials
        .iter()
        .map(|(relative, _)| template_name(relative))
        .collect())
}

impl TemplateDir {
    /// Reads and parses every file under `dir` (none if it does not exist).
    pub fn load(dir: &Path) -> Result<TemplateDir, InputError> {
        TemplateDir::load_over(dir, &BTreeSet::new())
    }

    /// As `load`, with `inherited` partials known to exist beside `dir`'s
    /// (a dependency image's, which its templates may include).
    pub fn load_over(dir: &Path, inherited: &BTreeSet<String>) -> Result<TemplateDir, InputError> {
        let mut entries = vec![];
        let mut partials = vec![];
        let mut configs = vec![];
        if dir.is_dir() {
            let outside = Outside::new(dir);
            for entry in walkdir::WalkDir::new(dir)
                .follow_links(true)
                .sort_by_file_name()
            {
                let entry = entry.map_err(|e| InputError::new(dir, format!("cannot list: {e}")))?;
                if entry.path_is_symlink() {
                    outside.refuse(entry.path())?;
                }
                if !entry.file_type().is_file() {
                    continue;
                }
                let relative = entry
                    .path()
                    .strip_prefix(dir)
                    .unwrap_or(entry.path())
                    .to_path_buf();
                let bytes = std::fs::read(entry.path())
                    .map_err(|e| InputError::new(entry.path(), format!("cannot read: {e}")))?;
                let text = || {
                    String::from_utf8(bytes.clone()).map_err(|_| {
                        InputError::new(entry.path(), "is not UTF-8 text; templates must be")
                    })
                };
                match kind(&relative) {
                    Kind::Template(output) => entries.push(Entry {
                        relative,
                        output,
                        text: Some(text()?),
                        bytes: vec![],
                        config: FileConfig::default(),
                    }),
                    Kind::Partial => partials.push((relative, text()?)),
                    Kind::Config(target) => configs.push((relative, target)),
                    Kind::Plain => entries.push(Entry {
                        output: relative.clone(),
                        relative,
                        text: None,
                        bytes,
                        config: FileConfig::default(),
                    }),
                }
            }
        }
        for (relative, target) in configs {
            let path = dir.join(&relative);
            let Some(entry) = entries.iter_mut().find(|e| e.relative == target) else {
                return Err(InputError::new(
                    &path,
                    format!(
                        "there is no template `{}` beside it: a .cfg is named after its template file, e.g. `app.tmpl.yml.cfg`",
                        target.display()
                    ),
                ));
            };
            let text = crate::yaml::read_bounded(&path)?;
            entry.config = if text.trim().is_empty() {
                FileConfig::default()
            } else {
                crate::yaml::parse(&path, &text)?
            };
            if let Some(CheckCmd::Argv(argv)) = &entry.config.check_cmd
                && argv.is_empty()
            {
                return Err(InputError::new(
                    &path,
                    "`checkCmd` is empty: expected a command (a list or a string)",
                ));
            }
        }
        let tera = build_tera(dir, &entries, &partials)?;
        let loaded = TemplateDir {
            dir: dir.to_path_buf(),
            tera,
            entries,
            partials,
        };
        loaded.check_includes(inherited)?;
        Ok(loaded)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Renders every template over `attributes`. On failure, returns every
    /// problem found: each missing attribute of each template, with its file
    /// and line, so a user fixes them all in one go.
    pub fn render_all(&self, attributes: &Value) -> Result<Vec<RenderedFile>, Vec<InputError>> {
        let context_value = as_context(attributes);
        let context =
            tera::Context::from_value(context_value.clone()).expect("an object is a context");
        let mut rendered = vec![];
        let mut errors = vec![];
        for entry in &self.entries {
            let content = match &entry.text {
                None => entry.bytes.clone(),
                Some(text) => match render_collecting(
                    &self.tera,
                    &template_name(&entry.relative),
                    text,
                    &context_value,
                    &context,
                    super::limits::MAX_RENDERED_BYTES,
                ) {
                    Ok(out) => out.into_bytes(),
                    Err(problems) => {
                        errors.extend(
                            problems
                                .into_iter()
                                .map(|p| self.locate(&entry.relative, p)),
                        );
                        continue;
                    }
                },
            };
            rendered.push(RenderedFile {
                template: self.dir.join(&entry.relative),
                output: entry.output.clone(),
                content,
                config: entry.config.clone(),
            });
        }
        if errors.is_empty() {
            Ok(rendered)
        } else {
            Err(errors)
        }
    }

    /// Names the file and line of a problem: the template's own line, or,
    /// when the template does not mention the attribute, the partial that
    /// does.
    fn locate(&self, relative: &Path, problem: RenderError) -> InputError {
        let file = self.dir.join(relative);
        if let RenderError::Missing {
            attribute,
            line: None,
        } = &problem
        {
            for (partial, text) in &self.partials {
                if let Some(line) = line_using(text, attribute) {
                    let mut error = InputError::at(
                        &self.dir.join(partial),
                        line,
                        format!("attribute `{attribute}` has no value"),
                    );
                    error
                        .message
                        .push_str(&format!(" (included by {})", file.display()));
                    return error;
                }
            }
        }
        problem.into_input_error(&file)
    }

    /// An `include` of a partial that does not exist would only fail when
    /// that branch renders; catch it when the directory is loaded.
    fn check_includes(&self, inherited: &BTreeSet<String>) -> Result<(), InputError> {
        let known: BTreeSet<&str> = self
            .tera
            .get_template_names()
            .chain(inherited.iter().map(String::as_str))
            .collect();
        let texts = self
            .entries
            .iter()
            .filter_map(|e| e.text.as_ref().map(|t| (&e.relative, t)))
            .chain(self.partials.iter().map(|(p, t)| (p, t)));
        for (relative, text) in texts {
            let Ok(template) = self.tera.get_template(&template_name(relative)) else {
                continue;
            };
            let mut problem = None;
            walk(&template.ast, &mut |node| {
                if let Node::Include(_, names, ignore_missing) = node
                    && !ignore_missing
                    && problem.is_none()
                    && !names.iter().any(|n| known.contains(n.as_str()))
                {
                    problem = Some(names[0].clone());
                }
            });
            if let Some(name) = problem {
                let line = line_of(text, &format!("\"{name}\"")).or_else(|| line_of(text, &name));
                let partials: Vec<String> = self
                    .partials
                    .iter()
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                let mut error = InputError::new(
                    &self.dir.join(relative),
                    format!(
                        "includes `{name}`, which is not a partial of {}",
                        self.dir.display()
                    ),
                );
                error.line = line;
                error.message.push_str(&if partials.is_empty() {
                    " (there are no *.partial files)".to_string()
                } else {
                    format!(" (partials: {})", partials.join(", "))
                });
                return Err(error);
            }
        }
        Ok(())
    }
}

/// Symbolic links under `templates/` may point within the image directory
/// (its parent), not elsewhere: `herd try` would copy a host file (a
/// private key) into its output, a build would check it as a template.
struct Outside {
    root: Option<PathBuf>,
}

impl Outside {
    fn new(templates: &Path) -> Outside {
        let root = templates
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Outside {
            root: std::fs::canonicalize(root).ok(),
        }
    }

    fn refuse(&self, link: &Path) -> Result<(), InputError> {
        let target = std::fs::read_link(link)
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let resolved = std::fs::canonicalize(link);
        match (&self.root, resolved) {
            (Some(root), Ok(resolved)) if resolved.starts_with(root) => Ok(()),
            (root, _) => Err(InputError::new(
                link,
                format!(
                    "is a symbolic link to {target}, outside the image directory{}; templates must be files of the image",
                    root.as_ref()
                        .map(|r| format!(" {}", r.display()))
                        .unwrap_or_default()
                ),
            )),
        }
    }
}

fn template_name(relative: &Path) -> String {
    relative.to_string_lossy().into_owned()
}

/// Below this many templates per thread, a thread costs more than it saves.
const TEMPLATES_PER_THREAD: usize = 8;

/// Parsing is most of the CPU a container start spends (herd-init parses
/// every template at each start, and Tera's pest parser is slow), so a large
/// directory is parsed on `threads` threads, each into a Tera set of its
/// own, merged at the end. `None` for fewer than two threads, or when a part fails
/// on its own: an `extends` or `import` of a template parsed on another
/// thread, or an error. The caller then parses everything in one set, which
/// resolves such references and reports errors with their file.
fn parse_in_parallel(sources: &[(String, &str)], threads: usize) -> Option<tera::Tera> {
    if threads < 2 {
        return None;
    }
    let parts: Vec<Option<tera::Tera>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|index| {
                scope.spawn(move || {
                    // Parsing only: escaping is the merged set's setting.
                    let mut part = tera::Tera::default();
                    let mine = sources.iter().skip(index).step_by(threads);
                    part.add_raw_templates(mine.map(|(n, t)| (n.as_str(), *t)))
                        .ok()
                        .map(|()| part)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().ok().flatten())
            .collect()
    });
    let mut tera = super::tera_set();
    for part in parts {
        tera.extend(&part?).ok()?;
    }
    Some(tera)
}

/// One Tera set: templates by relative path, partials by relative path and,
/// when no other partial has the same name, by file name.
fn build_tera(
    dir: &Path,
    entries: &[Entry],
    partials: &[(PathBuf, String)],
) -> Result<tera::Tera, InputError> {
    let mut by_file_name: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (relative, text) in partials {
        let name = relative
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        by_file_name.entry(name).or_default().push(text);
    }
    let mut sources: Vec<(String, &str)> = vec![];
    for entry in entries {
        if let Some(text) = &entry.text {
            sources.push((template_name(&entry.relative), text));
        }
    }
    for (relative, text) in partials {
        sources.push((template_name(relative), text));
    }
    for (name, texts) in &by_file_name {
        if texts.len() == 1 && !sources.iter().any(|(n, _)| n == name) {
            sources.push((name.clone(), texts[0]));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(sources.len() / TEMPLATES_PER_THREAD);
    let no_recursion = |tera: tera::Tera| {
        super::limits::check_recursion(&tera)
            .map(|()| tera)
            .map_err(|(name, message)| InputError::new(&dir.join(name), message))
    };
    if let Some(tera) = parse_in_parallel(&sources, threads) {
        return no_recursion(tera);
    }
    let mut tera = super::tera_set();
    if let Err(error) = tera.add_raw_templates(sources.iter().map(|(n, t)| (n.as_str(), *t))) {
        // Tera says which template failed only in its message; parsing each
        // alone finds it and gives its line.
        for (name, text) in &sources {
            if let Err(e) = tera::Template::new(name, None, text) {
                return Err(classify(&e, text).into_input_error(&dir.join(name)));
            }
        }
        let message = super::error_chain(&error).join(": ");
        let culprit = sources
            .iter()
            .find(|(name, _)| message.contains(&format!("'{name}'")));
        return Err(match culprit {
            Some((name, _)) => InputError::new(&dir.join(name), message),
            None => InputError::new(dir, message),
        });
    }
    no_recursion(tera)
}

/// Writes a rendered file at `path`, given its owner and mode before
/// anyone can read it. A file that exists is replaced through a temporary
/// file and a rename, so the app, or whatever reads it, never sees it half
/// written or a secret with loose permissions. A new file is created in
/// place, exclusively, with the mode already restrictive: nothing can be
/// reading a file that did not exist, and on a fresh container root, where
/// every file is new, this saves a rename and the lookups of a temporary
/// name per template (file system work is most of a container start's cost
/// on a slow disk). If
/// the start dies while writing it, the next start finds the file different
/// and replaces it.
/// Without a mode, an existing file keeps its mode, a new one gets 0644.
/// Unlike `fsutil::write_atomic` this does not fsync: files rendered at
/// every container start need no durability, and 50 fsyncs would cost more
/// than the whole start is allowed to.
pub fn write_rendered(
    path: &Path,
    content: &[u8],
    mode: Option<u32>,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = std::fs::metadata(path).ok();
    let mode = mode
        .or(existing.as_ref().map(|m| m.permissions().mode() & 0o7777))
        .unwrap_or(0o644);
    let Some(existing) = existing else {
        match create_new(path, dir, content, mode, owner) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            done => return done.with_context(|| format!("writing {}", path.display())),
        }
        // Created meanwhile by someone else: replace it as below.
        return replace(path, dir, content, mode, owner);
    };
    if unchanged(path, &existing, content, mode, owner) {
        return Ok(());
    }
    if super::in_place::is_mount_point(path, &existing) {
        return super::in_place::write_in_place(path, content, mode, owner)
            .with_context(|| format!("writing {} in place (it is a mount point)", path.display()));
    }
    replace(path, dir, content, mode, owner)
}

/// Creates `path`, which must not exist (its directories are made when
/// missing), with `content`, owner and mode; removes it again on failure.
fn create_new(
    path: &Path,
    dir: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Only the owner can read it until its mode is set.
    let open = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            open()?
        }
        opened => opened?,
    };
    let written = file
        .write_all(content)
        .and_then(|()| set_owner_and_mode(&file, mode, owner));
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// Replaces `path` by a temporary file given `content`, owner and mode.
fn replace(
    path: &Path,
    dir: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".herd-tmp-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    temp.write_all(content)
        .and_then(|()| set_owner_and_mode(temp.as_file(), mode, owner))
        .with_context(|| format!("writing {}", path.display()))?;
    match temp.persist(path) {
        Ok(_) => Ok(()),
        // A bind-mounted file (podman's /etc/resolv.conf) cannot be renamed
        // onto; the temporary file is removed as `error` drops.
        Err(error) if super::in_place::rename_refused(&error.error) => {
            super::in_place::write_in_place(path, content, mode, owner).with_context(|| {
                format!(
                    "writing {} in place (replacing it failed: {})",
                    path.display(),
                    error.error
                )
            })
        }
        Err(error) => Err(error).with_context(|| format!("replacing {}", path.display())),
    }
}

pub(super) fn set_owner_and_mode(
    file: &std::fs::File,
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> std::io::Result<()> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(file, uid, gid)?;
    }
    // After chown, which clears set-id bits.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// True when the file at `path` already is what would be written: a
/// container restarted on the same root then rewrites nothing. (Replacing
/// a file by rename also makes ext4 flush the new one at once, which costs
/// tens of milliseconds per file on a busy disk.)
fn unchanged(
    path: &Path,
    existing: &std::fs::Metadata,
    content: &[u8],
    mode: u32,
    owner: Option<(Option<u32>, Option<u32>)>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = owner.unwrap_or((None, None));
    existing.is_file()
        && existing.len() == content.len() as u64
        && existing.mode() & 0o7777 == mode
        && uid.is_none_or(|uid| uid == existing.uid())
        && gid.is_none_or(|gid| gid == existing.gid())
        && std::fs::read(path).is_ok_and(|bytes| bytes == content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tmpl_marks_templates_and_their_output_path() {
        assert_eq!(
            output_path(Path::new("etc/my.cnf.tmpl")),
            Some(PathBuf::from("etc/my.cnf"))
        );
        assert_eq!(
            output_path(Path::new("etc/app.tmpl.yml")),
            Some(PathBuf::from("etc/app.yml"))
        );
        assert_eq!(
            output_path(Path::new("opt/backup-main.tmpl.sh")),
            Some(PathBuf::from("opt/backup-main.sh"))
        );
        assert_eq!(output_path(Path::new("etc/plain.conf")), None);
        assert_eq!(output_path(Path::new("etc/.tmpl")), None);
        assert_eq!(
            kind(Path::new("etc/app.tmpl.yml.cfg")),
            Kind::Config(PathBuf::from("etc/app.tmpl.yml"))
        );
        assert_eq!(kind(Path::new("header.partial")), Kind::Partial);
        assert_eq!(kind(Path::new("etc/motd")), Kind::Plain);
    }

    #[test]
    fn cfg_reads_octal_modes_and_both_command_forms() {
        let parse = |text: &str| crate::yaml::parse::<FileConfig>(Path::new("x.cfg"), text);
        let cfg = parse("uid: 0\ngid: mysql\nmode: \"0600\"\ncheckCmd: [/bin/true, -x]\n").unwrap();
        assert_eq!(cfg.mode, Some(Mode(0o600)));
        assert_eq!(cfg.gid, Some(UserOrId::Name("mysql".into())));
        assert_eq!(cfg.check_cmd.unwrap().argv(), vec!["/bin/true", "-x"]);
        assert_eq!(parse("mode: 0640\n").unwrap().mode, Some(Mode(0o640)));
        assert_eq!(parse("mode: 755\n").unwrap().mode, Some(Mode(0o755)));
        assert_eq!(
            parse("checkCmd: test -s /etc/x\n")
                .unwrap()
                .check_cmd
                .unwrap()
                .argv(),
            vec!["/bin/sh", "-c", "test -s /etc/x"]
        );
        let err = parse("uid: 0\nmode: \"0968\"\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("octal"), "{err}");
        let err = parse("checkcmd: x\n").unwrap_err();
        assert!(err.message.contains("did you mean `checkCmd`"), "{err}");
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (path, text) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn parsing_on_threads_renders_like_one_set_and_gives_way_to_it() {
        let texts: Vec<(String, String)> = (0..20)
            .map(|i| {
                (
                    format!("t{i}"),
                    format!("{{% include \"h\" %}}{i}={{{{ v }}}}"),
                )
            })
            .chain([("h".to_string(), "#".to_string())])
            .collect();
        let sources: Vec<(String, &str)> =
            texts.iter().map(|(n, t)| (n.clone(), t.as_str())).collect();
        let tera = parse_in_parallel(&sources, 3).expect("independent templates split");
        let context = tera::Context::from_value(serde_json::json!({"v": "x"})).unwrap();
        for i in 0..20 {
            assert_eq!(
                tera.render(&format!("t{i}"), &context).unwrap(),
                format!("#{i}=x")
            );
        }
        assert!(
            parse_in_parallel(&sources, 1).is_none(),
            "one thread: the caller parses"
        );
        // `child` and its parent land on different threads: the split gives
        // way, and the whole set, parsed at once, resolves the parent.
        let family = [
            ("base".to_string(), "[{% block b %}{% endblock %}]"),
            (
                "child".to_string(),
                "{% extends \"base\" %}{% block b %}c{% endblock %}",
            ),
        ];
        assert!(parse_in_parallel(&family, 2).is_none());
        let dir = tempfile::tempdir().unwrap();
        let mut files: Vec<(String, String)> = (0..20)
            .map(|i| (format!("f{i}.tmpl"), format!("{{{{ v }}}}{i}")))
            .collect();
        files.push((
            "a.tmpl".into(),
            "{% extends \"z.tmpl\" %}{% block b %}a{% endblock %}".into(),
        ));
        files.push(("z.tmpl".into(), "<{% block b %}{% endblock %}>".into()));
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        write(dir.path(), &refs);
        let rendered = TemplateDir::load(dir.path())
            .unwrap()
            .render_all(&serde_json::json!({"v": "x"}))
            .unwrap();
        let content = |name: &str| {
            let file = rendered
                .iter()
                .find(|f| f.output == Path::new(name))
                .unwrap();
            String::from_utf8(file.content.clone()).unwrap()
        };
        assert_eq!(content("a"), "<a>");
        assert_eq!(content("f7"), "x7");
    }

    #[test]
    fn renders_a_directory_with_partials_and_configs() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "etc/app.tmpl.yml",
                    "{% include \"header.partial\" %}port: {{ port }}\n",
                ),
                ("etc/app.tmpl.yml.cfg", "mode: \"0600\"\n"),
                ("etc/sub/header.partial", "# {{ name }}\n"),
                ("etc/motd", "{{ not rendered }}"),
            ],
        );
        let loaded = TemplateDir::load(dir.path()).unwrap();
        let files = loaded
            .render_all(&json!({"port": 80, "name": "web"}))
            .unwrap();
        assert_eq!(files.len(), 2);
        let app = files
            .iter()
            .find(|f| f.output == Path::new("etc/app.yml"))
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&app.content), "# web\nport: 80\n");
        assert_eq!(app.config.mode, Some(Mode(0o600)));
        let motd = files
            .iter()
            .find(|f| f.output == Path::new("etc/motd"))
            .unwrap();
        assert_eq!(motd.content, b"{{ not rendered }}");
    }

    #[test]
    fn every_missing_attribute_is_reported_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                (
                    "a.tmpl",
                    "x={{ x }}\n{% include \"p.partial\" %}\ny={{ db.host }}:{{ db.port }}\n",
                ),
                ("b.tmpl", "ok\n\nz={{ z }}\n"),
                ("p.partial", "\nin partial: {{ w }}\n"),
            ],
        );
        let loaded = TemplateDir::load(dir.path()).unwrap();
        let errors = loaded.render_all(&json!({"db": {"port": 1}})).unwrap_err();
        let shown: Vec<String> = errors
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&format!("{}/", dir.path().display()), "")
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                "a.tmpl:1: attribute `x` has no value".to_string(),
                "p.partial:2: attribute `w` has no value (included by a.tmpl)".to_string(),
                "a.tmpl:3: attribute `db.host` has no value".to_string(),
                "b.tmpl:3: attribute `z` has no value".to_string(),
            ]
        );
    }

    #[test]
    fn check_names_file_and_line_of_syntax_errors_bad_cfg_and_missing_partials() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("ok.tmpl", "{{ a }}"),
                ("etc/bad.tmpl", "line\n{% if a %}\nno end\n"),
            ],
        );
        let err = check_dir(dir.path(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.file, dir.path().join("etc/bad.tmpl"));
        assert!(err.line.is_some(), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[
                ("ok.tmpl", "{{ a }}"),
                ("ok.tmpl.cfg", "uid: 0\nmodes: 1\n"),
            ],
        );
        let err = check_dir(dir.path(), &BTreeSet::new()).unwrap_err();
        assert_eq!(
            (err.file.clone(), err.line),
            (dir.path().join("ok.tmpl.cfg"), Some(2)),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[("ok.yml.cfg", "uid: 0\n"), ("ok.tmpl.yml", "")],
        );
        let err = check_dir(dir.path(), &BTreeSet::new()).unwrap_err();
        assert!(err.message.contains("no template `ok.yml`"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &[(
                "ok.tmpl",
                "a\n{% if x %}{% include \"nope.partial\" %}{% endif %}\n",
            )],
        );
        let err = check_dir(dir.path(), &BTreeSet::new()).unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
        assert!(err.message.contains("`nope.partial`"), "{err}");

        assert!(check_dir(&dir.path().join("absent"), &BTreeSet::new()).is_ok());
    }

    #[test]
    fn writes_with_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/secret");
        write_rendered(&path, b"one", Some(0o600), None).unwrap();
        write_rendered(&path, b"two", None, None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        // The same content again leaves the file alone (same inode).
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&path);
        write_rendered(&path, b"two", None, None).unwrap();
        assert_eq!(inode(&path), before);
        write_rendered(&path, b"two", Some(0o640), None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        write_rendered(&path, b"two", Some(0o600), None).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        // A content change replaces the file (a new inode: readers of the
        // old one never see a mix).
        let before = inode(&path);
        write_rendered(&path, b"three", None, None).unwrap();
        assert_ne!(inode(&path), before);
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        assert_eq!(
            std::fs::read_dir(dir.path().join("etc")).unwrap().count(),
            1
        );
        // New files: 0644 by default, and a mode is applied whatever the umask.
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        write_rendered(&dir.path().join("plain"), b"x", None, None).unwrap();
        assert_eq!(mode(&dir.path().join("plain")), 0o644);
        write_rendered(&dir.path().join("shared"), b"x", Some(0o666), None).unwrap();
        assert_eq!(mode(&dir.path().join("shared")), 0o666);
    }
}
