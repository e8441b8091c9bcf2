//! `herd try`: renders an image directory's templates on this machine, the
//! way the container init would, and reports every problem at once.

use super::StoreArg;
use anyhow::{Context, Result, bail};
use herd::image_attributes::StackAttributes;
use herd::templates::{self, RenderedFile, TemplateDir};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Render an image directory's templates here (or every app of a pod
/// directory), over the attributes its container would have: the
/// dependency images' from the store, a pod's, the directory's own.
/// Reports every missing attribute at once (with file and line); writes
/// the result only when all rendered.
#[derive(clap::Args)]
pub struct TryArgs {
    /// The image directory (the one holding aci-manifest.yml, attributes/
    /// and templates/), an app directory of a pod, or a pod directory.
    dir: PathBuf,

    /// Attributes merged on top, as the runtime override would be: JSON
    /// (optionally `base64,`-prefixed), or the path of a JSON or YAML file.
    #[arg(long, value_name = "JSON|FILE")]
    attributes: Option<String>,

    /// Where to write the rendered files, at their paths in the image (a
    /// pod's apps each in a directory named after the app)
    /// [default: a new temporary directory, whose path is printed].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    #[command(flatten)]
    store: StoreArg,
}

pub fn run(args: TryArgs) -> Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!(
            "{}: not a directory (expected an image directory)",
            args.dir.display()
        );
    }
    let store = args.store.open_if_present()?;
    // A pod: each app, in its own directory of the output.
    let targets: Vec<(PathBuf, Option<String>)> =
        if args.dir.join(herd::manifest::POD_MANIFEST).is_file() {
            let (pod, _) = herd::pods::read_manifest(&args.dir)?;
            pod.pod
                .apps
                .iter()
                .map(|app| {
                    let name = herd::pods::app_name(app);
                    (args.dir.join(&name), Some(name))
                })
                .collect()
        } else {
            vec![(args.dir.clone(), None)]
        };
    let mut problems: Vec<String> = vec![];
    let mut rendered: Vec<(Option<String>, Vec<RenderedFile>)> = vec![];
    for (dir, app) in &targets {
        let label = app
            .as_ref()
            .map(|a| format!("app {a}: "))
            .unwrap_or_default();
        let attributes = stack_attributes(dir, store.as_ref(), &label)?;
        say_template_sources(dir, &attributes.templates, &label);
        let (files, found) = render(dir, attributes, args.attributes.as_deref())?;
        problems.extend(found.into_iter().map(|p| format!("{label}{p}")));
        rendered.push((app.clone(), files));
    }
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
    let mut count = 0;
    for (app, files) in &rendered {
        let root = app.as_ref().map_or(out.clone(), |a| out.join(a));
        for file in files {
            let target = root.join(&file.output);
            templates::write_rendered(&target, &file.content, file.config.mode.map(|m| m.0), None)?;
            println!("{}", target.display());
            count += 1;
            if let Some(check) = &file.config.check_cmd {
                eprintln!(
                    "note: {} has a checkCmd (`{}`), run only in the container",
                    file.template.display(),
                    check.argv().join(" ")
                );
            }
        }
    }
    eprintln!(
        "rendered {} into {}",
        herd::terminal::count(count, "file"),
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

/// The directory's attributes as its container would merge them, the
/// sources used and any missing dependency said on stderr.
pub fn stack_attributes(
    dir: &Path,
    store: Option<&herd::store::Store>,
    label: &str,
) -> Result<StackAttributes> {
    let attributes = herd::image_attributes::for_dir(dir, store)?;
    for warning in &attributes.warnings {
        eprintln!("warning: {label}{warning}");
    }
    if attributes.sources.is_empty() {
        eprintln!("{label}attributes from: none");
    } else {
        eprintln!("{label}attributes from: {}", attributes.sources.join(", "));
    }
    Ok(attributes)
}

/// Says whose templates are rendered, when dependencies bring some.
fn say_template_sources(
    dir: &Path,
    templates: &[herd::image_attributes::StackTemplate],
    label: &str,
) {
    if templates.is_empty() {
        return;
    }
    let mut counts: Vec<(&str, usize)> = vec![];
    for template in templates {
        let image = template.image.as_str();
        match counts.iter_mut().find(|(i, _)| *i == image) {
            Some((_, count)) => *count += 1,
            None => counts.push((image, 1)),
        }
    }
    let mut sources: Vec<String> = counts
        .iter()
        .map(|(image, count)| format!("{image} ({})", herd::terminal::count(*count, "file")))
        .collect();
    sources.push(format!("{}", dir.join("templates").display()));
    eprintln!("{label}templates from: {}", sources.join(", "));
}

/// Renders the templates a container of `dir` has (its dependencies', then
/// its own) over its attributes (and the `--attributes` override): the
/// files, or every problem found.
fn render(
    dir: &Path,
    stack: StackAttributes,
    attributes: Option<&str>,
) -> Result<(Vec<RenderedFile>, Vec<String>)> {
    let mut merged = stack.merged;
    if let Some(text) = attributes {
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
    let own = dir.join("templates");
    // With dependency templates, all are stacked in one private directory
    // as the image's /herd/templates holds them; messages name each file's
    // origin rather than that directory. The directory's own are checked
    // first as the build checks them (their links included).
    let mut origins: Vec<(PathBuf, String)> = vec![];
    let inherited = stack
        .templates
        .iter()
        .filter(|t| matches!(templates::kind(&t.relative), templates::Kind::Partial))
        .map(|t| t.relative.to_string_lossy().into_owned())
        .collect();
    let own_loaded = TemplateDir::load_over(&own, &inherited)?;
    let stacked_dir;
    let loaded = if stack.templates.is_empty() {
        own_loaded
    } else {
        let (stacked, o) = stack_templates(&own, &stack.templates)?;
        origins = o;
        stacked_dir = stacked;
        TemplateDir::load(stacked_dir.path()).map_err(|e| relabel(e, &origins))?
    };
    match loaded.render_all(&value) {
        Ok(files) => Ok((files, problems)),
        Err(errors) => {
            problems.extend(errors.into_iter().map(|e| relabel(e, &origins).to_string()));
            Ok((vec![], problems))
        }
    }
}

/// A private directory holding the dependencies' `templates`, then the
/// directory's own `own` over them (already loaded once, so checked);
/// and each file's path there with its origin.
fn stack_templates(
    own: &Path,
    templates: &[herd::image_attributes::StackTemplate],
) -> Result<(tempfile::TempDir, Vec<(PathBuf, String)>)> {
    let stacked = tempfile::Builder::new()
        .prefix("herd-try-templates-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .context("creating a temporary directory")?;
    let mut origins = vec![];
    let mut put = |relative: &Path, content: &[u8], origin: String| -> Result<()> {
        let target = stacked.path().join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("writing {}", target.display()))?;
        // The directory's own file replaces a dependency's, as its layer does.
        origins.retain(|(path, _)| *path != target);
        origins.push((target, origin));
        Ok(())
    };
    for template in templates {
        put(&template.relative, &template.content, template.origin())?;
    }
    if own.is_dir() {
        for entry in walkdir::WalkDir::new(own)
            .follow_links(true)
            .sort_by_file_name()
        {
            let entry = entry.with_context(|| format!("listing {}", own.display()))?;
            if !entry.file_type().is_file() {
                continue;
            }
            let relative = entry.path().strip_prefix(own).unwrap_or(entry.path());
            let content = std::fs::read(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            put(relative, &content, entry.path().display().to_string())?;
        }
    }
    Ok((stacked, origins))
}

/// `error` naming the file it is about by its origin, when it is one of
/// the stacked files.
fn relabel(
    mut error: herd::error::InputError,
    origins: &[(PathBuf, String)],
) -> herd::error::InputError {
    if let Some((_, origin)) = origins.iter().find(|(path, _)| *path == error.file) {
        error.file = PathBuf::from(origin);
    }
    error
}
