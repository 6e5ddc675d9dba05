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

use std::time::Duration;

use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::clock::{renew_after, Millis, SharedClock};

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

/// A cached bearer token and when to renew it (by the connector's clock).
pub struct TokenCache {
    inner: Mutex<Option<(SecretString, Millis)>>,
    clock: SharedClock,
}

impl TokenCache {
    /// An empty cache that tells freshness by `clock`.
    pub fn new(clock: SharedClock) -> TokenCache {
        TokenCache { inner: Mutex::default(), clock }
    }
    fn renew_at(&self, lifetime: Duration) -> Millis {
        self.clock.now_ms().saturating_add(renew_after(lifetime).as_millis() as u64)
    }
    /// The cached token while it is fresh.
    pub async fn fresh(&self) -> Option<SecretString> {
        let g = self.inner.lock().await;
        g.as_ref().filter(|(_, renew_at)| self.clock.now_ms() < *renew_at).map(|(t, _)| t.clone())
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
            if self.clock.now_ms() < *renew_at {
                return Ok((t.clone(), false));
            }
        }
        let (token, lifetime) = fetch().await?;
        *g = Some((token.clone(), self.renew_at(lifetime)));
        Ok((token, true))
    }
    /// Keep a token the endpoint issued with `lifetime`.
    pub async fn store(&self, token: SecretString, lifetime: Duration) {
        let renew_at = self.renew_at(lifetime);
        *self.inner.lock().await = Some((token, renew_at));
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
        let c = TokenCache::new(crate::clock::system());
        assert!(c.fresh().await.is_none());
        c.store(SecretString::from("t".to_string()), Duration::from_secs(60)).await;
        assert!(c.fresh().await.is_some());
        c.clear().await;
        assert!(c.fresh().await.is_none());
        c.store(SecretString::from("t".to_string()), Duration::ZERO).await;
        assert!(c.fresh().await.is_none(), "a token with no lifetime is never reused");
    }

    #[tokio::test]
    async fn a_token_is_renewed_once_its_clock_passes_the_renewal_point() {
        let clock = crate::clock::ManualClock::at(1_000_000);
        let c = TokenCache::new(clock.clone());
        let counter = std::sync::atomic::AtomicU32::new(0);
        let fetches = &counter;
        let fetch = move || async move {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>((SecretString::from("t".to_string()), Duration::from_secs(60)))
        };
        assert!(c.get_or_fetch_tracked(fetch).await.unwrap().1, "fetched: the cache was empty");
        // A 60 s token is renewed after 48 s (see `renew_after`).
        clock.advance(Duration::from_secs(47));
        assert!(!c.get_or_fetch_tracked(fetch).await.unwrap().1, "still fresh at 47 s");
        clock.advance(Duration::from_secs(1));
        assert!(c.get_or_fetch_tracked(fetch).await.unwrap().1, "renewed at 48 s, with no real time passing");
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
