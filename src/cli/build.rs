//! `herd build` and `herd graph`.

use super::StoreArg;
use herd::build::BuildOptions;
use herd::dependency::PullPolicy;
use herd::interrupt;
use herd::layers::Compression;
use herd::plan::{self, Event};
use herd::runtime::IsolationKind;
use herd::sandbox::{Choices, Limit, Network};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

/// Build images and pods into the store: each PATH is an image directory
/// (aci-manifest.yml), a pod directory (pod-manifest.yml), or a tree of
/// them, built in dependency order. Unchanged images come from the cache.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Image or pod directories, or directories holding them.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    #[command(flatten)]
    store: StoreArg,

    /// Layer compression.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    compression: Compression,

    /// Timestamp (seconds since 1970) for file times and `created`
    /// [default: SOURCE_DATE_EPOCH, else the directory's last git commit, else 0]
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,

    /// How build scripts are isolated from the host.
    #[arg(long, value_enum, default_value_t = IsolationKind::Runtime)]
    isolation: IsolationKind,

    /// The OCI runtime that runs build scripts [default: runc, else crun, from PATH]
    #[arg(long, value_name = "PATH")]
    runtime: Option<PathBuf>,

    #[command(flatten)]
    sandbox: SandboxArgs,

    /// How many images to build at once [default: the number of cores]
    #[arg(long, short)]
    jobs: Option<usize>,

    /// Build even what the cache says is unchanged.
    #[arg(long)]
    no_cache: bool,

    #[command(flatten)]
    pull: PullArg,

    /// Look images whose names start with PREFIX (a registry host[:port],
    /// or host/path) up in the registry build cache before building them
    /// [default: the config file's `cache.prefix`]
    #[arg(long, value_name = "PREFIX")]
    cache: Option<String>,

    /// Publish the cache keys of what this build produced (pushing the
    /// images) to the registry build cache [default: `cache.push`]
    #[arg(long)]
    cache_push: bool,

    /// Print a JSON summary on stdout instead of "NAME DIGEST" lines.
    #[arg(long)]
    json: bool,
}

/// `--pull`, shared by `herd build` and `herd test`.
#[derive(clap::Args)]
pub struct PullArg {
    /// When dependencies (and tester dependencies) are fetched from their
    /// registry: never, only those missing from the store, or always
    /// (what this run builds is never pulled)
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
}

/// The box build scripts run in; each flag wins over the manifest's
/// `build.sandbox` key of the same name.
#[derive(clap::Args)]
pub struct SandboxArgs {
    /// The network of build scripts: private (their own, outbound only,
    /// no access to the host's loopback) or host [default: private]
    #[arg(long, value_enum, value_name = "MODE")]
    network: Option<Network>,

    /// Processes a build script may have at once, or max
    /// [default: 4096]
    #[arg(long, value_name = "N", value_parser = Limit::parse_pids)]
    pids_limit: Option<Limit>,

    /// Memory a build script may use (512MiB, 4GiB), or max [default: 4GiB]
    #[arg(long, value_name = "SIZE", value_parser = Limit::parse_memory)]
    memory_limit: Option<Limit>,

    /// How long one build script may run (90s, 30m, 2h) before it is
    /// killed [default: 1h]
    #[arg(long, value_name = "DURATION", value_parser = herd::sandbox::parse_timeout)]
    script_timeout: Option<std::time::Duration>,
}

impl SandboxArgs {
    pub fn choices(&self) -> Choices {
        Choices {
            network: self.network,
            pids: self.pids_limit,
            memory: self.memory_limit,
            timeout: self.script_timeout,
        }
    }
}

/// The line `herd build` and `herd test` end with when a signal stopped
/// them (after `stopped`, what they stopped), and the exit status for it.
pub fn interrupted(signal: nix::sys::signal::Signal, stopped: &str) -> ExitCode {
    eprintln!(
        "interrupted by {signal}: stopped {stopped}, unmounted the build roots and removed temporary files"
    );
    ExitCode::from(interrupt::exit_status(signal))
}

