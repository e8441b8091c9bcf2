//! Templates: Tera (Jinja2-like) text rendered over attributes, with errors
//! that name the file, the line and the missing attribute.

use crate::error::InputError;
use serde_json::Value;
use std::path::Path;

/// What went wrong rendering one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The template uses an attribute that has no value.
    Missing { attribute: String, line: Option<usize> },
    /// The template is not valid Tera, or a filter or test failed.
    Invalid { message: String, line: Option<usize> },
}

impl RenderError {
    pub fn into_input_error(self, file: &Path) -> InputError {
        match self {
            RenderError::Missing { attribute, line } => InputError {
                line,
                ..InputError::new(file, format!("attribute `{attribute}` has no value"))
            },
            RenderError::Invalid { message, line } => InputError { line, ..InputError::new(file, message) },
        }
    }
}

/// True when `text` holds Tera syntax and so needs rendering at all.
pub fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// Renders one template text over `attributes` (top-level variables).
pub fn render_str(name: &str, text: &str, attributes: &Value) -> Result<String, RenderError> {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    tera.add_raw_template(name, text).map_err(|e| classify(&e, text))?;
    render_with(&tera, name, text, attributes)
}

/// Renders template `name` of an already loaded Tera set.
pub fn render_with(tera: &tera::Tera, name: &str, text: &str, attributes: &Value) -> Result<String, RenderError> {
    let context = tera::Context::from_value(as_context(attributes)).map_err(|e| classify(&e, text))?;
    tera.render(name, &context).map_err(|e| classify(&e, text))
}

/// Tera needs an object at the top; other values render as `{}`.
fn as_context(attributes: &Value) -> Value {
    match attributes {
        Value::Object(_) => attributes.clone(),
        _ => Value::Object(Default::default()),
    }
}

/// Turns a Tera error into a `RenderError`, finding the line: Tera reports
/// syntax errors with a position, but render errors without one, so for a
/// missing variable we look for the first line that uses it.
pub fn classify(error: &tera::Error, text: &str) -> RenderError {
    let chain = error_chain(error);
    for message in &chain {
        if let Some(rest) = message.strip_prefix("Variable `") {
            if let Some((attribute, _)) = rest.split_once("` not found") {
                let line = line_using(text, attribute);
                return RenderError::Missing { attribute: attribute.to_string(), line };
            }
        }
    }
    let message = chain.join(": ");
    let line = message
        .split(" --> ")
        .nth(1)
        .and_then(|pos| pos.split(':').next())
        .and_then(|l| l.trim().parse().ok());
    let message = match message.split_once(" --> ") {
        // Tera's syntax message spans lines with an ASCII-art pointer; keep its
        // last line, which says what was expected.
        Some((_, rest)) => rest.lines().last().map(|l| l.trim().trim_start_matches("= ").to_string()).unwrap_or(message),
        None => message,
    };
    RenderError::Invalid { message, line }
}

fn error_chain(error: &tera::Error) -> Vec<String> {
    let mut chain = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(next) = source {
        chain.push(next.to_string());
        source = next.source();
    }
    chain.retain(|m| !m.starts_with("Failed to render"));
    chain
}

/// The 1-based line of the first tag in `text` that mentions `attribute`.
fn line_using(text: &str, attribute: &str) -> Option<usize> {
    let first_segment = attribute.split(['.', '[']).next().unwrap_or(attribute);
    let mentions = |line: &str, word: &str| {
        line.match_indices(word).any(|(i, _)| {
            let before = line[..i].chars().next_back();
            let after = line[i + word.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            boundary(before) && boundary(after) && (line.contains("{{") || line.contains("{%"))
        })
    };
    let lines: Vec<&str> = text.lines().collect();
    [attribute, first_segment]
        .iter()
        .find_map(|word| lines.iter().position(|line| mentions(line, word)))
        .map(|index| index + 1)
}

/// Checks every template under `dir` for Tera syntax errors, so a broken
/// template fails the build rather than the container start.
pub fn check_dir(dir: &Path) -> Result<(), InputError> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| InputError::new(dir, format!("cannot list: {e}")))?;
        if !entry.file_type().is_file() || entry.path().extension().is_some_and(|e| e == "cfg") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| InputError::new(entry.path(), format!("cannot read: {e}")))?;
        let mut tera = tera::Tera::default();
        tera.add_raw_template("check", &text).map_err(|e| classify(&e, &text).into_input_error(entry.path()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_attributes_as_top_level_variables() {
        let out = render_str("t", "port={{ db.port }}", &json!({"db": {"port": 3306}})).unwrap();
        assert_eq!(out, "port=3306");
    }

    #[test]
    fn does_not_html_escape() {
        assert_eq!(render_str("t", "{{ v }}", &json!({"v": "<a&b>"})).unwrap(), "<a&b>");
    }

    #[test]
    fn missing_attribute_names_attribute_and_line() {
        let err = render_str("t", "a\nb\nhost={{ db.host }}\n", &json!({"db": {}})).unwrap_err();
        assert_eq!(err, RenderError::Missing { attribute: "db.host".into(), line: Some(3) });
    }

    #[test]
    fn syntax_error_names_the_line() {
        match render_str("t", "ok\n{{ a | }}\nmore\n", &json!({})).unwrap_err() {
            RenderError::Invalid { line, .. } => assert_eq!(line, Some(2)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
