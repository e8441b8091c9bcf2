//! A rollout: per service, under its lock, the units that differ from
//! what their machines hold go out `concurrentUpdater` at a time; a batch
//! starts only when the one before is active. A unit that fails is put
//! back to its previous version and the rollout stops.

use super::hooks::{self, HookContext, Hooks};
use super::lock::Lock;
use super::placement::Placed;
use super::remote::{self, RolledBack, Survey};
use super::ssh::Connections;
use super::{Change, Plan, in_parallel, survey_all};
use crate::environments::Environment;
use anyhow::{Result, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Journal lines shown for a unit that failed.
const JOURNAL_LINES: u32 = 20;

/// What the user asked `herd deploy` for.
pub struct Options {
    /// Only these services (all when empty).
    pub services: Vec<String>,
    /// Remove units of this environment that are no longer generated.
    pub prune: bool,
    /// How long to wait for another deploy's lock.
    pub lock_wait: Duration,
}

/// How a deploy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// A unit failed (and was rolled back) or a hook refused.
    Failed,
    /// Ctrl-C: stopped after the step under way.
    Interrupted,
}

/// A file of this environment on a machine that is no longer generated
/// there: `service` -> machine -> files.
type Stale = BTreeMap<String, BTreeMap<String, Vec<String>>>;

fn stale(plan: &Plan, surveys: &BTreeMap<String, Survey>, services: &[String]) -> Stale {
    let mut out = Stale::new();
    for (machine, survey) in surveys {
        for (service, files) in &survey.deployed {
            if !services.is_empty() && !services.contains(service) {
                continue;
            }
            let wanted = plan.files_on(machine, service);
            let gone: Vec<String> = files
                .iter()
                .filter(|f| !wanted.contains(&f.as_str()))
                .cloned()
                .collect();
            if !gone.is_empty() {
                out.entry(service.clone())
                    .or_default()
                    .insert(machine.clone(), gone);
            }
        }
    }
    out
}

/// `--plan`: one `UNIT -> MACHINE (new|changed|unchanged)` line per
/// placement, then the files `--prune` would remove. Reads the machines,
/// changes nothing.
pub fn print_plan(plan: &Plan, conn: &Connections, services: &[String]) -> Result<()> {
    let selected: Vec<&Placed> = plan
        .placed
        .iter()
        .filter(|p| services.is_empty() || services.contains(&plan.unit(&p.unit).service))
        .collect();
    let surveys = survey_all(conn, &plan.env_name, &plan.machines, |m| {
        selected
            .iter()
            .filter(|p| p.machine == m)
            .flat_map(|p| plan.unit(&p.unit).file_names())
            .collect()
    })?;
    for p in &selected {
        let change = plan.unit(&p.unit).change(&surveys[&p.machine]);
        println!("{} -> {} ({change})", p.unit, p.machine);
    }
    for (service, machines) in stale(plan, &surveys, services) {
        for (machine, files) in machines {
            for file in files {
                println!(
                    "{file} on {machine}: not generated any more, service {service} (--prune removes it)"
                );
            }
        }
    }
    Ok(())
}

/// Deploys the selected services of `plan` one after the other.
pub fn deploy(
    env: &Environment,
    plan: &Plan,
    conn: &Connections,
    options: &Options,
    interrupted: &AtomicBool,
) -> Result<Outcome> {
    let hooks = Hooks::new(&env.dir, &plan.env_name);
    let mut services: BTreeSet<String> = env.services.iter().map(|s| s.name.clone()).collect();
    let mut stale_files = Stale::new();
    if options.prune {
        // Which machines hold units of which services, deleted ones too.
        let surveys = survey_all(conn, &plan.env_name, &plan.machines, |_| vec![])?;
        stale_files = stale(plan, &surveys, &options.services);
        if options.services.is_empty() {
            services.extend(stale_files.keys().cloned());
        }
    }
    if !options.services.is_empty() {
        services.retain(|s| options.services.contains(s));
    }
    for service in &services {
        if interrupted.load(Ordering::SeqCst) {
            return Ok(Outcome::Interrupted);
        }
        let concurrent = env
            .service(service)
            .map_or(1, |s| s.concurrent_updater as usize);
        let run = ServiceRollout {
            plan,
            conn,
            hooks: &hooks,
            service,
            concurrent,
            stale: stale_files.remove(service).unwrap_or_default(),
            interrupted,
        };
        let outcome = run.run(options)?;
        if outcome != Outcome::Done {
            return Ok(outcome);
        }
    }
    Ok(Outcome::Done)
}

