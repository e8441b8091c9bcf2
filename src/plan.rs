//! Build plans: the image and pod directories under some paths, the
//! dependencies between them, and building them in dependency order, in
//! parallel where they are independent, skipping what the cache has.

use crate::build::{self, BuildOptions, ImageSource};
use crate::cache;
use crate::dependency::PullPolicy;
use crate::manifest;
use crate::names::ImageName;
use crate::pods;
use crate::store::Store;
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Image,
    Pod,
}

/// Why one unit needs another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// `aci.dependencies` or a pod app's dependencies: its layers.
    Dependency,
    /// `builder.dependencies`: the root the builder runlevel runs in.
    Builder,
    /// `tester.dependencies` and `tester.aci.dependencies`: only `herd
    /// test` needs it.
    Tester,
}

/// One image or pod directory.
#[derive(Debug, Clone)]
pub struct Unit {
    pub dir: PathBuf,
    pub kind: Kind,
    /// The name from its manifest, before build scripts ran.
    pub name: String,
    /// Repositories (names without tags) the build produces.
    pub produces: Vec<String>,
    /// What it needs, by name.
    pub needs: Vec<(String, Edge)>,
}

/// The units under some paths and their dependencies.
#[derive(Debug)]
pub struct Plan {
    pub units: Vec<Unit>,
    /// For each unit, the units it needs (inside the plan) and why.
    pub edges: Vec<Vec<(usize, Edge)>>,
}

/// Finds every image (`aci-manifest.yml`) and pod (`pod-manifest.yml`)
/// directory at or under `paths`. A unit's own subdirectories are not
/// searched: its `files/` may hold anything.
pub fn discover(paths: &[PathBuf]) -> Result<Plan> {
    let mut dirs = Vec::new();
    for path in paths {
        if !path.is_dir() {
            bail!("{} is not a directory", path.display());
        }
        find_units(path, true, &mut dirs)?;
        if dirs.is_empty() {
            bail!(
                "{} holds no {} or {} (not an image or pod directory, nor a tree of them)",
                path.display(),
                manifest::IMAGE_MANIFEST,
                manifest::POD_MANIFEST
            );
        }
    }
    dirs.dedup();
    // Every unit is read even after one fails: a tree with ten broken
    // manifests reports all ten in one run, as cargo does.
    let mut problems = Vec::new();
    let mut units = Vec::new();
    for dir in &dirs {
        match read_unit(dir) {
            Ok(unit) => units.push(unit),
            Err(error) => problems.push(error),
        }
    }
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (index, unit) in units.iter().enumerate() {
        if let Some(own) = self_dependency(unit) {
            problems.push(anyhow::anyhow!(
                "dependency cycle: {own} -> {own} ({} depends on itself)",
                unit.dir.display()
            ));
        }
        for repository in &unit.produces {
            if let Some(other) = producer.insert(repository, index) {
                problems.push(anyhow::anyhow!(
                    "{} and {} both build {repository}",
                    units[other].dir.display(),
                    unit.dir.display()
                ));
            }
        }
    }
    crate::error::Problems::check(problems, "the build plan")?;
    let edges = units
        .iter()
        .map(|unit| {
            unit.needs
                .iter()
                .filter_map(|(name, edge)| {
                    let repository = name.parse::<ImageName>().ok()?.repository();
                    // An image built on an older version of itself takes
                    // that version from the store.
                    producer
                        .get(repository.as_str())
                        .filter(|&&i| !std::ptr::eq(&units[i], unit))
                        .map(|&i| (i, *edge))
                })
                .collect()
        })
        .collect();
    Ok(Plan { units, edges })
}

/// The unit's own name when it needs exactly itself (same repository and
/// tag): a cycle of one, never something to pull. A different version of
/// the same repository is an older build of it, taken from the store.
fn self_dependency(unit: &Unit) -> Option<&str> {
    let own: ImageName = unit.name.parse().ok()?;
    unit.needs.iter().find_map(|(name, _)| {
        let needed: ImageName = name.parse().ok()?;
        (needed.repository() == own.repository()
            && needed.tag() == own.tag()
            && needed.digest().is_none())
        .then_some(unit.name.as_str())
    })
}

/// A directory holding this file is only built when named explicitly
/// (slow examples, work in progress).
pub const SKIP_MARKER: &str = ".herd-skip";

