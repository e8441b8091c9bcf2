//! Secrets among attributes: which values are secret, hiding them
//! wherever herd shows attributes (`--explain`, `gen --diff`), and setting
//! them apart from the rest (a Kubernetes Secret, private unit files).
//!
//! A value is secret when a key on its path looks like one (`password`,
//! `api_token`, everything below `passwords:`), or when it is a string
//! holding a password in a connection string (`mysql://user:pw@host`,
//! Go's `user:pw@tcp(host)`).

use serde_json::{Map, Value};

/// What a masked secret is shown as.
pub const MASK: &str = "******";

/// Secret values shorter than this are not searched for inside other
/// values: replacing every `a` or `12` would make the output unreadable,
/// and a secret that short protects nothing.
const MIN_SEARCHED: usize = 4;

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

/// The byte ranges of the passwords in a connection string's user
/// information: after `scheme://user:`, or at the start of a Go SQL
/// driver DSN (`user:pw@tcp(...)`, `@unix(...)`), up to the `@`.
fn password_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut ranges = vec![];
    for start in text.match_indices("://").map(|(i, _)| i + 3) {
        let rest = &text[start..];
        let authority = &rest[..rest.find(['/', '?', '#', ' ']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
            && colon + 1 < at
        {
            ranges.push((start + colon + 1, start + at));
        }
    }
    // A Go DSN has its `/` after the `@`; without `tcp(`/`unix(` after the
    // `@`, `name:tag@sha256:...` would be an image reference, not a password.
    if let Some(at) = text.find('@')
        && (text[at..].starts_with("@tcp(") || text[at..].starts_with("@unix("))
        && !text[..at].contains(['/', ' '])
        && let Some(colon) = text[..at].find(':')
        && colon + 1 < at
    {
        ranges.push((colon + 1, at));
    }
    ranges.sort_unstable();
    ranges.dedup();
    ranges
}

/// True when `value`, or anything below it, is secret.
pub fn has_secrets(value: &Value) -> bool {
    match value {
        Value::Object(map) => map_has_secrets(map),
        Value::Array(items) => items.iter().any(has_secrets),
        Value::String(s) => !password_ranges(s).is_empty(),
        _ => false,
    }
}

/// `has_secrets` of a map's entries.
pub fn map_has_secrets(map: &Map<String, Value>) -> bool {
    map.iter()
        .any(|(k, v)| (is_secret_key(k) && !v.is_null()) || has_secrets(v))
}

/// Splits `value` into what may be shown and what is secret, so that
/// merging the second onto the first gives `value` back. A list holding a
/// secret goes to the secret side whole (lists merge whole).
pub fn split(value: &Value) -> (Value, Value) {
    let Value::Object(map) = value else {
        return (value.clone(), Value::Object(Map::new()));
    };
    let mut public = Map::new();
    let mut secret = Map::new();
    for (key, child) in map {
        if is_secret_key(key) {
            secret.insert(key.clone(), child.clone());
        } else if child.is_object() {
            let (p, s) = split(child);
            public.insert(key.clone(), p);
            if s.as_object().is_some_and(|s| !s.is_empty()) {
                secret.insert(key.clone(), s);
            }
        } else if has_secrets(child) {
            secret.insert(key.clone(), child.clone());
        } else {
            public.insert(key.clone(), child.clone());
        }
    }
    (Value::Object(public), Value::Object(secret))
}

/// Hides the secrets of a set of attributes wherever they appear: the
/// values of secret keys, the same texts inside any other value (a
/// password repeated in a DSN), and connection string passwords.
#[derive(Debug, Default)]
pub struct Masker {
    /// Secret texts, longest first (so a secret holding another is
    /// replaced whole).
    secrets: Vec<String>,
}

impl Masker {
    /// Collects the secrets of each of `values`.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a Value>) -> Masker {
        let mut secrets = vec![];
        for value in values {
            collect(value, false, &mut secrets);
        }
        secrets.retain(|s| s.len() >= MIN_SEARCHED);
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Masker { secrets }
    }

    /// `text` with every secret replaced by `******`.
    pub fn mask_str(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        // Passwords in connection strings, even when no key names them.
        for (start, end) in password_ranges(&out).into_iter().rev() {
            if &out[start..end] != MASK {
                out.replace_range(start..end, MASK);
            }
        }
        out
    }

    /// A copy of `value` to show: values below secret keys are `******`,
    /// other strings go through `mask_str`.
    pub fn mask(&self, value: &Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let shown = if is_secret_key(k) {
                            mask_all(v)
                        } else {
                            self.mask(v)
                        };
                        (k.clone(), shown)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.mask(v)).collect()),
            Value::String(s) => Value::String(self.mask_str(s)),
            other => other.clone(),
        }
    }

    /// `value`, found at the dotted `path`, as it may be shown.
    pub fn mask_at(&self, path: &str, value: &Value) -> Value {
        if path.split(['.', '[']).any(is_secret_key) {
            mask_all(value)
        } else {
            self.mask(value)
        }
    }
}

