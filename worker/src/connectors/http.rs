//! The one HTTP call path every HTTP connector uses: bearer token from the
//! shared [`TokenCache`], explicit timeouts (the shared client's), in-process
//! retries with `Retry-After` / rate-limit headers honoured ([`http_retry`]),
//! an expired token renewed once at once, and the vendor's error body mapped
//! by the connector's own mapper. Redaction of what a call sent stays with
//! the caller, which knows the secret it put in the body.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::token::TokenCache;
use super::{http_retry, RetryPolicy};
use crate::error::{Error, Result};

/// Builds the error for a non-2xx answer: operation, status, headers, body, is it a write.
pub type ErrorMapper = fn(&'static str, StatusCode, &HeaderMap, &str, bool) -> Error;

/// One vendor API as a connector sees it.
pub struct Api {
    /// For errors and logs (`auth0`, `graph`, `github`).
    pub service: &'static str,
    pub http: reqwest::Client,
    pub retry: RetryPolicy,
    pub map_error: ErrorMapper,
    /// Headers every call carries (e.g. GitHub's `Accept` and API version).
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Api {
    /// A transport failure: one that never connected cannot have landed; one
    /// that timed out or broke mid-flight may have, if it was a write. The
    /// message keeps the error's cause (its source chain: "invalid peer
    /// certificate: UnknownIssuer", "connection refused"), and a TLS failure
    /// is [`Error::Tls`]: permanent, since trying again meets the same
    /// certificate.
    pub fn transport(&self, operation: &'static str, e: reqwest::Error, write: bool) -> Error {
        let (cause, tls) = cause_chain(&e);
        let (timeout, connect) = (e.is_timeout(), e.is_connect());
        let top = e.without_url().to_string();
        let message = if cause.is_empty() { top } else { format!("{top}: {cause}") };
        if tls {
            return Error::Tls { service: self.service, operation, message };
        }
        let what = if timeout {
            "timed out"
        } else if connect {
            "could not connect"
        } else {
            "connection failed"
        };
        let sent = !connect;
        Error::Transport { service: self.service, operation, message: format!("{what}: {message}"), may_have_applied: write && sent }
    }

    /// Send one request and read the answer: `(status, headers, body)`.
    ///
    /// The one place a request leaves keyturn. It refuses a URL that is not
    /// https (plain http only to a loopback address: the tests' fakes), and it
    /// never follows a redirect (the shared client has no redirect policy): a
    /// 3xx answer is a permanent error naming the host it pointed at, so a
    /// secret in the body or the `Authorization` header reaches no other host.
    pub async fn send(&self, operation: &'static str, req: reqwest::RequestBuilder, write: bool) -> Result<(StatusCode, HeaderMap, String)> {
        let req = req.build().map_err(|e| Error::Config(format!("{} {operation}: cannot build the request: {}", self.service, e.without_url())))?;
        allowed_url(req.url()).map_err(|why| Error::Config(format!("{} {operation}: {why}", self.service)))?;
        let url = req.url().clone();
        let resp = self.http.execute(req).await.map_err(|e| self.transport(operation, e, write))?;
        let (status, headers) = (resp.status(), resp.headers().clone());
        if status.is_redirection() {
            return Err(redirect_refused(self.service, operation, &url, status, &headers));
        }
        let text = resp.text().await.map_err(|e| self.transport(operation, e, write))?;
        Ok((status, headers, text))
    }

    /// An authorized call with retries; answers the body of a 2xx as JSON
    /// (`Null` when empty or not JSON). `fetch` gets a new token and its
    /// lifetime when the cache has none fresh.
    ///
    /// Two answers are asked again at once with a new token, once each, not
    /// counting as a retry: a 401 saying the token expired, and a 403
    /// (a missing scope or permission) to a *cached* token — a token is
    /// issued with the permissions granted at that time, so a scope granted
    /// since (the advice of an earlier refusal) is seen only by a new one.
    pub async fn call<F, Fut>(
        &self,
        tokens: &TokenCache,
        fetch: F,
        method: Method,
        url: &Url,
        operation: &'static str,
        body: Option<&Value>,
    ) -> Result<Value>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(SecretString, Duration)>>,
    {
        let write = method != Method::GET;
        http_retry(self.retry, || async {
            let mut renewed = false;
            let mut refreshed = false;
            loop {
                let (token, fetched) = tokens.get_or_fetch_tracked(&fetch).await?;
                let mut req = self.http.request(method.clone(), url.clone()).bearer_auth(token.expose_secret());
                for (k, v) in &self.headers {
                    req = req.header(*k, *v);
                }
                if let Some(b) = body {
                    req = req.json(b);
                }
                let (status, headers, text) = self.send(operation, req, write).await?;
                if status == StatusCode::UNAUTHORIZED {
                    tokens.clear().await;
                    if !renewed && super::token::is_expired_token(status.as_u16(), &text) {
                        renewed = true;
                        tracing::info!(service = self.service, operation, "token expired; renewing it and retrying once");
                        continue;
                    }
                }
                if status.is_success() {
                    return Ok(if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) });
                }
                let err = (self.map_error)(operation, status, &headers, &text, write);
                if matches!(err, Error::Http { status: 403, .. }) && !fetched && !refreshed {
                    refreshed = true;
                    tokens.clear().await;
                    tracing::info!(
                        service = self.service,
                        operation,
                        code = %err.code(),
                        "refused (403) with a cached token; asking once more with a new token (permissions granted since are only in a new one)"
                    );
                    continue;
                }
                return Err(err);
            }
        })
        .await
    }
}

