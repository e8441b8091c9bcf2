//! ggn's hooks: executables in the environment's `hooks/` directory that
//! `herd deploy` runs on the local machine around each service and unit.
//! They learn what is happening from their environment:
//!
//! `HERD_HOOK` (before-service...), `HERD_ENV` (envName), `HERD_ENV_DIR`,
//! `HERD_SERVICE`, and for unit hooks `HERD_UNIT` (file name) and
//! `HERD_MACHINE`; after-* hooks also get `HERD_OUTCOME` (`ok`, `failed`,
//! `interrupted`).

use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BEFORE_SERVICE: &str = "before-service";
pub const AFTER_SERVICE: &str = "after-service";
pub const BEFORE_UNIT: &str = "before-unit";
pub const AFTER_UNIT: &str = "after-unit";

/// The hooks of one environment.
pub struct Hooks {
    dir: PathBuf,
    env_dir: PathBuf,
    env_name: String,
}

/// What a hook is told.
#[derive(Default)]
pub struct HookContext<'a> {
    pub service: &'a str,
    pub unit: Option<&'a str>,
    pub machine: Option<&'a str>,
    pub outcome: Option<&'a str>,
}

impl Hooks {
    pub fn new(env_dir: &Path, env_name: &str) -> Hooks {
        // Absolute: hooks run in the environment directory, where a
        // relative path to it (and to themselves) means something else.
        let env_dir = std::path::absolute(env_dir).unwrap_or_else(|_| env_dir.to_path_buf());
        let env_dir = env_dir.as_path();
        Hooks {
            dir: env_dir.join("hooks"),
            env_dir: env_dir.to_path_buf(),
            env_name: env_name.to_string(),
        }
    }

    /// Runs hook `name` if the environment has it; fails if it exits
    /// non-zero (or is there but not executable). Its output goes to
    /// herd's stderr.
    pub fn run(&self, name: &str, context: &HookContext) -> Result<()> {
        let path = self.dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(());
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            bail!("hook {} is not an executable file", path.display());
        }
        let mut command = Command::new(&path);
        command
            .current_dir(&self.env_dir)
            .env("HERD_HOOK", name)
            .env("HERD_ENV", &self.env_name)
            .env("HERD_ENV_DIR", &self.env_dir)
            .env("HERD_SERVICE", context.service)
            .stdout(std::io::stderr());
        for (key, value) in [
            ("HERD_UNIT", context.unit),
            ("HERD_MACHINE", context.machine),
            ("HERD_OUTCOME", context.outcome),
        ] {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let status = command
            .status()
            .with_context(|| format!("running hook {}", path.display()))?;
        if !status.success() {
            let what = match (context.unit, context.machine) {
                (Some(unit), Some(machine)) => format!("{unit} on {machine}"),
                _ => format!("service {}", context.service),
            };
            bail!("hook {name} failed ({status}) for {what}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_environment_path_still_finds_and_runs_its_hooks() {
        // Relative to the test's working directory (the crate root).
        std::fs::create_dir_all("target").unwrap();
        let env = tempfile::tempdir_in("target").unwrap();
        let relative = env
            .path()
            .strip_prefix(std::env::current_dir().unwrap())
            .unwrap()
            .to_path_buf();
        assert!(relative.is_relative());
        std::fs::create_dir(env.path().join("hooks")).unwrap();
        let hook = env.path().join("hooks/before-service");
        std::fs::write(&hook, "#!/bin/sh\necho \"$HERD_ENV_DIR\" > ran\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let context = HookContext {
            service: "s",
            unit: None,
            machine: None,
            outcome: None,
        };
        Hooks::new(&relative, "prod")
            .run("before-service", &context)
            .unwrap();
        let ran = std::fs::read_to_string(env.path().join("ran")).unwrap();
        assert_eq!(ran.trim(), env.path().display().to_string());
    }
}
