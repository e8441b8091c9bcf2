//! Image names: OCI references such as `aci.example.com/aci-mariadb:10.1-25`
//! or `...:10.1-25@sha256:<hex>` (pinned by digest), their parts, generated
//! versions and version order (FORMATS.md section 1).

use crate::digest::Digest;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// A validated image reference: `[domain/]path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageName {
    domain: Option<String>,
    path: String,
    tag: Option<String>,
    /// The manifest digest the name is pinned to; when set, it decides
    /// which image is meant (the tag is then only a label).
    digest: Option<Digest>,
}

impl ImageName {
    /// The registry host (and port), when the name has one.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The repository path without the domain: `aci-mariadb`, `team/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The last path segment: `aci-mariadb`.
    pub fn tiny_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same name, not pinned.
    pub fn without_digest(&self) -> ImageName {
        ImageName {
            digest: None,
            ..self.clone()
        }
    }

    /// The name without its tag: `aci.example.com/aci-mariadb`.
    pub fn repository(&self) -> String {
        match &self.domain {
            Some(domain) => format!("{domain}/{}", self.path),
            None => self.path.clone(),
        }
    }

    pub fn with_tag(&self, tag: &str) -> Result<ImageName, String> {
        check_tag(tag)?;
        Ok(ImageName {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    pub fn with_domain(&self, domain: &str) -> Result<ImageName, String> {
        check_domain(domain)?;
        Ok(ImageName {
            domain: Some(domain.to_string()),
            ..self.clone()
        })
    }

    /// A name for another image in the same repository namespace:
    /// `aci.example.com/pod-mysql` + `_mariadb` = `aci.example.com/pod-mysql_mariadb`.
    pub fn with_path_suffix(&self, suffix: &str) -> Result<ImageName, String> {
        let text = format!("{}{suffix}", self.repository());
        let mut name: ImageName = text.parse()?;
        name.tag = self.tag.clone();
        Ok(name) // another image: no digest
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageName {
    type Err = String;

    /// Validates against the OCI distribution reference grammar and says
    /// which part is wrong.
    fn from_str(full: &str) -> Result<ImageName, String> {
        if full.is_empty() {
            return Err("the image name is empty".into());
        }
        let (text, digest) = match full.split_once('@') {
            Some((name, digest)) => {
                let digest = digest
                    .parse::<Digest>()
                    .map_err(|e| format!("in {full:?}: {e}"))?;
                (name, Some(digest))
            }
            None => (full, None),
        };
        let (domain, rest) = match text.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (Some(first), rest)
            }
            _ => (None, text),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let (path, tag) = match rest.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
            _ => (rest, None),
        };
        if let Some(domain) = domain {
            check_domain(domain).map_err(|e| format!("in {text:?}: {e}"))?;
        }
        check_path(path).map_err(|e| format!("in {text:?}: {e}"))?;
        if let Some(tag) = tag {
            check_tag(tag).map_err(|e| format!("in {text:?}: {e}"))?;
        }
        if text.len() > 255 {
            return Err(format!(
                "the image name {text:?} is longer than 255 characters"
            ));
        }
        Ok(ImageName {
            domain: domain.map(str::to_string),
            path: path.to_string(),
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || domain.starts_with('[') => (host, Some(port)),
        _ => (domain, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("the registry port {port:?} is not a number"));
    }
    if host.starts_with('[') && host.ends_with(']') {
        return Ok(());
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !c.starts_with('-')
            && !c.ends_with('-')
    };
    if host.split('.').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "the registry host {host:?} is not a valid host name (letters, digits, '-' and '.')"
        ))
    }
}

fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the repository path is empty".into());
    }
    for component in path.split('/') {
        if !path_component_ok(component) {
            return Err(format!(
                "the repository path component {component:?} is not valid: use lowercase letters and digits, \
                 separated by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let separator_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[separator_start..i];
        let separator_ok = matches!(separator, "." | "_" | "__")
            || (!separator.is_empty() && separator.bytes().all(|b| b == b'-'));
        if !separator_ok {
            return false;
        }
    }
}

fn check_tag(tag: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && word(tag.as_bytes()[0])
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the version {tag:?} is not a valid tag: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'"
        ))
    }
}

/// A version for a name that has none: `YYYYMMDD.HHMMSS` of `epoch_seconds`,
/// plus `-v<git short hash>` when one is known, plus `-dirty` when the
/// directory holds changes that commit lacks.
pub fn generated_version(epoch_seconds: u64, git_short_hash: Option<&str>, dirty: bool) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch_seconds);
    // RFC 3339 is "YYYY-MM-DDTHH:MM:SSZ"; keep the digits.
    let stamp = humantime::format_rfc3339_seconds(time).to_string();
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let mut version = format!("{}.{}", &digits[..8], &digits[8..14]);
    if let Some(hash) = git_short_hash {
        version.push_str("-v");
        version.push_str(hash);
        if dirty {
            version.push_str("-dirty");
        }
    }
    version
}

