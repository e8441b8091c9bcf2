//! One registry host spoken to over the OCI distribution API: requests with
//! authentication (basic or bearer token, answered on the first 401 and
//! then sent up front), retries with backoff, and the blob and manifest
//! operations push and pull are made of.

use super::auth::{self, Challenge, Credentials};
use super::config::Endpoint;
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
use std::time::Duration;

/// Everything herd accepts when it asks for a manifest.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Manifests are small; a bigger answer is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 8 << 20;

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

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub retriable: bool,
    /// How long the registry asked to wait (`Retry-After` on 429 or 503).
    pub retry_after: Option<Duration>,
}

/// The longest `Retry-After` herd honours; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Failure {
    fn fatal(error: anyhow::Error) -> Failure {
        Failure {
            error,
            retriable: false,
            retry_after: None,
        }
    }

    /// Connection refused or reset, timeouts: the registry may come back.
    /// A host name that does not resolve, or a TLS handshake that fails
    /// (bad certificate, plain http), will not within seconds.
    fn transport(error: reqwest::Error, what: &str) -> Failure {
        let mut lasting = false;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            let io = cause.downcast_ref::<std::io::Error>();
            // rustls reports handshake failures as InvalidData.
            lasting |= io.is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
                || cause.to_string().contains("dns error");
            // An io::Error's source() skips the error it wraps; get_ref() does not.
            source = match io.and_then(std::io::Error::get_ref) {
                Some(inner) => Some(inner),
                None => cause.source(),
            };
        }
        let chain = format!("{:#}", anyhow::Error::new(error));
        let hint = if chain.contains("InvalidContentType") || chain.contains("certificate") {
            " (for a plain-http registry use --insecure or `insecure: true` in herd's config; for a private CA, `ca:`)"
        } else {
            ""
        };
        Failure {
            error: anyhow!("{what}: {chain}{hint}"),
            retriable: !lasting,
            retry_after: None,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::fatal(error)
    }
}

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
            // Uploads of big layers take as long as they take; a dead peer
            // is noticed by the connect timeout and TCP keepalive.
            .timeout(None)
            .connect_timeout(Duration::from_secs(15))
            .tcp_keepalive(Duration::from_secs(30))
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
        })
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

    /// Runs `attempt` until it succeeds, fails for good, or the backoff
    /// schedule is used up.
    pub fn retry<T>(&self, mut attempt: impl FnMut() -> Result<T, Failure>) -> Result<T> {
        let mut delays = BACKOFF.iter();
        loop {
            match attempt() {
                Ok(value) => return Ok(value),
                Err(failure) if failure.retriable => match delays.next() {
                    Some(delay) => {
                        // The registry's own estimate, when longer than ours.
                        let delay = failure
                            .retry_after
                            .map_or(*delay, |asked| asked.max(*delay));
                        tracing::warn!("{:#}; retrying in {delay:?}", failure.error);
                        std::thread::sleep(delay);
                    }
                    None => {
                        return Err(anyhow!(
                            "{:#} (gave up after {} attempts)",
                            failure.error,
                            BACKOFF.len() + 1
                        ));
                    }
                },
                Err(failure) => return Err(failure.error),
            }
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
            let mut request = build()?;
            let header = {
                let state = self.auth.lock().expect("auth lock");
                state
                    .headers
                    .get(&key)
                    .or_else(|| state.headers.get(&basic_key(repository)))
                    .cloned()
            };
            if let Some(header) = &header {
                request = request.header(AUTHORIZATION, header);
            }
            let response = request.send().map_err(|e| Failure::transport(e, what))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                tracing::debug!("{what}: {}", response.status());
                return Ok(response);
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
        let request = match credentials {
            Some(credentials) if credentials.identity_token => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", "herd".to_string()),
                    ("refresh_token", credentials.secret.expose().to_string()),
                    ("scope", scopes.join(" ")),
                ];
                form.extend(service.map(|s| ("service", s.to_string())));
                self.http.post(url).form(&form)
            }
            _ => {
                let mut query: Vec<(&str, &str)> =
                    service.map(|s| ("service", s)).into_iter().collect();
                query.extend(scopes.iter().map(|s| ("scope", s.as_str())));
                let request = self.http.get(url).query(&query);
                match credentials {
                    Some(credentials) => request.header(AUTHORIZATION, credentials.basic_header()),
                    None => request,
                }
            }
        };
        let what_token = format!("{what}: getting a token from {realm}");
        let response = request
            .send()
            .map_err(|e| Failure::transport(e, &what_token))?;
        if matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let who = credentials.map_or("anonymous access".to_string(), Credentials::describe);
            return Err(Failure::fatal(anyhow!(
                "{what_token}: the token service refused {who} ({})",
                response.status()
            )));
        }
        let response = check(response, &[StatusCode::OK], &what_token)?;
        #[derive(serde::Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let answer: TokenAnswer = response.json().map_err(|e| {
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
            let response = self.send(repository, &pull_scope(repository), &what, &|| Ok(self.http.get(&url)))?;
            let mut response = check(response, &[StatusCode::OK], &what)?;
            let temp = store.temp_file()?;
            let mut writer = HashingWriter::new(Counted { inner: std::io::BufWriter::new(temp), progress: progress.clone() });
            // A connection cut mid-body is worth another attempt.
            response.copy_to(&mut writer).map_err(|e| Failure::transport(e, &what))?;
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
            let response = check(response, &[StatusCode::OK], &what)?;
            let claimed = header(&response, "docker-content-digest");
            let content_type = header(&response, "content-type");
            if response.content_length().is_some_and(|n| n > MAX_MANIFEST_BYTES) {
                return Err(Failure::fatal(anyhow!("{what}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes")));
            }
            let bytes = response.bytes().map_err(|e| Failure::transport(e, &what))?.to_vec();
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

