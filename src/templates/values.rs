//! Attribute values that are templates over the merged attributes
//! (`url: "http://{{ host }}:{{ port }}"`), resolved after the merge so they
//! follow overrides.
//!
//! Each templated value is rendered exactly once, after every templated
//! value it reads: the order comes from the variables each template names
//! (read from Tera's syntax tree), so a value whose result happens to
//! contain `{{` is not rendered twice, and a cycle is found and named
//! rather than looped on.

use super::{RenderError, classify, has_template_syntax, idents, limits, render_collecting};
use serde_json::Value;
use std::fmt;

/// A templated attribute value that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// Dotted path of the value, `db.url`.
    pub attribute: String,
    pub problem: String,
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attribute `{}`: {}", self.attribute, self.problem)
    }
}

/// One templated string of the tree.
struct Pending {
    /// Keys (and list indexes, as text) from the root.
    path: Vec<String>,
    text: String,
    /// The attribute paths its template reads.
    reads: Vec<Vec<String>>,
}

impl Pending {
    fn dotted(&self) -> String {
        self.path.join(".")
    }

    /// Reading `db` reads `db.url`; reading `db.url.x` reads `db.url`.
    fn reads_value_at(&self, path: &[String]) -> bool {
        self.reads.iter().any(|read| {
            let common = read.len().min(path.len());
            read[..common] == path[..common]
        })
    }
}

