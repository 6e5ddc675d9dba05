//! Target: Auth0's custom email provider, Amazon SES flavour.
//!
//! Auth0 facts this leans on (Auth0 Management API v2 reference, emails/provider):
//! * a client-credentials token from `POST /oauth/token`, cached here until
//!   a minute before it expires;
//! * `PATCH /api/v2/emails/provider` with `name: "ses"` and all three
//!   credential fields every time (partial updates are unconfirmed);
//! * the secret is write-only: `GET` never returns it, and may or may not
//!   return `accessKeyId` — so verification answers [`Verification::Opaque`]
//!   when the id is absent, and the saga decides what that means;
//! * 429 comes with `Retry-After` and/or `x-ratelimit-reset` (UNIX seconds):
//!   `Retry-After` first, then the reset time.

use std::time::Duration;

use reqwest::{header::HeaderMap, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use std::sync::Arc;

use serde::Deserialize;

use super::http::{retry_after, Api};
use super::token::TokenCache;
use super::{http_retry, BoxFut, BuildContext, ConfigProblem, NewCredential, RetryPolicy, Target, TargetEntry, TargetSpec};
use crate::error::{Error, Result};
use crate::preflight::{Check, Findings};
use crate::saga::Verification;
use crate::secrets::{SecretRef, SecretResolver};

const SERVICE: &str = "auth0";
/// The Management API scopes every Auth0 email-provider target needs: read
/// the provider back (verify) and update it (push).
pub const SCOPES: [&str; 2] = ["read:email_provider", "update:email_provider"];

/// `[rotation.target] kind = "auth0_email_provider"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth0Config {
    /// Tenant domain, e.g. `example.eu.auth0.com`.
    pub domain: String,
    /// Override of `https://{domain}` (tests, custom domains).
    pub base_url: Option<String>,
    /// Machine-to-machine application's client id.
    pub client_id: String,
    /// Its client secret, by reference.
    pub client_secret: SecretRef,
    /// Region Auth0 sends SES mail in.
    pub ses_region: String,
    /// `default_from_address` to set; left unchanged when absent.
    pub from_address: Option<String>,
}

/// The registry entry.
pub const TARGET: TargetEntry = TargetEntry {
    kind: "auth0_email_provider",
    accepts: &["aws_access_key"],
    parse: |t| {
        let c: Auth0Config = super::from_table(t)?;
        check_tenant(&c.domain, c.base_url.as_deref(), &c.client_id)?;
        super::check::check_region(&c.ses_region).map_err(|m| ConfigProblem::at("ses_region", m))?;
        Ok(Arc::new(c))
    },
};

impl TargetSpec for Auth0Config {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn accepts(&self) -> &'static [&'static str] {
        TARGET.accepts
    }
    fn build(&self, ctx: &BuildContext<'_>) -> Arc<dyn Target> {
        Arc::new(client(&self.domain, self.base_url.as_deref(), &self.client_id, &self.client_secret, &self.ses_region, &self.from_address, ctx))
    }
}

/// The checks every Auth0 target makes of its tenant settings.
pub(super) fn check_tenant(domain: &str, base_url: Option<&str>, client_id: &str) -> std::result::Result<(), ConfigProblem> {
    // The domain is the token audience (`https://{domain}/api/v2/`) and,
    // without base_url, the host the client secret is sent to.
    super::check::check_host(domain).map_err(|m| ConfigProblem::at("domain", m))?;
    if let Some(u) = base_url {
        super::check::check_base_url(u).map_err(|m| ConfigProblem::at("base_url", m))?;
    }
    if client_id.is_empty() {
        return Err(ConfigProblem::at("client_id", "must not be empty"));
    }
    Ok(())
}

