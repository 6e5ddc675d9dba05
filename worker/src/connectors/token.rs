//! The client-credentials token cache every HTTP connector shares.
//!
//! A token is renewed when a fixed share of its lifetime has passed, not a
//! fixed time before it expires: a tenant that issues 60-second management
//! tokens would otherwise get a new token before every call (doubling the
//! calls, and the exposure to the token endpoint's 5xx). The margin is a
//! fifth of the lifetime, at most five minutes: a 60 s token is renewed
//! after 48 s, a one-hour token after 55 minutes, a day-long one five
//! minutes before it ends.
//!
//! Clocks drift and tokens are revoked, so a call may still meet a 401 that
//! says the token expired: [`is_expired_token`] recognises Auth0's and
//! Microsoft identity's wording, and the connector then renews once and
//! retries the call once, at once — it does not count as a retry attempt.
//! Any other 401 stays a permanent error.
//!
//! A token carries the scopes or permissions granted when it was issued. A
//! 403 to a *cached* token is therefore asked again once with a new token
//! ([`super::http::Api::call`]): a scope granted after a refusal (the advice
//! its notice gives) works on the next run, not a day later when the
//! cached token would have been renewed.

use std::time::{Duration, Instant};

use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::clock::renew_after;

/// Whether a 401 answer says the bearer token expired (renew and retry
/// once) rather than that it is invalid or lacks a permission.
/// Auth0: `errorCode: "token_expired"`, or a message such as "Expired token
/// received for JSON Web Token validation". Microsoft Graph:
/// `error.code: "InvalidAuthenticationToken"` with "…token is expired".
pub fn is_expired_token(status: u16, body: &str) -> bool {
    if status != 401 {
        return false;
    }
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if v.get("errorCode").and_then(Value::as_str) == Some("token_expired") {
        return true;
    }
    let texts = [v.get("message"), v.pointer("/error/message"), v.get("error_description"), v.get("error")];
    texts.iter().flatten().filter_map(|t| t.as_str()).any(|t| t.to_ascii_lowercase().contains("expired"))
}

/// A cached bearer token and when to renew it.
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<Option<(SecretString, Instant)>>,
}

impl TokenCache {
    /// The cached token while it is fresh.
    pub async fn fresh(&self) -> Option<SecretString> {
        let g = self.inner.lock().await;
        g.as_ref().filter(|(_, renew_at)| Instant::now() < *renew_at).map(|(t, _)| t.clone())
    }
    /// The cached token while fresh, else one `fetch` gets (with its
    /// lifetime), kept. Concurrent callers wait for the one fetch.
    pub async fn get_or_fetch<E, F, Fut>(&self, fetch: F) -> Result<SecretString, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(SecretString, Duration), E>>,
    {
        self.get_or_fetch_tracked(fetch).await.map(|(t, _)| t)
    }
    /// As [`TokenCache::get_or_fetch`], and whether the token was fetched
    /// now (`true`) or came from the cache (`false`).
    pub async fn get_or_fetch_tracked<E, F, Fut>(&self, fetch: F) -> Result<(SecretString, bool), E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(SecretString, Duration), E>>,
    {
        let mut g = self.inner.lock().await;
        if let Some((t, renew_at)) = g.as_ref() {
            if Instant::now() < *renew_at {
                return Ok((t.clone(), false));
            }
        }
        let (token, lifetime) = fetch().await?;
        *g = Some((token.clone(), Instant::now() + renew_after(lifetime)));
        Ok((token, true))
    }
    /// Keep a token the endpoint issued with `lifetime`.
    pub async fn store(&self, token: SecretString, lifetime: Duration) {
        *self.inner.lock().await = Some((token, Instant::now() + renew_after(lifetime)));
    }
    /// Forget the token (a 401).
    pub async fn clear(&self) {
        *self.inner.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_token_answers_are_told_from_other_401s() {
        let auth0 =
            r#"{"statusCode":401,"error":"Unauthorized","message":"Expired token received for JSON Web Token validation","errorCode":"token_expired"}"#;
        assert!(is_expired_token(401, auth0));
        let auth0_no_code = r#"{"statusCode":401,"error":"Unauthorized","message":"Expired token received for JSON Web Token validation"}"#;
        assert!(is_expired_token(401, auth0_no_code));
        let graph = r#"{"error":{"code":"InvalidAuthenticationToken","message":"Lifetime validation failed, the token is expired."}}"#;
        assert!(is_expired_token(401, graph));
        let bad = r#"{"statusCode":401,"error":"Unauthorized","message":"Invalid token","errorCode":"invalid_token"}"#;
        assert!(!is_expired_token(401, bad));
        let scope = r#"{"statusCode":403,"error":"Forbidden","message":"Insufficient scope, expected any of: update:email_provider","errorCode":"insufficient_scope"}"#;
        assert!(!is_expired_token(403, scope));
        assert!(!is_expired_token(401, "<html>expired</html>"), "only a JSON answer says so");
    }

    #[tokio::test]
    async fn the_cache_answers_while_fresh_and_forgets_on_clear() {
        let c = TokenCache::default();
        assert!(c.fresh().await.is_none());
        c.store(SecretString::from("t".to_string()), Duration::from_secs(60)).await;
        assert!(c.fresh().await.is_some());
        c.clear().await;
        assert!(c.fresh().await.is_none());
        c.store(SecretString::from("t".to_string()), Duration::ZERO).await;
        assert!(c.fresh().await.is_none(), "a token with no lifetime is never reused");
    }
}
