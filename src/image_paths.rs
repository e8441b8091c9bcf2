//! Where herd keeps its own files inside an image, shared by the build
//! (which writes them) and the container init (which reads them at start).
//!
//! ```text
//! /herd/init                         the init (a layer of its own)
//! /herd/stack                        image tiny names, deepest base first, one per line
//! /herd/app.json                     the app's user, group and groups (AppSpec)
//! /herd/templates/**                 templates of every image of the stack (upper wins)
//! /herd/images/<tiny>/attributes/    attribute files of one image of the stack
//! /herd/images/<tiny>/prestart-early/, prestart-late/   its start scripts
//! /herd/images/<tiny>/prestop/       its scripts run on a graceful stop
//! /herd/images/<tiny>/inherit-build-early/, inherit-build-late/   run by dependents' builds
//! ```
//!
//! Attributes are kept per image, not merged into one directory, so the
//! init can merge them in stack order (dgr merged by directory name, which
//! surprised users).

use serde::{Deserialize, Serialize};

pub const HERD_DIR: &str = "herd";
pub const INIT: &str = "herd/init";
pub const STACK: &str = "herd/stack";
pub const APP: &str = "herd/app.json";
pub const TEMPLATES: &str = "herd/templates";
pub const IMAGES: &str = "herd/images";

/// Where the init says the app is ready (it exists only while it is),
/// inside the container.
pub const READY_FILE: &str = "run/herd/ready";

/// The runlevel directories an image carries for later use.
pub const STORED_RUNLEVELS: [&str; 5] = [
    "prestart-early",
    "prestart-late",
    "prestop",
    "inherit-build-early",
    "inherit-build-late",
];

/// `herd/images/<tiny>/<what>`, relative to the image root.
pub fn image_dir(tiny_name: &str, what: &str) -> String {
    format!("{IMAGES}/{tiny_name}/{what}")
}

/// The app's identity, which the init switches to after templating (done
/// as root), and its lifecycle. The identity is kept here rather than in
/// the config's `User`, because the runtime would start the init itself
/// as that user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppSpec {
    pub user: Option<String>,
    pub group: Option<String>,
    #[serde(default)]
    pub supplementary_gids: Vec<u32>,
    #[serde(default, skip_serializing_if = "crate::lifecycle::Lifecycle::is_empty")]
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// The image's command, which the lifecycle belongs to (set only with
    /// a lifecycle).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<String>,
}