fn find_units(dir: &Path, named: bool, found: &mut Vec<PathBuf>) -> Result<()> {
    if !named && dir.join(SKIP_MARKER).exists() {
        return Ok(());
    }
    if dir.join(manifest::IMAGE_MANIFEST).is_file() || dir.join(manifest::POD_MANIFEST).is_file() {
        found.push(dir.to_path_buf());
        return Ok(());
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| e.path())
        .collect();
    children.sort();
    for child in children {
        find_units(&child, false, found)?;
    }
    Ok(())
}

fn read_unit(dir: &Path) -> Result<Unit> {
    if dir.join(manifest::POD_MANIFEST).is_file() {
        let (pod, _) = pods::read_manifest(dir)?;
        let name: ImageName = pod.name.parse().map_err(anyhow::Error::msg)?;
        let mut produces = vec![name.repository()];
        let mut needs = Vec::new();
        for app in &pod.pod.apps {
            produces.push(
                name.with_path_suffix(&format!("_{}", pods::app_name(app)))
                    .map_err(anyhow::Error::msg)?
                    .repository(),
            );
            needs.extend(
                app.dependencies
                    .iter()
                    .map(|d| (d.clone(), Edge::Dependency)),
            );
        }
        return Ok(Unit {
            dir: dir.to_path_buf(),
            kind: Kind::Pod,
            name: pod.name,
            produces,
            needs,
        });
    }
    let manifest = ImageSource::read(dir)?.provisional_manifest()?;
    let name: ImageName = manifest.name.parse().map_err(anyhow::Error::msg)?;
    let needs = manifest
        .aci
        .dependencies
        .iter()
        .map(|d| (d.clone(), Edge::Dependency))
        .chain(
            manifest
                .builder
                .dependencies
                .iter()
                .map(|d| (d.clone(), Edge::Builder)),
        )
        .chain(
            manifest
                .tester
                .all_dependencies()
                .map(|d| (d.clone(), Edge::Tester)),
        )
        .collect();
    Ok(Unit {
        dir: dir.to_path_buf(),
        kind: Kind::Image,
        name: manifest.name,
        produces: vec![name.repository()],
        needs,
    })
}