/// Print the dependency graph of image and pod directories in Graphviz dot.
#[derive(clap::Args)]
pub struct GraphArgs {
    /// Image or pod directories, or directories holding them.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    // Until every build has unwound: a signal then stops the scripts and
    // the build roots are unmounted before herd exits.
    let _interrupts = interrupt::Catch::signals()?;
    let plan = plan::discover(&args.paths)?;
    plan.order()?;
    let store = args.store.open_or_create()?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let options = BuildOptions {
        compression: args.compression,
        source_date_epoch: args.source_date_epoch,
        init_binary: None,
        isolation: args.isolation,
        runtime: args.runtime,
        sandbox: args.sandbox.choices(),
        label_output: jobs > 1 && plan.units.len() > 1,
        pull: args.pull.pull,
    };
    let started = std::time::Instant::now();
    let quiet = super::quiet();
    // On a terminal a status line says what runs; elsewhere (CI, a log
    // file) each unit gets a plain line as it ends, nothing redrawn.
    if std::io::stderr().is_terminal() && !quiet {
        herd::status::start(plan.units.len());
    }
    let print_lock = Mutex::new(());
    let report = |event: &Event| {
        let _guard = print_lock.lock();
        if interrupt::received().is_some() {
            return; // one line says so at the end
        }
        match event {
            Event::Started(unit) => herd::status::unit_started(&plan.units[*unit].name),
            Event::Finished(unit, outcome) => {
                herd::status::unit_finished(&plan.units[*unit].name);
                let state = match &outcome.result {
                    Ok(built) if built.from_registry => "fetched",
                    Ok(built) if built.cached => "cached",
                    Ok(_) => "built",
                    Err(reason) if reason.starts_with("skipped") => "skipped",
                    Err(_) => "failed",
                };
                // The final name: build scripts may have set the version.
                let name = match &outcome.result {
                    Ok(built) => built
                        .tags
                        .last()
                        .map_or(plan.units[*unit].name.as_str(), |(n, _)| n.as_str()),
                    Err(_) => plan.units[*unit].name.as_str(),
                };
                if !quiet {
                    let colour = match state {
                        "failed" => 31,
                        "skipped" => 33,
                        _ => 32,
                    };
                    let state = herd::terminal::paint(&format!("{state:>7}"), colour);
                    herd::status::suspend(|| {
                        eprintln!("{state} {name} ({:.2}s)", outcome.duration.as_secs_f64())
                    });
                }
            }
        }
    };
    let settings = herd::registry::config::Config::load()?.cache;
    let prefix = args
        .cache
        .clone()
        .or_else(|| settings.as_ref().map(|c| c.prefix.clone()));
    let publish = args.cache_push || settings.as_ref().is_some_and(|c| c.push);
    if publish && prefix.is_none() {
        anyhow::bail!("--cache-push needs --cache PREFIX (or `cache:` in herd's config file)");
    }
    let remote = prefix
        .map(|p| herd::registry::cache::RemoteCache::new(&store, &p, publish))
        .transpose()?;
    let outcomes = plan.execute_with(
        &store,
        &options,
        !args.no_cache,
        remote.as_ref(),
        jobs,
        &report,
    );
    herd::status::finish();
    if let Some(signal) = interrupt::received() {
        return Ok(interrupted(signal, "the running build scripts"));
    }

    let (mut built, mut cached, mut from_registry, mut failed) = (0, 0, 0, Vec::new());
    let mut summary = Vec::new();
    for (unit, outcome) in plan.units.iter().zip(&outcomes) {
        let mut row =
            serde_json::json!({"path": unit.dir, "seconds": outcome.duration.as_secs_f64()});
        match &outcome.result {
            Ok(result) => {
                if result.from_registry {
                    from_registry += 1
                } else if result.cached {
                    cached += 1
                } else {
                    built += 1
                }
                row["state"] = if result.cached { "cached" } else { "built" }.into();
                row["from_registry"] = result.from_registry.into();
                row["tags"] = result
                    .tags
                    .iter()
                    .map(|(n, d)| serde_json::json!({"name": n, "digest": d}))
                    .collect();
                if !args.json {
                    for (name, digest) in &result.tags {
                        println!("{name} {digest}");
                    }
                }
            }
            Err(error) => {
                row["state"] = if error.starts_with("skipped") {
                    "skipped"
                } else {
                    "failed"
                }
                .into();
                row["error"] = error.clone().into();
                failed.push((unit, error));
            }
        }
        summary.push(row);
    }
    let bytes_fetched = herd::registry::cache::bytes_fetched();
    if args.json {
        let total = serde_json::json!({"built": built, "cached": cached, "cached_from_registry": from_registry, "bytes_fetched": bytes_fetched, "failed": failed.len(), "seconds": started.elapsed().as_secs_f64(), "units": summary});
        println!("{}", serde_json::to_string_pretty(&total)?);
    }
    if (plan.units.len() > 1 || remote.is_some()) && !quiet {
        let registry = match &remote {
            Some(_) => format!(
                "{from_registry} cached from the registry ({} fetched), ",
                indicatif::HumanBytes(bytes_fetched)
            ),
            None => String::new(),
        };
        eprintln!(
            "{built} built, {cached} cached locally, {registry}{} failed in {:.2}s",
            failed.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    // Each failure in full, so the first error is not lost in progress lines.
    for (unit, error) in &failed {
        super::print_error(format_args!("{}: {error}", unit.dir.display()));
    }
    Ok(ExitCode::from(2))
}

pub fn run_graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    print!("{}", plan::discover(&args.paths)?.dot());
    Ok(ExitCode::SUCCESS)
}
