//! Why one attempt at a request failed, and whether another may succeed:
//! transport errors sorted into lasting and passing ones, and a registry's
//! error answers turned into short messages (408, 429 and 5xx retriable,
//! with the `Retry-After` they ask for).

use super::body::{MAX_ERROR_BYTES, read_body};
use anyhow::anyhow;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use std::time::{Duration, Instant};

/// Why one attempt failed, and whether another may succeed.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub retriable: bool,
    /// How long the registry asked to wait (`Retry-After` on 429 or 503).
    pub retry_after: Option<Duration>,
    /// The connection was refused: nothing listens there (yet).
    pub refused: bool,
}

/// The longest `Retry-After` herd honours; a longer one is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl Failure {
    pub fn fatal(error: anyhow::Error) -> Failure {
        Failure {
            error,
            retriable: false,
            retry_after: None,
            refused: false,
        }
    }

    /// Connection refused or reset, timeouts: the registry may come back.
    /// A host name that does not resolve, or a TLS handshake that fails
    /// (bad certificate, plain http), will not within seconds.
    pub fn transport(error: reqwest::Error, what: &str) -> Failure {
        Failure::transport_io(std::io::Error::other(error), what)
    }

    /// [`Failure::transport`] for an error met reading a body.
    pub fn transport_io(error: std::io::Error, what: &str) -> Failure {
        let mut lasting = false;
        let mut refused = false;
        let mut timed_out = false;
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(cause) = source {
            let io = cause.downcast_ref::<std::io::Error>();
            // rustls reports handshake failures as InvalidData.
            lasting |= io.is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidData)
                || cause.to_string().contains("dns error");
            refused |= io.is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
            timed_out |= io.is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
                || cause
                    .downcast_ref::<reqwest::Error>()
                    .is_some_and(reqwest::Error::is_timeout);
            // An io::Error's source() skips the error it wraps; get_ref() does not.
            source = match io.and_then(std::io::Error::get_ref) {
                Some(inner) => Some(inner),
                None => cause.source(),
            };
        }
        let chain = format!("{:#}", anyhow::Error::new(error));
        let hint = if chain.contains("InvalidContentType") || chain.contains("certificate") {
            " (for a plain-http registry use --insecure or `insecure: true` in herd's config; for a private CA, `ca:`)"
        } else if timed_out {
            " (the registry did not answer within the timeout; --timeout SECONDS or `timeout:` in herd's config sets it)"
        } else {
            ""
        };
        Failure {
            error: anyhow!("{what}: {chain}{hint}"),
            retriable: !lasting,
            retry_after: None,
            refused,
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::fatal(error)
    }
}

/// Passes answers with an `expected` status; turns others into a failure
/// that quotes the registry's error codes. 408, 429 and 5xx may be retried.
pub fn check(response: Response, expected: &[StatusCode], what: &str) -> Result<Response, Failure> {
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
    // Enough to quote, read in bounded time; what cannot be read is left.
    let mut response = response;
    let mut body = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let _ = read_body(&mut response, &mut body, MAX_ERROR_BYTES, deadline, what);
    let body: String = String::from_utf8_lossy(&body).chars().take(2000).collect();
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
        refused: false,
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
