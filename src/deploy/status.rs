//! `herd status` (ggn's check): for every placed unit, whether its
//! machine holds the generated files and what systemd says of it.

use super::remote::{self, UnitState};
use super::ssh::Connections;
use super::{Change, Plan, in_parallel, survey_all};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

/// One unit on one machine.
#[derive(Debug, Serialize)]
pub struct UnitStatus {
    pub unit: String,
    pub service: String,
    pub machine: String,
    /// `up-to-date`, `different` or `missing`.
    pub file: &'static str,
    /// What is checked for being active: the unit, or its timer.
    pub checked: String,
    pub state: UnitState,
}

impl UnitStatus {
    /// Deployed as generated and active.
    pub fn ok(&self) -> bool {
        self.file == "up-to-date" && self.state.active == "active"
    }
}

/// The status of the units of `services` (all when empty).
pub fn status(plan: &Plan, conn: &Connections, services: &[String]) -> Result<Vec<UnitStatus>> {
    let selected: Vec<_> = plan
        .placed
        .iter()
        .filter(|p| services.is_empty() || services.contains(&plan.unit(&p.unit).service))
        .collect();
    let mut machines: Vec<String> = selected.iter().map(|p| p.machine.clone()).collect();
    machines.sort();
    machines.dedup();
    let files_of = |m: &str| -> Vec<&str> {
        selected
            .iter()
            .filter(|p| p.machine == m)
            .flat_map(|p| plan.unit(&p.unit).file_names())
            .collect()
    };
    let surveys = survey_all(conn, &plan.env_name, &machines, files_of)?;
    let states: Vec<Result<BTreeMap<String, UnitState>>> = in_parallel(&machines, |m| {
        let starts: Vec<String> = selected
            .iter()
            .filter(|p| p.machine == *m)
            .map(|p| plan.unit(&p.unit).start())
            .collect();
        let names: Vec<&str> = starts.iter().map(String::as_str).collect();
        remote::states(conn, m, &names)
    });
    let mut by_machine = BTreeMap::new();
    for (machine, result) in machines.iter().zip(states) {
        by_machine.insert(machine.clone(), result?);
    }
    Ok(selected
        .into_iter()
        .map(|p| {
            let unit = plan.unit(&p.unit);
            let file = match unit.change(&surveys[&p.machine]) {
                Change::Unchanged => "up-to-date",
                Change::Changed => "different",
                Change::New => "missing",
            };
            let checked = unit.start();
            let state = by_machine[&p.machine]
                .get(&checked)
                .cloned()
                .unwrap_or_default();
            UnitStatus {
                unit: unit.name.clone(),
                service: unit.service.clone(),
                machine: p.machine.clone(),
                file,
                checked,
                state,
            }
        })
        .collect())
}