/// Orders versions the way dgr did: dot-separated numeric parts compare as
/// numbers (missing parts are 0), a version with a `-suffix` sorts after the
/// same version without one, suffixes compare by their numeric prefix, then
/// byte by byte.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a_main, a_suffix) = split_suffix(a);
    let (b_main, b_suffix) = split_suffix(b);
    let a_parts: Vec<&str> = a_main.split('.').collect();
    let b_parts: Vec<&str> = b_main.split('.').collect();
    for i in 0..a_parts.len().max(b_parts.len()) {
        let x = a_parts.get(i).copied().unwrap_or("0");
        let y = b_parts.get(i).copied().unwrap_or("0");
        let order = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    match (a_suffix, b_suffix) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => numeric_prefix(x)
            .cmp(&numeric_prefix(y))
            .then_with(|| x.cmp(y)),
    }
}

fn split_suffix(version: &str) -> (&str, Option<&str>) {
    match version.split_once('-') {
        Some((main, suffix)) => (main, Some(suffix)),
        None => (version, None),
    }
}

fn numeric_prefix(text: &str) -> u64 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_full_name_into_its_parts() {
        let name: ImageName = "aci.example.com/team/aci-mariadb:10.1-25".parse().unwrap();
        assert_eq!(name.domain(), Some("aci.example.com"));
        assert_eq!(name.path(), "team/aci-mariadb");
        assert_eq!(name.tiny_name(), "aci-mariadb");
        assert_eq!(name.tag(), Some("10.1-25"));
        assert_eq!(name.to_string(), "aci.example.com/team/aci-mariadb:10.1-25");
    }

    #[test]
    fn a_name_may_be_pinned_by_digest_with_or_without_a_tag() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for (text, tag) in [
            (format!("localhost:5000/app@sha256:{hex}"), None),
            (format!("localhost:5000/app:1@sha256:{hex}"), Some("1")),
        ] {
            let name: ImageName = text.parse().unwrap();
            assert_eq!(name.domain(), Some("localhost:5000"));
            assert_eq!(name.path(), "app");
            assert_eq!(name.tag(), tag);
            assert_eq!(name.digest().unwrap().hex(), hex);
            assert_eq!(name.to_string(), text);
        }
        for bad in [
            "x.io/app@sha256:abc",
            "x.io/app@",
            "x.io/app@md5:00",
            "@sha256:x",
        ] {
            assert!(bad.parse::<ImageName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_port_is_not_a_tag() {
        let name: ImageName = "localhost:5000/app".parse().unwrap();
        assert_eq!(name.domain(), Some("localhost:5000"));
        assert_eq!(name.tag(), None);
        let name: ImageName = "localhost:5000/app:1".parse().unwrap();
        assert_eq!(name.tag(), Some("1"));
    }

    #[test]
    fn rejects_names_outside_the_grammar() {
        for bad in [
            "",
            "Aci.example.com/UPPER:1",
            "aci.example.com/app:",
            "aci.example.com/app:-x",
            "x.com/a//b",
            "x.com/a-",
            "-x.com/a",
            "x.com:port/a",
        ] {
            assert!(
                bad.parse::<ImageName>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn accepts_separators_of_the_grammar() {
        for good in ["a.b/c__d", "a.b/c-----d", "a.b/c.d_e", "a.b/c:V_1.0-rc"] {
            assert!(
                good.parse::<ImageName>().is_ok(),
                "{good:?} should be accepted"
            );
        }
    }

    #[test]
    fn versions_order_numerically_then_by_suffix() {
        assert_eq!(compare_versions("10.1", "9.9"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1"), Ordering::Equal);
        assert_eq!(compare_versions("1.0-1", "1.0"), Ordering::Greater);
        assert_eq!(compare_versions("10.1-25", "10.1-3"), Ordering::Greater);
        assert_eq!(compare_versions("1-2a", "1-2b"), Ordering::Less);
    }

    #[test]
    fn generated_versions_are_date_and_time() {
        assert_eq!(generated_version(0, None, false), "19700101.000000");
        assert_eq!(
            generated_version(1_700_000_000, Some("abc1234"), false),
            "20231114.221320-vabc1234"
        );
        assert_eq!(
            generated_version(1_700_000_000, Some("abc1234"), true),
            "20231114.221320-vabc1234-dirty"
        );
    }
}
