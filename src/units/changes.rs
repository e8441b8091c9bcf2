//! The attribute changes between two versions of a generated file, for
//! `herd gen --check --diff`: a unit carries its attributes as base64 (in
//! `Environment=HERD_ATTRIBUTES_<i>=` lines, a Pod's `HERD_ATTRIBUTES`, a
//! Secret's data), which a unified diff shows as one changed 1.9 KB line.
//! Decoded and compared value by value, a review reads
//! `- log.level: info` / `+ log.level: warn`, secrets masked.

use crate::attributes::secrets::Masker;
use base64::Engine;
use serde_json::Value;
use std::collections::BTreeMap;

/// The `- path: value` / `+ path: value` lines of what changed between the
/// attributes `old` and `new` carry, or None when neither carries any
/// herd can read (a unit template that passes them another way).
pub fn attribute_changes(old: Option<&[u8]>, new: Option<&[u8]>) -> Option<Vec<String>> {
    let old = old.and_then(carried);
    let new = new.and_then(carried);
    if old.is_none() && new.is_none() {
        return None;
    }
    let empty = Value::Object(Default::default());
    let (old, new) = (old.unwrap_or(empty.clone()), new.unwrap_or(empty));
    let masker = Masker::new([&old, &new]);
    let (mut before, mut after) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &old, &mut before);
    flatten("", &new, &mut after);
    let mut paths: Vec<&String> = before.keys().chain(after.keys()).collect();
    paths.sort();
    paths.dedup();
    let mut lines = vec![];
    for path in paths {
        let (was, is) = (before.get(path), after.get(path));
        if was == is {
            continue;
        }
        for (sign, value) in [("-", was), ("+", is)] {
            if let Some(value) = value {
                let shown = shown(&masker.mask_at(path, value));
                let line = format!("{sign} {path}: {shown}");
                lines.push(crate::terminal::escape_controls(&line).into_owned());
            }
        }
    }
    Some(lines)
}

/// A value as a review line shows it: strings bare, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() && !s.contains(['\n', '\r']) => s.clone(),
        other => other.to_string(),
    }
}

/// Leaves by path: `a.b`, `list[0].c`; empty maps and lists are leaves.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = match prefix {
                    "" => key.clone(),
                    _ => format!("{prefix}.{key}"),
                };
                flatten(&path, child, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), child, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), value.clone());
        }
    }
}

/// The attributes a generated file carries: a systemd unit's
/// `Environment=HERD_ATTRIBUTES_<i>=` lines, or in a Kubernetes document
/// its `HERD_ATTRIBUTES` value and a Secret's `attributes`.
fn carried(content: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(content).ok()?;
    from_environment_lines(text).or_else(|| from_kubernetes(text))
}

fn from_environment_lines(text: &str) -> Option<Value> {
    let mut chunks: BTreeMap<usize, &str> = BTreeMap::new();
    let mut count = None;
    for line in text.lines() {
        let Some(assignment) = line.trim().strip_prefix("Environment=") else {
            continue;
        };
        let assignment = assignment.trim_matches('"');
        let Some((key, value)) = assignment.split_once('=') else {
            continue;
        };
        if key == "HERD_ATTRIBUTES_COUNT" {
            count = value.parse::<usize>().ok();
        } else if let Some(index) = key.strip_prefix("HERD_ATTRIBUTES_")
            && let Ok(index) = index.parse::<usize>()
        {
            chunks.entry(index).or_insert(value);
        }
    }
    let count = count?;
    let joined: String = (0..count)
        .map(|i| chunks.get(&i).copied())
        .collect::<Option<Vec<&str>>>()?
        .concat();
    decode(&joined)
}

fn from_kubernetes(text: &str) -> Option<Value> {
    let document: Value = serde_yaml_ng::from_str(text).ok()?;
    if document["kind"] == "Secret" {
        let data = document["data"]["attributes"].as_str()?;
        let json = base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?;
        return serde_json::from_slice(&json).ok();
    }
    let value = find_env(&document, "HERD_ATTRIBUTES")?;
    decode(value.strip_prefix("base64,")?)
}

/// The value of the first `{name: NAME, value: ...}` entry in `document`.
fn find_env<'a>(document: &'a Value, name: &str) -> Option<&'a str> {
    match document {
        Value::Object(map) => {
            if map.get("name").and_then(Value::as_str) == Some(name)
                && let Some(value) = map.get("value").and_then(Value::as_str)
            {
                return Some(value);
            }
            map.values().find_map(|v| find_env(v, name))
        }
        Value::Array(items) => items.iter().find_map(|v| find_env(v, name)),
        _ => None,
    }
}

fn decode(base64: &str) -> Option<Value> {
    let json = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unit(attributes: &Value) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(attributes.to_string());
        format!(
            "[Service]\n{}\nExecStart=/bin/true\n",
            super::super::environment_lines(&encoded)
        )
        .into_bytes()
    }

    #[test]
    fn changed_values_are_listed_by_path_and_secrets_masked() {
        let old = unit(
            &json!({"log": {"level": "info"}, "db": {"password": "old-pw"}, "hosts": ["a", "b"]}),
        );
        let new = unit(
            &json!({"log": {"level": "warn"}, "db": {"password": "new-pw"}, "hosts": ["a"], "port": 3}),
        );
        let lines = attribute_changes(Some(&old), Some(&new)).unwrap();
        assert_eq!(
            lines,
            [
                "- db.password: ******",
                "+ db.password: ******",
                "- hosts[1]: b",
                "- log.level: info",
                "+ log.level: warn",
                "+ port: 3",
            ]
        );
        assert_eq!(attribute_changes(Some(b"[Service]\n"), None), None);
    }
}
