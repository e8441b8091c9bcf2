//! Where each unit runs: fleet's `[X-Fleet]` rules over the environment's
//! machines, decided locally and deterministically (fleet did it in its
//! cluster; herd has none).
//!
//! - `MachineMetadata=k=v [k2=v2...]`: every key must hold; several lines
//!   with one key are alternatives (fleet's rule). `name` is the machine's
//!   name.
//! - `MachineID=id`: the machine whose `machineId` (else name) is `id`.
//! - `MachineOf=unit`: the machine of that (non-global) unit.
//! - `Conflicts=glob`: no unit matching the glob on the same machine (both
//!   ways: the rule holds whichever of the two is placed first).
//! - `Global=true`: every machine that fits gets the unit.
//!
//! A unit with a choice goes to the machine holding the fewest units so
//! far, the first by name on a tie; units are placed in name order, global
//! units first, `MachineOf` units after their target.

use crate::environments::Machine;
use anyhow::{Result, bail};
use std::collections::{BTreeMap, BTreeSet};

/// The placement rules of one unit, read from its `[X-Fleet]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// key -> accepted values.
    pub metadata: BTreeMap<String, BTreeSet<String>>,
    pub machine_id: Option<String>,
    pub machine_of: Option<String>,
    pub conflicts: Vec<String>,
    pub global: bool,
}

impl Rules {
    /// The `[X-Fleet]` section of a unit file (`Key=Value` lines; other
    /// sections ignored). Unknown keys were refused when the environment
    /// was loaded, but a custom template can write its own section: they
    /// are refused here too.
    pub fn from_unit(unit: &str, text: &str) -> Result<Rules> {
        let mut rules = Rules::default();
        let mut in_fleet = false;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('[') {
                in_fleet = line == "[X-Fleet]";
                continue;
            }
            if !in_fleet || line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            let at = format!("{unit} line {}", number + 1);
            let Some((key, value)) = line.split_once('=') else {
                bail!("{at}: expected Key=Value in [X-Fleet], found {line:?}");
            };
            let value = value.trim();
            match key.trim() {
                "MachineMetadata" => {
                    for pair in value.split_whitespace() {
                        let pair = pair.trim_matches('"');
                        let Some((k, v)) = pair.split_once('=') else {
                            bail!("{at}: MachineMetadata takes key=value pairs, found {pair:?}");
                        };
                        rules
                            .metadata
                            .entry(k.to_string())
                            .or_default()
                            .insert(v.to_string());
                    }
                }
                "MachineID" => rules.machine_id = Some(value.to_string()),
                "MachineOf" => rules.machine_of = Some(value.to_string()),
                "Conflicts" => {
                    for glob in value.split_whitespace() {
                        globset::Glob::new(glob)
                            .map_err(|e| anyhow::anyhow!("{at}: Conflicts={glob}: {e}"))?;
                        rules.conflicts.push(glob.to_string());
                    }
                }
                "Global" => {
                    rules.global = match value {
                        "true" | "yes" | "1" => true,
                        "false" | "no" | "0" => false,
                        _ => bail!("{at}: Global takes true or false, found {value:?}"),
                    }
                }
                other => bail!("{at}: [X-Fleet] has no key `{other}`"),
            }
        }
        Ok(rules)
    }

    /// Whether `machine` satisfies the metadata and MachineID rules.
    fn fits(&self, machine: &Machine) -> bool {
        let metadata = machine.metadata();
        let metadata_ok = self
            .metadata
            .iter()
            .all(|(k, values)| metadata.get(k).is_some_and(|v| values.contains(v)));
        let id = machine.machine_id.as_deref().unwrap_or(&machine.name);
        metadata_ok && self.machine_id.as_deref().is_none_or(|m| m == id)
    }

    /// The rules a machine must fit, for messages.
    fn describe_fit(&self) -> String {
        let mut parts: Vec<String> = vec![];
        for (k, values) in &self.metadata {
            let alternatives: Vec<String> = values.iter().map(|v| format!("{k}={v}")).collect();
            parts.push(format!("MachineMetadata={}", alternatives.join(" or ")));
        }
        if let Some(id) = &self.machine_id {
            parts.push(format!("MachineID={id}"));
        }
        parts.join(", ")
    }
}

/// One unit to place.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The unit's file name, `prod_web_h1.service`.
    pub unit: String,
    pub rules: Rules,
}

/// `unit` goes on `machine` (a global unit has one per machine).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placed {
    pub unit: String,
    pub machine: String,
}