/// Whether keyturn may send a request to `url`: https, or plain http to a
/// loopback address (the tests' local fakes); never with credentials in the
/// URL itself.
pub fn allowed_url(url: &Url) -> std::result::Result<(), String> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err("refusing a URL with user info".into());
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(format!("refusing plain http to {} (https only; http is allowed to a loopback address only)", url.host_str().unwrap_or("?"))),
        other => Err(format!("refusing scheme {other} (https only)")),
    }
}

/// Whether the URL's host is a loopback address (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `base` with `segments` appended as path segments and `query` (a fixed
/// string) as its query. The URL parser percent-encodes each segment, so a
/// value (already validated by the configuration) cannot add a path, a
/// query or another host.
pub fn endpoint(base: &Url, segments: &[&str], query: Option<&str>) -> Result<Url> {
    let mut u = base.clone();
    u.path_segments_mut().map_err(|_| Error::Config(format!("{base} cannot be a base URL")))?.pop_if_empty().extend(segments);
    u.set_query(query);
    u.set_fragment(None);
    Ok(u)
}

/// Parse a configured base URL (validated at load; this only fails for a
/// value built in code).
pub fn base(url: &str) -> Result<Url> {
    Url::parse(url).map_err(|e| Error::Config(format!("{url:?} is not a URL: {e}")))
}

/// The permanent error for a 3xx answer: it names the host the answer
/// pointed at (never the path or query, which the server chose), and says
/// nothing was sent there.
fn redirect_refused(service: &'static str, operation: &'static str, url: &Url, status: StatusCode, headers: &HeaderMap) -> Error {
    let to = headers.get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).and_then(|l| url.join(l).ok());
    let place = match to.as_ref().and_then(|u| u.host_str().map(|h| (h.to_string(), u.port()))) {
        Some((h, Some(p))) => format!("to {h}:{p}"),
        Some((h, None)) => format!("to {h}"),
        None => "without a usable Location".into(),
    };
    Error::Http {
        service,
        operation,
        status: status.as_u16(),
        code: "redirect_refused".into(),
        message: format!(
            "{} answered with a redirect {place}; keyturn follows no redirects and sent nothing there (check the configured domain or base_url)",
            url.host_str().unwrap_or("the server")
        ),
        retry_after: None,
        may_have_applied: false,
    }
}

