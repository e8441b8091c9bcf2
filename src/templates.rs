//! Templates: Tera (Jinja2-like) text rendered over attributes, with errors
//! that name the file, the line and the missing attribute.
//!
//! A template directory (FORMATS.md section 5) is loaded once as a
//! [`TemplateDir`]: `herd build` checks it ([`check_dir`]), the container
//! init renders it, `herd try` renders it reporting every missing attribute
//! at once. Attribute values that are themselves templates are resolved by
//! [`resolve_values`].

mod dir;
pub mod functions;
pub mod limits;
mod values;

pub use dir::{
    CheckCmd, FileConfig, Kind, RenderedFile, TemplateDir, check_dir, kind, output_path,
    write_rendered,
};
pub use values::{ValueError, resolve_values};

use crate::error::InputError;
use serde_json::Value;
use std::path::Path;
use tera::ast::{Expr, ExprVal, FunctionCall, Node};

/// What went wrong rendering one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The template uses an attribute that has no value.
    Missing {
        attribute: String,
        line: Option<usize>,
    },
    /// The template is not valid Tera, or a filter or test failed.
    Invalid {
        message: String,
        line: Option<usize>,
    },
}

impl RenderError {
    pub fn into_input_error(self, file: &Path) -> InputError {
        match self {
            RenderError::Missing { attribute, line } => InputError {
                line,
                ..InputError::new(file, format!("attribute `{attribute}` has no value"))
            },
            RenderError::Invalid { message, line } => InputError {
                line,
                ..InputError::new(file, message)
            },
        }
    }
}

