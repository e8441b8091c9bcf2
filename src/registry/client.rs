//! One registry host spoken to over the OCI distribution API: requests with
//! authentication (basic or bearer token, answered on the first 401 and
//! then sent up front), retries with backoff, and the blob and manifest
//! operations push and pull are made of.
//!
//! The registry is not trusted further than it must be: credentials (and
//! tokens got with them) go only to its own scheme, host and port, never
//! to an upload location or a redirect elsewhere, and to a token service
//! elsewhere only over https; every wait is bounded by the endpoint's
//! timeout and every body by what is expected of it.

use super::auth::{self, Challenge, Credentials};
use super::body::{SLOWEST_BYTES_PER_SECOND, blob_body, read_body, read_small};
use super::config::Endpoint;
pub use super::failure::Failure;
use super::failure::check;
use super::progress::{BlobProgress, Counted};
use crate::digest::{Digest, HashingWriter};
use crate::store::Store;
use anyhow::{Context, Result, anyhow, bail};
use reqwest::StatusCode;
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Everything herd accepts when it asks for a manifest.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests are small; a bigger answer is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// A token answer is a few KiB of JSON.
const MAX_TOKEN_BYTES: u64 = 1 << 20;

/// Delays between attempts: about 30 s in all, enough for a registry
/// restart or a load balancer to recover.
const BACKOFF: [Duration; 7] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
];

/// The access a request needs, as token scopes:
/// `repository:team/app:pull,push`.
pub type Scopes = Vec<String>;

pub fn pull_scope(repository: &str) -> Scopes {
    vec![format!("repository:{repository}:pull")]
}

pub fn push_scope(repository: &str) -> Scopes {
    vec![format!("repository:{repository}:pull,push")]
}

/// A connection to one registry host.
pub struct Client {
    http: reqwest::blocking::Client,
    endpoint: Endpoint,
    base: reqwest::Url,
    auth: Mutex<AuthState>,
    /// The registry answered at least once: a refused connection after
    /// that is a restart worth waiting for, before it a registry that is
    /// not there.
    reached: AtomicBool,
}

#[derive(Default)]
struct AuthState {
    /// Credentials looked up so far, by repository (containers' auth.json
    /// can hold different ones per namespace).
    credentials: HashMap<String, Option<Credentials>>,
    /// `Authorization` values that worked, by scope set; a basic one is
    /// filed under the repository's scopes too.
    headers: HashMap<String, String>,
}

