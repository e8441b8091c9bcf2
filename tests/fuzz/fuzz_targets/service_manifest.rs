//! `service-manifest.yml` of an environment: loaded with the environment
//! (strict parsing, names, nodes, fleet lines, mount points, attributes
//! merged env -> service -> node), then rendered as systemd units and as
//! Kubernetes Pods.
#![no_main]

use herd::environments::{Environment, Target};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn env_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let write = |path: &str, text: &str| {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "config.yml",
            "envName: fuzz\nregistry: {domain: aci.example.com}\n",
        );
        write(
            "attributes/env.yml",
            "default: {dc: fuzz1, db: {password: hunter2}}\n",
        );
        write("templates/header.partial", "# {{ dc }}\n");
        write(
            "services/svc/attributes/svc.yml",
            "override: {port: 8080, url: 'http://{{ hostname }}:{{ port }}'}\n",
        );
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = env_dir();
    std::fs::write(dir.join("services/svc/service-manifest.yml"), data).unwrap();
    let Ok(env) = Environment::load(dir) else {
        return;
    };
    let service = &env.services[0];
    assert!(!service.nodes.is_empty() && !service.containers.is_empty());
    for node in &service.nodes {
        let _ = service.node_attributes(node).explain();
    }
    let _ = herd::units::generate(&env, Target::Systemd, None);
    let _ = herd::units::generate(&env, Target::Kubernetes, None);
});
