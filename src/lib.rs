//! herd builds OCI images and pods from plain directories, configures them
//! at container start from attributes, and turns environment directories
//! into systemd units placed on named hosts. See ARCHITECTURE.md.

pub mod attributes;
pub mod build;
pub mod cache;
pub mod cgroups;
pub mod dependency;
pub mod deploy;
pub mod digest;
pub mod doctor;
pub mod engine;
pub mod environments;
pub mod error;
pub mod fsutil;
pub mod image_attributes;
pub mod image_paths;
pub mod init;
pub mod interrupt;
pub mod layers;
pub mod lifecycle;
pub mod manifest;
pub mod memory;
pub mod names;
pub mod netns;
pub mod plan;
pub mod pods;
pub mod registry;
pub mod rootfs;
pub mod runtime;
pub mod sandbox;
pub mod scaffold;
pub mod status;
pub mod store;
pub mod templates;
pub mod terminal;
pub mod tester;
pub mod units;
pub mod vcs;
pub mod yaml;
