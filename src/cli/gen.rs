//! `herd gen`: an environment directory -> one unit per node of each
//! service, written atomically, or compared with existing units.

use anyhow::{Context, Result};
use herd::environments::{Environment, Target};
use herd::terminal::count;
use herd::units;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Generate the systemd units (or Kubernetes Pods) of an environment: one
/// per node of each service, named <envName>_<service>_<hostname>.
///
/// Exit status: 0 on success (with --check: nothing differs), 1 when
/// --check found differences, 2 on errors (nothing is written then).
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// The environment directory, holding config.yml, attributes/,
    /// services/ (for example env/prod-dc1)
    pub env_dir: PathBuf,

    /// Generate only these services; the output directory keeps the other
    /// services' units [default: every service]
    pub services: Vec<String>,

    /// Directory to write into, replaced whole and atomically
    /// [default: units/<envName> beside the env/ directory holding
    /// ENV_DIR, or ./units/<envName> when ENV_DIR is not in a directory
    /// named env]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// OCI image store to pin images by digest from (`--store` alone: the
    /// default store, as for every other command); without one, images
    /// are run by the tag the service manifest gives
    #[arg(long, env = "HERD_STORE", value_name = "DIR", num_args = 0..=1, default_missing_value = "", value_parser = super::store_path_or_default())]
    pub store: Option<PathBuf>,

    /// What to generate [default: `target:` of config.yml, else systemd]
    #[arg(long, value_enum)]
    pub target: Option<Target>,

    /// Write nothing; compare the generated units with DIR and list the
    /// added, changed and removed ones (exit 1 if any)
    #[arg(long, value_name = "DIR")]
    pub check: Option<PathBuf>,

    /// With --check, also print a unified diff of each difference, and the
    /// attributes it changes, decoded (`- log.level: info`, secrets masked)
    #[arg(long, requires = "check")]
    pub diff: bool,

    /// Attributes the service manifests are rendered with, on top of the
    /// environment's and the service's (`containers:
    /// [aci.example.com/pod-db:{{ version }}]`): JSON (optionally
    /// `base64,`-prefixed), or the path of a JSON or YAML file
    #[arg(long, value_name = "JSON|FILE")]
    pub attributes: Option<String>,
}

pub fn run(args: GenArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    refuse_directory_of_environments(&args.env_dir)?;
    if let Some(out) = &args.out {
        refuse_out(out, &args.env_dir)?;
    }
    let extra = manifest_attributes(args.attributes.as_deref())?;
    let env = Environment::load_with(&args.env_dir, &args.services, extra.as_ref())?;
    tracing::debug!(
        "loaded {} in {:?}",
        count(env.services.len(), "service"),
        started.elapsed()
    );
    let target = args.target.unwrap_or(env.config.target);
    let store = open_store(args.store.as_deref())?;
    let units::Generated { files, private } = units::generate_all(&env, target, store.as_ref())?;
    tracing::debug!(
        "rendered {} in {:?}",
        count(files.len(), "file"),
        started.elapsed()
    );
    if let Some(dir) = &args.check {
        let check = units::check_units(dir, &files, &args.services)?;
        for (label, paths) in [
            ("added", &check.added),
            ("changed", &check.changed),
            ("removed", &check.removed),
        ] {
            for path in paths {
                println!("{label:<8}{}", path.display());
                if args.diff {
                    let old = check.existing.get(path).map(Vec::as_slice);
                    let new = files.get(path).map(Vec::as_slice);
                    // A file holding secrets (now, or on disk) shows its
                    // attribute lines only decoded and masked, below.
                    let secret = private.contains(path) || old.is_some_and(units::carries_secrets);
                    if secret {
                        let hide = |c: Option<&[u8]>| c.map(units::hide_carried);
                        let (old, new) = (hide(old), hide(new));
                        print!(
                            "{}",
                            units::unified_diff(path, old.as_deref(), new.as_deref())
                        );
                    } else {
                        print!("{}", units::unified_diff(path, old, new));
                    }
                    if let Some(lines) = units::attribute_changes(old, new)
                        && !lines.is_empty()
                    {
                        println!("# attribute changes, decoded (secrets masked):");
                        for line in lines {
                            println!("{line}");
                        }
                    }
                }
            }
        }
        if check.is_clean() {
            eprintln!("{} match {}", count(files.len(), "unit"), dir.display());
            return Ok(ExitCode::SUCCESS);
        }
        return Ok(ExitCode::from(1));
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => default_out(&args.env_dir, &env.config.env_name)?,
    };
    let changed = units::write_units(&out, &files, &private, &args.services)?;
    tracing::debug!("wrote them in {:?}", started.elapsed());
    let what = format!(
        "{} for {}",
        count(files.len(), "file"),
        count(env.services.len(), "service")
    );
    match changed {
        true => eprintln!("wrote {what} to {}", out.display()),
        false => eprintln!("{} is up to date ({what})", out.display()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `--attributes JSON|FILE`, which service manifests are rendered with.
pub fn manifest_attributes(argument: Option<&str>) -> Result<Option<serde_json::Value>> {
    argument
        .map(herd::init::overrides::parse_argument)
        .transpose()
        .map_err(anyhow::Error::msg)
}

/// The store images are pinned from, if one is given (an empty path:
/// `--store` without a value, the default store). It must exist: a
/// mistyped path would otherwise silently leave every image unpinned.
pub fn open_store(path: Option<&Path>) -> Result<Option<herd::store::Store>> {
    let path = match path {
        None => return Ok(None),
        Some(path) if path.as_os_str().is_empty() => herd::store::Store::default_path()?,
        Some(path) => path.to_path_buf(),
    };
    Ok(Some(herd::store::Store::open_existing(&path)?))
}

/// `herd gen env/` (the directory holding the environments, not one of
/// them) lists the environments it holds instead of failing on config.yml.
fn refuse_directory_of_environments(dir: &Path) -> Result<()> {
    if dir.join("config.yml").exists() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // the load says what is wrong with it
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("config.yml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let example = dir.join(&names[0]);
    anyhow::bail!(
        "{} holds environments, not one: {}; name one (herd gen {})",
        dir.display(),
        herd::terminal::escape_controls(&names.join(", ")),
        herd::terminal::escape_controls(&example.display().to_string())
    )
}

/// `--out` is replaced whole: the filesystem's root, or a directory
/// holding the environment itself, is refused before anything under it is
/// read.
fn refuse_out(out: &Path, env_dir: &Path) -> Result<()> {
    let absolute = |p: &Path| {
        p.canonicalize()
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_path_buf())
    };
    let out_abs = absolute(out);
    let env_abs = absolute(env_dir);
    if out_abs.parent().is_none() {
        anyhow::bail!(
            "--out {}: the filesystem's root cannot be the output directory (herd gen replaces it whole); choose a directory of its own",
            out.display()
        );
    }
    if env_abs.starts_with(&out_abs) {
        anyhow::bail!(
            "--out {}: it holds the environment {} and would be replaced whole; choose a directory of its own",
            out.display(),
            env_dir.display()
        );
    }
    Ok(())
}

/// `units/<envName>` beside the `env/` directory holding the environment,
/// or in the current directory when the environment is elsewhere.
fn default_out(env_dir: &Path, env_name: &str) -> Result<PathBuf> {
    let env_dir = env_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", env_dir.display()))?;
    let root = env_dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "env"))
        .and_then(Path::parent);
    Ok(root.unwrap_or(Path::new(".")).join("units").join(env_name))
}