impl Client {
    /// A client for `endpoint`'s host; the repository of `endpoint` is the
    /// default for operations.
    pub fn new(endpoint: &Endpoint) -> Result<Client> {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("herd/", env!("CARGO_PKG_VERSION")))
            // Each request gets its own timeout in `send`: the endpoint's,
            // or for a blob upload that plus what its size needs.
            .timeout(None)
            .connect_timeout(endpoint.timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // reqwest drops Authorization on a redirect to another
                // host or port; a redirect to plain http is refused.
                let downgrade = attempt.url().scheme() == "http"
                    && attempt.previous().iter().any(|u| u.scheme() == "https");
                if downgrade {
                    attempt.error("a redirect from https to plain http")
                } else if attempt.previous().len() > 10 {
                    attempt.error("more than 10 redirects")
                } else {
                    attempt.follow()
                }
            }))
            .pool_max_idle_per_host(16);
        if let Some(ca) = &endpoint.ca {
            let pem = std::fs::read(ca).with_context(|| {
                format!("reading the CA file {} for {}", ca.display(), endpoint.host)
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
                format!(
                    "{} (CA for {}) is not a PEM certificate bundle",
                    ca.display(),
                    endpoint.host
                )
            })?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().context("setting up the HTTP client")?;
        let base = reqwest::Url::parse(&endpoint.base_url())
            .with_context(|| format!("{} is not a usable registry host", endpoint.host))?;
        Ok(Client {
            http,
            endpoint: endpoint.clone(),
            base,
            auth: Mutex::default(),
            reached: AtomicBool::new(false),
        })
    }

    /// True if `url` is this registry: its scheme, host and port.
    fn is_own(&self, url: &reqwest::Url) -> bool {
        same_origin(url, &self.base)
    }

    /// True if a token service at `realm` may be sent this registry's
    /// credentials: it is the registry itself, or speaks https (never a
    /// downgrade to plain http), or the config file trusts it.
    fn may_get_credentials(&self, realm: &reqwest::Url) -> bool {
        let trusted = self
            .endpoint
            .trusted_realm
            .as_deref()
            .and_then(|t| reqwest::Url::parse(t).ok())
            .is_some_and(|t| same_origin(&t, realm));
        self.is_own(realm) || realm.scheme() == "https" || trusted
    }

    pub fn host(&self) -> &str {
        &self.endpoint.host
    }

    fn url(&self, repository: &str, rest: &str) -> String {
        Endpoint {
            repository: repository.to_string(),
            ..self.endpoint.clone()
        }
        .url(rest)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries
    /// (the endpoint's count, else the backoff schedule) are used up. A
    /// refused connection to a registry not reached yet gets one quick
    /// retry only: nothing listens there, and waiting will not change it.
    pub fn retry<T>(&self, mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T> {
        let retries = self
            .endpoint
            .retry_times
            .map_or(BACKOFF.len(), |n| n as usize);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) if !failure.retriable => return Err(failure.error),
                Err(failure) => failure,
            };
            let not_there = failure.refused && !self.reached.load(Ordering::Relaxed);
            let allowed = if not_there { retries.min(1) } else { retries };
            if attempts > allowed {
                let plural = if attempts == 1 { "" } else { "s" };
                let why = if not_there {
                    format!("nothing accepts connections at {}", self.host())
                } else {
                    "--retry-times or `retry_times:` in herd's config sets the retries".into()
                };
                return Err(anyhow!(
                    "{:#} (gave up after {attempts} attempt{plural}; {why})",
                    failure.error
                ));
            }
            let delay = BACKOFF[(attempts - 1).min(BACKOFF.len() - 1)];
            // The registry's own estimate, when longer than ours.
            let delay = failure.retry_after.map_or(delay, |asked| asked.max(delay));
            tracing::warn!(
                "{}; retrying in {delay:?}",
                crate::terminal::escape_controls(&format!("{:#}", failure.error))
            );
            std::thread::sleep(delay);
        }
    }

    /// Sends one request built by `build`, authenticating when the registry
    /// answers 401 and sending it again. Any other status is returned.
    fn send(
        &self,
        repository: &str,
        scopes: &Scopes,
        what: &str,
        build: &dyn Fn() -> Result<RequestBuilder>,
    ) -> Result<Response, Failure> {
        let key = scopes.join(" ");
        let mut authenticated = false;
        loop {
            let mut request = build()?
                .build()
                .map_err(|e| Failure::fatal(anyhow!("{what}: {e}")))?;
            if request.timeout().is_none() {
                *request.timeout_mut() = Some(self.endpoint.timeout);
            }
            // Never to an upload location or anything else elsewhere.
            if self.is_own(request.url()) {
                let header = {
                    let state = self.auth.lock().expect("auth lock");
                    state
                        .headers
                        .get(&key)
                        .or_else(|| state.headers.get(&basic_key(repository)))
                        .cloned()
                };
                if let Some(header) = header {
                    let mut value =
                        reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
                            anyhow!("{what}: the token has characters HTTP cannot carry")
                        })?;
                    value.set_sensitive(true);
                    request.headers_mut().insert(AUTHORIZATION, value);
                }
            }
            let response = self
                .http
                .execute(request)
                .map_err(|e| Failure::transport(e, what))?;
            self.reached.store(true, Ordering::Relaxed);
            if response.status() != StatusCode::UNAUTHORIZED {
                tracing::debug!("{what}: {}", response.status());
                return Ok(response);
            }
            if !self.is_own(response.url()) {
                return Err(Failure::fatal(anyhow!(
                    "{what}: {} asks for credentials (401 Unauthorized); herd sends the credentials of {} only to {} itself",
                    origin(response.url()),
                    self.host(),
                    origin(&self.base)
                )));
            }
            if authenticated {
                return Err(Failure::fatal(self.refused(repository, what)));
            }
            self.authenticate(&response, repository, scopes, what)?;
            authenticated = true;
        }
    }

    fn credentials(&self, repository: &str) -> Result<Option<Credentials>> {
        if let Some(found) = self
            .auth
            .lock()
            .expect("auth lock")
            .credentials
            .get(repository)
        {
            return Ok(found.clone());
        }
        let found = auth::lookup(&self.endpoint.host, repository)?;
        self.auth
            .lock()
            .expect("auth lock")
            .credentials
            .insert(repository.to_string(), found.clone());
        Ok(found)
    }

    /// Answers a 401's challenge: basic credentials, or a token fetched
    /// from the realm it names.
    fn authenticate(
        &self,
        response: &Response,
        repository: &str,
        scopes: &Scopes,
        what: &str,
    ) -> Result<(), Failure> {
        let host = &self.endpoint.host;
        let challenge = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(Challenge::parse);
        let Some(challenge) = challenge else {
            return Err(Failure::fatal(anyhow!(
                "{what}: {host} answered 401 Unauthorized without a Basic or Bearer challenge"
            )));
        };
        let credentials = self.credentials(repository)?;
        let header = match challenge {
            Challenge::Basic => match &credentials {
                Some(credentials) if !credentials.identity_token => credentials.basic_header(),
                Some(_) => {
                    return Err(Failure::fatal(anyhow!(
                        "{what}: {host} wants a password but herd has only an identity token for it"
                    )));
                }
                None => return Err(Failure::fatal(self.refused(repository, what))),
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let mut wanted = scopes.clone();
                wanted.extend(
                    scope
                        .into_iter()
                        .flat_map(|s| s.split(' ').map(str::to_string).collect::<Vec<_>>()),
                );
                wanted.sort();
                wanted.dedup();
                let token = self.fetch_token(
                    &realm,
                    service.as_deref(),
                    &wanted,
                    credentials.as_ref(),
                    what,
                )?;
                format!("Bearer {token}")
            }
        };
        let key = if header.starts_with("Basic ") {
            basic_key(repository)
        } else {
            scopes.join(" ")
        };
        self.auth
            .lock()
            .expect("auth lock")
            .headers
            .insert(key, header);
        Ok(())
    }

    /// Gets a token from a bearer realm: GET with basic credentials (or
    /// anonymously), or POST of a refresh token for an identity token.
    fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        credentials: Option<&Credentials>,
        what: &str,
    ) -> Result<String, Failure> {
        let url = reqwest::Url::parse(realm).map_err(|e| {
            Failure::fatal(anyhow!(
                "{what}: the token realm {realm:?} is not a URL: {e}"
            ))
        })?;
        let withheld = credentials.filter(|_| !self.may_get_credentials(&url));
        if let Some(withheld) = withheld {
            tracing::warn!(
                "{what}: not sending {} to the token service {}: {WITHHELD_WHY}",
                withheld.describe(),
                origin(&url)
            );
        }
        let credentials = credentials.filter(|_| withheld.is_none());
        let request = match credentials {
            Some(credentials) if credentials.identity_token => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", "herd".to_string()),
                    ("refresh_token", credentials.secret.expose().to_string()),
                    ("scope", scopes.join(" ")),
                ];
                form.extend(service.map(|s| ("service", s.to_string())));
                self.http.post(url.clone()).form(&form)
            }
            _ => {
                let mut query: Vec<(&str, &str)> =
                    service.map(|s| ("service", s)).into_iter().collect();
                query.extend(scopes.iter().map(|s| ("scope", s.as_str())));
                let request = self.http.get(url.clone()).query(&query);
                match credentials {
                    Some(credentials) => request.header(AUTHORIZATION, credentials.basic_header()),
                    None => request,
                }
            }
        };
        let what_token = format!("{what}: getting a token from {}", origin(&url));
        let response = request
            .timeout(self.endpoint.timeout)
            .send()
            .map_err(|e| Failure::transport(e, &what_token))?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let who = match (credentials, withheld) {
                (Some(credentials), _) => credentials.describe(),
                (None, Some(withheld)) => format!(
                    "anonymous access (herd did not send it {}: {WITHHELD_WHY})",
                    withheld.describe()
                ),
                (None, None) => "anonymous access".to_string(),
            };
            return Err(Failure::fatal(anyhow!(
                "{what_token}: the token service refused {who} ({})",
                response.status()
            )));
        }
        let mut response = check(response, &[StatusCode::OK], &what_token)?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let body = read_small(
            &mut response,
            MAX_TOKEN_BYTES,
            self.endpoint.timeout,
            &what_token,
        )?
        .ok_or_else(|| {
            anyhow!("{what_token}: the answer is larger than {MAX_TOKEN_BYTES} bytes")
        })?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            Failure::fatal(anyhow!("{what_token}: the answer is not token JSON: {e}"))
        })?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Failure::fatal(anyhow!(
                    "{what_token}: the answer has neither `token` nor `access_token`"
                ))
            })
    }

    /// The error for a 401 that authentication did not cure.
    fn refused(&self, repository: &str, what: &str) -> anyhow::Error {
        let host = &self.endpoint.host;
        match self.credentials(repository) {
            Ok(Some(credentials)) => anyhow!(
                "{what}: {host} refused {} (401 Unauthorized): check the password or token, or log in again (`podman login {host}` or `docker login {host}`)",
                credentials.describe()
            ),
            Ok(None) => anyhow!(
                "{what}: {host} requires authentication and herd found no credentials for it; log in with `podman login {host}` or `docker login {host}`, or set REGISTRY_AUTH_FILE or DOCKER_CONFIG"
            ),
            Err(error) => error.context(format!("{what}: {host} requires authentication")),
        }
    }

    /// True if `repository` has the blob. `HEAD` needs only pull access.
    pub fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool> {
        let what = format!("checking for blob {digest} in {}/{repository}", self.host());
        let url = self.url(repository, &format!("blobs/{digest}"));
        self.retry(|| {
            let response = self.send(repository, &push_scope(repository), &what, &|| {
                Ok(self.http.head(&url))
            })?;
            let response = check(response, &[StatusCode::OK, StatusCode::NOT_FOUND], &what)?;
            Ok(response.status() == StatusCode::OK)
        })
    }

    /// Asks the registry to link a blob it has in `from` into `repository`.
    /// True when it did (201); false when it opened an upload instead
    /// (202), which is then cancelled.
    pub fn mount_blob(&self, repository: &str, digest: &Digest, from: &str) -> Result<bool> {
        let what = format!(
            "mounting blob {digest} from {from} into {}/{repository}",
            self.host()
        );
        let url = self.url(repository, "blobs/uploads/");
        let mut scopes = push_scope(repository);
        scopes.extend(pull_scope(from));
        self.retry(|| {
            let request = || {
                Ok(self
                    .http
                    .post(&url)
                    .query(&[("mount", digest.as_str()), ("from", from)])
                    .header(CONTENT_LENGTH, 0))
            };
            let response = self.send(repository, &scopes, &what, &request)?;
            let response = check(
                response,
                &[StatusCode::CREATED, StatusCode::ACCEPTED],
                &what,
            )?;
            if response.status() == StatusCode::CREATED {
                return Ok(true);
            }
            // Free the session the registry opened; failure only leaves
            // it to the registry's own cleanup.
            if let Ok(location) = self.location(&response, &what) {
                let _ = self.send(repository, &push_scope(repository), &what, &|| {
                    Ok(self.http.delete(location.clone()))
                });
            }
            Ok(false)
        })
    }

    /// Uploads the file at `path` as blob `digest`: POST for a session,
    /// then one streaming PUT. A failed attempt starts over from the POST,
    /// since a restarted registry forgets its upload sessions.
    pub fn upload_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        path: &std::path::Path,
        progress: &BlobProgress,
    ) -> Result<()> {
        let what = format!("uploading blob {digest} to {}/{repository}", self.host());
        let scopes = push_scope(repository);
        let start_url = self.url(repository, "blobs/uploads/");
        self.retry(|| {
            let response = self.send(repository, &scopes, &what, &|| {
                Ok(self.http.post(&start_url).header(CONTENT_LENGTH, 0))
            })?;
            let response = check(response, &[StatusCode::ACCEPTED], &what)?;
            let mut url = self.location(&response, &what)?;
            url.query_pairs_mut().append_pair("digest", digest.as_str());
            let request = || {
                progress.restart();
                let body = blob_body(path, size, progress)?;
                Ok(self
                    .http
                    .put(url.clone())
                    .timeout(self.transfer_time(size))
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .body(body))
            };
            let response = self.send(repository, &scopes, &what, &request)?;
            match check(response, &[StatusCode::CREATED], &what) {
                // The session vanished (registry restarted): start over.
                Err(failure) if failure.error.to_string().contains("BLOB_UPLOAD_UNKNOWN") => {
                    Err(Failure {
                        retriable: true,
                        ..failure
                    })
                }
                other => other.map(drop),
            }
        })
    }

    /// The upload URL of a 202 answer, which may be relative.
    fn location(&self, response: &Response, what: &str) -> Result<reqwest::Url, Failure> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                anyhow!(
                    "{what}: the registry answered {} without a Location header",
                    response.status()
                )
            })?;
        Ok(self
            .base
            .join(location)
            .map_err(|e| anyhow!("{what}: the upload location {location:?} is not a URL: {e}"))?)
    }

    /// Downloads blob `digest` into the store, checking size and digest.
    pub fn download_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        store: &Store,
        progress: &BlobProgress,
    ) -> Result<()> {
        let what = format!(
            "downloading blob {digest} from {}/{repository}",
            self.host()
        );
        let url = self.url(repository, &format!("blobs/{digest}"));
        self.retry(|| {
            progress.restart();
            let response = self.send(repository, &pull_scope(repository), &what, &|| Ok(self.http.get(&url).timeout(self.transfer_time(size))))?;
            let mut response = check(response, &[StatusCode::OK], &what)?;
            if let Some(announced) = response.content_length().filter(|n| *n != size) {
                return Err(Failure::fatal(anyhow!("{what}: the registry announces {announced} bytes, the manifest says the blob has {size}")));
            }
            // Dropped (and so removed) unless committed.
            let temp = store.temp_file()?;
            let mut writer = HashingWriter::new(Counted { inner: std::io::BufWriter::new(temp), progress: progress.clone() });
            let deadline = Instant::now() + self.transfer_time(size);
            if read_body(&mut response, &mut writer, size, deadline, &what)?.is_none() {
                return Err(Failure::fatal(anyhow!("{what}: the registry sent more than the {size} bytes the manifest says the blob has; herd stopped reading there and kept nothing")));
            }
            let (counted, actual, written) = writer.finish();
            let temp = counted.inner.into_inner().map_err(|e| anyhow!("{what}: writing the blob: {}", e.error()))?;
            if written != size || actual != *digest {
                return Err(Failure::fatal(anyhow!(
                    "{what}: the registry sent {written} bytes with digest {actual}, expected {size} bytes with digest {digest}"
                )));
            }
            store.commit_blob(temp, digest)?;
            Ok(())
        })
    }

    /// The digest the registry has for `reference`, or `None` if it has
    /// no such manifest.
    pub fn manifest_digest(&self, repository: &str, reference: &str) -> Result<Option<String>> {
        let what = format!(
            "checking for manifest {}/{repository}:{reference}",
            self.host()
        );
        let url = self.url(repository, &format!("manifests/{reference}"));
        self.retry(|| {
            let request = || {
                Ok(self
                    .http
                    .head(&url)
                    .header(ACCEPT, MANIFEST_TYPES.join(", ")))
            };
            let response = self.send(repository, &push_scope(repository), &what, &request)?;
            let response = check(response, &[StatusCode::OK, StatusCode::NOT_FOUND], &what)?;
            Ok((response.status() == StatusCode::OK)
                .then(|| header(&response, "docker-content-digest"))
                .flatten())
        })
    }

    /// Stores a manifest under `reference` (a tag or its digest).
    pub fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<()> {
        let what = format!("pushing manifest {}/{repository}:{reference}", self.host());
        let url = self.url(repository, &format!("manifests/{reference}"));
        let expected = Digest::of(bytes);
        self.retry(|| {
            let request = || {
                Ok(self
                    .http
                    .put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(bytes.to_vec()))
            };
            let response = self.send(repository, &push_scope(repository), &what, &request)?;
            let response = check(response, &[StatusCode::CREATED, StatusCode::OK], &what)?;
            match header(&response, "docker-content-digest") {
                Some(digest) if digest != expected.as_str() => Err(Failure::fatal(anyhow!(
                    "{what}: the registry stored it as {digest}, not {expected}"
                ))),
                _ => Ok(()),
            }
        })
    }

    /// Every tag of `repository`, from the tags list API, following the
    /// `Link: <...>; rel="next"` pages of registries that paginate (only
    /// to the registry's own origin, at most [`MAX_TAG_PAGES`] pages of at
    /// most [`MAX_TAG_LIST_BYTES`] each). A repository the registry does
    /// not know has no tags.
    pub fn list_tags(&self, repository: &str) -> Result<Vec<String>> {
        let what = format!("listing the tags of {}/{repository}", self.host());
        let first = self.url(repository, "tags/list");
        let origin_url: reqwest::Url = first
            .parse()
            .with_context(|| format!("{what}: {first} is not a URL"))?;
        let mut tags = Vec::new();
        let mut next = Some(first);
        for _ in 0..MAX_TAG_PAGES {
            let Some(url) = next.take() else {
                return Ok(tags);
            };
            let (page, link) = self.retry(|| {
                let request = || Ok(self.http.get(&url).header(ACCEPT, "application/json"));
                let response = self.send(repository, &pull_scope(repository), &what, &request)?;
                if response.status() == StatusCode::NOT_FOUND {
                    return Ok((Vec::new(), None));
                }
                let mut response = check(response, &[StatusCode::OK], &what)?;
                let link = response
                    .headers()
                    .get("link")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let bytes = read_small(
                    &mut response,
                    MAX_TAG_LIST_BYTES,
                    self.endpoint.timeout,
                    &what,
                )?
                .ok_or_else(|| {
                    Failure::fatal(anyhow!(
                        "{what}: the answer is larger than {MAX_TAG_LIST_BYTES} bytes"
                    ))
                })?;
                Ok((bytes, link))
            })?;
            if page.is_empty() {
                return Ok(tags);
            }
            let list: TagList = serde_json::from_slice(&page)
                .with_context(|| format!("{what}: the answer is not a tag list"))?;
            tags.extend(list.tags.unwrap_or_default());
            next = link.and_then(|l| next_page(&origin_url, &l));
        }
        bail!("{what}: more than {MAX_TAG_PAGES} pages of tags")
    }

    /// Fetches a manifest: its bytes (checked against the registry's
    /// digest header, or against `reference` when that is a digest) and
    /// media type.
    pub fn get_manifest(&self, repository: &str, reference: &str) -> Result<(Vec<u8>, String)> {
        let what = format!("fetching manifest {}/{repository}:{reference}", self.host());
        let url = self.url(repository, &format!("manifests/{reference}"));
        self.retry(|| {
            let request = || Ok(self.http.get(&url).header(ACCEPT, MANIFEST_TYPES.join(", ")));
            let response = self.send(repository, &pull_scope(repository), &what, &request)?;
            if response.status() == StatusCode::NOT_FOUND {
                return Err(Failure::fatal(anyhow!("{what}: {} has no such image (404 Not Found)", self.host())));
            }
            let mut response = check(response, &[StatusCode::OK], &what)?;
            let claimed = header(&response, "docker-content-digest");
            let content_type = header(&response, "content-type");
            let too_large = || Failure::fatal(anyhow!("{what}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes"));
            if response.content_length().is_some_and(|n| n > MAX_MANIFEST_BYTES) {
                return Err(too_large());
            }
            // Whatever the encoding (a chunked answer has no length).
            let bytes = read_small(&mut response, MAX_MANIFEST_BYTES, self.endpoint.timeout, &what)?.ok_or_else(too_large)?;
            let actual = Digest::of(&bytes);
            let wanted = if reference.starts_with("sha256:") { Some(reference.to_string()) } else { claimed };
            if let Some(wanted) = wanted.filter(|w| w.starts_with("sha256:"))
                && wanted != actual.as_str()
            {
                return Err(Failure::fatal(anyhow!("{what}: the registry sent a manifest with digest {actual}, expected {wanted}")));
            }
            let media_type = content_type
                .filter(|t| MANIFEST_TYPES.contains(&t.as_str()))
                .or_else(|| media_type_field(&bytes))
                .ok_or_else(|| anyhow!("{what}: the answer is not a manifest herd knows (no OCI or Docker schema 2 media type)"))?;
            Ok((bytes, media_type))
        })
    }
}