impl Plan {
    /// The edges that order builds: tester dependencies are needed by
    /// tests only.
    fn build_edges(&self, unit: usize) -> impl Iterator<Item = usize> + '_ {
        let mut needed: Vec<usize> = self.edges[unit]
            .iter()
            .filter(|(_, e)| *e != Edge::Tester)
            .map(|(i, _)| *i)
            .collect();
        needed.sort_unstable();
        needed.dedup();
        needed.into_iter()
    }

    /// Units in an order where each comes after what it needs. A cycle is
    /// an error naming every unit in it.
    pub fn order(&self) -> Result<Vec<usize>> {
        let mut pending: Vec<usize> = (0..self.units.len())
            .map(|u| self.build_edges(u).count())
            .collect();
        let mut ready: VecDeque<usize> =
            (0..self.units.len()).filter(|&u| pending[u] == 0).collect();
        let mut order = Vec::new();
        while let Some(unit) = ready.pop_front() {
            order.push(unit);
            for dependent in self.dependents(unit) {
                pending[dependent] -= 1;
                if pending[dependent] == 0 {
                    ready.push_back(dependent);
                }
            }
        }
        if order.len() < self.units.len() {
            let stuck: Vec<usize> = (0..self.units.len()).filter(|u| pending[*u] > 0).collect();
            let cycle = self.find_cycle(&stuck);
            let names: Vec<&str> = cycle.iter().map(|&u| self.units[u].name.as_str()).collect();
            bail!("dependency cycle: {} -> {}", names.join(" -> "), names[0]);
        }
        Ok(order)
    }

    fn dependents(&self, unit: usize) -> Vec<usize> {
        (0..self.units.len())
            .filter(|&d| self.build_edges(d).any(|n| n == unit))
            .collect()
    }

    /// Follows needs from a stuck unit until one repeats: that loop is the
    /// cycle.
    fn find_cycle(&self, stuck: &[usize]) -> Vec<usize> {
        let mut path = vec![stuck[0]];
        while let Some(next) = path
            .last()
            .and_then(|&current| self.build_edges(current).find(|n| stuck.contains(n)))
        {
            if let Some(start) = path.iter().position(|&u| u == next) {
                return path[start..].to_vec();
            }
            path.push(next);
        }
        stuck.to_vec()
    }

    /// The graph in Graphviz dot: images as ellipses, pods as boxes,
    /// dependencies solid, builder dependencies dashed, tester dependencies
    /// dotted, images from outside the tree grey.
    pub fn dot(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out =
            String::from("digraph herd {\n  rankdir=BT;\n  node [fontname=\"sans-serif\"];\n");
        for unit in &self.units {
            let shape = if unit.kind == Kind::Pod {
                "box"
            } else {
                "ellipse"
            };
            out.push_str(&format!("  {} [shape={shape}];\n", quote(&unit.name)));
        }
        let mut external = std::collections::BTreeSet::new();
        for (index, unit) in self.units.iter().enumerate() {
            for (name, edge) in &unit.needs {
                let target = match self.edges[index].iter().find(|(i, e)| {
                    e == edge
                        && self.units[*i]
                            .produces
                            .iter()
                            .any(|p| name.starts_with(p.as_str()))
                }) {
                    Some((i, _)) => self.units[*i].name.clone(),
                    None => {
                        external.insert(name.clone());
                        name.clone()
                    }
                };
                let style = match edge {
                    Edge::Dependency => "solid",
                    Edge::Builder => "dashed",
                    Edge::Tester => "dotted",
                };
                out.push_str(&format!(
                    "  {} -> {} [style={style}];\n",
                    quote(&unit.name),
                    quote(&target)
                ));
            }
        }
        for name in external {
            out.push_str(&format!(
                "  {} [color=grey, fontcolor=grey];\n",
                quote(&name)
            ));
        }
        out.push_str("}\n");
        out
    }

    /// Builds every unit, `jobs` at a time, each after what it needs,
    /// calling `report` as units start and end. A failed unit's dependents
    /// are skipped; the others go on.
    pub fn execute(
        &self,
        store: &Store,
        options: &BuildOptions,
        use_cache: bool,
        jobs: usize,
        report: &(dyn Fn(&Event) + Sync),
    ) -> Vec<Outcome> {
        let order = self
            .order()
            .unwrap_or_else(|_| (0..self.units.len()).collect());
        let pending: Vec<usize> = (0..self.units.len())
            .map(|u| self.build_edges(u).count())
            .collect();
        let ready: VecDeque<usize> = order.iter().copied().filter(|&u| pending[u] == 0).collect();
        let state = Mutex::new(Schedule {
            ready,
            pending,
            outcomes: vec![None; self.units.len()],
            running: 0,
        });
        let wake = Condvar::new();
        let dependents: Vec<Vec<usize>> =
            (0..self.units.len()).map(|u| self.dependents(u)).collect();
        // git is asked once per repository, not once per image.
        let dirs: Vec<PathBuf> = self.units.iter().map(|u| u.dir.clone()).collect();
        let generated: Vec<PathBuf> = self
            .units
            .iter()
            .filter(|u| has_generated_version(&u.name))
            .map(|u| u.dir.clone())
            .collect();
        let revisions = crate::vcs::revisions(&dirs, &generated);
        std::thread::scope(|scope| {
            for _ in 0..jobs.max(1) {
                scope.spawn(|| {
                    loop {
                        let unit = {
                            let mut schedule =
                                state.lock().expect("no worker panics holding the lock");
                            loop {
                                if let Some(unit) = schedule.ready.pop_front() {
                                    schedule.running += 1;
                                    break Some(unit);
                                }
                                if schedule.running == 0 {
                                    break None;
                                }
                                schedule = wake
                                    .wait(schedule)
                                    .expect("no worker panics holding the lock");
                            }
                        };
                        let Some(unit) = unit else {
                            wake.notify_all();
                            return;
                        };
                        let mut guard = Running {
                            state: &state,
                            wake: &wake,
                            armed: true,
                        };
                        report(&Event::Started(unit));
                        let started = Instant::now();
                        let revision = revisions.get(&self.units[unit].dir).cloned();
                        let result = self.build_unit(
                            unit,
                            store,
                            options,
                            &revision.unwrap_or_default(),
                            use_cache,
                        );
                        let outcome = Outcome {
                            result: result.map_err(|e| format!("{e:#}")),
                            duration: started.elapsed(),
                        };
                        report(&Event::Finished(unit, &outcome));
                        let mut schedule = state.lock().expect("no worker panics holding the lock");
                        schedule.running -= 1;
                        guard.armed = false;
                        let failed = outcome.result.is_err();
                        schedule.outcomes[unit] = Some(outcome);
                        let mut stack = dependents[unit].clone();
                        while let Some(dependent) = stack.pop() {
                            if failed {
                                if schedule.outcomes[dependent].is_none() {
                                    let skipped = Outcome {
                                        result: Err(format!(
                                            "skipped: {} failed",
                                            self.units[unit].name
                                        )),
                                        duration: Duration::ZERO,
                                    };
                                    report(&Event::Finished(dependent, &skipped));
                                    schedule.outcomes[dependent] = Some(skipped);
                                    stack.extend(dependents[dependent].iter().copied());
                                }
                            } else {
                                schedule.pending[dependent] -= 1;
                                if schedule.pending[dependent] == 0 {
                                    schedule.ready.push_back(dependent);
                                }
                            }
                        }
                        wake.notify_all();
                    }
                });
            }
        });
        let outcomes = state.into_inner().expect("workers are done").outcomes;
        outcomes
            .into_iter()
            .enumerate()
            .map(|(u, o)| {
                o.unwrap_or(Outcome {
                    result: Err(format!(
                        "not built: {} is part of a dependency cycle",
                        self.units[u].name
                    )),
                    duration: Duration::ZERO,
                })
            })
            .collect()
    }

    fn build_unit(
        &self,
        unit: usize,
        store: &Store,
        options: &BuildOptions,
        revision: &crate::vcs::Revision,
        use_cache: bool,
    ) -> Result<Built> {
        let unit = &self.units[unit];
        let epoch = options
            .source_date_epoch
            .map_or_else(|| build::source_date_epoch_or(|| revision.epoch), Ok)?;
        // Dependencies are resolved (and pulled, as `--pull` allows) once,
        // here: the key is over what they resolve to, and the build then
        // finds them in the store. What this plan builds is never pulled.
        let mut dependency_digests = Vec::new();
        for (name, _) in unit.needs.iter().filter(|(_, e)| *e != Edge::Tester) {
            let parsed: ImageName = name.parse().map_err(anyhow::Error::msg)?;
            let built_here = self
                .units
                .iter()
                .any(|u| u.produces.contains(&parsed.repository()));
            let policy = if built_here {
                PullPolicy::Never
            } else {
                options.pull
            };
            let resolved = crate::dependency::resolve(store, &parsed, policy)
                .with_context(|| format!("resolving dependency {name}{}", needed_by(unit, name)))?;
            dependency_digests.push(resolved.reference());
        }
        let options = BuildOptions {
            source_date_epoch: Some(epoch),
            pull: PullPolicy::Never,
            ..options.clone()
        };
        // A generated version follows the commit, so the commit is an input.
        let commit = if has_generated_version(&unit.name) {
            revision.commit_label()
        } else {
            String::new()
        };
        let key = cache::key(&unit.dir, &dependency_digests, &options, epoch, &commit)?;
        if use_cache && let Some(record) = cache::lookup(store, &key)? {
            cache::remember_dir(store, &unit.dir, &record)?;
            return Ok(Built {
                cached: true,
                tags: record.tags,
            });
        }
        let tags: Vec<(String, String)> = match unit.kind {
            Kind::Image => {
                let built = build::build_image(&unit.dir, store, &options)?;
                vec![(built.name.to_string(), built.manifest.digest().to_string())]
            }
            Kind::Pod => {
                let pod = pods::build_pod(&unit.dir, store, &options)?;
                let mut tags: Vec<(String, String)> = pod
                    .apps
                    .iter()
                    .map(|a| (a.name.to_string(), a.manifest.digest().to_string()))
                    .collect();
                tags.push((pod.name.to_string(), pod.manifest.digest().to_string()));
                tags
            }
        };
        let record = cache::Record { tags };
        cache::remember(store, &key, &record)?;
        cache::remember_dir(store, &unit.dir, &record)?;
        Ok(Built {
            cached: false,
            tags: record.tags,
        })
    }
}

