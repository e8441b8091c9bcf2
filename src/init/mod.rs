//! The container init, `herd-init`: every image's entrypoint
//! (FORMATS.md section 6). At every start, in order:
//!
//! 1. `prestart-early` scripts of each image of `/herd/stack`, deepest base
//!    first, each directory's files in lexical order;
//! 2. attributes merged: each image's `attributes/` in stack order
//!    (defaults, then overrides), then the runtime override
//!    ([`overrides`]); templated values resolved over the result;
//! 3. `/herd/templates` rendered, all in memory first, then written (each
//!    file atomically, owner and mode from its `.cfg`), then each `checkCmd`;
//! 4. `prestart-late` scripts;
//! 5. the app (the init's arguments) run as the user of `/herd/app.json`
//!    in a process group of its own, while the init stays PID 1: it checks
//!    readiness, drains and stops the app gracefully ([`app`]), forwards
//!    other signals, reaps orphans and exits with the app's status.
//!
//! `/herd/init ready` (run in a running container) says whether the app
//! is ready ([`notify::ready_command`]).
//!
//! Any failure before the app stops the start with a message and exit
//! status 1; no template is written unless all rendered.

mod app;
mod checks;
mod notify;
pub mod overrides;
mod stoppable;
mod supervise;
pub mod users;

use crate::attributes::{self, MergedAttributes};
use crate::image_paths::{self, AppSpec};
use crate::templates::{RenderedFile, TemplateDir};
use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsString;
use std::fmt::Display;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use supervise::Signals;
use users::Accounts;

/// How much the init says, from `LOG_LEVEL` (info by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub fn parse(text: &str) -> Level {
        match text.trim().to_ascii_lowercase().as_str() {
            "error" | "fatal" | "panic" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => Level::Info,
        }
    }
}

/// The init's own output goes to stderr, prefixed, so it can be told from
/// the app's in a container log.
struct Log(Level);