/// The source chain of an error as one line (each distinct message once),
/// and whether a TLS error (rustls) is in it.
fn cause_chain(e: &(dyn std::error::Error + 'static)) -> (String, bool) {
    let mut parts: Vec<String> = Vec::new();
    let mut tls = false;
    let mut cur = e.source();
    while let Some(s) = cur {
        tls |= is_tls(s);
        let m = s.to_string();
        if !m.is_empty() && !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    (parts.join(": "), tls)
}

/// Whether `e` is a rustls error, or an `io::Error` wrapping one (tokio-rustls
/// wraps it in one, hyper-rustls wraps that in another; `io::Error::source`
/// skips the wrapped error itself, so it is looked for through `get_ref`).
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    for _ in 0..8 {
        match cur {
            Some(x) if x.is::<rustls::Error>() => return true,
            Some(x) => cur = x.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => return false,
        }
    }
    false
}

/// The wait a server asks for: `Retry-After` (seconds) first, then
/// `x-ratelimit-reset` (UNIX seconds; Auth0, GitHub).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(secs) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn api() -> Api {
        Api {
            service: "auth0",
            http: super::super::http_client(),
            retry: RetryPolicy {
                attempts: 4,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
                max_server_wait: Duration::from_secs(1),
            },
            map_error: super::super::auth0::http_error,
            headers: Vec::new(),
        }
    }

    #[test]
    fn only_https_or_loopback_http_is_sent_to() {
        let ok = |u: &str| allowed_url(&Url::parse(u).unwrap());
        assert!(ok("https://example.eu.auth0.com/oauth/token").is_ok());
        assert!(ok("http://127.0.0.1:8080/oauth/token").is_ok());
        assert!(ok("http://[::1]:8080/").is_ok());
        assert!(ok("http://localhost:1/").is_ok());
        assert!(ok("http://example.eu.auth0.com/oauth/token").unwrap_err().contains("plain http to example.eu.auth0.com"));
        assert!(ok("http://10.0.0.1/").is_err());
        assert!(ok("ftp://example.com/").is_err());
        assert!(ok("https://user:pw@example.com/").is_err());
    }

    #[test]
    fn endpoints_are_built_by_the_url_parser() {
        let b = base("https://example.eu.auth0.com").unwrap();
        assert_eq!(endpoint(&b, &["oauth", "token"], None).unwrap().as_str(), "https://example.eu.auth0.com/oauth/token");
        let b = base("https://ghe.example.com/api/v3/").unwrap();
        assert_eq!(endpoint(&b, &["repos", "o", "r"], Some("a=1")).unwrap().as_str(), "https://ghe.example.com/api/v3/repos/o/r?a=1");
        // A value cannot add a path, a query or a host: it stays one segment.
        let u = endpoint(&b, &["x/../../evil?y=1#z", "@evil.example"], None).unwrap();
        assert_eq!(u.host_str(), Some("ghe.example.com"));
        assert_eq!(u.query(), None);
        assert!(u.path().starts_with("/api/v3/x%2F..%2F..%2Fevil%3Fy=1%23z/"), "{u}");
    }

    #[test]
    fn a_redirect_is_a_permanent_error_naming_the_host() {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::LOCATION, "http://evil.example:8443/collect?secret=1".parse().unwrap());
        let url = Url::parse("https://example.eu.auth0.com/oauth/token").unwrap();
        let e = redirect_refused("auth0", "POST /oauth/token", &url, StatusCode::TEMPORARY_REDIRECT, &h);
        let text = e.to_string();
        assert!(text.contains("redirect to evil.example:8443") && text.contains("example.eu.auth0.com"), "{text}");
        assert!(!text.contains("secret=1") && !text.contains("/collect"), "only the host: {text}");
        assert!(!e.is_retryable() && !e.may_have_applied());
        assert_eq!(e.code(), "redirect_refused");
        let e = redirect_refused("auth0", "PATCH x", &url, StatusCode::FOUND, &HeaderMap::new());
        assert!(e.to_string().contains("without a usable Location"), "{e}");
    }

    /// A server that does not speak TLS behind an https URL: the handshake
    /// fails, the error keeps rustls's cause, and it is not retried.
    #[tokio::test]
    async fn a_tls_failure_keeps_its_cause_and_is_not_retried() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.and_then(|mut s| s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"));
            }
        });
        let api = api();
        let url = Url::parse(&format!("https://127.0.0.1:{port}/oauth/token")).unwrap();
        let e = http_retry(api.retry, || api.send("POST /oauth/token", api.http.post(url.clone()).body("{}"), false)).await.unwrap_err();
        assert!(matches!(e, Error::Tls { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.starts_with("auth0 POST /oauth/token: TLS failed: "), "{text}");
        assert!(text.to_ascii_lowercase().contains("corrupt message") || text.contains("InvalidContentType"), "the cause is kept: {text}");
        assert!(!e.is_retryable() && e.operator_fixable());
        assert_eq!(e.code(), "TlsFailure");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one attempt, not four");
    }

    #[tokio::test]
    async fn plain_http_to_another_host_is_never_sent() {
        let api = api();
        let url = Url::parse("http://example.invalid/oauth/token").unwrap();
        let e = api.send("POST /oauth/token", api.http.post(url), false).await.unwrap_err();
        assert!(matches!(e, Error::Config(ref m) if m.contains("refusing plain http to example.invalid")), "{e:?}");
    }
}