/// Places every unit, or fails naming the first unit (in placement order)
/// that cannot go anywhere and the rule that stops it. The result is
/// sorted by unit, then machine.
pub fn place(units: &[Candidate], machines: &[Machine]) -> Result<Vec<Placed>> {
    if machines.is_empty() {
        bail!("config.yml lists no `machines:`, so there is nowhere to deploy");
    }
    let mut machines: Vec<&Machine> = machines.iter().collect();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    let by_name: BTreeMap<&str, &Candidate> = units.iter().map(|u| (u.unit.as_str(), u)).collect();
    let order = placement_order(units, &by_name)?;
    // machine -> units on it
    let mut on: BTreeMap<&str, Vec<&str>> =
        machines.iter().map(|m| (m.name.as_str(), vec![])).collect();
    let mut home: BTreeMap<&str, &str> = BTreeMap::new();
    let mut placed = vec![];
    for unit in order {
        let fitting: Vec<&Machine> = machines
            .iter()
            .copied()
            .filter(|m| unit.rules.fits(m))
            .collect();
        if fitting.is_empty() {
            let names: Vec<&str> = machines.iter().map(|m| m.name.as_str()).collect();
            bail!(
                "cannot place {}: no machine has {} (machines: {})",
                unit.unit,
                unit.rules.describe_fit(),
                names.join(", ")
            );
        }
        let mut allowed = fitting.clone();
        if let Some(target) = &unit.rules.machine_of {
            let target = unit_name(target);
            let Some(target_machine) = home.get(target.as_str()) else {
                // placement_order checked it exists and is not global.
                bail!(
                    "cannot place {}: MachineOf={target} is not placed",
                    unit.unit
                );
            };
            allowed.retain(|m| m.name == *target_machine);
            if allowed.is_empty() {
                bail!(
                    "cannot place {}: MachineOf={target} is on {target_machine}, which does not have {}",
                    unit.unit,
                    unit.rules.describe_fit()
                );
            }
        }
        let conflict_free = |m: &&Machine| -> Option<String> {
            on[m.name.as_str()]
                .iter()
                .find(|other| conflicts(unit, by_name[**other]))
                .map(|other| other.to_string())
        };
        let blocked: Vec<(String, String)> = allowed
            .iter()
            .filter_map(|m| conflict_free(m).map(|o| (m.name.clone(), o)))
            .collect();
        allowed.retain(|m| conflict_free(m).is_none());
        let why_blocked = || {
            blocked
                .iter()
                .map(|(m, o)| format!("{m} holds {o}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if unit.rules.global {
            if !blocked.is_empty() {
                bail!(
                    "cannot place global unit {}: Conflicts rules it out of machines it must run on ({})",
                    unit.unit,
                    why_blocked()
                );
            }
            for m in allowed {
                on.get_mut(m.name.as_str()).unwrap().push(&unit.unit);
                placed.push(Placed {
                    unit: unit.unit.clone(),
                    machine: m.name.clone(),
                });
            }
            continue;
        }
        let Some(best) = allowed
            .iter()
            .min_by_key(|m| (on[m.name.as_str()].len(), &m.name))
        else {
            bail!(
                "cannot place {}: Conflicts rules out every machine that fits ({})",
                unit.unit,
                why_blocked()
            );
        };
        on.get_mut(best.name.as_str()).unwrap().push(&unit.unit);
        home.insert(&unit.unit, &best.name);
        placed.push(Placed {
            unit: unit.unit.clone(),
            machine: best.name.clone(),
        });
    }
    placed.sort();
    Ok(placed)
}

/// Global units first, then the others by name, each `MachineOf` unit
/// after its target; refuses unknown, global or cyclic targets.
fn placement_order<'a>(
    units: &'a [Candidate],
    by_name: &BTreeMap<&str, &'a Candidate>,
) -> Result<Vec<&'a Candidate>> {
    let mut sorted: Vec<&Candidate> = units.iter().collect();
    sorted.sort_by(|a, b| (!a.rules.global, &a.unit).cmp(&(!b.rules.global, &b.unit)));
    let mut order = vec![];
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for unit in &sorted {
        let mut chain = vec![*unit];
        let mut current = *unit;
        while let Some(target) = &current.rules.machine_of {
            let target = unit_name(target);
            let Some(next) = by_name.get(target.as_str()) else {
                bail!(
                    "cannot place {}: MachineOf={target} names no unit of this environment",
                    current.unit
                );
            };
            if next.rules.global {
                bail!(
                    "cannot place {}: MachineOf={target} is a global unit, on every machine",
                    current.unit
                );
            }
            if chain.iter().any(|c| c.unit == next.unit) {
                let names: Vec<&str> = chain.iter().map(|c| c.unit.as_str()).collect();
                bail!(
                    "cannot place {}: MachineOf goes round in a circle ({} -> {})",
                    current.unit,
                    names.join(" -> "),
                    next.unit
                );
            }
            if done.contains(next.unit.as_str()) {
                break;
            }
            chain.push(next);
            current = next;
        }
        for c in chain.into_iter().rev() {
            if done.insert(&c.unit) {
                order.push(c);
            }
        }
    }
    Ok(order)
}

/// fleet names units with their suffix; a rule may leave it out.
fn unit_name(name: &str) -> String {
    if name.contains('.') && (name.ends_with(".service") || name.ends_with(".timer")) {
        name.to_string()
    } else {
        format!("{name}.service")
    }
}

