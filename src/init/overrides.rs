//! The runtime override: attributes handed to a container at start, merged
//! on top of every image's. Read from the environment:
//!
//! | variable | holds |
//! |---|---|
//! | `TEMPLATER_OVERRIDE` | dgr's name: JSON, optionally `base64,`-prefixed |
//! | `HERD_ATTRIBUTES_FILE` | the path of a JSON or YAML file |
//! | `HERD_ATTRIBUTES_0`, `_1`, ... | pieces of one value, concatenated in order (`HERD_ATTRIBUTES_COUNT` says how many); raw base64 as `herd units` splits it, or JSON |
//! | `HERD_ATTRIBUTES` | JSON, optionally `base64,`-prefixed |
//!
//! Several may be set: they merge in the order of this table, lowest first.

use crate::error::InputError;
use base64::Engine;
use serde_json::Value;
use std::path::Path;

pub const VARIABLE: &str = "HERD_ATTRIBUTES";
pub const FILE_VARIABLE: &str = "HERD_ATTRIBUTES_FILE";
pub const COUNT_VARIABLE: &str = "HERD_ATTRIBUTES_COUNT";
pub const DGR_VARIABLE: &str = "TEMPLATER_OVERRIDE";

const BASE64_PREFIX: &str = "base64,";

/// The overrides the environment holds, lowest precedence first, each with
/// the variable it came from (for `--explain`-style origins and errors).
pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, Value)>, String> {
    let mut found = vec![];
    if let Some(text) = get(DGR_VARIABLE) {
        found.push((DGR_VARIABLE.to_string(), parse_text(&text, DGR_VARIABLE)?));
    }
    if let Some(path) = get(FILE_VARIABLE) {
        let value = parse_file(Path::new(&path)).map_err(|e| format!("{FILE_VARIABLE}: {e}"))?;
        found.push((format!("{FILE_VARIABLE} ({path})"), value));
    }
    if let Some(text) = split_value(get)? {
        let label = format!("{VARIABLE}_0..");
        // `herd units` splits the bare base64 text; JSON or an explicitly
        // prefixed value is taken as it is.
        let text = if text.trim_start().starts_with(['{', '[']) || text.starts_with(BASE64_PREFIX) {
            text
        } else {
            format!("{BASE64_PREFIX}{text}")
        };
        found.push((label.clone(), parse_text(&text, &label)?));
    }
    if let Some(text) = get(VARIABLE) {
        found.push((VARIABLE.to_string(), parse_text(&text, VARIABLE)?));
    }
    Ok(found)
}

