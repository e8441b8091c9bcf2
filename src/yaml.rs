//! Strict YAML reading for every file herd takes from the user: serde types
//! with `deny_unknown_fields`, errors turned into `file:line: message` with
//! the closest known key for a typo.

use crate::error::InputError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads and parses `path` as a `T`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, InputError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::new(path, format!("cannot read: {e}")))?;
    parse(path, &text)
}

/// Parses `text`, reporting errors against `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, InputError> {
    serde_yaml_ng::from_str(text).map_err(|e| to_input_error(path, &e))
}

/// A YAML document as a JSON value: the form attributes are merged in.
/// Keys must be strings; an empty document is null.
pub fn parse_value(path: &Path, text: &str) -> Result<serde_json::Value, InputError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    parse(path, text)
}

fn to_input_error(path: &Path, error: &serde_yaml_ng::Error) -> InputError {
    let mut message = error.to_string();
    // serde_yaml appends " at line L column C"; we put the position first.
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    if let Some(hint) = closest_key_hint(&message) {
        message.push_str(&hint);
    }
    let location = error.location();
    InputError {
        file: path.to_path_buf(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or
/// "expected `a` or `b`"), names the known field closest to `x`.
fn closest_key_hint(message: &str) -> Option<String> {
    let rest = message.split("unknown field `").nth(1)?;
    let (unknown, expected) = rest.split_once('`')?;
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = closest(unknown, &known)?;
    Some(format!(" (did you mean `{best}`?)"))
}

/// The candidate closest to `word`, if it is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| {
            (
                strsim::jaro_winkler(&word.to_lowercase(), &c.to_lowercase()),
                *c,
            )
        })
        .filter(|(score, _)| *score > 0.75)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        dependencies: Option<Vec<String>>,
    }

    #[test]
    fn unknown_key_names_line_and_closest_key() {
        let err = parse::<Sample>(Path::new("m.yml"), "name: a\ndependencys: []\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(
            err.message.contains("unknown field `dependencys`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("did you mean `dependencies`?"),
            "{}",
            err.message
        );
        assert!(err.to_string().starts_with("m.yml:2:"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_line() {
        let err = parse::<Sample>(Path::new("m.yml"), "name: a\ndependencies: 3\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }
}