/// Which app of a pod unit needs `dependency` (" of app A of pod P"), for
/// errors; nothing for an image.
fn needed_by(unit: &Unit, dependency: &str) -> String {
    if unit.kind != Kind::Pod {
        return String::new();
    }
    let Ok((pod, _)) = pods::read_manifest(&unit.dir) else {
        return String::new();
    };
    pod.pod
        .apps
        .iter()
        .find(|app| app.dependencies.iter().any(|d| d == dependency))
        .map(|app| format!(" of app {} of pod {}", pods::app_name(app), unit.name))
        .unwrap_or_default()
}

/// Whether a unit's build generates its version (its name has none).
fn has_generated_version(name: &str) -> bool {
    name.parse::<ImageName>().is_ok_and(|n| n.tag().is_none())
}

/// A unit a worker is building. If the worker panics (a bug, or a report
/// written to a closed stderr), dropping this takes the unit off the
/// running count and wakes the others: they would otherwise wait for it
/// forever and the build would hang instead of failing.
struct Running<'a> {
    state: &'a Mutex<Schedule>,
    wake: &'a Condvar,
    armed: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut schedule = self.state.lock().unwrap_or_else(|e| e.into_inner());
            schedule.running -= 1;
        }
        self.wake.notify_all();
    }
}

