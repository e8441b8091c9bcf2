//! `--format` templates for `herd images` and `herd inspect`: podman's
//! Go-template look, kept to what scripts use. `{{.Field}}` and
//! `{{.Field.Sub}}` print a field of the JSON the command would print
//! (keys match case-insensitively, so `{{.Digest}}` reads `digest`);
//! strings print as they are, anything else as compact JSON; `\t` and
//! `\n` are a tab and a newline; every other character is copied.
//! A field that does not exist is an error naming the closest one.

use anyhow::{Result, bail};
use serde_json::Value;

/// `template` filled from `value`.
pub fn render(template: &str, value: &Value) -> Result<String> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            bail!("--format: `{{{{` at byte {start} is never closed with `}}}}`");
        };
        let field = rest[start + 2..start + end].trim();
        out.push_str(&field_text(field, value)?);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn field_text(field: &str, value: &Value) -> Result<String> {
    let Some(path) = field.strip_prefix('.') else {
        bail!(
            "--format: `{{{{{field}}}}}` is not a field (fields start with a dot: `{{{{.Name}}}}`)"
        );
    };
    let mut current = value;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        let Value::Object(map) = current else {
            bail!("--format: `{field}`: `{key}` is inside a value that has no fields");
        };
        current = match map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            Some((_, v)) => v,
            None => {
                let known: Vec<&str> = map.keys().map(String::as_str).collect();
                let hint = herd::yaml::closest(key, &known)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                bail!(
                    "--format: no field `{key}`{hint}; fields here: {}",
                    known.join(", ")
                );
            }
        };
    }
    Ok(match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_fields_and_names_the_closest_for_a_typo() {
        let value = serde_json::json!({"Name": "x.io/a:1", "config": {"Env": ["A=1"]}, "Size": 3});
        assert_eq!(
            render("{{.Name}}\\t{{ .size }} {{.Config.env}}", &value).unwrap(),
            "x.io/a:1\t3 [\"A=1\"]"
        );
        let err = render("{{.Nmae}}", &value).unwrap_err().to_string();
        assert!(err.contains("did you mean `Name`?"), "{err}");
        assert!(render("{{Name}}", &value).is_err());
        assert!(render("{{.Name", &value).is_err());
    }
}
