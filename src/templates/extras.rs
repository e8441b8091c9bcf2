//! The template functions dgr's users had from Go templates and sprig,
//! as Tera filters and functions (FORMATS.md section 5). herd builds Tera
//! without its optional built-ins (chrono, rand, ...) to keep `herd-init`
//! small, so these are written over crates the project already has (base64,
//! sha2, serde_yaml_ng, percent-encoding, humantime, getrandom) and
//! regex-lite, a small regex engine without Unicode tables.
//!
//! Dates are UTC: a container's clock has no time zone database.

use base64::Engine;
use serde_json::Value;
use std::collections::HashMap;
use tera::{Error, Result};

/// Longest regular expression a template may give, and the most memory
/// its compiled form may take: a pattern is template text, and the init
/// must not be made to spend its start on one.
const MAX_PATTERN: usize = 1000;
const MAX_REGEX_BYTES: usize = 1 << 20;

/// Adds every filter and function to `tera`.
pub fn register(tera: &mut tera::Tera) {
    tera.register_filter("b64encode", b64encode);
    tera.register_filter("b64decode", b64decode);
    tera.register_filter("to_yaml", to_yaml);
    tera.register_filter("from_json", from_json);
    tera.register_filter("from_yaml", from_yaml);
    tera.register_filter("sha256", sha256);
    tera.register_filter("urlencode", urlencode);
    tera.register_filter("regex_replace", regex_replace);
    tera.register_filter("date", date);
    tera.register_function("now", now);
    tera.register_function("uuid", uuid);
}

fn string<'a>(value: &'a Value, filter: &str) -> Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| Error::msg(format!("filter `{filter}` expects a string, got {value}")))
}

/// Strings as they are, anything else as JSON: what `{{ x }}` would print
/// for scalars, and something decodable for the rest.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn arg<'a>(args: &'a HashMap<String, Value>, name: &str, filter: &str) -> Result<&'a str> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(Error::msg(format!(
            "`{filter}`: argument `{name}` must be a string, got {other}"
        ))),
        None => Err(Error::msg(format!(
            "`{filter}` needs the argument `{name}`"
        ))),
    }
}

fn b64encode(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(text_of(value)),
    ))
}

fn b64decode(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    let text = string(value, "b64decode")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Error::msg(format!("`b64decode`: not base64: {e}")))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| Error::msg("`b64decode`: the decoded bytes are not UTF-8 text"))
}

fn to_yaml(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    serde_yaml_ng::to_string(value)
        .map(Value::String)
        .map_err(|e| Error::msg(format!("`to_yaml`: {e}")))
}

fn from_json(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    serde_json::from_str(string(value, "from_json")?)
        .map_err(|e| Error::msg(format!("`from_json`: not JSON: {e}")))
}

fn from_yaml(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    serde_yaml_ng::from_str(string(value, "from_yaml")?)
        .map_err(|e| Error::msg(format!("`from_yaml`: not YAML: {e}")))
}

fn sha256(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    use sha2::Digest;
    Ok(Value::String(hex::encode(sha2::Sha256::digest(
        text_of(value).as_bytes(),
    ))))
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so
/// the result fits in a query value or a path segment.
fn urlencode(value: &Value, _: &HashMap<String, Value>) -> Result<Value> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    Ok(Value::String(
        utf8_percent_encode(&text_of(value), UNRESERVED).to_string(),
    ))
}

/// `regex_replace(pattern="...", rep="...")`: every match replaced; `$1`
/// and `${name}` in `rep` name groups (sprig's `regexReplaceAll`).
fn regex_replace(value: &Value, args: &HashMap<String, Value>) -> Result<Value> {
    let pattern = arg(args, "pattern", "regex_replace")?;
    let replacement = arg(args, "rep", "regex_replace")?;
    if pattern.len() > MAX_PATTERN {
        return Err(Error::msg(format!(
            "`regex_replace`: the pattern is longer than {MAX_PATTERN} bytes"
        )));
    }
    let regex = regex_lite::RegexBuilder::new(pattern)
        .size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| Error::msg(format!("`regex_replace`: invalid pattern: {e}")))?;
    Ok(Value::String(
        regex.replace_all(&text_of(value), replacement).into_owned(),
    ))
}

/// `now()`: the time as RFC 3339 in UTC (`2026-12-02T14:27:18Z`);
/// `now(timestamp=true)`: seconds since the epoch.
fn now(args: &HashMap<String, Value>) -> Result<Value> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| Error::msg("`now`: the clock is before 1970"))?;
    match args.get("timestamp") {
        Some(Value::Bool(true)) => Ok(Value::from(since_epoch.as_secs())),
        None | Some(Value::Bool(false)) => Ok(Value::String(rfc3339(since_epoch.as_secs())?)),
        Some(other) => Err(Error::msg(format!(
            "`now`: argument `timestamp` must be true or false, got {other}"
        ))),
    }
}

fn rfc3339(seconds: u64) -> Result<String> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
    Ok(humantime::format_rfc3339_seconds(time).to_string())
}