/// The body of a blob upload. With a progress bar, the file is read
/// through a counter so the bar moves. Without one, the file is mapped and
/// handed over whole: the HTTP stack then writes it straight from the page
/// cache in large writes, instead of copying it 8 KiB at a time through
/// reqwest's reader pipe, which costs more CPU than the registry's hashing.
fn blob_body(
    path: &std::path::Path,
    size: u64,
    progress: &BlobProgress,
) -> Result<reqwest::blocking::Body> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    if progress.is_drawn() {
        let counted = Counted {
            inner: file,
            progress: progress.clone(),
        };
        return Ok(reqwest::blocking::Body::sized(counted, size));
    }
    if size == 0 {
        return Ok(reqwest::blocking::Body::from(Vec::new()));
    }
    // SAFETY: store blobs are immutable once committed (they are written
    // to tmp/ and renamed into place, never rewritten), so the mapping
    // cannot change under us; removing the file keeps the mapping valid.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    if map.len() as u64 != size {
        bail!(
            "{} has {} bytes, expected {size}",
            path.display(),
            map.len()
        );
    }
    Ok(reqwest::blocking::Body::from(bytes::Bytes::from_owner(map)))
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

/// Passes answers with an `expected` status; turns others into a failure
/// that quotes the registry's error codes. 408, 429 and 5xx may be retried.
fn check(response: Response, expected: &[StatusCode], what: &str) -> Result<Response, Failure> {
    let status = response.status();
    if expected.contains(&status) {
        return Ok(response);
    }
    let retriable = status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
    let body: String = response
        .text()
        .unwrap_or_default()
        .chars()
        .take(2000)
        .collect();
    let detail = registry_errors(&body).unwrap_or_else(|| {
        body.chars()
            .take(300)
            .collect::<String>()
            .trim()
            .to_string()
    });
    let error = if detail.is_empty() {
        anyhow!("{what}: the registry answered {status}")
    } else {
        anyhow!("{what}: the registry answered {status}: {detail}")
    };
    Err(Failure {
        error,
        retriable,
        retry_after,
    })
}

/// `Retry-After` (RFC 9110): delay-seconds or an HTTP date, capped at
/// [`MAX_RETRY_AFTER`]; `None` when it is neither.
fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or_default(),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `{"errors":[{"code":"BLOB_UNKNOWN","message":"..."}]}` -> `BLOB_UNKNOWN: ...`
fn registry_errors(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let errors = value.get("errors")?.as_array()?;
    let lines: Vec<String> = errors
        .iter()
        .map(|e| {
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
            format!("{code}: {message}")
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// Fails unless `bytes` is JSON: registries answer errors with HTML too.
pub fn parse_json(bytes: &[u8], what: &str) -> Result<serde_json::Value> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(e) => bail!("{what} is not JSON: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        let now = httpdate::parse_http_date("Mon, 23 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 12:00:20 GMT", now),
            Some(Duration::from_secs(20))
        );
        // A date in the past: retry at once (after the usual backoff).
        assert_eq!(
            parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn registry_error_bodies_become_short_messages() {
        let body = r#"{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry","detail":{}}]}"#;
        assert_eq!(
            registry_errors(body).as_deref(),
            Some("BLOB_UPLOAD_UNKNOWN: blob upload unknown to registry")
        );
        assert_eq!(registry_errors("<html>"), None);
    }
}
