//! The one HTTP call path every HTTP connector uses: bearer token from the
//! shared [`TokenCache`], explicit timeouts (the shared client's), in-process
//! retries with `Retry-After` / rate-limit headers honoured ([`http_retry`]),
//! an expired token renewed once at once, and the vendor's error body mapped
//! by the connector's own mapper. Redaction of what a call sent stays with
//! the caller, which knows the secret it put in the body.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
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
    /// that timed out or broke mid-flight may have, if it was a write.
    pub fn transport(&self, operation: &'static str, e: reqwest::Error, write: bool) -> Error {
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "connection failed"
        };
        let sent = !e.is_connect();
        Error::Transport { service: self.service, operation, message: format!("{what}: {}", e.without_url()), may_have_applied: write && sent }
    }

    /// An authorized call with retries; answers the body of a 2xx as JSON
    /// (`Null` when empty or not JSON). `fetch` gets a new token and its
    /// lifetime when the cache has none fresh.
    pub async fn call<F, Fut>(
        &self,
        tokens: &TokenCache,
        fetch: F,
        method: Method,
        url: &str,
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
            let (status, headers, text) = loop {
                let token = tokens.get_or_fetch(&fetch).await?;
                let mut req = self.http.request(method.clone(), url).bearer_auth(token.expose_secret());
                for (k, v) in &self.headers {
                    req = req.header(*k, *v);
                }
                if let Some(b) = body {
                    req = req.json(b);
                }
                let resp = req.send().await.map_err(|e| self.transport(operation, e, write))?;
                let (status, headers) = (resp.status(), resp.headers().clone());
                let text = resp.text().await.map_err(|e| self.transport(operation, e, write))?;
                if status == StatusCode::UNAUTHORIZED {
                    tokens.clear().await;
                    if !renewed && super::token::is_expired_token(status.as_u16(), &text) {
                        renewed = true;
                        tracing::info!(service = self.service, operation, "token expired; renewing it and retrying once");
                        continue;
                    }
                }
                break (status, headers, text);
            };
            if !status.is_success() {
                return Err((self.map_error)(operation, status, &headers, &text, write));
            }
            Ok(if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) })
        })
        .await
    }
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