/// A Management API client for a tenant (every Auth0 target talks through one).
pub(super) fn client(
    domain: &str,
    base_url: Option<&str>,
    client_id: &str,
    client_secret: &SecretRef,
    ses_region: &str,
    from_address: &Option<String>,
    ctx: &BuildContext<'_>,
) -> Auth0EmailProvider {
    Auth0EmailProvider::new(Auth0Settings {
        domain: domain.into(),
        base_url: base_url.map(str::to_string).unwrap_or_else(|| format!("https://{domain}")),
        client_id: client_id.into(),
        client_secret: client_secret.clone(),
        ses_region: ses_region.into(),
        from_address: from_address.clone(),
        http: ctx.http.clone(),
        clock: ctx.clock.clone(),
        secrets: ctx.secrets.clone(),
        retry: RetryPolicy::default(),
    })
}

pub struct Auth0Settings {
    pub domain: String,
    pub base_url: String,
    pub client_id: String,
    pub client_secret: SecretRef,
    pub ses_region: String,
    pub from_address: Option<String>,
    pub http: reqwest::Client,
    /// When the management token is renewed.
    pub clock: crate::clock::SharedClock,
    pub secrets: SecretResolver,
    pub retry: RetryPolicy,
}

pub struct Auth0EmailProvider {
    s: Auth0Settings,
    token: TokenCache,
    api: Api,
}

impl Auth0EmailProvider {
    pub fn new(s: Auth0Settings) -> Self {
        let api = Api { service: SERVICE, http: s.http.clone(), retry: s.retry, map_error: http_error, headers: Vec::new() };
        Auth0EmailProvider { token: TokenCache::new(s.clock.clone()), s, api }
    }

    /// `base_url` (or `https://{domain}`) with `segments` appended, built
    /// by the URL parser.
    fn url(&self, segments: &[&str], query: Option<&str>) -> Result<reqwest::Url> {
        super::http::endpoint(&super::http::base(&self.s.base_url)?, segments, query)
    }

    async fn fetch_token(&self) -> Result<(SecretString, Duration)> {
        self.s.secrets.with(&self.s.client_secret, |secret| self.fetch_token_with(secret)).await
    }

    async fn fetch_token_with(&self, client_secret: SecretString) -> Result<(SecretString, Duration)> {
        let (token, lifetime, _) = self.request_token(client_secret).await?;
        Ok((token, lifetime))
    }

    /// A client-credentials token, its lifetime and the scopes granted (the
    /// token response's `scope`, which Auth0 sends for this grant).
    async fn request_token(&self, client_secret: SecretString) -> Result<(SecretString, Duration, Option<String>)> {
        management_token(&self.api, &self.s.base_url, &self.s.domain, &self.s.client_id, &client_secret).await
    }

    /// `keyturn doctor` for any Auth0 target: a token can be obtained, it
    /// carries the `needed` scopes (from the token response's `scope`, else
    /// the access token's own `scope` claim), and the email provider is
    /// readable. Changes nothing.
    pub(super) async fn doctor_checks(&self, needed: &[&str], rotate: &str) -> Findings {
        let mut f = Findings::default();
        let got = self.s.secrets.with(&self.s.client_secret, |secret| self.request_token(secret)).await;
        let (token, lifetime, scope) = match got {
            Ok(t) => t,
            Err(e) => {
                let fix = Target::advice(self, &e.code(), rotate)
                    .unwrap_or_else(|| format!("check that {} is reachable and the client id and secret keyturn is configured with", self.s.base_url));
                f.checks.push(Check::fail("Auth0 token", e.to_string(), fix));
                return f;
            }
        };
        f.checks.push(Check::ok("Auth0 token", format!("client {} got a Management API token", self.s.client_id)));
        let granted = scope.or_else(|| crate::preflight::jwt_claims(token.expose_secret()).and_then(|c| c["scope"].as_str().map(str::to_string)));
        match granted {
            None => f.checks.push(Check::not_checked(
                "Auth0 scopes",
                format!("neither the token response nor the token names its scopes; needed: {}", needed.join(" ")),
            )),
            Some(g) => {
                let have: Vec<&str> = g.split_whitespace().collect();
                let missing: Vec<&str> = needed.iter().copied().filter(|n| !have.contains(n)).collect();
                if missing.is_empty() {
                    f.checks.push(Check::ok("Auth0 scopes", format!("the token carries {}", needed.join(" "))));
                } else {
                    f.checks.push(Check::fail(
                        "Auth0 scopes",
                        format!("the token lacks {} (it carries: {})", missing.join(" "), if have.is_empty() { "none".into() } else { have.join(" ") }),
                        format!(
                            "in the Auth0 Dashboard: Applications → APIs → Auth0 Management API → Machine To Machine Applications → {}: grant {}; then run keyturn doctor again",
                            self.s.client_id,
                            missing.join(" ")
                        ),
                    ));
                }
            }
        }
        self.token.store(token, lifetime).await;
        match self.read_provider().await {
            Ok(v) => f.checks.push(Check::ok(
                "Auth0 email provider",
                format!(
                    "readable: {} ({}){}",
                    v.get("name").and_then(Value::as_str).unwrap_or("no name"),
                    if v.get("enabled").and_then(Value::as_bool) == Some(true) { "enabled" } else { "disabled" },
                    v.pointer("/credentials/accessKeyId")
                        .or_else(|| v.pointer("/credentials/smtp_user"))
                        .and_then(Value::as_str)
                        .map(|k| format!(", holds key {k}"))
                        .unwrap_or_default()
                ),
            )),
            Err(e) => {
                let fix = Target::advice(self, &e.code(), rotate)
                    .unwrap_or_else(|| "check the tenant's email provider in the Auth0 Dashboard (Branding → Email Provider)".into());
                f.checks.push(Check::fail("Auth0 email provider", e.to_string(), fix));
            }
        }
        f
    }