/// Renders every string value of `attributes` that holds template syntax,
/// over the attributes themselves, in dependency order. On failure the
/// values that could be resolved are, and every problem is returned: a
/// missing attribute, an invalid template, a cycle (`a -> b -> a`).
pub fn resolve_values(attributes: &mut Value) -> Result<(), Vec<ValueError>> {
    let mut pending = vec![];
    collect(attributes, &mut vec![], &mut pending);
    if pending.is_empty() {
        return Ok(());
    }
    let mut errors = vec![];
    let mut tera = super::tera_set();
    pending.retain_mut(|value| {
        let name = value.dotted();
        match tera.add_raw_template(&name, &value.text) {
            Ok(()) => {
                let ast = &tera.get_template(&name).expect("just added").ast;
                value.reads = idents(ast).iter().map(|ident| ident_path(ident)).collect();
                true
            }
            Err(e) => {
                errors.push(value_error(&name, classify(&e, &value.text)));
                false
            }
        }
    });
    // What all resolved values may still add up to.
    let mut budget = limits::MAX_VALUES_BYTES;
    while !pending.is_empty() {
        let ready: Vec<usize> = (0..pending.len())
            .filter(|&i| {
                !pending
                    .iter()
                    .any(|other| pending[i].reads_value_at(&other.path))
            })
            .collect();
        if ready.is_empty() {
            let cycle = find_cycle(&pending);
            for value in &pending {
                let problem = if cycle.contains(&value.dotted()) {
                    format!("refers to itself through {}", cycle.join(" -> "))
                } else {
                    format!("depends on a cycle: {}", cycle.join(" -> "))
                };
                errors.push(ValueError {
                    attribute: value.dotted(),
                    problem,
                });
            }
            break;
        }
        // Render the ready values against the tree as it is now, then
        // store them all; none of them reads another, so the order is free.
        let context = tera::Context::from_value(attributes.clone()).expect("attributes are a map");
        let mut results = vec![];
        for &index in &ready {
            let value = &pending[index];
            let name = value.dotted();
            let limit = limits::MAX_VALUE_BYTES.min(budget);
            match render_collecting(&tera, &name, &value.text, attributes, &context, limit) {
                Ok(out) => {
                    budget -= out.len();
                    results.push((index, out));
                }
                Err(problems) if problems.iter().any(is_too_large) => {
                    errors.push(ValueError {
                        attribute: name,
                        problem: if limit == limits::MAX_VALUE_BYTES {
                            format!(
                                "resolves to more than {}, the most an attribute value may hold",
                                limits::size(limit)
                            )
                        } else {
                            format!(
                                "the templated values resolve to more than {} in all, the most herd resolves",
                                limits::size(limits::MAX_VALUES_BYTES)
                            )
                        },
                    });
                    // Values built on it would only grow: stop here.
                    return Err(errors);
                }
                Err(problems) => errors.extend(problems.into_iter().map(|p| value_error(&name, p))),
            }
        }
        for (index, out) in results {
            if let Some(slot) = slot(attributes, &pending[index].path) {
                *slot = Value::String(out);
            }
        }
        let mut index = 0;
        pending.retain(|_| {
            index += 1;
            !ready.contains(&(index - 1))
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_too_large(problem: &RenderError) -> bool {
    matches!(problem, RenderError::Invalid { message, .. } if message.starts_with("renders more than"))
}

fn value_error(attribute: &str, problem: RenderError) -> ValueError {
    let problem = match problem {
        RenderError::Missing {
            attribute: missing, ..
        } => format!("uses attribute `{missing}`, which has no value"),
        RenderError::Invalid { message, line } => match line {
            Some(line) => format!("invalid template (line {line} of the value): {message}"),
            None => format!("invalid template: {message}"),
        },
    };
    ValueError {
        attribute: attribute.to_string(),
        problem,
    }
}

fn collect(value: &Value, path: &mut Vec<String>, found: &mut Vec<Pending>) {
    match value {
        Value::String(text) if has_template_syntax(text) => found.push(Pending {
            path: path.clone(),
            text: text.clone(),
            reads: vec![],
        }),
        Value::Object(map) => {
            for (key, child) in map {
                path.push(key.clone());
                collect(child, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                path.push(index.to_string());
                collect(child, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// `hosts[0].name` -> `["hosts"]`: what follows a subscript is not known
/// without evaluating it, so the dependency is taken on the whole list.
fn ident_path(ident: &str) -> Vec<String> {
    let plain = ident.split('[').next().unwrap_or(ident);
    plain.split('.').map(str::to_string).collect()
}

fn slot<'a>(root: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(root, |value, key| match value {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// Follows "reads" edges among values that are all waiting on one another
/// until one repeats: the loop found, as dotted paths ending where it began.
fn find_cycle(pending: &[Pending]) -> Vec<String> {
    let mut seen: Vec<usize> = vec![0];
    loop {
        let current = &pending[*seen.last().expect("not empty")];
        let Some(next) = (0..pending.len()).find(|&i| current.reads_value_at(&pending[i].path))
        else {
            return seen.iter().map(|&i| pending[i].dotted()).collect();
        };
        if let Some(start) = seen.iter().position(|&i| i == next) {
            let mut cycle: Vec<String> =
                seen[start..].iter().map(|&i| pending[i].dotted()).collect();
            cycle.push(pending[next].dotted());
            return cycle;
        }
        seen.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_resolve_in_dependency_order_and_once() {
        let mut attributes = json!({
            "url": "http://{{ server.name }}:{{ port }}/",
            "server": {"name": "{{ host }}.{{ domain }}"},
            "host": "db1", "domain": "example.com", "port": 5432,
            "list": ["{{ port + 1 }}", "x"],
            "literal": "{% raw %}{{ kept }}{% endraw %}",
        });
        resolve_values(&mut attributes).unwrap();
        assert_eq!(attributes["url"], json!("http://db1.example.com:5432/"));
        assert_eq!(attributes["list"], json!(["5433", "x"]));
        assert_eq!(attributes["literal"], json!("{{ kept }}"));
    }

    #[test]
    fn doubling_values_stop_at_the_value_limit_quickly() {
        let mut attributes = json!({"l0": "0123456789abcdef"});
        for level in 1..=30 {
            attributes[format!("l{level}")] =
                json!(format!("{{{{ l{0} }}}}{{{{ l{0} }}}}", level - 1));
        }
        let started = std::time::Instant::now();
        let errors = resolve_values(&mut attributes).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].attribute, "l17");
        assert!(errors[0].problem.contains("more than 1 MiB"), "{errors:?}");
    }

    #[test]
    fn cycles_are_named() {
        let mut attributes =
            json!({"a": "{{ b }}", "b": "x{{ a }}", "c": "{{ a }}", "d": "{{ d }}"});
        let errors = resolve_values(&mut attributes).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            shown.contains(&"attribute `a`: refers to itself through a -> b -> a".to_string()),
            "{shown:?}"
        );
        assert!(
            shown
                .iter()
                .any(|s| s.starts_with("attribute `c`: depends on a cycle")),
            "{shown:?}"
        );
        let mut attributes = json!({"d": "{{ d }}"});
        let errors = resolve_values(&mut attributes).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "attribute `d`: refers to itself through d -> d"
        );
    }

    #[test]
    fn missing_attributes_in_values_are_all_reported() {
        let mut attributes = json!({"url": "{{ scheme }}://{{ host }}", "ok": "{{ 1 + 1 }}"});
        let errors = resolve_values(&mut attributes).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "attribute `url`: uses attribute `scheme`, which has no value",
                "attribute `url`: uses attribute `host`, which has no value"
            ]
        );
        assert_eq!(attributes["ok"], json!("2"));
    }
}
