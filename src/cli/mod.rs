//! One module per command; shared helpers for output and errors.

pub mod attributes;
pub mod build;
pub mod deploy;
pub mod doctor;
pub mod r#gen;
pub mod images;
pub mod meta;
pub mod pods;
pub mod pull;
pub mod push;
pub mod scaffold;
pub mod store;
pub mod test;
pub mod try_;

use std::path::PathBuf;

/// Sets up `tracing` from `-v` flags or `LOG_LEVEL` (error, warn, info,
/// debug, trace); info by default. Logs go to stderr so stdout stays data.
pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => std::env::var("LOG_LEVEL").unwrap_or_else(|_| "info".into()),
        1 => "debug".into(),
        _ => "trace".into(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!("herd={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herd=info"));
    // Colours only for a terminal: a log file or CI log gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}

/// Prints an error and its causes, one per line, the way cargo does.
pub fn report_error(error: &anyhow::Error) {
    print_error(error);
    for cause in error.chain().skip(1) {
        eprintln!(
            "  caused by: {}",
            herd::terminal::escape_controls(&cause.to_string())
        );
    }
}

/// Prints `error: MESSAGE` on stderr. Errors quote what registries
/// answered, scripts printed and files held: control characters are
/// escaped.
pub fn print_error(message: impl std::fmt::Display) {
    eprintln!(
        "error: {}",
        herd::terminal::escape_controls(&message.to_string())
    );
}

/// The `--store` option shared by every command that reads or writes
/// images.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArg {
    /// The OCI image layout directory images are kept in
    /// [default: $XDG_DATA_HOME/herd/store]
    #[arg(long, env = "HERD_STORE", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl StoreArg {
    /// The store's directory: `--store`, `HERD_STORE`, or the default.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.store {
            Some(path) => Ok(path.clone()),
            None => herd::store::Store::default_path(),
        }
    }

    /// Opens the store, creating it if there is none: for the commands
    /// that put images in (`build`, `pull`, `test`).
    pub fn open_or_create(&self) -> anyhow::Result<herd::store::Store> {
        herd::store::Store::open(&self.path()?)
    }

    /// Opens an existing store; a path without one is an error (`no herd
    /// store at DIR`), so a typo never turns a directory into a store.
    pub fn open(&self) -> anyhow::Result<herd::store::Store> {
        herd::store::Store::open_existing(&self.path()?)
    }
}

/// Parses `--store [DIR]` where a value may be left out (`herd gen
/// --store`): clap then gives the empty path, which stands for the
/// default store (clap's own path parser refuses an empty value).
pub fn store_path_or_default() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}