/// `date(format="%Y-%m-%d")` of a timestamp (seconds) or an RFC 3339
/// string, in UTC. Knows `%Y %m %d %H %M %S %y %s %F %T %z %Z %%`.
fn date(value: &Value, args: &HashMap<String, Value>) -> Result<Value> {
    let format = match args.get("format") {
        None => "%Y-%m-%d",
        Some(_) => arg(args, "format", "date")?,
    };
    let seconds = match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| Error::msg(format!("`date`: {n} is not a time after 1970")))?,
        Value::String(s) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .ok_or_else(|| {
                Error::msg(format!(
                    "`date`: {s:?} is not a time (expected RFC 3339, 2026-12-02T14:27:18Z)"
                ))
            })?,
        other => {
            return Err(Error::msg(format!(
                "`date` expects a timestamp or an RFC 3339 string, got {other}"
            )));
        }
    };
    // `YYYY-MM-DDTHH:MM:SSZ`, cut into its fields.
    let stamp = rfc3339(seconds)?;
    let field = |range: std::ops::Range<usize>| stamp.get(range).unwrap_or("");
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(field(0..4)),
            Some('y') => out.push_str(field(2..4)),
            Some('m') => out.push_str(field(5..7)),
            Some('d') => out.push_str(field(8..10)),
            Some('H') => out.push_str(field(11..13)),
            Some('M') => out.push_str(field(14..16)),
            Some('S') => out.push_str(field(17..19)),
            Some('F') => out.push_str(field(0..10)),
            Some('T') => out.push_str(field(11..19)),
            Some('s') => out.push_str(&seconds.to_string()),
            Some('z') => out.push_str("+0000"),
            Some('Z') => out.push_str("UTC"),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::msg(format!(
                    "`date`: unknown conversion %{} (known: %Y %y %m %d %H %M %S %F %T %s %z %Z %%)",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    Ok(Value::String(out))
}

/// A random (version 4) UUID, from the kernel's random source.
fn uuid(_: &HashMap<String, Value>) -> Result<Value> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| Error::msg(format!("`uuid`: no random bytes: {e}")))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex::encode(bytes);
    Ok(Value::String(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    fn render(text: &str, attributes: serde_json::Value) -> String {
        super::super::render_str("t", text, &attributes).unwrap()
    }

    #[test]
    fn encodings_and_digests() {
        let a = json!({"s": "user:pa ss/é", "b": "dXNlcjpwYXNz", "n": 42});
        assert_eq!(
            render("{{ s | b64encode }}", a.clone()),
            "dXNlcjpwYSBzcy/DqQ=="
        );
        assert_eq!(render("{{ b | b64decode }}", a.clone()), "user:pass");
        assert_eq!(
            render("{{ s | urlencode }}", a.clone()),
            "user%3Apa%20ss%2F%C3%A9"
        );
        assert_eq!(
            render("{{ 'abc' | sha256 }}", a.clone()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(render("{{ n | sha256 | length }}", a), "64");
    }

    #[test]
    fn yaml_and_json() {
        let a = json!({"db": {"hosts": ["a", "b"], "port": 1}, "j": "{\"k\": [1, 2]}"});
        assert_eq!(
            render("{{ db | to_yaml }}", a.clone()),
            "hosts:\n- a\n- b\nport: 1\n"
        );
        assert_eq!(
            render("{% set v = j | from_json %}{{ v.k[1] }}", a.clone()),
            "2"
        );
        assert_eq!(
            render("{% set v = j | from_json %}{{ v.k | length }}", a),
            "2"
        );
    }

    #[test]
    fn regex_replace_with_groups() {
        let a = json!({"h": "zk1.dc1.example.com"});
        assert_eq!(
            render(
                r"{{ h | regex_replace(pattern='^([a-z]+)\d+\.(\w+).*$', rep='$2-$1') }}",
                a
            ),
            "dc1-zk"
        );
        let err = super::super::render_str(
            "t",
            "{{ 'x' | regex_replace(pattern='(', rep='') }}",
            &json!({}),
        )
        .unwrap_err();
        assert!(format!("{err:?}").contains("invalid pattern"), "{err:?}");
    }

    #[test]
    fn dates_and_uuids() {
        let a = json!({"t": 1764686838, "s": "2025-12-02T14:47:18Z"});
        assert_eq!(
            render("{{ t | date(format='%F %T %Z %s %%') }}", a.clone()),
            "2025-12-02 14:47:18 UTC 1764686838 %"
        );
        assert_eq!(render("{{ s | date(format='%d/%m/%y') }}", a), "02/12/25");
        let stamp = render("{{ now() }}", json!({}));
        assert!(stamp.ends_with('Z') && stamp.len() == 20, "{stamp}");
        let seconds: u64 = render("{{ now(timestamp=true) }}", json!({}))
            .parse()
            .unwrap();
        assert!(seconds > 1_700_000_000);
        let one = render("{{ uuid() }}", json!({}));
        let two = render("{{ uuid() }}", json!({}));
        assert_ne!(one, two);
        assert_eq!(one.len(), 36);
        assert_eq!(&one[14..15], "4");
    }
}