    /// One call of the email provider endpoint ([`Api::call`]: token, retries, an expired
    /// token renewed once, Auth0's error body mapped).
    pub(super) async fn call(&self, method: Method, query: Option<&str>, operation: &'static str, body: Option<Value>) -> Result<Value> {
        let url = self.url(&["api", "v2", "emails", "provider"], query)?;
        self.api.call(&self.token, || self.fetch_token(), method, &url, operation, body.as_ref()).await
    }

    /// [`Target::warm`] for every Auth0 target: the Management API token,
    /// fetched and cached now (a failure is the push's to meet again).
    pub(super) async fn warm_token(&self) {
        if let Err(e) = self.token.get_or_fetch(|| self.fetch_token()).await {
            tracing::debug!(error = %e, "Auth0 token not fetched ahead of the push");
        }
    }

    async fn push_impl(&self, cred: &NewCredential) -> Result<()> {
        let mut body = json!({
            "name": "ses",
            "enabled": true,
            "credentials": {
                "accessKeyId": cred.id,
                "secretAccessKey": cred.secret.expose_secret(),
                "region": self.s.ses_region,
            }
        });
        if let Some(from) = &self.s.from_address {
            body["default_from_address"] = json!(from);
        }
        self.call(Method::PATCH, None, "PATCH /api/v2/emails/provider", Some(body)).await.map_err(|e| e.redact(cred.secret.expose_secret()))?;
        Ok(())
    }

    /// The email provider with its fields (never the secret: write-only).
    pub(super) async fn read_provider(&self) -> Result<Value> {
        self.call(
            Method::GET,
            Some("fields=name,enabled,credentials,default_from_address,settings&include_fields=true"),
            "GET /api/v2/emails/provider",
            None,
        )
        .await
    }

    async fn verify_impl(&self, new_id: &str, old_ids: &[String]) -> Result<Verification> {
        Ok(judge_provider(&self.read_provider().await?, new_id, old_ids))
    }
}

/// Decide what a `GET /api/v2/emails/provider` answer says about the key.
pub fn judge_provider(v: &Value, new_id: &str, old_ids: &[String]) -> Verification {
    judge_held(v, "ses", "/credentials/accessKeyId", new_id, old_ids)
}

