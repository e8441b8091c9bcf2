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

/// Whether the attributes `content` carries hold a secret.
pub fn carries_secrets(content: &[u8]) -> bool {
    carried(content).is_some_and(|v| crate::attributes::secrets::has_secrets(&v))
}

/// `content` with the base64 values that carry attributes replaced by a
/// note, for the unified diff of a file holding secrets: base64 is no
/// mask, and the decoded changes (masked) follow the diff.
pub fn hide_carried(content: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(content);
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        match carrier_value(body) {
            Some(at) => {
                let hidden = body.len() - at;
                out.push_str(&body[..at]);
                out.push_str(&format!(
                    "<{hidden} characters of attributes holding secrets, hidden>"
                ));
                out.push_str(end);
            }
            None => out.push_str(line),
        }
    }
    out.into_bytes()
}

/// Where the attribute value of a carrier line starts: a unit's
/// `Environment=HERD_ATTRIBUTES_<i>=`, a Pod's `value: base64,`, a
/// Secret's `attributes:`.
fn carrier_value(line: &str) -> Option<usize> {
    let trimmed = line.trim_start();
    let indent = line.len() - trimmed.len();
    let unquoted = trimmed
        .strip_prefix("Environment=")
        .map(|r| r.trim_start_matches('"'));
    if let Some(rest) = unquoted
        && let Some(after) = rest.strip_prefix("HERD_ATTRIBUTES_")
        && let Some((index, _)) = after.split_once('=')
        && index.parse::<usize>().is_ok()
    {
        return Some(line.len() - rest.len() + "HERD_ATTRIBUTES_".len() + index.len() + 1);
    }
    for key in ["value: base64,", "attributes: "] {
        if trimmed.starts_with(key) && trimmed.len() > key.len() + 16 {
            return Some(indent + key.len());
        }
    }
    None
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
        let hidden = String::from_utf8(hide_carried(&new)).unwrap();
        assert!(
            hidden.contains("Environment=HERD_ATTRIBUTES_0=<"),
            "{hidden}"
        );
        assert!(
            hidden.contains("Environment=HERD_ATTRIBUTES_COUNT=1\n"),
            "{hidden}"
        );
        assert!(hidden.ends_with("ExecStart=/bin/true\n"), "{hidden}");
        let pod = "    - name: HERD_ATTRIBUTES\n      value: base64,eyJhIjoxLCJiIjoyfQ==\n";
        let hidden = String::from_utf8(hide_carried(pod.as_bytes())).unwrap();
        assert!(hidden.contains("      value: base64,<"), "{hidden}");
    }
}
