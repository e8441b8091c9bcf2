//! Which image a dependency names, and whether herd may ask a registry
//! for it (`--pull`, FORMATS.md section 1).
//!
//! A dependency with a version (`aci.example.com/aci-debian:12-3`) or a
//! digest names one image. One without either (`aci.example.com/aci-debian`,
//! as every dgr example wrote them) means the highest version there is:
//! the store's first, then the registry's tags. Only tags that start with
//! a digit are versions; `latest` and other words are not, so they are
//! never picked for an unversioned name.

use crate::names::{self, ImageName};
use crate::registry;
use crate::store::Store;
use anyhow::{Result, anyhow, bail};
use oci_spec::image::Descriptor;

/// When a build may go to a registry for a dependency, as podman's and
/// docker's `--pull`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Never: a dependency missing from the store is an error.
    Never,
    /// Only what the store lacks.
    #[default]
    Missing,
    /// Every dependency is fetched again (an unversioned one: the
    /// registry's highest version), even when the store has it.
    Always,
}

/// A dependency as it was resolved: the name with the version used, and
/// the store's descriptor of it.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: ImageName,
    pub descriptor: Descriptor,
}

impl Resolved {
    /// `name:version@digest`: what a build records of its dependency.
    pub fn reference(&self) -> String {
        let digest = crate::store::from_oci_digest(self.descriptor.digest());
        format!("{}@{digest}", self.name.without_digest())
    }
}

/// Resolves `name` in `store`, pulling under `policy`.
pub fn resolve(store: &Store, name: &ImageName, policy: PullPolicy) -> Result<Resolved> {
    if name.tag().is_none() && name.digest().is_none() {
        return resolve_unversioned(store, name, policy);
    }
    let found = |descriptor| Resolved {
        name: name.clone(),
        descriptor,
    };
    // A digest names content: the store's copy is that content.
    let refresh = policy == PullPolicy::Always && name.digest().is_none();
    if !refresh && let Some(descriptor) = store.resolve(name)? {
        return Ok(found(descriptor));
    }
    if policy == PullPolicy::Never {
        let missing = store
            .require(name)
            .err()
            .map_or_else(|| format!("{name} is not in the store"), |e| e.to_string());
        bail!("{missing}; not pulled (--pull never)");
    }
    tracing::info!("pulling {name}");
    let descriptor =
        registry::pull(store, name, &registry::Options::default()).map_err(|pull_error| {
            // Keep the store's message (what it has instead) first.
            let missing = store
                .require(name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_else(|| format!("{name} is in the store"));
            anyhow!("{missing}; pulling it failed: {pull_error:#}")
        })?;
    Ok(found(descriptor))
}

/// The highest version of `name`'s repository: in the store, else (or,
/// with `always`, after pulling the registry's highest) from the registry.
fn resolve_unversioned(store: &Store, name: &ImageName, policy: PullPolicy) -> Result<Resolved> {
    if policy != PullPolicy::Always
        && let Some(found) = highest_in_store(store, name)?
    {
        return Ok(found);
    }
    if policy == PullPolicy::Never {
        bail!(
            "{name} has no version and the store {} has no version of it; not pulled (--pull never)",
            store.root().display()
        );
    }
    let tags = registry::list_tags(store, name, &registry::Options::default()).map_err(|e| {
        anyhow!("{name} has no version and the store has none of it; listing the registry's tags failed: {e:#}")
    })?;
    let Some(highest) = highest_version(tags.iter().map(String::as_str)) else {
        bail!(
            "{name} has no version, the store has none of it and the registry has no version tag of it (tags: {})",
            if tags.is_empty() {
                "none".to_string()
            } else {
                tags.join(", ")
            }
        );
    };
    let versioned = name.with_tag(highest).map_err(anyhow::Error::msg)?;
    tracing::info!("{name} has no version: the registry's highest is {highest}");
    resolve(store, &versioned, PullPolicy::Always)?;
    highest_in_store(store, name)?
        .ok_or_else(|| anyhow!("{versioned} was pulled but is not in the store"))
}

/// The store's highest version of `name`'s repository.
fn highest_in_store(store: &Store, name: &ImageName) -> Result<Option<Resolved>> {
    let repository = name.repository();
    let candidates: Vec<(ImageName, Descriptor)> = store
        .tags()?
        .into_iter()
        .filter_map(|tag| {
            let tagged: ImageName = tag.name.parse().ok()?;
            (tagged.repository() == repository
                && tagged.digest().is_none()
                && tagged.tag().is_some())
            .then_some((tagged, tag.descriptor))
        })
        .collect();
    let Some(highest) =
        highest_version(candidates.iter().filter_map(|(n, _)| n.tag())).map(str::to_string)
    else {
        return Ok(None);
    };
    Ok(candidates
        .into_iter()
        .find(|(n, _)| n.tag() == Some(highest.as_str()))
        .map(|(name, descriptor)| Resolved { name, descriptor }))
}

/// The highest of `tags` that are versions (start with a digit), in the
/// version order of [`names::compare_versions`]; versions equal in that
/// order (`1.0`, `1`) are told apart by their bytes, so the pick never
/// depends on the order tags were listed in.
fn highest_version<'a>(tags: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    tags.filter(|t| t.starts_with(|c: char| c.is_ascii_digit()))
        .max_by(|a, b| names::compare_versions(a, b).then_with(|| a.cmp(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_version_ignores_words() {
        let tags = ["latest", "9", "12-3", "12-10", "12", "main", "1.0"];
        assert_eq!(highest_version(tags.into_iter()), Some("12-10"));
        assert_eq!(highest_version(["latest", "x"].into_iter()), None);
        assert_eq!(highest_version(["1", "1.0"].into_iter()), Some("1.0"));
        assert_eq!(highest_version(["1.0", "1"].into_iter()), Some("1.0"));
    }
}