struct ServiceRollout<'a> {
    plan: &'a Plan,
    conn: &'a Connections,
    hooks: &'a Hooks,
    service: &'a str,
    concurrent: usize,
    /// machine -> files `--prune` found before the lock: the machines to
    /// lock besides the units' own.
    stale: BTreeMap<String, Vec<String>>,
    interrupted: &'a AtomicBool,
}

impl ServiceRollout<'_> {
    fn run(&self, options: &Options) -> Result<Outcome> {
        let service = self.service;
        let env = &self.plan.env_name;
        let targets = self.plan.targets(service);
        let mut machines: Vec<String> = targets.iter().map(|p| p.machine.clone()).collect();
        machines.extend(self.stale.keys().cloned());
        machines.sort();
        machines.dedup();
        let _lock = Lock::take(self.conn, env, service, &machines, options.lock_wait)?;
        // Read under the lock: another deploy may have just finished.
        let surveys = survey_all(self.conn, env, &machines, |m| {
            self.plan.files_on(m, service)
        })?;
        // What is stale, read under the lock too.
        let service_only = [service.to_string()];
        let stale_now = stale(self.plan, &surveys, &service_only)
            .remove(service)
            .unwrap_or_default();
        if !options.prune {
            for (machine, files) in &stale_now {
                eprintln!(
                    "warning: {service}: {} on {machine} not generated any more (--prune removes it)",
                    files.join(" ")
                );
            }
        }
        let stale_now = if options.prune {
            stale_now
        } else {
            BTreeMap::new()
        };
        let todo: Vec<&Placed> = targets
            .into_iter()
            .filter(|p| self.plan.unit(&p.unit).change(&surveys[&p.machine]) != Change::Unchanged)
            .collect();
        if todo.is_empty() && stale_now.is_empty() {
            eprintln!("{service}: up to date");
            return Ok(Outcome::Done);
        }
        let context = HookContext {
            service,
            ..Default::default()
        };
        self.hooks.run(hooks::BEFORE_SERVICE, &context)?;
        let outcome = self.roll(&todo)?;
        let outcome = match outcome {
            Outcome::Done => self.prune(&stale_now)?,
            other => other,
        };
        let word = outcome_word(&outcome);
        let after = HookContext {
            outcome: Some(word),
            ..context
        };
        if let Err(e) = self.hooks.run(hooks::AFTER_SERVICE, &after) {
            eprintln!("warning: {e:#}");
        }
        Ok(outcome)
    }

    fn roll(&self, todo: &[&Placed]) -> Result<Outcome> {
        let service = self.service;
        let batches: Vec<&[&Placed]> = todo.chunks(self.concurrent).collect();
        if !todo.is_empty() {
            eprintln!(
                "{service}: {} to update, {} at a time",
                crate::terminal::count(todo.len(), "unit"),
                self.concurrent
            );
        }
        for (i, batch) in batches.iter().enumerate() {
            if self.interrupted.load(Ordering::SeqCst) {
                eprintln!("{service}: interrupted before batch {}", i + 1);
                return Ok(Outcome::Interrupted);
            }
            for p in batch.iter() {
                let context = HookContext {
                    service,
                    unit: Some(&p.unit),
                    machine: Some(&p.machine),
                    outcome: None,
                };
                if let Err(e) = self.hooks.run(hooks::BEFORE_UNIT, &context) {
                    // A hook's output is not herd's text: escaped.
                    let error = crate::terminal::escape_controls(&format!("{e:#}")).into_owned();
                    eprintln!("error: {error}; stopping the rollout of {service}");
                    return Ok(Outcome::Failed);
                }
            }
            let started = Instant::now();
            let results: Vec<(&Placed, Result<Result<(), String>>)> =
                in_parallel(batch, |p| (*p, self.update(p)));
            let mut failed = vec![];
            for (p, result) in &results {
                let result = match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(why)) => Err(why.clone()),
                    Err(e) => Err(format!("{e:#}")),
                };
                let outcome = match &result {
                    Ok(()) => {
                        eprintln!(
                            "{service}: {} on {}: active ({:.1} s)",
                            p.unit,
                            p.machine,
                            started.elapsed().as_secs_f64()
                        );
                        "ok"
                    }
                    Err(why) => {
                        eprintln!("{service}: {} on {} failed: {why}", p.unit, p.machine);
                        failed.push(*p);
                        "failed"
                    }
                };
                let context = HookContext {
                    service,
                    unit: Some(&p.unit),
                    machine: Some(&p.machine),
                    outcome: Some(outcome),
                };
                if let Err(e) = self.hooks.run(hooks::AFTER_UNIT, &context) {
                    eprintln!("warning: {e:#}");
                }
            }
            if !failed.is_empty() {
                for p in failed {
                    self.roll_back(p);
                }
                eprintln!("{service}: rollout stopped");
                return Ok(Outcome::Failed);
            }
        }
        Ok(Outcome::Done)
    }

    /// Installs the unit's files and restarts it; `Ok(Err)` when it does
    /// not become active.
    fn update(&self, p: &Placed) -> Result<Result<(), String>> {
        let unit = self.plan.unit(&p.unit);
        let files: Vec<remote::UnitFile> = unit
            .file_names()
            .into_iter()
            .map(|name| remote::UnitFile {
                name,
                content: unit.files[name].as_slice(),
                mode: unit.modes[name],
            })
            .collect();
        remote::update(
            self.conn,
            &p.machine,
            &self.plan.env_name,
            self.service,
            &unit.start(),
            &files,
        )
    }

    /// Puts the previous version back, shows the journal of the failed one.
    fn roll_back(&self, p: &Placed) {
        let unit = self.plan.unit(&p.unit);
        match remote::journal(self.conn, &p.machine, &unit.name, JOURNAL_LINES) {
            Ok(lines) => {
                eprintln!("last journal lines of {} on {}:", unit.name, p.machine);
                for line in lines.lines() {
                    eprintln!("  {line}");
                }
            }
            Err(e) => eprintln!(
                "cannot read the journal of {} on {}: {e:#}",
                unit.name, p.machine
            ),
        }
        let result = remote::rollback(
            self.conn,
            &p.machine,
            &self.plan.env_name,
            self.service,
            &unit.start(),
            &unit.file_names(),
        );
        match result {
            Ok(RolledBack::Restored) => eprintln!(
                "{}: {} on {}: previous version restored and active",
                self.service, unit.name, p.machine
            ),
            Ok(RolledBack::Removed) => eprintln!(
                "{}: {} on {}: had no previous version; stopped and removed",
                self.service, unit.name, p.machine
            ),
            Ok(RolledBack::Failed(why)) => eprintln!(
                "{}: {} on {}: previous version restored but it does not start either: {why}",
                self.service, unit.name, p.machine
            ),
            Err(e) => eprintln!(
                "{}: {} on {}: rollback failed: {e:#}",
                self.service, unit.name, p.machine
            ),
        }
    }

    /// `--prune`: stops and removes this service's files that are no
    /// longer generated for their machine.
    fn prune(&self, stale: &BTreeMap<String, Vec<String>>) -> Result<Outcome> {
        for (machine, files) in stale {
            if self.interrupted.load(Ordering::SeqCst) {
                return Ok(Outcome::Interrupted);
            }
            let names: Vec<&str> = files.iter().map(String::as_str).collect();
            remote::remove(
                self.conn,
                machine,
                &self.plan.env_name,
                self.service,
                &names,
            )?;
            for file in files {
                eprintln!("{}: removed {file} from {machine}", self.service);
            }
        }
        Ok(Outcome::Done)
    }
}

fn outcome_word(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "ok",
        Outcome::Failed => "failed",
        Outcome::Interrupted => "interrupted",
    }
}

/// `--unlock SERVICE`: removes its lock on every machine of the
/// environment, saying whose it was.
pub fn unlock(plan: &Plan, conn: &Connections, service: &str) -> Result<()> {
    let broken = super::lock::unlock(conn, &plan.env_name, service, &plan.machines)?;
    if broken.is_empty() {
        bail!(
            "service {service} is not locked on any machine of {}",
            plan.env_name
        );
    }
    for (machine, owner) in broken {
        eprintln!("{service}: removed the lock on {machine} held by {owner}");
    }
    Ok(())
}