impl Log {
    fn at(&self, level: Level, message: impl Display) {
        if level <= self.0 {
            // One write per line: a log driver reading a pipe would
            // otherwise timestamp the pieces as lines of their own.
            use std::io::Write;
            let line = format!("herd-init: {message}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// A failed start: the message and the status to exit with.
struct Failure {
    message: String,
    code: i32,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        let mut message = error.to_string();
        for cause in error.chain().skip(1) {
            message.push_str(&format!(": {cause}"));
        }
        Failure { message, code: 1 }
    }
}

/// Runs the init with `args` (the app's command line) in the container
/// whose root is `/`; returns the status to exit with.
pub fn main(args: Vec<OsString>) -> i32 {
    if args.first().is_some_and(|a| a == "ready") {
        let rest: Vec<String> = args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return notify::ready_command(Path::new("/"), &rest);
    }
    let log = Log(Level::parse(
        &std::env::var("LOG_LEVEL").unwrap_or_default(),
    ));
    // The container's environment is its own: templates may read it.
    crate::templates::functions::read_container_environment();
    // First thing: a signal arriving while we start must not be lost.
    let signals = match Signals::block() {
        Ok(signals) => signals,
        Err(e) => {
            log.at(Level::Error, format!("error: cannot block signals: {e}"));
            return 1;
        }
    };
    let mut init = Init {
        root: PathBuf::from("/"),
        log,
        signals,
        accounts: None,
    };
    match init.start(args) {
        Ok(code) => code,
        Err(failure) => {
            init.log
                .at(Level::Error, format!("error: {}", failure.message));
            failure.code
        }
    }
}

struct Init {
    root: PathBuf,
    log: Log,
    signals: Signals,
    /// Read when first needed: most images need no name lookups.
    accounts: Option<Accounts>,
}

impl Init {
    fn start(&mut self, args: Vec<OsString>) -> Result<i32, Failure> {
        // A ready file left by this container's last run is not true now.
        if let Err(e) = notify::mark_not_ready(&self.root) {
            self.log
                .at(Level::Warn, format!("cannot remove the ready file: {e}"));
        }
        let stack = read_stack(&self.root)?;
        self.log
            .at(Level::Debug, format!("image stack: {}", stack.join(" ")));
        self.run_scripts(&stack, "prestart-early")?;
        let attributes = self.attributes(&stack)?;
        self.render(&attributes)?;
        self.run_scripts(&stack, "prestart-late")?;
        self.run_app(&stack, args)
    }

    fn stop_check(&mut self) -> Result<(), Failure> {
        match self.signals.stop_requested() {
            Some(sig) => Err(Failure {
                message: format!("stopped by {sig} before the app started"),
                code: supervise::code_for(sig),
            }),
            None => Ok(()),
        }
    }

    fn run_scripts(&mut self, stack: &[String], level: &str) -> Result<(), Failure> {
        for tiny in stack {
            let dir = self.root.join(image_paths::image_dir(tiny, level));
            for script in crate::fsutil::files_in(&dir)? {
                self.stop_check()?;
                self.log
                    .at(Level::Info, format!("{level}: {}", script.display()));
                let mut command = script_command(&script, self.log.0 >= Level::Debug);
                let child = command
                    .spawn()
                    .with_context(|| format!("cannot run {level} script {}", script.display()))?;
                let code = self
                    .signals
                    .wait_for(nix::unistd::Pid::from_raw(child.id() as i32))
                    .map_err(|e| anyhow!("waiting for {}: {e}", script.display()))?;
                self.stop_check()?;
                if code != 0 {
                    return Err(anyhow!(
                        "{level} script {} failed with exit status {code}",
                        script.display()
                    )
                    .into());
                }
            }
        }
        Ok(())
    }

    /// The merged, resolved attributes of the stack and the runtime override.
    fn attributes(&mut self, stack: &[String]) -> Result<serde_json::Value, Failure> {
        overrides::check_text(std::env::vars_os()).map_err(|e| anyhow!(e))?;
        let found =
            overrides::from_env(&|name| std::env::var(name).ok()).map_err(|e| anyhow!(e))?;
        let merged = merge_stack(&self.root, stack, &found)?;
        if self.log.0 >= Level::Debug {
            for (path, value, source) in merged.explain() {
                let shown = if path.split('.').any(attributes::is_secret_key) {
                    "******".into()
                } else {
                    value.to_string()
                };
                self.log.at(
                    Level::Debug,
                    format!("attribute {path} = {shown}  ({source})"),
                );
            }
        }
        let value = merged.into_value();
        let (value, resolved) =
            stoppable::run(&mut self.signals, "resolving attribute values", move || {
                let mut value = value;
                let resolved = crate::templates::resolve_values(&mut value);
                (value, resolved)
            })?;
        resolved.map_err(|errors| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow!(
                "templated attribute values cannot be resolved:\n  {}",
                lines.join("\n  ")
            )
        })?;
        Ok(value)
    }

    /// Renders every template in memory, then writes them all, then runs
    /// the checks: a missing attribute leaves no file half-configured.
    fn render(&mut self, attributes: &serde_json::Value) -> Result<(), Failure> {
        let dir = self.root.join(image_paths::TEMPLATES);
        let values = attributes.clone();
        let rendered = stoppable::run(&mut self.signals, "rendering the templates", move || {
            let templates = TemplateDir::load(&dir).map_err(Err)?;
            templates.render_all(&values).map_err(Ok)
        })?;
        let files = rendered.map_err(|errors| -> Failure {
            let errors = match errors {
                Err(load) => return anyhow!(load).into(),
                Ok(errors) => errors,
            };
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow!(
                "cannot render the templates, nothing was written:\n  {}",
                lines.join("\n  ")
            )
            .into()
        })?;
        if files.is_empty() {
            return Ok(());
        }
        for file in &files {
            self.write(file)?;
        }
        self.log.at(
            Level::Info,
            format!(
                "rendered {}",
                crate::terminal::count(files.len(), "template")
            ),
        );
        for file in &files {
            if let Some(check) = &file.config.check_cmd {
                self.stop_check()?;
                self.check(file, &check.argv())?;
            }
        }
        Ok(())
    }

    fn write(&mut self, file: &RenderedFile) -> Result<(), Failure> {
        let target = self.root.join(&file.output);
        let config = &file.config;
        let owner = if config.uid.is_some() || config.gid.is_some() {
            let accounts = self
                .accounts
                .get_or_insert_with(|| Accounts::read(&self.root));
            let uid = config.uid.as_ref().map(|u| accounts.uid(u)).transpose();
            let gid = config.gid.as_ref().map(|g| accounts.gid(g)).transpose();
            let cfg = || file.template.display().to_string() + ".cfg";
            Some((
                uid.map_err(|e| anyhow!("{}: uid: {e}", cfg()))?,
                gid.map_err(|e| anyhow!("{}: gid: {e}", cfg()))?,
            ))
        } else {
            None
        };
        crate::templates::write_rendered(&target, &file.content, config.mode.map(|m| m.0), owner)?;
        self.log.at(
            Level::Debug,
            format!(
                "rendered {} from {}",
                target.display(),
                file.template.display()
            ),
        );
        self.log.at(
            Level::Trace,
            format!(
                "--- {} ---\n{}",
                target.display(),
                String::from_utf8_lossy(&file.content)
            ),
        );
        Ok(())
    }

    /// Runs a `checkCmd` ([`checks`]), within its timeout.
    fn check(&mut self, file: &RenderedFile, argv: &[String]) -> Result<(), Failure> {
        let timeout = file
            .config
            .check_timeout
            .map_or(checks::DEFAULT_TIMEOUT, |t| t.0);
        checks::run(&mut self.signals, &file.template, argv, timeout)?;
        self.log.at(
            Level::Debug,
            format!("checkCmd of {} passed", file.template.display()),
        );
        Ok(())
    }

    fn run_app(&mut self, stack: &[String], args: Vec<OsString>) -> Result<i32, Failure> {
        self.stop_check()?;
        let Some((program, rest)) = args.split_first() else {
            return Err(anyhow!(
                "no command to run: the image has no `exec` and the container was given none"
            )
            .into());
        };
        let spec = read_app_spec(&self.root)?;
        let accounts = self
            .accounts
            .get_or_insert_with(|| Accounts::read(&self.root));
        let identity = accounts
            .identity(&spec)
            .map_err(|e| anyhow!("{}: {e}", self.root.join(image_paths::APP).display()))?;
        let mut command = supervise::unblocked(Command::new(program));
        command.args(rest);
        if let Some(identity) = identity {
            self.log.at(
                Level::Debug,
                format!(
                    "running as uid {} gid {} groups {:?}",
                    identity.uid, identity.gid, identity.groups
                ),
            );
            if let Some(home) = &identity.home {
                command.env("HOME", home);
            }
            let groups: Vec<nix::unistd::Gid> = identity
                .groups
                .iter()
                .map(|g| nix::unistd::Gid::from_raw(*g))
                .collect();
            let (uid, gid) = (
                nix::unistd::Uid::from_raw(identity.uid),
                nix::unistd::Gid::from_raw(identity.gid),
            );
            // SAFETY: only async-signal-safe system calls between fork and
            // exec; the order matters (groups and gid need root, so before uid).
            unsafe {
                command.pre_exec(move || {
                    nix::unistd::setgroups(&groups)?;
                    nix::unistd::setgid(gid)?;
                    nix::unistd::setuid(uid)?;
                    Ok(())
                });
            }
        }
        self.log.at(
            Level::Debug,
            format!(
                "exec {}",
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        );
        own_process_group(&mut command);
        // The lifecycle is the image's app's: another command given to the
        // container (`podman run -it IMAGE sh`) is ready once started.
        let lifecycle = if args
            .iter()
            .map(|a| a.as_os_str())
            .eq(spec.exec.iter().map(std::ffi::OsStr::new))
        {
            spec.lifecycle.clone()
        } else {
            Default::default()
        };
        let mut prestop = vec![];
        for tiny in stack {
            prestop.extend(crate::fsutil::files_in(
                &self.root.join(image_paths::image_dir(tiny, "prestop")),
            )?);
        }
        let mut problem = None;
        let notifier = notify::Notifier::new(std::env::var_os("NOTIFY_SOCKET"), &mut problem);
        if let Some(problem) = problem {
            self.log.at(Level::Warn, problem);
        }
        let stop_timeout = stop_timeout(&self.log);
        let child = command.spawn().map_err(|e| Failure {
            code: if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            },
            message: format!("cannot run `{}`: {e}", program.to_string_lossy()),
        })?;
        let run = app::Run {
            root: self.root.clone(),
            log: &self.log,
            signals: &mut self.signals,
            lifecycle,
            prestop,
            notifier,
            stop_timeout,
            trace: self.log.0 >= Level::Debug,
        };
        Ok(run.supervise(nix::unistd::Pid::from_raw(child.id() as i32)))
    }
}

/// The container's stop timeout: `HERD_STOP_TIMEOUT` seconds (set by
/// herd's units from the service's `stopTimeout`), else podman's default.
fn stop_timeout(log: &Log) -> std::time::Duration {
    let Ok(text) = std::env::var("HERD_STOP_TIMEOUT") else {
        return crate::lifecycle::DEFAULT_STOP_TIMEOUT;
    };
    match text.trim().parse::<u32>() {
        Ok(seconds) => std::time::Duration::from_secs(seconds.into()),
        Err(_) => {
            log.at(
                Level::Warn,
                format!(
                    "HERD_STOP_TIMEOUT={text:?} is not a number of seconds; using {} s",
                    crate::lifecycle::DEFAULT_STOP_TIMEOUT.as_secs()
                ),
            );
            crate::lifecycle::DEFAULT_STOP_TIMEOUT
        }
    }
}

/// Starts `command`'s child as the leader of a new process group, so the
/// stop signal reaches every process of the app. When the container has a
/// terminal, the group becomes its foreground group, as a shell would do:
/// the app can read it, and ^C goes to the app.
fn own_process_group(command: &mut Command) {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    // SAFETY: only async-signal-safe calls (setpgid, isatty, sigprocmask,
    // tcsetpgrp) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0))?;
            if libc::isatty(0) == 1 {
                // From a background group, tcsetpgrp raises SIGTTOU unless
                // it is blocked.
                let mut ttou = SigSet::empty();
                ttou.add(Signal::SIGTTOU);
                let mut old = SigSet::empty();
                sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
                libc::tcsetpgrp(0, libc::getpid());
                sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
            }
            Ok(())
        });
    }
}

