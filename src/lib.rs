//! herd builds OCI images and pods from plain directories, configures them
//! at container start from attributes, and turns environment directories
//! into systemd units placed on named hosts. See ARCHITECTURE.md.

pub mod attributes;
pub mod digest;
pub mod error;
pub mod fsutil;
pub mod manifest;
pub mod names;
pub mod templates;
pub mod yaml;
pub mod layers;
pub mod store;
pub mod image_paths;
pub mod build;
pub mod rootfs;
pub mod runtime;