struct Schedule {
    ready: VecDeque<usize>,
    /// How many of its needs each unit still waits for.
    pending: Vec<usize>,
    outcomes: Vec<Option<Outcome>>,
    running: usize,
}

/// What happened to a unit.
pub enum Event<'a> {
    Started(usize),
    Finished(usize, &'a Outcome),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// The tags produced, or the error (or why it was skipped).
    pub result: Result<Built, String>,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
pub struct Built {
    pub cached: bool,
    /// (name, manifest digest) of every tag the unit produced.
    pub tags: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(dir: &Path, name: &str, dependencies: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        let list = dependencies.join(", ");
        std::fs::write(
            dir.join("aci-manifest.yml"),
            format!("name: {name}\naci:\n  dependencies: [{list}]\n"),
        )
        .unwrap();
    }

    #[test]
    fn orders_by_dependency_and_ignores_files_of_units() {
        let root = tempfile::tempdir().unwrap();
        image(&root.path().join("leaf"), "x.io/leaf:1", &["x.io/mid:1"]);
        image(&root.path().join("mid"), "x.io/mid:1", &["x.io/base:1"]);
        image(&root.path().join("nested/base"), "x.io/base:1", &[]);
        // A manifest inside a unit's files is content, not a unit.
        image(
            &root.path().join("mid/files/opt/other"),
            "x.io/other:1",
            &[],
        );
        let plan = discover(&[root.path().to_path_buf()]).unwrap();
        assert_eq!(plan.units.len(), 3);
        let names: Vec<&str> = plan
            .order()
            .unwrap()
            .into_iter()
            .map(|u| plan.units[u].name.as_str())
            .collect();
        assert_eq!(names, ["x.io/base:1", "x.io/mid:1", "x.io/leaf:1"]);
    }

    #[test]
    fn every_broken_manifest_and_a_self_dependency_are_reported_at_once() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let dir = root.path().join(format!("broken{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("aci-manifest.yml"), "name: x.io/b:1\nnope: 1\n").unwrap();
        }
        image(
            &root.path().join("selfish"),
            "x.io/selfish:1",
            &["x.io/selfish:1"],
        );
        image(&root.path().join("upgrade"), "x.io/up:2", &["x.io/up:1"]);
        let err = discover(&[root.path().to_path_buf()]).unwrap_err();
        let problems = &err
            .downcast_ref::<crate::error::Problems>()
            .unwrap()
            .problems;
        assert_eq!(problems.len(), 4, "{problems:?}");
        for (i, problem) in problems.iter().take(3).enumerate() {
            assert!(
                problem.to_string().contains(&format!("broken{i}")),
                "{problem}"
            );
        }
        assert!(
            problems[3]
                .to_string()
                .contains("dependency cycle: x.io/selfish:1 -> x.io/selfish:1"),
            "{}",
            problems[3]
        );
    }

    #[test]
    fn a_cycle_names_every_image_in_it() {
        let root = tempfile::tempdir().unwrap();
        image(&root.path().join("a"), "x.io/a:1", &["x.io/c:1"]);
        image(&root.path().join("b"), "x.io/b:1", &["x.io/a:1"]);
        image(&root.path().join("c"), "x.io/c:1", &["x.io/b:1"]);
        image(&root.path().join("d"), "x.io/d:1", &[]);
        let err = discover(&[root.path().to_path_buf()])
            .unwrap()
            .order()
            .unwrap_err()
            .to_string();
        for name in ["x.io/a:1", "x.io/b:1", "x.io/c:1"] {
            assert!(err.contains(name), "{err}");
        }
        assert!(!err.contains("x.io/d:1"), "{err}");
    }
}
