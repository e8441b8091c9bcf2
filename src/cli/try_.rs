//! `herd try`: renders an image directory's templates on this machine, the
//! way the container init would, and reports every problem at once.

use anyhow::{Context, Result, bail};
use herd::attributes::{self, MergedAttributes};
use herd::templates::{self, TemplateDir};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Render an image directory's templates here, reporting every missing
/// attribute at once (with file and line); writes the result only when all
/// rendered.
#[derive(clap::Args)]
pub struct TryArgs {
    /// The image directory (the one holding aci-manifest.yml, attributes/
    /// and templates/).
    dir: PathBuf,

    /// Attributes merged on top, as the runtime override would be: JSON
    /// (optionally `base64,`-prefixed), or the path of a JSON or YAML file.
    #[arg(long, value_name = "JSON|FILE")]
    attributes: Option<String>,

    /// Where to write the rendered files, at their paths in the image
    /// [default: a new temporary directory, whose path is printed].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

pub fn run(args: TryArgs) -> Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!(
            "{}: not a directory (expected an image directory)",
            args.dir.display()
        );
    }
    let mut merged = image_attributes(&args.dir)?;
    if let Some(text) = &args.attributes {
        let value = herd::init::overrides::parse_argument(text).map_err(anyhow::Error::msg)?;
        merged.apply(&value, "--attributes");
    }
    let sources = merged.explain();
    let mut value = merged.into_value();
    let mut problems: Vec<String> = vec![];
    if let Err(errors) = templates::resolve_values(&mut value) {
        for error in errors {
            let source = sources
                .iter()
                .find(|(path, _, _)| *path == error.attribute)
                .map(|(_, _, s)| format!(" (set in {s})"))
                .unwrap_or_default();
            problems.push(format!("{error}{source}"));
        }
    }
    let loaded = TemplateDir::load(&args.dir.join("templates"))?;
    let files = match loaded.render_all(&value) {
        Ok(files) => files,
        Err(errors) => {
            problems.extend(errors.iter().map(ToString::to_string));
            vec![]
        }
    };
    if !problems.is_empty() {
        for problem in &problems {
            super::print_error(problem);
        }
        eprintln!(
            "{}; nothing was written",
            herd::terminal::count(problems.len(), "problem")
        );
        return Ok(ExitCode::FAILURE);
    }
    // Private: rendered files hold secrets whatever their own mode says
    // (a new one is made 0700; tempfile would follow the umask).
    let out = match &args.out {
        Some(out) => {
            private_dir(out)?;
            out.clone()
        }
        None => tempfile::Builder::new()
            .prefix("herd-try-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .context("creating a temporary directory")?
            .keep(),
    };
    for file in &files {
        let target = out.join(&file.output);
        templates::write_rendered(&target, &file.content, file.config.mode.map(|m| m.0), None)?;
        println!("{}", target.display());
        if let Some(check) = &file.config.check_cmd {
            eprintln!(
                "note: {} has a checkCmd (`{}`), run only in the container",
                file.template.display(),
                check.argv().join(" ")
            );
        }
    }
    eprintln!(
        "rendered {} into {}",
        herd::terminal::count(files.len(), "file"),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates `dir` (mode 0700) when missing; an existing one is left as
/// its owner made it.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The attributes of an image directory: its `attributes/` files, defaults
/// then overrides. (Its dependencies' attributes are not read: they are in
/// the images, merged by the init at start.)
pub fn image_attributes(dir: &Path) -> Result<MergedAttributes> {
    let mut merged = MergedAttributes::new();
    merged.apply_files(&attributes::read_dir(&dir.join("attributes"))?);
    Ok(merged)
}
