//! One module per command; shared helpers for output and errors.

pub mod attributes;
pub mod build;
pub mod deploy;
pub mod doctor;
mod format;
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

/// How much herd says and how it looks; global, so they go anywhere on
/// the command line (`herd build -q .` as well as `herd -q build .`).
#[derive(clap::Args, Debug)]
pub struct OutputArgs {
    /// More output: -v for debug, -vv for trace; build scripts get the
    /// same LOG_LEVEL. LOG_LEVEL=debug also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr (results on stdout are unchanged).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// When to colour messages: auto colours a terminal unless NO_COLOR
    /// is set.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t)]
    pub color: herd::terminal::ColorChoice,
}

/// Sets up `tracing` from `-q`, `-v` or `LOG_LEVEL` (error, warn, info,
/// debug, trace); info by default. Logs go to stderr so stdout stays data.
pub fn init_logging(output: &OutputArgs) {
    let level = match (output.quiet, output.verbose) {
        (true, _) => "error".to_string(),
        (false, 0) => herd::terminal::log_level(),
        (false, 1) => "debug".into(),
        _ => "trace".into(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(format!("herd={level}"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("herd=info"));
    herd::terminal::set_log_level(&level);
    QUIET.store(output.quiet, std::sync::atomic::Ordering::Relaxed);
    let ansi = herd::terminal::set_color(output.color);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(|| StatusWriter)
        .without_time()
        .with_target(false)
        .init();
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True under `-q`: progress and summaries are left out, errors stay
/// (and `herd images -q` prints only digests, as podman's).
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Log lines go around the build's status line, never through it.
struct StatusWriter;

impl std::io::Write for StatusWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        herd::status::suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Prints an error and its causes, one per line, the way cargo does;
/// several problems found in one pass are printed one by one, then what
/// they stopped.
pub fn report_error(error: &anyhow::Error) {
    if let Some(problems) = error.downcast_ref::<herd::error::Problems>() {
        for problem in &problems.problems {
            report_error(problem);
        }
    }
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
        "{}: {}",
        herd::terminal::paint("error", 31),
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

    /// The store if there is one: commands that only read it (`herd try`)
    /// do not create an empty one. What is a store is `Store::is_store`'s
    /// rule, the one `open` checks.
    pub fn open_if_present(&self) -> anyhow::Result<Option<herd::store::Store>> {
        let path = self.path()?;
        if !herd::store::Store::is_store(&path) {
            return Ok(None);
        }
        herd::store::Store::open_existing(&path).map(Some)
    }
}

/// Parses `--store [DIR]` where a value may be left out (`herd gen
/// --store`): clap then gives the empty path, which stands for the
/// default store (clap's own path parser refuses an empty value).
pub fn store_path_or_default() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    clap::builder::OsStringValueParser::new().map(PathBuf::from)
}
