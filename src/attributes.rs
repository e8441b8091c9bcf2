//! Attributes: the values templates are rendered with. Read from
//! `attributes/*.yml` files (`default:`, `override:`, `include:` roots),
//! merged by the rules of FORMATS.md section 4, with a record of which
//! source set each value so `--explain` can say.

use crate::error::InputError;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One attribute file as written by the user.
#[derive(Debug, Clone)]
pub struct AttributeFile {
    pub path: PathBuf,
    pub defaults: Value,
    pub overrides: Value,
    /// Names of common attribute files to merge below this one
    /// (environments only; see `environments`).
    pub includes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    default: Value,
    #[serde(default, rename = "override")]
    overrides: Value,
    #[serde(default)]
    include: Vec<String>,
}

impl AttributeFile {
    pub fn read(path: &Path) -> Result<AttributeFile, InputError> {
        let text = crate::yaml::read_bounded(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<AttributeFile, InputError> {
        let raw: RawFile = if text.trim().is_empty() {
            RawFile {
                default: Value::Null,
                overrides: Value::Null,
                include: vec![],
            }
        } else {
            crate::yaml::parse(path, text)?
        };
        for (key, value) in [("default", &raw.default), ("override", &raw.overrides)] {
            if !matches!(value, Value::Null | Value::Object(_)) {
                return Err(InputError::new(
                    path,
                    format!("`{key}:` must hold a map of attributes"),
                ));
            }
        }
        Ok(AttributeFile {
            path: path.to_path_buf(),
            defaults: raw.default,
            overrides: raw.overrides,
            includes: raw.include,
        })
    }
}

/// Every `*.yml`/`*.yaml` under `dir`, recursively, in lexical order of
/// their path below `dir`. A missing directory has no files.
pub fn read_dir(dir: &Path) -> Result<Vec<AttributeFile>, InputError> {
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut paths = vec![];
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| InputError::new(dir, format!("cannot list: {e}")))?;
        let is_yaml = matches!(
            entry.path().extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        );
        if entry.file_type().is_file() && is_yaml {
            paths.push(entry.into_path());
        }
    }
    paths.iter().map(|p| AttributeFile::read(p)).collect()
}

/// Merges `top` onto `base`: maps merge key by key (recursively), anything
/// else, lists included, replaces the old value whole. An explicit null in
/// `top` sets null.
pub fn merge_value(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(key) {
                    Some(existing) => merge_value(existing, value),
                    None => {
                        base.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (base, top) => *base = top.clone(),
    }
}

/// Attributes merged from several sources, lowest precedence first, with
/// the source that set each value.
#[derive(Debug, Clone, Default)]
pub struct MergedAttributes {
    value: Value,
    /// Dotted path of each set value (a leaf, a list, or an empty map) ->
    /// the source that set it.
    origins: BTreeMap<String, String>,
}

impl MergedAttributes {
    pub fn new() -> Self {
        MergedAttributes {
            value: Value::Object(Map::new()),
            origins: BTreeMap::new(),
        }
    }

    /// Merges one source on top of what is there.
    pub fn apply(&mut self, top: &Value, source: &str) {
        if top.is_null() {
            return;
        }
        record_origins(&mut self.origins, "", top, source);
        merge_value(&mut self.value, top);
    }

    /// Merges the files' `default:` blocks in order, then their `override:`
    /// blocks, each labelled with its file.
    pub fn apply_files(&mut self, files: &[AttributeFile]) {
        for file in files {
            self.apply(&file.defaults, &file.path.display().to_string());
        }
        for file in files {
            self.apply(
                &file.overrides,
                &format!("{} (override)", file.path.display()),
            );
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn into_value(self) -> Value {
        self.value
    }

    /// Each set value's dotted path, its value, and the source that set it.
    pub fn explain(&self) -> Vec<(String, Value, String)> {
        self.origins
            .iter()
            .filter_map(|(path, source)| {
                lookup(&self.value, path).map(|v| (path.clone(), v.clone(), source.clone()))
            })
            .collect()
    }
}

fn record_origins(
    origins: &mut BTreeMap<String, String>,
    prefix: &str,
    value: &Value,
    source: &str,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            // A map merges: only the keys it names change owner. But a map
            // replacing a scalar drops that scalar's record.
            if !prefix.is_empty() {
                origins.remove(prefix);
            }
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                record_origins(origins, &path, child, source);
            }
        }
        _ => {
            // A scalar, list or null replaces whatever was below this path.
            // The paths below sort together right after `below`: a range,
            // not a scan of every path, so merging stays linear.
            let below = format!("{prefix}.");
            let replaced: Vec<String> = origins
                .range(below.clone()..)
                .take_while(|(k, _)| k.starts_with(&below))
                .map(|(k, _)| k.clone())
                .collect();
            for key in replaced {
                origins.remove(&key);
            }
            origins.insert(prefix.to_string(), source.to_string());
        }
    }
}

fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

/// Key names whose values are secrets: shown masked by `--explain` and logs.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "private_key",
        "privatekey",
        "api_key",
        "apikey",
        "credential",
    ]
    .iter()
    .any(|marker| key.contains(marker))
}

/// A copy of `value` with the values of secret keys replaced by `"******"`.
pub fn mask_secrets(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let shown = if is_secret_key(k) && !v.is_object() {
                        Value::from("******")
                    } else {
                        mask_secrets(v)
                    };
                    (k.clone(), shown)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_lists_and_scalars_replace_null_sets_null() {
        let mut base = json!({"a": {"x": 1, "y": 2}, "list": [1, 2, 3], "s": "old", "n": 5});
        merge_value(
            &mut base,
            &json!({"a": {"y": 3, "z": 4}, "list": [9], "s": "new", "n": null}),
        );
        assert_eq!(
            base,
            json!({"a": {"x": 1, "y": 3, "z": 4}, "list": [9], "s": "new", "n": null})
        );
    }

    #[test]
    fn defaults_then_overrides_in_file_order() {
        let one = AttributeFile::parse(
            Path::new("a.yml"),
            "default: {port: 1, host: a}\noverride: {port: 9}\n",
        )
        .unwrap();
        let two =
            AttributeFile::parse(Path::new("b.yml"), "default: {port: 2, host: b}\n").unwrap();
        let mut merged = MergedAttributes::new();
        merged.apply_files(&[one, two]);
        assert_eq!(merged.value(), &json!({"port": 9, "host": "b"}));
        let explained = merged.explain();
        assert_eq!(explained[0], ("host".into(), json!("b"), "b.yml".into()));
        assert_eq!(
            explained[1],
            ("port".into(), json!(9), "a.yml (override)".into())
        );
    }

    #[test]
    fn a_map_replacing_a_scalar_forgets_the_scalar_origin() {
        let mut merged = MergedAttributes::new();
        merged.apply(&json!({"db": "none"}), "image");
        merged.apply(&json!({"db": {"host": "h"}}), "env");
        let paths: Vec<String> = merged
            .explain()
            .into_iter()
            .map(|(p, _, s)| format!("{p}={s}"))
            .collect();
        assert_eq!(paths, vec!["db.host=env"]);
    }

    #[test]
    fn unknown_root_key_is_an_error_with_hint() {
        let err = AttributeFile::parse(Path::new("x.yml"), "defaults:\n  a: 1\n").unwrap_err();
        assert!(err.message.contains("did you mean `default`"), "{err}");
        let err = AttributeFile::parse(Path::new("x.yml"), "default: [1]\n").unwrap_err();
        assert!(err.message.contains("map"), "{err}");
    }

    #[test]
    fn secrets_are_masked() {
        let masked =
            mask_secrets(&json!({"db": {"password": "hunter2", "user": "u"}, "api_token": "t"}));
        assert_eq!(
            masked,
            json!({"db": {"password": "******", "user": "u"}, "api_token": "******"})
        );
    }
}
