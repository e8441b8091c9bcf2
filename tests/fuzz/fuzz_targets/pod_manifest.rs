//! `pod-manifest.yml`: rendered, parsed strictly, apps checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let attributes = serde_json::json!({"version": "1.2", "apps": ["a", "b"]});
    if let Ok(pod) = herd::manifest::parse_pod(Path::new("pod-manifest.yml"), text, &attributes) {
        assert!(!pod.pod.apps.is_empty());
        for app in &pod.pod.apps {
            assert!(!app.dependencies.is_empty());
        }
    }
    let _ = herd::manifest::parse_pod(
        Path::new("pod-manifest.yml"),
        text,
        &serde_json::Value::Null,
    );
});