/// A provider answer judged for any Auth0 target: the provider `name`
/// expected, enabled, and the key id at `id_pointer` when Auth0 reveals it.
pub(super) fn judge_held(v: &Value, name: &str, id_pointer: &str, new_id: &str, old_ids: &[String]) -> Verification {
    let got = v.get("name").and_then(Value::as_str).unwrap_or("");
    if got != name {
        return Verification::Unhealthy(format!("Auth0's email provider is {got:?}, not {name:?}"));
    }
    if v.get("enabled").and_then(Value::as_bool) != Some(true) {
        return Verification::Unhealthy("Auth0's email provider is disabled".into());
    }
    match v.pointer(id_pointer).and_then(Value::as_str) {
        Some(id) if id == new_id => Verification::HoldsNew,
        Some(id) if old_ids.iter().any(|o| o == id) => Verification::HoldsOld,
        Some(id) => Verification::Unhealthy(format!("Auth0 holds access key {id}, which is neither the new nor the old key")),
        None => Verification::Opaque,
    }
}

impl Target for Auth0EmailProvider {
    fn kind(&self) -> &'static str {
        TARGET.kind
    }
    fn advice(&self, code: &str, rotate: &str) -> Option<String> {
        match code {
            "insufficient_scope" | "access_denied" => Some(format!(
                "Grant the Auth0 machine-to-machine application the read:email_provider and update:email_provider scopes, then run `{rotate}`."
            )),
            "invalid_client" | "unauthorized" | "Unauthorized" => {
                Some(format!("Check the Auth0 client id and client secret keyturn is configured with, then run `{rotate}`."))
            }
            _ => None,
        }
    }
    fn describe(&self) -> String {
        format!("Auth0 {}", self.s.domain)
    }
    fn warm(&self) -> BoxFut<'_, ()> {
        Box::pin(self.warm_token())
    }
    fn push<'a>(&'a self, cred: &'a NewCredential, _old_ids: &'a [String]) -> BoxFut<'a, Result<()>> {
        Box::pin(self.push_impl(cred))
    }
    fn verify<'a>(&'a self, new_id: &'a str, old_ids: &'a [String]) -> BoxFut<'a, Result<Verification>> {
        Box::pin(self.verify_impl(new_id, old_ids))
    }
    fn doctor(&self) -> BoxFut<'_, Findings> {
        Box::pin(self.doctor_checks(&SCOPES, "keyturn doctor"))
    }
    /// Auth0 sends mail through the SES API with the key (`ses` in
    /// `GetAccessKeyLastUsed`, the SES API's signing name).
    fn consumer_service(&self) -> Option<&'static str> {
        Some("ses")
    }
}

/// A client-credentials token for the Management API of tenant `domain`
/// with `client_id` and `secret`: `POST {base_url}/oauth/token` (audience
/// `https://{domain}/api/v2/`) through `api` (its retries, no redirect).
/// The token, its lifetime and the scopes granted (the response's `scope`,
/// which Auth0 sends for this grant); the secret never appears in an
/// error. The one token request of every Auth0 connector.
pub(super) async fn management_token(
    api: &Api,
    base_url: &str,
    domain: &str,
    client_id: &str,
    secret: &SecretString,
) -> Result<(SecretString, Duration, Option<String>)> {
    let audience = format!("https://{domain}/api/v2/");
    let url = super::http::endpoint(&super::http::base(base_url)?, &["oauth", "token"], None)?;
    let invalid = |status: StatusCode, message: &str| Error::Http {
        service: SERVICE,
        operation: "POST /oauth/token",
        status: status.as_u16(),
        code: "invalid_response".into(),
        message: message.into(),
        retry_after: None,
        may_have_applied: false,
    };
    let (token, expires_in, scope) = http_retry(api.retry, || async {
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret.expose_secret(),
            "audience": audience,
        });
        let (status, headers, text) = api.send("POST /oauth/token", api.http.post(url.clone()).json(&body), false).await?;
        if !status.is_success() {
            return Err(http_error("POST /oauth/token", status, &headers, &text, false));
        }
        let v: Value = serde_json::from_str(&text).map_err(|_| invalid(status, "token response is not JSON"))?;
        let token = v.get("access_token").and_then(Value::as_str).ok_or_else(|| invalid(status, "token response has no access_token"))?;
        let scope = v.get("scope").and_then(Value::as_str).map(str::to_string);
        Ok((SecretString::from(token.to_string()), v.get("expires_in").and_then(Value::as_u64).unwrap_or(86_400), scope))
    })
    .await
    .map_err(|e| e.redact(secret.expose_secret()))?;
    Ok((token, Duration::from_secs(expires_in), scope))
}

