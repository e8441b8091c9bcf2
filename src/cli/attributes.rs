//! `herd attributes`: the merged attributes of an image directory, or of
//! one node of an environment, and with `--explain` where each value came
//! from.

use anyhow::{Result, bail};
use herd::attributes::MergedAttributes;
use herd::attributes::secrets::Masker;
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;

/// Print merged attributes: of an image directory (`herd attributes DIR`,
/// its dependencies' from the store, a pod's for a pod app) or of one node of an environment (`herd attributes ENV_DIR SERVICE
/// HOSTNAME`).
#[derive(clap::Args)]
pub struct AttributesArgs {
    /// An image directory, or an environment directory (then also give
    /// SERVICE and HOSTNAME).
    dir: PathBuf,

    /// The service of the environment.
    #[arg(requires = "hostname")]
    service: Option<String>,

    /// The node of that service, by hostname.
    hostname: Option<String>,

    /// Show, for each value, the file that set it (secret-looking keys
    /// masked).
    #[arg(long)]
    explain: bool,

    /// Render the values that are templates over the attributes (`url:
    /// "http://{{ host }}"`), as the container init does.
    #[arg(long, conflicts_with = "explain")]
    resolve: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    format: Format,

    #[command(flatten)]
    store: super::StoreArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Yaml,
    Json,
}

pub fn run(args: AttributesArgs) -> Result<ExitCode> {
    let merged = match (&args.service, &args.hostname) {
        (Some(service), Some(hostname)) => {
            herd::environments::node_attributes(&args.dir, service, hostname)?
        }
        _ => {
            if args.dir.join("config.yml").is_file() && !args.dir.join("aci-manifest.yml").is_file()
            {
                bail!(
                    "{} is an environment: give a SERVICE and a HOSTNAME too (herd attributes ENV_DIR SERVICE HOSTNAME)",
                    args.dir.display()
                );
            }
            if !args.dir.is_dir() {
                bail!(
                    "{}: not a directory (expected an image directory)",
                    args.dir.display()
                );
            }
            let store = args.store.open_if_present()?;
            super::try_::stack_attributes(&args.dir, store.as_ref(), "")?.merged
        }
    };
    if args.explain {
        print_explained(&merged, args.format)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut value = merged.into_value();
    if args.resolve
        && let Err(errors) = herd::templates::resolve_values(&mut value)
    {
        for error in &errors {
            super::print_error(error);
        }
        return Ok(ExitCode::FAILURE);
    }
    print(&value, args.format)?;
    Ok(ExitCode::SUCCESS)
}

fn print(value: &Value, format: Format) -> Result<()> {
    match format {
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
    }
    Ok(())
}

/// One line per value, `path: value  # source`, or a JSON list.
fn print_explained(merged: &MergedAttributes, format: Format) -> Result<()> {
    // A secret is hidden wherever it appears: under its own key, and
    // inside any other value that repeats it (a password in a DSN).
    let masker = Masker::new([merged.value()]);
    let rows: Vec<(String, Value, String)> = merged
        .explain()
        .into_iter()
        .map(|(path, value, source)| {
            let shown = masker.mask_at(&path, &value);
            (path, shown, source)
        })
        .collect();
    match format {
        Format::Json => {
            let list: Vec<Value> = rows.into_iter().map(|(path, value, source)| serde_json::json!({"attribute": path, "value": value, "source": source})).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Yaml => {
            for (path, value, source) in rows {
                println!("{path}: {value}  # {source}");
            }
        }
    }
    Ok(())
}
