//! Template rendering with hostile attributes: the templates of the
//! aci-templated example (partials, `.cfg` files) and the values that are
//! themselves templates, rendered over attributes read from the input as
//! YAML (deep nesting, odd keys, template syntax inside values, cycles).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../aci/aci-templated/templates"
);

fn templates() -> &'static herd::templates::TemplateDir {
    static DIR: OnceLock<herd::templates::TemplateDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir: PathBuf = tempfile::tempdir().unwrap().keep();
        for entry in std::fs::read_dir(EXAMPLE).unwrap().map(Result::unwrap) {
            copy(&entry.path(), &dir.join(entry.file_name()));
        }
        // Loops, filters, tests and lookups by key a hostile value meets.
        std::fs::write(
            dir.join("all.tmpl"),
            "{% if servers is object %}{% for k, v in servers %}{{ k }}={{ v | json_encode() }}\n{% endfor %}{% endif %}\
             {% if db is defined and db.hosts is iterable %}{{ db.hosts | join(sep=',') }}{% endif %}\n\
             {{ name | default(value='x') | upper | truncate(length=5) }}\n\
             {% if port is number %}{{ port + 1 }}{% endif %}\n",
        )
        .unwrap();
        herd::templates::TemplateDir::load(&dir).unwrap()
    })
}

fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut attributes) = herd::yaml::parse_value(Path::new("attributes.yml"), text) else {
        return;
    };
    if !attributes.is_object() {
        attributes = serde_json::json!({ "value": attributes });
    }
    let _ = templates().render_all(&attributes);
    let _ = herd::templates::resolve_values(&mut attributes);
    let _ = templates().render_all(&attributes);
    if let Some(serde_json::Value::String(value)) = attributes.get("value") {
        let _ = herd::templates::render_str("value", value, &attributes);
    }
});