/// Tiny names of the image and its dependencies, deepest base first. An
/// image without the file (the init used on its own) has none.
fn read_stack(root: &Path) -> Result<Vec<String>> {
    let path = root.join(image_paths::STACK);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(e) => Err(anyhow!("cannot read {}: {e}", path.display())),
    }
}

fn read_app_spec(root: &Path) -> Result<AppSpec> {
    let path = root.join(image_paths::APP);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid app spec", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppSpec::default()),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    }
}

/// The attributes of the images of `stack` under `root`, in stack order,
/// then `overrides` (labelled sources, lowest first) on top.
pub fn merge_stack(
    root: &Path,
    stack: &[String],
    overrides: &[(String, serde_json::Value)],
) -> Result<MergedAttributes> {
    let mut merged = MergedAttributes::new();
    for tiny in stack {
        merged.apply_files(&attributes::read_dir(
            &root.join(image_paths::image_dir(tiny, "attributes")),
        )?);
    }
    for (source, value) in overrides {
        merged.apply(value, source);
    }
    Ok(merged)
}

/// How a script runs: through the interpreter of its `#!` line, else
/// `/bin/sh`, so it needs no exec permission; with `-x` at debug level
/// when that interpreter is a shell.
fn script_command(script: &Path, trace: bool) -> Command {
    let first_line = std::fs::read(script)
        .ok()
        .and_then(|bytes| {
            bytes
                .split(|b| *b == b'\n')
                .next()
                .map(|l| String::from_utf8_lossy(l).into_owned())
        })
        .unwrap_or_default();
    let mut words: Vec<String> = match first_line.strip_prefix("#!") {
        Some(shebang) => shebang.split_whitespace().map(str::to_string).collect(),
        None => vec![],
    };
    if words.is_empty() {
        words.push("/bin/sh".into());
    }
    let is_shell = |word: &str| {
        matches!(
            Path::new(word).file_name().and_then(|n| n.to_str()),
            Some("sh" | "bash" | "ash" | "dash" | "ksh" | "zsh")
        )
    };
    // `#!/usr/bin/env sh` names its shell in the second word.
    let shell = is_shell(&words[0])
        || (words.len() > 1 && words[0].ends_with("/env") && is_shell(&words[1]));
    let mut command = supervise::unblocked(Command::new(&words[0]));
    command.args(&words[1..]);
    if trace && shell {
        command.arg("-x");
    }
    command.arg(script);
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stack_attributes_merge_deepest_first_then_override() {
        let root = tempfile::tempdir().unwrap();
        let write = |tiny: &str, name: &str, text: &str| {
            let dir = root.path().join(image_paths::image_dir(tiny, "attributes"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), text).unwrap();
        };
        write(
            "base",
            "a.yml",
            "default: {port: 1, list: [1, 2], db: {host: base, user: u}}\noverride: {forced: base}\n",
        );
        write("app", "z.yml", "default: {port: 2, forced: app}\n");
        let overrides = vec![(
            "HERD_ATTRIBUTES".to_string(),
            json!({"list": [9], "db": {"host": "over"}}),
        )];
        let merged = merge_stack(root.path(), &["base".into(), "app".into()], &overrides).unwrap();
        assert_eq!(
            merged.value(),
            &json!({"port": 2, "forced": "app", "list": [9], "db": {"host": "over", "user": "u"}})
        );
    }

    #[test]
    fn scripts_run_through_their_interpreter_traced_at_debug() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("10-plain");
        std::fs::write(&plain, "echo hi\n").unwrap();
        let shown = |c: &Command| {
            format!(
                "{:?} {:?}",
                c.get_program(),
                c.get_args().collect::<Vec<_>>()
            )
        };
        assert_eq!(
            shown(&script_command(&plain, true)),
            format!("\"/bin/sh\" [\"-x\", {:?}]", plain)
        );
        let env = dir.path().join("20-env");
        std::fs::write(&env, "#!/usr/bin/env bash\n").unwrap();
        assert_eq!(
            shown(&script_command(&env, true)),
            format!("\"/usr/bin/env\" [\"bash\", \"-x\", {:?}]", env)
        );
        let python = dir.path().join("30-py");
        std::fs::write(&python, "#!/usr/bin/python3 -u\n").unwrap();
        assert_eq!(
            shown(&script_command(&python, true)),
            format!("\"/usr/bin/python3\" [\"-u\", {:?}]", python)
        );
    }

    #[test]
    fn log_levels() {
        assert_eq!(Level::parse("DEBUG"), Level::Debug);
        assert_eq!(Level::parse(""), Level::Info);
        assert!(Level::Trace > Level::Debug);
    }
}
