//! `aci-manifest.yml`: rendered as a template over attributes, parsed
//! strictly, every name checked; and the provisional manifest of a build
//! (attributes build scripts would write stand in as "0"), which loops
//! until the template renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn image_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("attributes")).unwrap();
        std::fs::write(
            dir.join("attributes/a.yml"),
            "default: {version: '1.2', db: {port: 3306}, list: [1, 2]}\n",
        )
        .unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let attributes = serde_json::json!({"version": "1.2", "db": {"port": 3306}});
    if let Ok(manifest) =
        herd::manifest::parse_image(Path::new("aci-manifest.yml"), text, &attributes)
    {
        // A parsed manifest's names are valid references.
        let name: herd::names::ImageName = manifest.name.parse().expect("checked name");
        let _ = (name.tiny_name(), name.repository(), name.to_string());
    }
    let dir = image_dir();
    std::fs::write(dir.join("aci-manifest.yml"), data).unwrap();
    if let Ok(source) = herd::build::ImageSource::read(dir) {
        let _ = source.provisional_manifest();
        let _ = source.manifest(&serde_json::Value::Null);
    }
    // Version order is a total order: antisymmetric on any two lines.
    let mut lines = text.lines();
    if let (Some(a), Some(b)) = (lines.next(), lines.next()) {
        let forward = herd::names::compare_versions(a, b);
        assert_eq!(forward.reverse(), herd::names::compare_versions(b, a));
    }
});