/// True when `text` holds Tera syntax and so needs rendering at all.
pub fn has_template_syntax(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// An empty Tera set as herd renders: configuration files, units and
/// attribute values, never HTML, so nothing is escaped whatever the file's
/// extension; `get_env` and `range` are herd's ([`functions`]).
pub fn tera_set() -> tera::Tera {
    let mut tera = tera::Tera::default();
    tera.autoescape_on(vec![]);
    functions::register(&mut tera);
    tera
}

/// Renders one template text over `attributes` (top-level variables).
pub fn render_str(name: &str, text: &str, attributes: &Value) -> Result<String, RenderError> {
    let mut tera = tera_set();
    tera.add_raw_template(name, text)
        .map_err(|e| classify(&e, text))?;
    render_with(&tera, name, text, attributes)
}

/// Renders template `name` of an already loaded Tera set.
pub fn render_with(
    tera: &tera::Tera,
    name: &str,
    text: &str,
    attributes: &Value,
) -> Result<String, RenderError> {
    let context =
        tera::Context::from_value(as_context(attributes)).map_err(|e| classify(&e, text))?;
    limits::render(tera, name, &context, limits::MAX_RENDERED_BYTES).map_err(|e| classify(&e, text))
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
        if let Some(rest) = message.strip_prefix("Variable `")
            && let Some((attribute, _)) = rest.split_once("` not found")
        {
            let line = line_using(text, attribute);
            return RenderError::Missing {
                attribute: attribute.to_string(),
                line,
            };
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
        Some((_, rest)) => rest
            .lines()
            .last()
            .map(|l| l.trim().trim_start_matches("= ").to_string())
            .unwrap_or(message),
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

/// Renders template `name` of `tera` and, when an attribute is missing,
/// records it and renders again with a placeholder in its place, so one pass
/// reports every missing attribute of the template (not just the first).
/// `context` must be `attributes` as a Tera context: it is built once by the
/// caller, the placeholders only cost something when attributes are missing.
/// Output past `limit` bytes is an error.
pub fn render_collecting(
    tera: &tera::Tera,
    name: &str,
    text: &str,
    attributes: &Value,
    context: &tera::Context,
    limit: usize,
) -> Result<String, Vec<RenderError>> {
    let first = match limits::render(tera, name, context, limit) {
        Ok(out) => return Ok(out),
        Err(e) => classify(&e, text),
    };
    let mut errors = vec![];
    let mut patched = as_context(attributes);
    let mut error = first;
    // Each round fills one more hole; the bound only guards against a
    // template whose holes cannot be filled (it stops at the first such).
    for _ in 0..1000 {
        let RenderError::Missing { attribute, .. } = &error else {
            errors.push(error);
            return Err(errors);
        };
        let placed = insert_placeholder(&mut patched, attribute);
        errors.push(error);
        if !placed {
            return Err(errors);
        }
        let context = tera::Context::from_value(patched.clone()).expect("an object is a context");
        match limits::render(tera, name, &context, limit) {
            Ok(_) => return Err(errors),
            Err(e) => error = classify(&e, text),
        }
    }
    Err(errors)
}

/// Sets the attribute a template looked up (dotted, as Tera names it) to a
/// placeholder string. False when it cannot be placed (a parent is not a
/// map, or it is already there), which would otherwise loop forever.
fn insert_placeholder(attributes: &mut Value, attribute: &str) -> bool {
    let Some(segments) = plain_segments(attribute) else {
        return false;
    };
    let mut current = attributes;
    for (index, segment) in segments.iter().enumerate() {
        let Value::Object(map) = current else {
            return false;
        };
        if index + 1 == segments.len() {
            if map.contains_key(*segment) {
                return false;
            }
            map.insert(segment.to_string(), Value::String(format!("<{attribute}>")));
            return true;
        }
        current = map
            .entry(segment.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    false
}

/// `db.host` -> `["db", "host"]`; `None` for lookups by index or by
/// variable (`hosts[0]`, `db[key]`), which a placeholder map cannot satisfy.
fn plain_segments(attribute: &str) -> Option<Vec<&str>> {
    if attribute.contains(['[', ']']) || attribute.is_empty() {
        return None;
    }
    Some(attribute.split('.').collect())
}

/// The attribute paths a parsed template reads, as its expressions name
/// them (`db.host`, `hosts[0].name`), loop variables included.
pub(crate) fn idents(nodes: &[Node]) -> Vec<String> {
    let mut found = vec![];
    walk(nodes, &mut |node| {
        for expr in node_exprs(node) {
            each_value(expr, &mut |value| match value {
                ExprVal::Ident(ident) => found.push(ident.clone()),
                ExprVal::Test(test) => found.push(test.ident.clone()),
                _ => {}
            });
        }
    });
    found
}

/// The expressions a node holds itself (not those of nested bodies).
pub(crate) fn node_exprs(node: &Node) -> Vec<&Expr> {
    match node {
        Node::VariableBlock(_, expr) => vec![expr],
        Node::MacroDefinition(_, definition, _) => definition.args.values().flatten().collect(),
        Node::Set(_, set) => vec![&set.value],
        Node::FilterSection(_, section, _) => section.filter.args.values().collect(),
        Node::Forloop(_, forloop, _) => vec![&forloop.container],
        Node::If(branches, _) => branches
            .conditions
            .iter()
            .map(|(_, expr, _)| expr)
            .collect(),
        _ => vec![],
    }
}

/// Calls `visit` on every node of a template, nested bodies included.
pub(crate) fn walk<'a>(nodes: &'a [Node], visit: &mut impl FnMut(&'a Node)) {
    for node in nodes {
        visit(node);
        match node {
            Node::MacroDefinition(_, definition, _) => walk(&definition.body, visit),
            Node::FilterSection(_, section, _) => walk(&section.body, visit),
            Node::Block(_, block, _) => walk(&block.body, visit),
            Node::Forloop(_, forloop, _) => {
                walk(&forloop.body, visit);
                if let Some(body) = &forloop.empty_body {
                    walk(body, visit);
                }
            }
            Node::If(branches, _) => {
                for (_, _, body) in &branches.conditions {
                    walk(body, visit);
                }
                if let Some((_, body)) = &branches.otherwise {
                    walk(body, visit);
                }
            }
            _ => {}
        }
    }
}

/// Calls `visit` on every value of an expression, nested ones (operands,
/// arguments of filters, functions, macros and tests) included.
pub(crate) fn each_value<'a>(expr: &'a Expr, visit: &mut impl FnMut(&'a ExprVal)) {
    value_parts(&expr.val, visit);
    for filter in &expr.filters {
        call_parts(filter, visit);
    }
}

fn call_parts<'a>(call: &'a FunctionCall, visit: &mut impl FnMut(&'a ExprVal)) {
    for arg in call.args.values() {
        each_value(arg, visit);
    }
}

fn value_parts<'a>(value: &'a ExprVal, visit: &mut impl FnMut(&'a ExprVal)) {
    visit(value);
    match value {
        ExprVal::Math(math) => [&math.lhs, &math.rhs]
            .into_iter()
            .for_each(|e| each_value(e, visit)),
        ExprVal::Logic(logic) => [&logic.lhs, &logic.rhs]
            .into_iter()
            .for_each(|e| each_value(e, visit)),
        ExprVal::In(within) => [&within.lhs, &within.rhs]
            .into_iter()
            .for_each(|e| each_value(e, visit)),
        ExprVal::Test(test) => test.args.iter().for_each(|e| each_value(e, visit)),
        ExprVal::MacroCall(call) => call.args.values().for_each(|e| each_value(e, visit)),
        ExprVal::FunctionCall(call) => call_parts(call, visit),
        ExprVal::Array(items) => items.iter().for_each(|e| each_value(e, visit)),
        ExprVal::StringConcat(concat) => concat.values.iter().for_each(|v| value_parts(v, visit)),
        ExprVal::Ident(_)
        | ExprVal::String(_)
        | ExprVal::Int(_)
        | ExprVal::Float(_)
        | ExprVal::Bool(_) => {}
    }
}

/// The 1-based line of the first occurrence of `needle` in `text`.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
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
        assert_eq!(
            render_str("t", "{{ v }}", &json!({"v": "<a&b>"})).unwrap(),
            "<a&b>"
        );
    }

    #[test]
    fn missing_attribute_names_attribute_and_line() {
        let err = render_str("t", "a\nb\nhost={{ db.host }}\n", &json!({"db": {}})).unwrap_err();
        assert_eq!(
            err,
            RenderError::Missing {
                attribute: "db.host".into(),
                line: Some(3)
            }
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        match render_str("t", "ok\n{{ a | }}\nmore\n", &json!({})).unwrap_err() {
            RenderError::Invalid { line, .. } => assert_eq!(line, Some(2)),
            other => panic!("unexpected {other:?}"),
        }
    }
}