/// Build the error for a non-2xx answer from Auth0's error body and headers.
pub fn http_error(operation: &'static str, status: StatusCode, headers: &HeaderMap, body: &str, is_write: bool) -> Error {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v
        .get("errorCode")
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let message = v
        .get("message")
        .or_else(|| v.get("error_description"))
        .and_then(Value::as_str)
        .map(|m| m.chars().take(500).collect())
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    Error::Http {
        service: SERVICE,
        operation,
        status: status.as_u16(),
        code,
        message,
        retry_after: retry_after(headers, crate::clock::Clock::now(&crate::clock::SystemClock)),
        may_have_applied: is_write && status.is_server_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_after_prefers_retry_after_then_reset() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1003"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let mut past = HeaderMap::new();
        past.insert("x-ratelimit-reset", HeaderValue::from_static("10"));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn error_body_is_parsed() {
        let body = r#"{"statusCode":403,"error":"Forbidden","message":"Insufficient scope, expected any of: update:email_provider","errorCode":"insufficient_scope"}"#;
        let e = http_error("PATCH /api/v2/emails/provider", StatusCode::FORBIDDEN, &HeaderMap::new(), body, true);
        assert_eq!(e.code(), "insufficient_scope");
        assert!(!e.is_retryable());
        assert!(!e.may_have_applied());
        assert!(e.to_string().contains("Insufficient scope"));
        let e503 = http_error("PATCH /api/v2/emails/provider", StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), "oops", true);
        assert!(e503.is_retryable() && e503.may_have_applied());
    }

    #[test]
    fn advice_names_the_scopes_and_the_credentials() {
        let t = Auth0EmailProvider::new(Auth0Settings {
            domain: "d".into(),
            base_url: "https://d".into(),
            client_id: "c".into(),
            client_secret: SecretRef::Env("KEYTURN_X".into()),
            ses_region: "eu-west-1".into(),
            from_address: None,
            http: reqwest::Client::new(),
            clock: crate::clock::system(),
            secrets: SecretResolver::new(aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::new().behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest()).build(),
            )),
            retry: RetryPolicy::default(),
        });
        let a = t.advice("insufficient_scope", "keyturn rotate r").unwrap();
        assert!(a.contains("update:email_provider") && a.contains("keyturn rotate r"), "{a}");
        assert!(t.advice("invalid_client", "x").unwrap().contains("client secret"));
        assert_eq!(t.advice("too_many_requests", "x"), None);
    }

    #[test]
    fn provider_judgement() {
        let old = vec!["AKIAOLD".to_string()];
        let v = |id: Option<&str>, name: &str, enabled: bool| {
            let mut v = json!({"name": name, "enabled": enabled, "credentials": {"region": "eu-west-1"}});
            if let Some(id) = id {
                v["credentials"]["accessKeyId"] = json!(id);
            }
            v
        };
        assert_eq!(judge_provider(&v(Some("AKIANEW"), "ses", true), "AKIANEW", &old), Verification::HoldsNew);
        assert_eq!(judge_provider(&v(Some("AKIAOLD"), "ses", true), "AKIANEW", &old), Verification::HoldsOld);
        assert_eq!(judge_provider(&v(None, "ses", true), "AKIANEW", &old), Verification::Opaque);
        assert!(matches!(judge_provider(&v(None, "mandrill", true), "AKIANEW", &old), Verification::Unhealthy(_)));
        assert!(matches!(judge_provider(&v(Some("AKIANEW"), "ses", false), "AKIANEW", &old), Verification::Unhealthy(_)));
        assert!(matches!(judge_provider(&v(Some("AKIAX"), "ses", true), "AKIANEW", &old), Verification::Unhealthy(_)));
    }
}
