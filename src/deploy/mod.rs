//! `herd deploy` and `herd status`: the generated systemd units of an
//! environment placed on its machines (`placement`), compared with what
//! the machines hold, and rolled out over SSH (`ssh`, `remote`) a few at a
//! time under a lock (`lock`), with the environment's hooks (`hooks`).
//!
//! Data flows one way: units (from `units::generate`) -> `Plan` (units and
//! their machines) -> survey of the machines -> `rollout` or `status`.

pub mod hooks;
pub mod lock;
pub mod placement;
pub mod remote;
pub mod rollout;
pub mod ssh;
pub mod status;

use crate::digest::Digest;
use crate::environments::Environment;
use crate::units::{Generated, wanted_mode};
use anyhow::{Result, anyhow};
use placement::{Candidate, Placed, Rules};
use remote::Survey;
use std::collections::BTreeMap;

/// One generated unit: its files and where it may go.
#[derive(Debug, Clone)]
pub struct Unit {
    pub service: String,
    /// The `.service` file name: what placement and messages call it.
    pub name: String,
    /// File name -> content: the `.service`, and the `.timer` if any.
    pub files: BTreeMap<String, Vec<u8>>,
    /// File name -> the mode it is installed with, the one `herd gen`
    /// writes it with (files carrying secrets are not world-readable).
    pub modes: BTreeMap<String, u32>,
    pub rules: Rules,
}

impl Unit {
    /// What is restarted and must be active: the timer when there is one.
    pub fn start(&self) -> String {
        let stem = self.name.strip_suffix(".service").unwrap_or(&self.name);
        let timer = format!("{stem}.timer");
        match self.files.contains_key(&timer) {
            true => timer,
            false => self.name.clone(),
        }
    }

    /// The file names, the `.service` first (rollback relies on it).
    pub fn file_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = vec![&self.name];
        names.extend(
            self.files
                .keys()
                .map(String::as_str)
                .filter(|f| *f != self.name),
        );
        names
    }

    /// Whether `survey` shows every file of the unit with the same content
    /// and mode.
    pub fn change(&self, survey: &Survey) -> Change {
        let mut missing = 0;
        let mut differ = false;
        for (file, content) in &self.files {
            match survey.hashes.get(file) {
                None => missing += 1,
                Some(hash) => {
                    differ |= hash != Digest::of(content).hex()
                        || survey.modes.get(file) != self.modes.get(file)
                }
            }
        }
        match (missing, differ) {
            (n, _) if n == self.files.len() => Change::New,
            (0, false) => Change::Unchanged,
            _ => Change::Changed,
        }
    }
}

/// How a machine's copy of a unit compares with the generated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    New,
    Changed,
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::New => "new",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        })
    }
}

/// The units of an environment and the machine(s) each goes on.
pub struct Plan {
    pub env_name: String,
    /// By name.
    pub units: BTreeMap<String, Unit>,
    /// Sorted by unit, then machine.
    pub placed: Vec<Placed>,
    /// Every machine of the environment, by name.
    pub machines: Vec<String>,
}

impl Plan {
    /// Groups `generated` (as `units::generate_all` made it for `env`)
    /// into units and places them; an impossible placement is an error
    /// naming the unit and the rule.
    pub fn new(env: &Environment, generated: &Generated) -> Result<Plan> {
        let mut units: BTreeMap<String, Unit> = BTreeMap::new();
        for (path, content) in &generated.files {
            let (Some(service), Some(file)) = (
                path.parent().and_then(|p| p.to_str()),
                path.file_name().and_then(|f| f.to_str()),
            ) else {
                continue;
            };
            let name = match file.strip_suffix(".timer") {
                Some(stem) => format!("{stem}.service"),
                None => file.to_string(),
            };
            let unit = units.entry(name.clone()).or_insert_with(|| Unit {
                service: service.to_string(),
                name,
                files: BTreeMap::new(),
                modes: BTreeMap::new(),
                rules: Rules::default(),
            });
            unit.files.insert(file.to_string(), content.clone());
            unit.modes
                .insert(file.to_string(), wanted_mode(&generated.private, path));
        }
        for unit in units.values_mut() {
            let text = unit
                .files
                .get(&unit.name)
                .ok_or_else(|| anyhow!("{} has a timer but no service", unit.name))?;
            unit.rules = Rules::from_unit(&unit.name, &String::from_utf8_lossy(text))?;
        }
        let candidates: Vec<Candidate> = units
            .values()
            .map(|u| Candidate {
                unit: u.name.clone(),
                rules: u.rules.clone(),
            })
            .collect();
        let placed = placement::place(&candidates, &env.config.machines)?;
        let mut machines: Vec<String> =
            env.config.machines.iter().map(|m| m.name.clone()).collect();
        machines.sort();
        Ok(Plan {
            env_name: env.config.env_name.clone(),
            units,
            placed,
            machines,
        })
    }

    pub fn unit(&self, name: &str) -> &Unit {
        &self.units[name]
    }

    /// The placements of `service`'s units.
    pub fn targets(&self, service: &str) -> Vec<&Placed> {
        self.placed
            .iter()
            .filter(|p| self.unit(&p.unit).service == service)
            .collect()
    }

    /// The files placed on `machine` for `service`.
    pub fn files_on(&self, machine: &str, service: &str) -> Vec<&str> {
        self.targets(service)
            .into_iter()
            .filter(|p| p.machine == machine)
            .flat_map(|p| self.unit(&p.unit).file_names())
            .collect()
    }
}

/// `survey` of several machines at once, one thread each; every file of
/// `files(machine)` is hashed.
pub fn survey_all<'a>(
    conn: &ssh::Connections,
    env_name: &str,
    machines: &[String],
    files: impl Fn(&str) -> Vec<&'a str> + Sync,
) -> Result<BTreeMap<String, Survey>> {
    let results = in_parallel(machines, |m| {
        (m.clone(), remote::survey(conn, m, env_name, &files(m)))
    });
    let mut surveys = BTreeMap::new();
    let mut errors = vec![];
    for (machine, result) in results {
        match result {
            Ok(s) => {
                surveys.insert(machine, s);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!("{}", errors.join("\n"));
    }
    Ok(surveys)
}

/// `f` of every item, each on its own thread: the work is waiting for
/// machines over SSH, not computing, so a thread per machine (or per unit
/// of a batch) is what makes them run at once. Results in input order.
pub fn in_parallel<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items.iter().map(|i| scope.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a deploy thread panicked"))
            .collect()
    })
}