/// Whether either unit's `Conflicts=` matches the other (with or without
/// its `.service` suffix).
fn conflicts(a: &Candidate, b: &Candidate) -> bool {
    let matches = |rules: &Rules, name: &str| {
        let short = name.strip_suffix(".service").unwrap_or(name);
        rules.conflicts.iter().any(|g| {
            globset::Glob::new(g)
                .map(|g| g.compile_matcher())
                .is_ok_and(|m| m.is_match(name) || m.is_match(short))
        })
    };
    a.unit != b.unit && (matches(&a.rules, &b.unit) || matches(&b.rules, &a.unit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(name: &str, metadata: &[(&str, &str)]) -> Machine {
        Machine {
            name: name.into(),
            ssh: name.into(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect(),
            machine_id: None,
        }
    }

    fn unit(name: &str, fleet: &str) -> Candidate {
        let text = format!("[Service]\nExecStart=/bin/true\n[X-Fleet]\n{fleet}\n");
        Candidate {
            unit: format!("{name}.service"),
            rules: Rules::from_unit(name, &text).unwrap(),
        }
    }

    fn lines(placed: &[Placed]) -> Vec<String> {
        placed
            .iter()
            .map(|p| format!("{} -> {}", p.unit, p.machine))
            .collect()
    }

    fn three() -> Vec<Machine> {
        vec![
            machine("gamma", &[("rack", "2"), ("role", "db")]),
            machine("alpha", &[("rack", "1"), ("role", "db")]),
            machine("beta", &[("rack", "1"), ("role", "front")]),
        ]
    }

    #[test]
    fn metadata_global_and_spreading() {
        let units = vec![
            unit("p_db_1", "MachineMetadata=role=db\nConflicts=p_db_*"),
            unit("p_db_2", "MachineMetadata=role=db\nConflicts=p_db_*"),
            unit("p_log_all", "Global=true"),
            unit("p_web_1", "MachineMetadata=name=beta"),
            unit("p_free_1", ""),
            unit("p_side_1", "MachineOf=p_db_2"),
            unit("p_rack_1", "MachineMetadata=rack=1 role=front"),
        ];
        let placed = place(&units, &three()).unwrap();
        assert_eq!(
            lines(&placed),
            [
                "p_db_1.service -> alpha",
                "p_db_2.service -> gamma",
                "p_free_1.service -> beta",
                "p_log_all.service -> alpha",
                "p_log_all.service -> beta",
                "p_log_all.service -> gamma",
                "p_rack_1.service -> beta",
                "p_side_1.service -> gamma",
                "p_web_1.service -> beta",
            ]
        );
        // The same whatever the order of the input.
        let mut reversed = units.clone();
        reversed.reverse();
        assert_eq!(place(&reversed, &three()).unwrap(), placed);
    }

    #[test]
    fn impossible_placements_name_unit_and_rule() {
        let err = place(&[unit("p_x_1", "MachineMetadata=role=cache")], &three()).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot place p_x_1.service: no machine has MachineMetadata=role=cache"),
            "{err}"
        );
        let units = [
            unit("p_db_1", "MachineMetadata=role=db\nConflicts=p_db_*"),
            unit("p_db_2", "MachineMetadata=role=db\nConflicts=p_db_*"),
            unit("p_db_3", "MachineMetadata=role=db\nConflicts=p_db_*"),
        ];
        let err = place(&units, &three()).unwrap_err().to_string();
        assert!(
            err.contains("cannot place p_db_3.service: Conflicts"),
            "{err}"
        );
        assert!(err.contains("alpha holds p_db_1.service"), "{err}");
        let err = place(&[unit("p_a_1", "MachineOf=p_b_1")], &three()).unwrap_err();
        assert!(
            err.to_string()
                .contains("MachineOf=p_b_1.service names no unit"),
            "{err}"
        );
        let units = [
            unit("p_a_1", "MachineOf=p_b_1"),
            unit("p_b_1", "MachineOf=p_a_1"),
        ];
        let err = place(&units, &three()).unwrap_err();
        assert!(err.to_string().contains("circle"), "{err}");
        let units = [
            unit("p_a_1", "MachineOf=p_b_1\nMachineMetadata=role=front"),
            unit("p_b_1", "MachineMetadata=name=alpha"),
        ];
        let err = place(&units, &three()).unwrap_err();
        assert!(
            err.to_string()
                .contains("MachineOf=p_b_1.service is on alpha"),
            "{err}"
        );
        assert!(place(&[unit("p_a_1", "")], &[]).is_err());
    }

    #[test]
    fn metadata_lines_with_one_key_are_alternatives() {
        let units = [unit(
            "p_a_1",
            "MachineMetadata=rack=2\nMachineMetadata=rack=9\nMachineID=gamma",
        )];
        assert_eq!(
            lines(&place(&units, &three()).unwrap()),
            ["p_a_1.service -> gamma"]
        );
        assert!(Rules::from_unit("u", "[X-Fleet]\nPriority=1\n").is_err());
        assert!(Rules::from_unit("u", "[X-Fleet]\nGlobal=maybe\n").is_err());
    }
}