/// Refuses an override variable whose value is not UTF-8: read as text it
/// would be dropped, and the container would start on defaults without a
/// word.
pub fn check_text(
    variables: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<(), String> {
    for (name, value) in variables {
        let name = name.to_string_lossy();
        let ours = name == DGR_VARIABLE || name == FILE_VARIABLE || name.starts_with(VARIABLE);
        if ours && value.to_str().is_none() {
            return Err(format!(
                "{name} is not valid UTF-8 text; expected a JSON object of attributes, optionally `base64,`-prefixed"
            ));
        }
    }
    Ok(())
}

/// `HERD_ATTRIBUTES_0`, `HERD_ATTRIBUTES_1`, ... joined: as many as
/// `HERD_ATTRIBUTES_COUNT` says, else up to the first one missing.
fn split_value(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<String>, String> {
    let count = match get(COUNT_VARIABLE) {
        Some(text) => Some(
            text.trim()
                .parse::<usize>()
                .map_err(|_| format!("{COUNT_VARIABLE} is `{text}`: expected a number"))?,
        ),
        None => None,
    };
    let mut joined = String::new();
    for index in 0.. {
        if count.is_some_and(|count| index >= count) {
            break;
        }
        match get(&format!("{VARIABLE}_{index}")) {
            Some(piece) => joined.push_str(&piece),
            None if count.is_some() => {
                return Err(format!(
                    "{COUNT_VARIABLE} is {} but {VARIABLE}_{index} is not set",
                    count.unwrap_or(0)
                ));
            }
            None => break,
        }
    }
    Ok((!joined.is_empty() || count.is_some_and(|c| c > 0)).then_some(joined))
}

/// Parses an override given as text: JSON, or `base64,` and the base64 of
/// JSON. It must be a map (or null, which changes nothing).
pub fn parse_text(text: &str, source: &str) -> Result<Value, String> {
    let expected = "expected a JSON object of attributes, optionally `base64,`-prefixed";
    let decoded;
    let json = match text.strip_prefix(BASE64_PREFIX) {
        Some(encoded) => {
            let compact: String = encoded
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| format!("{source} is not valid base64 after `base64,`: {e}"))?;
            decoded = String::from_utf8(bytes).map_err(|_| {
                format!("{source}: the base64 does not decode to UTF-8 text; {expected}")
            })?;
            decoded.as_str()
        }
        None => text,
    };
    if json.trim().is_empty() {
        return Ok(Value::Null);
    }
    let value: Value = serde_json::from_str(json)
        .map_err(|e| format!("{source} is not valid JSON: {e}; {expected}"))?;
    ensure_map(value).map_err(|kind| format!("{source} holds {kind}; {expected}"))
}

/// Reads an override file: JSON, or YAML (a superset of JSON).
pub fn parse_file(path: &Path) -> Result<Value, InputError> {
    let text = crate::yaml::read_bounded(path)?;
    // JSON first: YAML refuses tabs, which JSON files often have.
    let value = match serde_json::from_str::<Value>(&text) {
        Ok(value) => value,
        Err(_) => crate::yaml::parse_value(path, &text)?,
    };
    ensure_map(value).map_err(|kind| {
        InputError::new(path, format!("holds {kind}; expected a map of attributes"))
    })
}

/// `herd try --attributes`: a file when one exists at that path, else text.
pub fn parse_argument(argument: &str) -> Result<Value, String> {
    let path = Path::new(argument);
    let text_like = argument.trim_start().starts_with('{') || argument.starts_with("base64,");
    if !text_like && path.is_file() {
        return parse_file(path).map_err(|e| e.to_string());
    }
    // What reads as a path is one: "not valid JSON" would hide the typo.
    let path_like = argument.contains('/')
        || [".yml", ".yaml", ".json"]
            .iter()
            .any(|ext| argument.ends_with(ext));
    if !text_like && path_like {
        return Err(format!(
            "--attributes {argument}: no such file (expected a JSON object of attributes, \
             or the path of a JSON or YAML file)"
        ));
    }
    parse_text(argument, "--attributes")
}

fn ensure_map(value: Value) -> Result<Value, &'static str> {
    match value {
        Value::Object(_) | Value::Null => Ok(value),
        Value::Array(_) => Err("a list"),
        Value::String(_) => Err("a string"),
        Value::Number(_) => Err("a number"),
        Value::Bool(_) => Err("a boolean"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |key| map.get(key).cloned()
    }

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn plain_and_base64_json() {
        assert_eq!(
            parse_text(r#"{"a": {"b": 1}}"#, "X").unwrap(),
            json!({"a": {"b": 1}})
        );
        assert_eq!(
            parse_text(&format!("base64,{}", b64(r#"{"a": 2}"#)), "X").unwrap(),
            json!({"a": 2})
        );
        assert_eq!(parse_text("", "X").unwrap(), Value::Null);
    }

    #[test]
    fn errors_say_what_was_expected() {
        let err = parse_text("{a: 1}", "HERD_ATTRIBUTES").unwrap_err();
        assert!(
            err.starts_with(
                "HERD_ATTRIBUTES is not valid JSON: key must be a string at line 1 column 2"
            ),
            "{err}"
        );
        assert!(err.contains("expected a JSON object"), "{err}");
        assert!(parse_text("[1]", "X").unwrap_err().contains("holds a list"));
        assert!(
            parse_text("base64,%%%", "X")
                .unwrap_err()
                .contains("not valid base64")
        );
    }

    #[test]
    fn sources_merge_in_order_and_split_pieces_join() {
        let encoded = b64(r#"{"from": "split", "n": 1}"#);
        let (one, two) = encoded.split_at(5);
        let get = env(&[
            ("TEMPLATER_OVERRIDE", r#"{"from": "dgr"}"#),
            ("HERD_ATTRIBUTES_COUNT", "2"),
            ("HERD_ATTRIBUTES_0", one),
            ("HERD_ATTRIBUTES_1", two),
            ("HERD_ATTRIBUTES", r#"{"n": 2}"#),
        ]);
        let found = from_env(&get).unwrap();
        let labels: Vec<&str> = found.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            vec![
                "TEMPLATER_OVERRIDE",
                "HERD_ATTRIBUTES_0..",
                "HERD_ATTRIBUTES"
            ]
        );
        assert_eq!(found[1].1, json!({"from": "split", "n": 1}));
        // Without a count, pieces are read up to the first gap; JSON works too.
        let get = env(&[
            ("HERD_ATTRIBUTES_0", r#"{"a":"#),
            ("HERD_ATTRIBUTES_1", "1}"),
            ("HERD_ATTRIBUTES_3", "x"),
        ]);
        assert_eq!(from_env(&get).unwrap()[0].1, json!({"a": 1}));
        let get = env(&[
            ("HERD_ATTRIBUTES_COUNT", "2"),
            ("HERD_ATTRIBUTES_0", "e30="),
        ]);
        assert!(
            from_env(&get)
                .unwrap_err()
                .contains("HERD_ATTRIBUTES_1 is not set")
        );
    }

    #[test]
    fn files_in_json_or_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let json_file = dir.path().join("a.json");
        std::fs::write(&json_file, "{\n\t\"a\": [1, 2]\n}\n").unwrap();
        assert_eq!(parse_file(&json_file).unwrap(), json!({"a": [1, 2]}));
        let yaml_file = dir.path().join("a.yml");
        std::fs::write(&yaml_file, "a:\n  b: x\n").unwrap();
        let get = env(&[("HERD_ATTRIBUTES_FILE", yaml_file.to_str().unwrap())]);
        assert_eq!(from_env(&get).unwrap()[0].1, json!({"a": {"b": "x"}}));
        std::fs::write(&yaml_file, "a: b\n  c: d\n").unwrap();
        let err = parse_file(&yaml_file).unwrap_err();
        assert!(err.line.is_some(), "{err}");
        assert!(parse_argument(yaml_file.to_str().unwrap()).is_err());
        assert_eq!(parse_argument(r#"{"x": 1}"#).unwrap(), json!({"x": 1}));
    }
}
