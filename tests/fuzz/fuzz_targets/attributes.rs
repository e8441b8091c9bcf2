//! Attribute files (`default:`, `override:`, `include:`), runtime overrides
//! (JSON, base64 JSON, YAML), the merge with its origins (`--explain`),
//! secret masking, and values that are templates over the attributes.
#![no_main]

use herd::attributes::{AttributeFile, MergedAttributes, is_secret_key, mask_secrets};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::path::Path;

/// No value under a secret-looking key survives masking, but for maps.
fn assert_masked(value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if is_secret_key(key) && !child.is_object() {
                    assert_eq!(child, &Value::from("******"), "{key} is shown");
                } else {
                    assert_masked(child);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(assert_masked),
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Two files from one input: the second half overrides the first.
    let (first, second) = text.split_once("\n---8<---\n").unwrap_or((text, ""));
    let files: Vec<AttributeFile> = [("a.yml", first), ("b.yml", second)]
        .into_iter()
        .filter_map(|(name, text)| AttributeFile::parse(Path::new(name), text).ok())
        .collect();
    let mut merged = MergedAttributes::new();
    merged.apply_files(&files);
    if let Ok(runtime) = herd::init::overrides::parse_text(text, "fuzz") {
        merged.apply(&runtime, "runtime");
    }
    for (path, value, _) in merged.explain() {
        let _ = (path.split('.').any(is_secret_key), value.to_string());
    }
    assert_masked(&mask_secrets(merged.value()));
    let mut value = merged.into_value();
    if value.is_object() {
        let _ = herd::templates::resolve_values(&mut value);
    }
});
