//! Strict YAML reading for every file herd takes from the user: serde types
//! with `deny_unknown_fields`, errors turned into `file:line: message` with
//! the closest known key for a typo. Every file passes [`guard`] too:
//! bounded size and nesting, no key twice in a map.

mod guard;

pub use guard::{MAX_DEPTH, MAX_FILE_BYTES};

use crate::error::InputError;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads and parses `path` as a `T`.
pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, InputError> {
    let text = read_bounded(path)?;
    parse(path, &text)
}

/// The text of a YAML file, refused unread past [`MAX_FILE_BYTES`].
pub fn read_bounded(path: &Path) -> Result<String, InputError> {
    use std::io::Read;
    let cannot = |e: std::io::Error| InputError::new(path, format!("cannot read: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = vec![];
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(InputError::new(
            path,
            format!(
                "is larger than {} MiB, the most herd reads of a YAML file",
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    String::from_utf8(bytes).map_err(|_| InputError::new(path, "is not UTF-8 text; YAML must be"))
}

/// Parses `text`, reporting errors against `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, InputError> {
    guard::check_shape(path, text)?;
    let value = serde_yaml_ng::from_str(text).map_err(|e| to_input_error(path, &e))?;
    guard::check_duplicates(path, text)?;
    Ok(value)
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
    fn duplicate_keys_name_both_lines() {
        let text = "name: a\nx:\n  y: 1\n  z: 2\n  y: 3\n";
        let err = parse::<serde_json::Value>(Path::new("m.yml"), text).unwrap_err();
        assert_eq!(err.line, Some(5), "{err}");
        assert!(err.message.contains("key `y` appears twice"), "{err}");
        assert!(err.message.contains("first on line 3"), "{err}");
        let err = parse::<Sample>(Path::new("m.yml"), "name: a\nname: b\n").unwrap_err();
        assert!(err.message.contains("name"), "{err}");
        // The same key in two maps is fine.
        parse::<serde_json::Value>(Path::new("m.yml"), "a: {k: 1}\nb: {k: 2}\n").unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let err = parse::<serde_json::Value>(Path::new("d.yml"), &deep).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(err.message.contains("levels"), "{err}");
        let block: String = (0..1000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        let err = parse::<serde_json::Value>(Path::new("d.yml"), &block).unwrap_err();
        assert_eq!(err.line, Some(MAX_DEPTH + 1), "{err}");
        let dashes = format!("{}x\n", "- ".repeat(1000));
        assert!(parse::<serde_json::Value>(Path::new("d.yml"), &dashes).is_err());
        // Ordinary files with text blocks, brackets in strings and
        // comments pass.
        let fine = "a:\n  b: [1, {c: \"]]]\"}]\n  s: |\n    [[[[\n      deep text\n  t: x # [\nl:\n  - - 1\n    - 2\n";
        parse::<serde_json::Value>(Path::new("f.yml"), fine).unwrap();
    }

    #[test]
    fn wrong_type_names_the_line() {
        let err = parse::<Sample>(Path::new("m.yml"), "name: a\ndependencies: 3\n").unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }
}
