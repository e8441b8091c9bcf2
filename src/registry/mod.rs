//! Push and pull: images and pods between the store and OCI registries.
//!
//! Why a small client of our own on reqwest rather than `oci-client`: that
//! crate lacks what herd needs most: credentials from docker's
//! `config.json`, containers' `auth.json` and credential helpers; retries
//! with backoff across a registry restart; a `HEAD` before each upload so
//! a re-push sends nothing; mounts remembered across runs; and a streaming
//! upload straight from the store's blob file. What herd needs of the
//! distribution API is a dozen requests (see `client`).
//!
//! Layout: `config` maps names to endpoints (mirrors, plain http, CA
//! files), `auth` finds credentials and parses challenges, `client` speaks
//! HTTP to one registry (`failure` sorts what went wrong into retriable
//! or not, `body` bounds what is read and sent), `known_blobs` remembers where blobs were seen for
//! cross-repository mounts, `progress` shows transfers; `push` and `pull`
//! put these together.

pub(crate) mod auth;
mod body;
mod client;
pub mod config;
mod docker;
mod failure;
mod known_blobs;
mod progress;
mod pull;
mod push;

pub use pull::{list_tags, pull};
pub use push::{PushSummary, PushedImage, push};

use crate::store::Store;
use anyhow::Result;
use client::Client;
use config::{Config, Endpoint};
use known_blobs::KnownBlobs;
use progress::Progress;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How to reach registries, beyond what names and the config file say.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `host[:port]` that replaces the domain of every name.
    pub registry: Option<String>,
    /// Plain http for every registry.
    pub insecure: bool,
    /// Replaces every registry's timeout (see [`Endpoint::timeout`]).
    pub timeout: Option<std::time::Duration>,
    /// Replaces every registry's retry count.
    pub retry_times: Option<u32>,
}

/// Blobs transferred at once: enough to fill a link while one blob waits
/// on the registry, few enough not to overload it.
const PARALLEL_BLOBS: usize = 4;

/// What one push or pull run shares: config, one client per registry
/// (keeping tokens and connections), known blob locations, progress.
struct Session<'a> {
    store: &'a Store,
    config: Config,
    options: Options,
    clients: Mutex<HashMap<String, Arc<Client>>>,
    known: KnownBlobs,
    progress: Progress,
}

impl<'a> Session<'a> {
    fn new(store: &'a Store, options: &Options) -> Result<Session<'a>> {
        Ok(Session {
            store,
            config: Config::load()?,
            options: options.clone(),
            clients: Mutex::default(),
            known: KnownBlobs::load(store),
            progress: Progress::new(),
        })
    }

    fn endpoint(&self, name: &crate::names::ImageName) -> Endpoint {
        let mut endpoint = self.config.endpoint(
            name,
            self.options.registry.as_deref(),
            self.options.insecure,
        );
        endpoint.timeout = self.options.timeout.unwrap_or(endpoint.timeout);
        endpoint.retry_times = self.options.retry_times.or(endpoint.retry_times);
        endpoint
    }

    /// One client per registry and settings: the tokens it caches belong
    /// to that registry only.
    fn client(&self, endpoint: &Endpoint) -> Result<Arc<Client>> {
        let key = format!(
            "{:?}",
            Endpoint {
                repository: String::new(),
                ..endpoint.clone()
            }
        );
        let mut clients = self.clients.lock().expect("clients lock");
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = Arc::new(Client::new(endpoint)?);
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// Runs `work` on every item with up to `threads` at a time; stops taking
/// new items after the first error, which it returns.
fn parallel<T: Sync>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            scope.spawn(|| {
                while first_error.lock().expect("error lock").is_none() {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    if let Err(error) = work(item) {
                        first_error.lock().expect("error lock").get_or_insert(error);
                    }
                }
            });
        }
    });
    match first_error.into_inner().expect("error lock") {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// A blob a manifest references: digest and size, checked on reading.
#[derive(Debug, Clone)]
struct BlobRef {
    digest: crate::digest::Digest,
    size: u64,
}

/// The manifest's config and layers (an image manifest, OCI or Docker, or
/// an artifact manifest), or its child manifests (an index).
struct ManifestParts {
    blobs: Vec<BlobRef>,
    children: Vec<(BlobRef, serde_json::Value)>,
    annotations: serde_json::Map<String, serde_json::Value>,
}

impl ManifestParts {
    fn parse(bytes: &[u8], what: &str) -> Result<ManifestParts> {
        let value = client::parse_json(bytes, what)?;
        let descriptor = |d: &serde_json::Value| -> Result<BlobRef> {
            let digest = d.get("digest").and_then(|v| v.as_str()).unwrap_or_default();
            let digest = digest
                .parse()
                .map_err(|e| anyhow::anyhow!("{what}: a descriptor's digest: {e}"))?;
            let size = d
                .get("size")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| anyhow::anyhow!("{what}: a descriptor has no size"))?;
            Ok(BlobRef { digest, size })
        };
        let list = |key: &str| {
            value
                .get(key)
                .and_then(|v| v.as_array())
                .cloned()
                .unwrap_or_default()
        };
        let mut blobs = Vec::new();
        if let Some(config) = value.get("config") {
            blobs.push(descriptor(config)?);
        }
        for layer in list("layers") {
            blobs.push(descriptor(&layer)?);
        }
        let mut children = Vec::new();
        for child in list("manifests") {
            children.push((descriptor(&child)?, child));
        }
        if blobs.is_empty() && children.is_empty() {
            anyhow::bail!("{what} has neither config, layers nor manifests");
        }
        let annotations = value
            .get("annotations")
            .and_then(|a| a.as_object())
            .cloned()
            .unwrap_or_default();
        Ok(ManifestParts {
            blobs,
            children,
            annotations,
        })
    }
}