impl Client {
    /// How long a blob of `size` bytes may take to go either way.
    fn transfer_time(&self, size: u64) -> Duration {
        self.endpoint.timeout + Duration::from_secs(size / SLOWEST_BYTES_PER_SECOND)
    }
}

/// The most pages and bytes per page a tag list may take.
const MAX_TAG_PAGES: usize = 100;
const MAX_TAG_LIST_BYTES: u64 = 4 << 20;

#[derive(serde::Deserialize)]
struct TagList {
    tags: Option<Vec<String>>,
}

/// The next page a `Link` header names, when it is on the registry's own
/// origin (RFC 8288: `<url>; rel="next"`, the URL maybe relative).
fn next_page(base: &reqwest::Url, link: &str) -> Option<String> {
    let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
    if !params.contains("rel=\"next\"") && !params.contains("rel=next") {
        return None;
    }
    let url = base.join(target).ok()?;
    same_origin(base, &url).then(|| url.to_string())
}

/// Why a token service does not get the registry's credentials.
const WITHHELD_WHY: &str = "credentials go only to their registry's own host and port, or to a token service over https (or the one `trusted_realm` in herd's config names)";

/// `scheme://host:port`, for messages.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

/// Same scheme, host and port (an absent port is the scheme's default).
fn same_origin(a: &reqwest::Url, b: &reqwest::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Basic credentials hold for every request to a repository, whatever
/// its scopes; they are sent up front once a challenge asked for them.
fn basic_key(repository: &str) -> String {
    format!("basic {repository}")
}

/// The `mediaType` a manifest names itself.
pub fn media_type_field(bytes: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    value.get("mediaType")?.as_str().map(str::to_string)
}

fn header(response: &Response, name: &str) -> Option<String> {
    let value = response.headers().get(name)?.to_str().ok()?;
    // `application/json; charset=utf-8` -> `application/json`
    Some(value.split(';').next().unwrap_or(value).trim().to_string())
}

/// Fails unless `bytes` is JSON: registries answer errors with HTML too.
pub fn parse_json(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(e) => bail!("{what} is not JSON: {e}"),
    }
}
