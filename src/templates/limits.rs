//! Bounds on what rendering may cost, so a hostile attribute file or
//! template fails with a clear error instead of taking the machine's
//! memory or stack: values that double at each level (`l2: "{{ l1 }}{{ l1
//! }}"`, 22 levels cost 742 MB), templates rendering a gigabyte, macros
//! that call themselves and include cycles (a stack overflow, which
//! aborts the process without a message).

use super::{each_value, node_exprs, walk};
use std::collections::{BTreeMap, BTreeSet};
use tera::ast::{ExprVal, Node};

/// Largest rendered file: configuration files and units are small; a
/// template producing more is a loop gone wrong or an attack.
pub const MAX_RENDERED_BYTES: usize = 16 << 20;

/// Largest templated attribute value, once resolved.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Largest sum of the resolved templated values of one attribute tree.
pub const MAX_VALUES_BYTES: usize = 16 << 20;

/// The most memory rendering one template may hold beyond what it
/// started with: its variables are not bounded by the output's limit
/// (`{% set_global s = s ~ s %}` in a loop), see `crate::memory`.
pub const MAX_RENDER_MEMORY: usize = 512 << 20;

/// Renders template `name`, stopping as soon as its output passes `limit`
/// bytes (Tera streams loops and text into the writer, so the memory
/// spent stays near the limit).
pub fn render(
    tera: &tera::Tera,
    name: &str,
    context: &tera::Context,
    limit: usize,
) -> tera::Result<String> {
    let mut out = Bounded {
        bytes: Vec::with_capacity(2048),
        limit,
        exceeded: false,
    };
    let what = format!("rendering the template {name}");
    let rendered = crate::memory::bounded(MAX_RENDER_MEMORY, &what, || {
        tera.render_to(name, context, &mut out)
    });
    match rendered {
        Ok(()) => String::from_utf8(out.bytes)
            .map_err(|_| tera::Error::msg("the template rendered text that is not UTF-8")),
        Err(_) if out.exceeded => Err(tera::Error::msg(too_large(limit))),
        Err(e) => Err(e),
    }
}

pub fn too_large(limit: usize) -> String {
    format!(
        "renders more than {}; herd renders at most that much per file",
        size(limit)
    )
}

/// `16 MiB`, `1 MiB`, `512 KiB`.
pub fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}

struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A template set herd refuses to render: a macro reaching itself
/// through macro calls, or a template reaching itself through includes.
/// Tera has no depth bound for either and would overflow the stack.
/// Returns the template at fault and what is wrong.
pub fn check_recursion(tera: &tera::Tera) -> Result<(), (String, String)> {
    // Edges: "template" -> included templates; "template::macro" ->
    // called macros.
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in tera.get_template_names() {
        let Ok(template) = tera.get_template(name) else {
            continue;
        };
        let namespaces: BTreeMap<&str, &str> = template
            .imported_macro_files
            .iter()
            .map(|(file, namespace)| (namespace.as_str(), file.as_str()))
            .collect();
        let calls = |nodes: &[Node]| {
            let mut called = BTreeSet::new();
            let mut includes = BTreeSet::new();
            walk(nodes, &mut |node| {
                if let Node::Include(_, names, _) = node {
                    includes.extend(names.iter().cloned());
                }
                for expr in node_exprs(node) {
                    each_value(expr, &mut |value| {
                        if let ExprVal::MacroCall(call) = value {
                            let file = match call.namespace.as_str() {
                                "self" => Some(name),
                                other => namespaces.get(other).copied(),
                            };
                            if let Some(file) = file {
                                called.insert(format!("{file}::{}", call.name));
                            }
                        }
                    });
                }
            });
            (called, includes)
        };
        let (called, includes) = calls(&template.ast);
        edges
            .entry(name.to_string())
            .or_default()
            .extend(includes.into_iter().chain(called));
        for (macro_name, definition) in &template.macros {
            let (called, includes) = calls(&definition.body);
            edges
                .entry(format!("{name}::{macro_name}"))
                .or_default()
                .extend(called.into_iter().chain(includes));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let start = &cycle[0];
        let template = start.split("::").next().unwrap_or(start).to_string();
        let what = if start.contains("::") {
            "a macro calls itself"
        } else {
            "a template includes itself"
        };
        return Err((
            template,
            format!(
                "{what} ({}); herd refuses recursion in templates, which has no depth bound",
                cycle.join(" -> ")
            ),
        ));
    }
    Ok(())
}

/// A cycle of `edges`, as the nodes along it ending where it began.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    // Iterative depth-first search: the graph itself may be deep.
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for root in edges.keys() {
        if done.contains(root.as_str()) {
            continue;
        }
        let mut path: Vec<&str> = vec![];
        let mut stack: Vec<(&str, bool)> = vec![(root, false)];
        while let Some((node, leaving)) = stack.pop() {
            if leaving {
                path.pop();
                done.insert(node);
                continue;
            }
            if let Some(at) = path.iter().position(|n| *n == node) {
                let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if done.contains(node) {
                continue;
            }
            path.push(node);
            stack.push((node, true));
            for next in edges.get(node).into_iter().flatten() {
                stack.push((next, false));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(templates: &[(&str, &str)]) -> tera::Tera {
        let mut tera = super::super::tera_set();
        tera.add_raw_templates(templates.to_vec()).unwrap();
        tera
    }

    #[test]
    fn recursion_is_found_through_macros_and_includes() {
        let tera = set(&[(
            "m.partial",
            "{% macro f(n) %}{{ self::g(n=n) }}{% endmacro f %}{% macro g(n) %}{{ self::f(n=n) }}{% endmacro g %}",
        )]);
        let (template, message) = check_recursion(&tera).unwrap_err();
        assert_eq!(template, "m.partial");
        assert!(
            message.contains("m.partial::f -> m.partial::g")
                || message.contains("m.partial::g -> m.partial::f"),
            "{message}"
        );
        let tera = set(&[
            ("a.tmpl", "{% include \"b.partial\" %}"),
            ("b.partial", "x{% include \"a.tmpl\" %}"),
        ]);
        let (_, message) = check_recursion(&tera).unwrap_err();
        assert!(message.contains("includes itself"), "{message}");
        let tera = set(&[
            ("m.partial", "{% macro f() %}1{% endmacro f %}"),
            (
                "a.tmpl",
                "{% import \"m.partial\" as m %}{{ m::f() }}{{ m::f() }}{% include \"b.partial\" %}",
            ),
            ("b.partial", "b"),
        ]);
        check_recursion(&tera).unwrap();
    }

    #[test]
    fn output_stops_at_the_limit() {
        let tera = set(&[(
            "big",
            "{% for i in range(end=100000) %}0123456789{% endfor %}",
        )]);
        let context = tera::Context::new();
        assert_eq!(
            render(&tera, "big", &context, 1 << 20).unwrap().len(),
            1_000_000
        );
        let err = render(&tera, "big", &context, 1000).unwrap_err();
        assert!(err.to_string().contains("renders more than"), "{err}");
    }
}