/// Every leaf of `value` masked, its shape kept (`{root: ******}`).
fn mask_all(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), mask_all(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(mask_all).collect()),
        Value::Null => Value::Null,
        _ => Value::from(MASK),
    }
}

fn collect(value: &Value, below_secret: bool, secrets: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                collect(v, below_secret || is_secret_key(k), secrets);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, below_secret, secrets)),
        Value::String(s) if below_secret => secrets.push(s.clone()),
        Value::String(s) => {
            for (start, end) in password_ranges(s) {
                secrets.push(s[start..end].to_string());
            }
        }
        Value::Number(n) if below_secret => secrets.push(n.to_string()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connection_string_passwords_are_found() {
        fn found(s: &str) -> Vec<&str> {
            password_ranges(s)
                .into_iter()
                .map(|(a, b)| &s[a..b])
                .collect()
        }
        assert_eq!(found("mysql://app:s3cret@db:3306/app"), ["s3cret"]);
        assert_eq!(found("mon:m0n!@tcp(127.0.0.1:3306)/"), ["m0n!"]);
        assert_eq!(found("postgres://app@db/app"), Vec::<&str>::new());
        assert_eq!(found("aci.example.com/a:1@sha256:0123"), Vec::<&str>::new());
        assert_eq!(found("see http://h/x:y@z"), Vec::<&str>::new());
    }

    #[test]
    fn a_secret_is_masked_wherever_it_appears() {
        let attributes = json!({
            "db": {"password": "hunter22", "user": "app"},
            "dsn": "app:hunter22@db/app",
            "url": "postgres://app:other-pw@db/app",
            "passwords": {"root": "r00tr00t"},
        });
        let masker = Masker::new([&attributes]);
        assert_eq!(
            masker.mask(&attributes),
            json!({
                "db": {"password": "******", "user": "app"},
                "dsn": "app:******@db/app",
                "url": "postgres://app:******@db/app",
                "passwords": {"root": "******"},
            })
        );
        assert_eq!(
            masker.mask_at("passwords.root", &json!("x")),
            json!("******")
        );
        assert_eq!(masker.mask_str("x r00tr00t y"), "x ****** y");
    }

    #[test]
    fn split_keeps_secrets_apart_and_merges_back() {
        let value = json!({
            "db": {"password": "p", "host": "h"},
            "checks": [{"datasource": "u:p@tcp(h)/"}],
            "log": {"level": "info"},
        });
        let (public, secret) = split(&value);
        assert_eq!(
            public,
            json!({"db": {"host": "h"}, "log": {"level": "info"}})
        );
        assert_eq!(
            secret,
            json!({"db": {"password": "p"}, "checks": [{"datasource": "u:p@tcp(h)/"}]})
        );
        assert!(!has_secrets(&public) && has_secrets(&secret));
        let mut merged = public;
        crate::attributes::merge_value(&mut merged, &secret);
        assert_eq!(merged, value);
    }
}
