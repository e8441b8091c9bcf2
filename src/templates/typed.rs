//! The type of a templated attribute value. dgr re-read each resolved
//! value as YAML, so `port: "{{ base_port }}"` was a number and
//! `hosts: "{{ zk.hosts }}"` a list; configurations written for it rely on
//! that (`{% for h in hosts %}`, `{{ port + 1 }}`). The rule
//! (FORMATS.md section 4):
//!
//! - a value that is one expression naming an attribute, `"{{ zk.hosts }}"`,
//!   takes that attribute's value, whatever its type (lists and maps
//!   included, exactly);
//! - otherwise the rendered text is read as YAML when it is a plain
//!   scalar (a number, `true`/`false`, `null`/`~`) or a flow list or map
//!   (`[a, b]`, `{k: v}`); anything else, `key: value` and multi-line text
//!   included, stays the string it rendered to;
//! - the escape hatch: a result in YAML quotes stays a string, without
//!   them: `port: "'{{ base_port }}'"` is the string `"8000"`.

use super::RenderError;
use serde_json::Value;
use tera::ast::{ExprVal, Node};

/// When the whole template is `{{ ident }}` (no filters, no text around
/// it), the path it names: its value is taken as it is.
pub(super) fn sole_ident(nodes: &[Node]) -> Option<String> {
    match nodes {
        [Node::VariableBlock(_, expr)] if expr.filters.is_empty() && !expr.negated => {
            match &expr.val {
                ExprVal::Ident(ident) => Some(ident.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The value at a Tera path (`zk.hosts`, `hosts[0]` with a literal index).
pub(super) fn lookup<'a>(root: &'a Value, ident: &str) -> Option<&'a Value> {
    let mut current = root;
    for segment in ident.split('.') {
        let (key, indexes) = match segment.split_once('[') {
            Some((key, rest)) => (key, Some(rest)),
            None => (segment, None),
        };
        current = current.get(key)?;
        if let Some(indexes) = indexes {
            for index in indexes.split('[') {
                let index: usize = index.trim_end_matches(']').trim().parse().ok()?;
                current = current.get(index)?;
            }
        }
    }
    Some(current)
}

/// The value a rendered text stands for, by the rule above.
pub(super) fn typed(text: String) -> Value {
    let trimmed = text.trim();
    let quoted = |q: char| trimmed.len() >= 2 && trimmed.starts_with(q) && trimmed.ends_with(q);
    let flow = trimmed.starts_with('[') || trimmed.starts_with('{');
    let scalar_looking = !trimmed.is_empty()
        && !trimmed.contains('\n')
        && !trimmed.contains(": ")
        && !trimmed.contains(" #")
        && !trimmed.starts_with('#');
    if !(quoted('\'') || quoted('"') || flow || scalar_looking) {
        return Value::String(text);
    }
    let Ok(parsed) = serde_yaml_ng::from_str::<Value>(trimmed) else {
        return Value::String(text);
    };
    match parsed {
        Value::String(s) if quoted('\'') || quoted('"') => Value::String(s),
        Value::Number(_) | Value::Bool(_) => parsed,
        Value::Null if matches!(trimmed, "null" | "~" | "Null" | "NULL") => parsed,
        Value::Array(_) | Value::Object(_) if flow => parsed,
        _ => Value::String(text),
    }
}

/// `error` with a lookup below a value that cannot hold it (`hosts[0]`
/// where `hosts` is a string) told as such rather than as "has no value".
pub(super) fn retyped(error: RenderError, attributes: &Value) -> RenderError {
    match &error {
        RenderError::Missing { attribute, line } => match wrong_type(attributes, attribute) {
            Some(RenderError::Invalid { message, .. }) => RenderError::Invalid {
                message,
                line: *line,
            },
            _ => error,
        },
        RenderError::Invalid { .. } => error,
    }
}

fn wrong_type(attributes: &Value, attribute: &str) -> Option<RenderError> {
    let bytes = attribute.as_bytes();
    // The longest prefix ending before a `.` or `[` that has a value.
    let mut cuts: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i] == b'.' || bytes[i] == b'[')
        .collect();
    cuts.reverse();
    for cut in cuts {
        let parent = &attribute[..cut];
        let Some(value) = lookup(attributes, parent) else {
            continue;
        };
        let wanted = if bytes[cut] == b'[' {
            "a list"
        } else {
            "a map"
        };
        let what = match value {
            Value::String(s) => format!("the string {:?}", truncate(s)),
            Value::Number(n) => format!("the number {n}"),
            Value::Bool(b) => format!("the boolean {b}"),
            Value::Null => "null".to_string(),
            Value::Array(_)
                if wanted == "a map"
                    && attribute[cut + 1..]
                        .split(['.', '['])
                        .next()
                        .is_none_or(|next| next.parse::<usize>().is_err()) =>
            {
                "a list".to_string()
            }
            Value::Object(_) if wanted == "a list" => "a map".to_string(),
            // The container is right; the key or index is missing.
            _ => return None,
        };
        let hint = if value.is_string() && wanted == "a list" {
            " (a templated value that should be a list must be written as one expression, \
             `\"{{ zk.hosts }}\"`, or render as a YAML flow list `[a, b]`)"
        } else {
            ""
        };
        return Some(RenderError::Invalid {
            message: format!("`{attribute}`: attribute `{parent}` is {what}, not {wanted}{hint}"),
            line: None,
        });
    }
    None
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendered_text_takes_yaml_scalar_and_flow_types_only() {
        assert_eq!(typed("8001".into()), json!(8001));
        assert_eq!(typed("1.5".into()), json!(1.5));
        assert_eq!(typed("true".into()), json!(true));
        assert_eq!(typed("~".into()), json!(null));
        assert_eq!(typed("[zk1, zk2]".into()), json!(["zk1", "zk2"]));
        assert_eq!(typed("{a: 1}".into()), json!({"a": 1}));
        assert_eq!(typed("'8000'".into()), json!("8000"));
        assert_eq!(typed("\"8000\"".into()), json!("8000"));
        for kept in [
            "",
            "db1.example.com",
            "Note: hi",
            "a\nb",
            "# x",
            "http://h:1/",
            "yes",
            "[unclosed",
            "0o17x",
        ] {
            assert_eq!(typed(kept.into()), json!(kept), "{kept:?}");
        }
    }

    #[test]
    fn a_string_used_as_a_list_is_named() {
        let attributes = json!({"hosts": "zk1,zk2", "db": {"list": [1]}});
        let Some(RenderError::Invalid { message, .. }) = wrong_type(&attributes, "hosts[0]") else {
            panic!()
        };
        assert!(
            message.contains("attribute `hosts` is the string \"zk1,zk2\", not a list"),
            "{message}"
        );
        let Some(RenderError::Invalid { message, .. }) = wrong_type(&attributes, "db.list.x")
        else {
            panic!()
        };
        assert!(
            message.contains("`db.list` is a list, not a map"),
            "{message}"
        );
        assert_eq!(wrong_type(&attributes, "db.other"), None);
        assert_eq!(wrong_type(&attributes, "nothing.here"), None);
        assert_eq!(lookup(&attributes, "db.list[0]"), Some(&json!(1)));
    }
}
