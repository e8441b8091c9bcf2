//! `herd deploy` and `herd status`: an environment's systemd units onto
//! the machines of its config.yml over SSH, and how they are doing there.

use anyhow::{Result, bail};
use herd::deploy::rollout::{self, Options, Outcome};
use herd::deploy::ssh::Connections;
use herd::deploy::{Plan, status};
use herd::environments::{Environment, Target};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// What both commands need to reach the machines and generate the units.
#[derive(clap::Args, Debug)]
pub struct Reach {
    /// ssh configuration file, passed to ssh as -F [default: ssh's own]
    #[arg(long, env = "HERD_SSH_CONFIG", value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// Seconds to wait for a machine's SSH connection (ConnectTimeout)
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub connect_timeout: u64,

    /// OCI image store to pin images by digest from (as herd gen;
    /// `--store` alone: the default store)
    #[arg(long, env = "HERD_STORE", value_name = "DIR", num_args = 0..=1, default_missing_value = "", value_parser = super::store_path_or_default())]
    pub store: Option<PathBuf>,

    /// Attributes the service manifests are rendered with (as herd gen)
    #[arg(long, value_name = "JSON|FILE")]
    pub attributes: Option<String>,
}

/// Roll an environment's units out to its machines (config.yml
/// `machines:`) over SSH: per service, `concurrentUpdater` units at a time,
/// each restarted and active before the next batch, under a lock on the
/// service's machines, with the environment's hooks. A unit that fails is
/// put back to its previous version and the rollout stops.
///
/// Exit status: 0 when done, 1 when a unit failed (rolled back) or a hook
/// refused, 2 on errors, 130 when interrupted (Ctrl-C stops after the step
/// under way and releases the locks; a second Ctrl-C quits at once and
/// leaves them, for --unlock).
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The environment directory (as for herd gen)
    pub env_dir: PathBuf,

    /// Deploy only these services [default: every service]
    pub services: Vec<String>,

    /// Change nothing: print `UNIT -> MACHINE (new|changed|unchanged)` per
    /// placed unit and what --prune would remove
    #[arg(long, conflicts_with_all = ["prune", "unlock"])]
    pub plan: bool,

    /// Also stop and remove this environment's units that are no longer
    /// generated (for the selected services)
    #[arg(long)]
    pub prune: bool,

    /// Remove SERVICE's lock on every machine (after a deploy that died)
    #[arg(long, value_name = "SERVICE", conflicts_with = "prune")]
    pub unlock: Option<String>,

    /// Seconds to wait for another deploy's lock before giving up
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    pub lock_wait: u64,

    #[command(flatten)]
    pub reach: Reach,
}

/// For every unit of the environment (or of SERVICE...): its machine,
/// whether the deployed files equal the generated ones, and its systemd
/// state (active, since, restarts).
///
/// Exit status: 0 when every unit is up to date and active, 1 when one is
/// missing, different or not active, 2 on errors.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// The environment directory
    pub env_dir: PathBuf,

    /// Only these services [default: every service]
    pub services: Vec<String>,

    /// One JSON array of {unit, service, machine, file, checked, state}
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub reach: Reach,
}

/// The environment's units, placed, and connections to its machines.
fn prepare(env_dir: &std::path::Path, reach: &Reach) -> Result<(Environment, Plan, Connections)> {
    let extra = super::r#gen::manifest_attributes(reach.attributes.as_deref())?;
    let env = Environment::load_with(env_dir, &[], extra.as_ref())?;
    if env.config.target == Target::Kubernetes {
        tracing::info!("config.yml says target: kubernetes; herd deploy places the systemd units");
    }
    let store = super::r#gen::open_store(reach.store.as_deref())?;
    let generated = herd::units::generate_all(&env, Target::Systemd, store.as_ref())?;
    let plan = Plan::new(&env, &generated)?;
    let conn = Connections::new(
        &env.config.machines,
        reach.ssh_config.clone(),
        Duration::from_secs(reach.connect_timeout),
    )?;
    Ok((env, plan, conn))
}

fn check_services(env: &Environment, services: &[String], reach: &Reach) -> Result<()> {
    // The same check (and did-you-mean) as herd gen.
    let extra = super::r#gen::manifest_attributes(reach.attributes.as_deref())?;
    Environment::load_with(&env.dir, services, extra.as_ref())?;
    Ok(())
}

pub fn run_deploy(args: DeployArgs) -> Result<ExitCode> {
    let (env, plan, conn) = prepare(&args.env_dir, &args.reach)?;
    if let Some(service) = &args.unlock {
        rollout::unlock(&plan, &conn, service)?;
        return Ok(ExitCode::SUCCESS);
    }
    check_services(&env, &args.services, &args.reach)?;
    if args.plan {
        rollout::print_plan(&plan, &conn, &args.services)?;
        return Ok(ExitCode::SUCCESS);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal quits at once; the first asks for a clean stop.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&interrupted))?;
        signal_hook::flag::register(signal, Arc::clone(&interrupted))?;
    }
    let options = Options {
        services: args.services.clone(),
        prune: args.prune,
        lock_wait: Duration::from_secs(args.lock_wait),
    };
    match rollout::deploy(&env, &plan, &conn, &options, &interrupted)? {
        Outcome::Done => Ok(ExitCode::SUCCESS),
        Outcome::Failed => Ok(ExitCode::from(1)),
        Outcome::Interrupted => {
            eprintln!("interrupted: units already updated stay; the locks are released");
            Ok(ExitCode::from(130))
        }
    }
}

pub fn run_status(args: StatusArgs) -> Result<ExitCode> {
    let (env, plan, conn) = prepare(&args.env_dir, &args.reach)?;
    check_services(&env, &args.services, &args.reach)?;
    let units = status::status(&plan, &conn, &args.services)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&units)?);
    } else {
        let rows: Vec<[String; 6]> = units
            .iter()
            .map(|u| {
                [
                    u.unit.clone(),
                    u.machine.clone(),
                    u.file.to_string(),
                    format!("{}/{}", u.state.active, u.state.sub),
                    u.state.restarts.to_string(),
                    u.state.since.clone(),
                ]
            })
            .collect();
        let header = ["UNIT", "MACHINE", "FILE", "STATE", "RESTARTS", "SINCE"].map(String::from);
        let mut widths = [0; 6];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let line: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
    }
    if units.is_empty() {
        bail!("no units to check");
    }
    Ok(match units.iter().all(|u| u.ok()) {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}
